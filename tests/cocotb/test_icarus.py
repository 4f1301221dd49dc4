"""The exported Verilog of the whole unit under Icarus Verilog, driven by cocotb (``unit_tb``).

For each configuration the Verilog that :func:`metaplast.gateware.top.verilog` writes (what a
board build synthesizes) is simulated and compared with the bit-exact model byte for byte;
see ``unit_tb.py`` for the scenarios. Everything is built under ``build/cocotb/<config>/``.

Verilator (>= 5.036, which cocotb 2 needs) runs the same testbench about three times faster
but takes about 20 s per build and is not a project dependency: set ``METAPLAST_VERILATOR=1``
with a ``verilator`` on PATH to run it too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cocotb_tools.runner import get_results, get_runner

from metaplast.gateware.top import DigitalUnitTop, verilog

HERE = Path(__file__).resolve().parent
# The cocotb runner gives the simulator's Python this process' sys.path: unit_tb (and
# tb_config) must be importable from it, whatever pytest's import mode.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tb_config import TILE, TINY, UNEVEN, TbConfig  # noqa: E402

BUILD = HERE.parents[1] / "build" / "cocotb"
TOPLEVEL = "metaplast_unit"
TB_TESTS = 3
"""The cocotb tests in ``unit_tb``: all of them must run and pass."""

BUILD_ARGS = {
    # After the runner's -g2012: under SystemVerilog rules a declaration's initializer makes
    # no event at time 0, so Yosys' `always @*` blocks (which wait on one) do not run until an
    # input changes: FSM outputs stay X through reset and the unit never answers.
    "icarus": ["-g2005"],
    # Amaranth's Verilog has width and unused-signal warnings that Verilator treats as fatal.
    "verilator": ["-Wno-fatal", "-Wno-lint", "-Wno-style"],
}


def write_verilog(cfg: TbConfig, out: Path) -> Path:
    """The design's Verilog for ``cfg`` (rewritten only when it changed)."""
    dut = DigitalUnitTop(cfg.layout, baud_divisor=cfg.divisor)
    text = verilog(dut, name=TOPLEVEL)
    path = out / f"{TOPLEVEL}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def run_unit_tb(cfg: TbConfig, simulator: str) -> list[dict]:
    """Build and run ``unit_tb`` for ``cfg``; assert that every cocotb test ran and passed.

    Returns the statistics each cocotb test reported (comparisons made, simulation speed).
    """
    out = BUILD / (cfg.name if simulator == "icarus" else f"{cfg.name}-{simulator}")
    out.mkdir(parents=True, exist_ok=True)
    source = write_verilog(cfg, out)
    stats_file = out / "stats.jsonl"
    stats_file.unlink(missing_ok=True)
    results = out / "results.xml"
    results.unlink(missing_ok=True)
    log = out / "test.log"

    runner = get_runner(simulator)
    t0 = time.perf_counter()
    runner.build(
        sources=[source],
        hdl_toplevel=TOPLEVEL,
        build_dir=out,
        timescale=("1ns", "1ps"),  # Amaranth's Verilog has none; cocotb's Clock needs one
        build_args=BUILD_ARGS[simulator],
        always=True,  # a stale build may come from other build arguments
        log_file=out / "build.log",
    )
    t1 = time.perf_counter()
    try:
        runner.test(
            test_module="unit_tb",
            hdl_toplevel=TOPLEVEL,
            build_dir=out,
            test_dir=out,
            results_xml=str(results),
            extra_env={
                **cfg.env(),
                "METAPLAST_STATS": str(stats_file),
                # cocotb rewrites the asserts of every module imported ("*.py"), torch's
                # included: 11 s of start-up per simulation on a 2-core machine
                "COCOTB_REWRITE_ASSERTION_FILES": "unit_tb.py",
            },
            log_file=log,
        )
    except SystemExit:
        pass  # under pytest the runner exits when a cocotb test failed; the results say which
    t2 = time.perf_counter()
    tests, failed = get_results(results)
    lines = stats_file.read_text().splitlines() if stats_file.exists() else []
    stats = [json.loads(line) for line in lines]
    print(f"\n{cfg.name} ({simulator}): build {t1 - t0:.1f} s, run {t2 - t1:.1f} s")
    for s in stats:
        print("  " + " ".join(f"{k}={v}" for k, v in s.items()))
    assert tests == TB_TESTS, f"{tests} of {TB_TESTS} cocotb tests ran; see {log}"
    assert failed == 0, f"{failed} of {tests} cocotb tests failed; see {log}"
    assert len(stats) == TB_TESTS, f"tests passed without reporting their comparisons; see {log}"
    assert sum(s["compared_updates"] for s in stats) > 0
    assert sum(s["compared_events"] for s in stats) > 0
    return stats


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not on PATH")
@pytest.mark.parametrize("cfg", [TINY, TILE, UNEVEN], ids=lambda c: c.name)
def test_verilog_matches_the_model_under_icarus(cfg: TbConfig) -> None:
    run_unit_tb(cfg, "icarus")


def verilator_problem() -> str | None:
    """Why the Verilator test cannot run here, or ``None``."""
    if os.environ.get("METAPLAST_VERILATOR") != "1":
        return "opt-in: set METAPLAST_VERILATOR=1 (and put verilator >= 5.036 on PATH)"
    if shutil.which("verilator") is None:
        return "verilator not on PATH"
    return None


@pytest.mark.slow
@pytest.mark.skipif(verilator_problem() is not None, reason=str(verilator_problem()))
@pytest.mark.parametrize("cfg", [TINY, TILE], ids=lambda c: c.name)
def test_verilog_matches_the_model_under_verilator(
    cfg: TbConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = subprocess.run(
        ["verilator", "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True, check=True
    ).stdout.strip()
    mk = Path(root) / "include" / "verilated.mk"
    if mk.exists() and re.search(r"^CFG_CXXFLAGS_PCH_I = *$", mk.read_text(), re.M):
        # the PyPI wheel (5.48) is configured without the flag that includes the precompiled
        # header, so its builds fail ("Vtop__pch.h.fast: linker input file not found")
        monkeypatch.setenv("MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")
    run_unit_tb(cfg, "verilator")
