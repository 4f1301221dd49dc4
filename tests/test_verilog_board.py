"""The Verilog-backed board: the generated Verilog under Verilator, UART pins included, and
the array behind its crossbar port.

The board is compiled once per layout and array and cached
(``firmware_sim/board/verilator.py``), so a test session pays Verilator's build once per unit
used here (five), 20 to 40 s each on a loaded two-core machine.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import serial
from gateware.test_top import crossbar_steps
from test_link import CLI, Board
from test_rtl_board import assert_array_sessions_alike, assert_boards_train_alike, board_info

from metaplast.cli.options import flag
from metaplast.contract import Contract
from metaplast.errors import ConfigError
from metaplast.firmware_sim.crossbar.devices import load_device
from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.protocol import (
    FrameDecoder,
    Layout,
    Op,
    encode_frame,
    xbar_layer,
    xbar_map,
    xbar_mvm,
)

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
    board_info("verilog", "--crossbar", "none")


@needs_verilator
@pytest.mark.parametrize("memory", ["block", "spram"])
def test_verilog_model_and_in_process_sessions_end_bit_identically(
    memory: str, data_dir: Path, tmp_path: Path
) -> None:
    """The first layer on the Verilog board (its memories dual-port, or single-port as in the
    iCEBreaker's SPRAM), on the model board, and in process: one session."""
    board_args = ["--synapses", str(FIRST_LAYER), "--max-block", "256", "--crossbar", "none"]
    board_args += ["--memory", memory]
    assert_boards_train_alike("verilog", TINY_VERILOG, 0, board_args, data_dir, tmp_path)


def read_replies(port: serial.Serial, size: int) -> bytes:
    """``size`` bytes from the board (the model's replies are that long), or what came."""
    out = bytearray()
    deadline = time.monotonic() + 30
    while len(out) < size and time.monotonic() < deadline:
        out += port.read(size - len(out))
    return bytes(out)


@needs_verilator
def test_the_verilog_boards_array_answers_every_crossbar_op_as_the_model_board() -> None:
    """``tests/gateware/test_top.py``'s crossbar session (maps and their sweeps, latches, MVMs
    both ways, reads, updates that program the array, counters, verify, retries and every
    status the driver answers) on the Verilog board's 8 x 8-tile TiO2 array, byte for byte
    against the model board with the same array; then a tile of the 1T1R array (with stuck
    devices), whose reply (1,025 bytes) is longer than a receive bank."""
    layout = Layout(Contract(), 64, max_block=16)
    w = [(-1) ** i * 1000 * (i % 5) for i in range(64)]
    long_reply = [
        *((Op.WRITE_HIDDEN, layout.write_hidden(i, w[i : i + 16])) for i in range(0, 64, 16)),
        (Op.XBAR_MAP, xbar_map(0, 0, (64, 1), 11)),
        (Op.XBAR_LATCH, xbar_layer(0)),
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), [12345])),
    ]
    # the device options reach the driver as on the other backends: a third of the 1T1R
    # devices stuck in LRS changes the currents
    sessions = {
        "tio2-passive": ({}, crossbar_steps(layout, random.Random(5))),
        "hfox-1t1r": (
            {"stuck_lrs": 0.3},
            [encode_frame(op, seq, p) for seq, (op, p) in enumerate(long_reply)],
        ),
    }
    for array, (options, steps) in sessions.items():
        device = load_device(array).with_overrides(**options)
        model = CommandModel(layout, clock_hz=4 * 3_000_000, baud_divisor=4,
                             array=ArrayDriver(device, layout.contract))  # fmt: skip
        flags = [a for k, v in options.items() for a in (flag(k), str(v))]
        board = Board("--backend", "verilog", "--synapses", "64", "--max-block", "16",
                      "--crossbar", array, *flags)  # fmt: skip
        try:
            with serial.Serial(board.port, timeout=0.5) as port:
                for step in steps:
                    want = model.feed(step)
                    port.write(step)
                    got = read_replies(port, len(want))
                    assert list(FrameDecoder().feed(got)) == list(FrameDecoder().feed(want))
                    assert got == want, step.hex(" ")
                assert port.read(64) == b""  # nothing more
        finally:
            board.stop()
    frames = list(FrameDecoder().feed(want))
    assert len(frames[-1].payload) == 1 + 8 * 128


@needs_verilator
def test_a_killed_verilog_board_leaves_no_harness_behind() -> None:
    """With an array the board is two processes (this one the driver, the harness its child):
    killing the driver, even with SIGKILL, ends the harness."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        board = Board("--backend", "verilog", "--synapses", "64", "--max-block", "16")
        pid = board.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children")
            deadline = time.monotonic() + 10  # the port is announced before the harness starts
            while not children.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            (harness,) = children.read_text().split()
            assert running(harness)
            os.kill(pid, sig)
        finally:
            board.stop()
        deadline = time.monotonic() + 10
        while running(harness) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(harness), sig


def running(pid: str) -> bool:
    """The process exists and has not exited (a zombie waits for its new parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@needs_verilator
def test_a_session_on_the_verilog_boards_array_ends_as_on_the_model_board_and_in_process(
    data_dir: Path, tmp_path: Path
) -> None:
    assert_array_sessions_alike("verilog", data_dir, tmp_path)


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
