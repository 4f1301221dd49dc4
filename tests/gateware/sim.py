"""Running Amaranth simulations in tests: fast without a trace, and a VCD when one fails."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from amaranth.sim import Simulator

VCD_DIR = Path(__file__).resolve().parents[2] / "build" / "vcd"

Testbench = Callable[[Any], Coroutine[Any, Any, None]]


def simulate(
    dut: Any,
    testbenches: Iterable[Testbench],
    *,
    name: str,
    clock_hz: float = 48e6,
    background: Iterable[Testbench] = (),
    check: Callable[[], None] | None = None,
) -> None:
    """Run ``testbenches`` against ``dut``, then ``check``; on failure rerun with a trace.

    The testbenches are deterministic (seeded), so the rerun reproduces the failure, and the
    VCD (``build/vcd/<name>.vcd``) shows it without slowing every passing test down.
    ``check`` compares what the testbenches collected with the model; a mismatch it finds
    counts as a failure of the simulation.
    """
    testbenches, background = list(testbenches), list(background)

    def build() -> Simulator:
        sim = Simulator(dut)
        sim.add_clock(1 / clock_hz)
        for tb in testbenches:
            sim.add_testbench(tb)
        for tb in background:
            sim.add_testbench(tb, background=True)
        return sim

    try:
        build().run()
        if check is not None:
            check()
    except Exception as failure:
        VCD_DIR.mkdir(parents=True, exist_ok=True)
        vcd = VCD_DIR / f"{safe_name(name)}.vcd"
        sim = build()
        try:
            with sim.write_vcd(str(vcd)):
                sim.run()
        except Exception:
            pass
        failure.add_note(f"waveform of the failing run: {vcd}")
        raise


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
