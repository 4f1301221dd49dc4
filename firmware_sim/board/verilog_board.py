"""The Verilog-backed simulated board: the unit's generated Verilog under Verilator, on a pty.

The same Verilog that ``metaplast gateware`` writes, compiled with a small C++ harness
(``verilog_board.cpp``, shipped beside this module) that drives the ``uart_rx`` pin bit by bit
and decodes ``uart_tx``, as the Amaranth-backed board (:mod:`.rtl_board`) does: divisor 4,
INFO reporting a clock of ``4 * baud``, ``prog_busy`` tied low. A compiled simulator runs some
million clocks a second, so whole (small) training sessions run on the gateware itself. The
harness sleeps in ``poll()`` while the unit is idle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NoReturn

from metaplast.protocol import Layout
from metaplast.vocabulary import UNIT_BAUD

from .serial_port import open_pty
from .verilator import compile_harness, verilator_version

__all__ = ["DIVISOR", "HARNESS", "board_executable", "harness_source", "serve_verilog_pty"]

DIVISOR = 4
"""Clocks per UART bit: the smallest the UART takes, as on the Amaranth-backed board."""

HARNESS = "verilog_board.cpp"
"""The harness's file name beside this module (package data: ``pyproject.toml``)."""
TOP = "metaplast_unit"


def harness_source() -> str:
    """The C++ harness, read from the installed package."""
    return resources.files(__package__).joinpath(HARNESS).read_text()


def board_executable(layout: Layout, *, baud: int = UNIT_BAUD) -> Path:
    """The compiled board for ``layout`` (built on first use, then cached).

    Its unit reports a clock of ``baud * DIVISOR`` so that INFO's baud rate is ``baud``.
    """
    from metaplast.gateware.top import DigitalUnitTop, verilog

    verilator_version()  # no Verilator: say so before the Verilog is generated
    clock_hz = max(1, baud) * DIVISOR
    top = DigitalUnitTop(layout, clock_hz=clock_hz, baud_divisor=DIVISOR)
    return compile_harness(verilog(top, name=TOP), harness_source(), top=TOP)


def serve_verilog_pty(
    layout: Layout, announce: Callable[[str], None], *, baud: int = UNIT_BAUD
) -> NoReturn:
    """Build (or find) the board, open a pty, announce it and become the board.

    The process execs the compiled harness, which inherits the pty (both ends, so that a host
    may close the port and come back): signals reach the simulator directly and nothing is
    left behind when it stops.
    """
    exe = board_executable(layout, baud=baud)
    master, slave = open_pty(announce)
    os.set_inheritable(master, True)
    os.set_inheritable(slave, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(exe, [str(exe), "--fd", str(master), "--divisor", str(DIVISOR)])
