"""The Verilog-backed board: the generated Verilog under Verilator, UART pins included.

The board is compiled once per layout and cached (``firmware_sim/board/verilator.py``), so a
test session pays Verilator's build once per layout used here (two), a few seconds each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from test_link import CLI
from test_rtl_board import assert_boards_train_alike, board_info

from metaplast.errors import ConfigError

needs_verilator = pytest.mark.skipif(
    shutil.which("verilator") is None,
    reason="Verilator is not installed (apt-get install verilator; scripts/setup installs it)",
)

# the first layer on the board: the largest, and the one that rounds exactly as in process
TINY_VERILOG = {
    "tasks": ("mnist", "fashion-mnist"),
    "epochs": (2, 1),
    "pretrain_epochs": 1,
    "hidden": (8,),
    "train_limit": 100,
    "batch_size": 50,
    "seed": 3,
}
FIRST_LAYER = 784 * 8


@needs_verilator
def test_verilog_board_answers_info() -> None:
    assert board_info("verilog")["clock_hz"] == 4 * 3_000_000


@needs_verilator
def test_verilog_model_and_in_process_sessions_end_bit_identically(
    data_dir: Path, tmp_path: Path
) -> None:
    """The first layer on the Verilog board, on the model board, and in process: one session."""
    board_args = ["--synapses", str(FIRST_LAYER), "--max-block", "256"]
    assert_boards_train_alike("verilog", TINY_VERILOG, 0, board_args, data_dir, tmp_path)


def test_without_verilator_the_backend_is_refused_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no verilator (nor anything else) on PATH
    out = subprocess.run(
        [CLI, "board-sim", "--backend", "verilog", "--synapses", "64"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stdout == ""
    assert "needs Verilator" in out.stderr and "apt-get install verilator" in out.stderr


@needs_verilator
def test_a_failed_build_names_verilator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metaplast.firmware_sim.board.verilator import cache_root, compile_harness

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="Verilator could not build the unit"):
        compile_harness("module metaplast_unit(; endmodule\n", "int main() {}\n", top="top")
    assert cache_root().is_relative_to(tmp_path)
    assert [p.name for p in cache_root().iterdir()] == []  # no half-made build left


def test_the_harness_ships_with_the_package() -> None:
    """Found in the checkout, and declared as package data so that ``pip install .`` (not
    only an editable install) ships it."""
    from metaplast.firmware_sim.board import verilog_board

    assert "uart_rx" in verilog_board.harness_source()
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["metaplast.firmware_sim.board"]
    assert any(fnmatch(verilog_board.HARNESS, g) for g in globs)
