"""The Verilog-backed simulated board: the unit's generated Verilog under Verilator, on a pty.

The same Verilog that ``metaplast gateware`` writes, compiled with a small C++ harness
(``verilog_board.cpp``, shipped beside this module) that drives the ``uart_rx`` pin bit by bit
and decodes ``uart_tx``, as the Amaranth-backed board (:mod:`.rtl_board`) does: divisor 4,
INFO reporting a clock of ``4 * baud``, ``prog_busy`` tied low. A compiled simulator runs some
million clocks a second, so whole (small) training sessions run on the gateware itself. The
harness sleeps in ``poll()`` while the unit is idle.

With an array (``DigitalUnitTop(..., crossbar=tile)``) this process stays as the array's
driver: the harness sends it the programming port's operations and the command channel's
requests over a socket, and :class:`~metaplast.firmware_sim.crossbar.port_commands.PortCommands`
answers them, the code that serves the model board's and the RTL board's arrays.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from metaplast.errors import ConfigError
from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.crossbar.port_commands import PortCommands
from metaplast.protocol import Layout, Op
from metaplast.vocabulary import UNIT_BAUD

from .serial_port import open_pty
from .verilator import compile_harness, verilator_version

__all__ = [
    "DIVISOR",
    "HARNESS",
    "XBAR_PROGRAM",
    "XBAR_REQUEST",
    "board_executable",
    "harness_source",
    "serve_verilog_pty",
]

DIVISOR = 4
"""Clocks per UART bit: the smallest the UART takes, as on the Amaranth-backed board."""

HARNESS = "verilog_board.cpp"
"""The harness's file name beside this module (package data: ``pyproject.toml``)."""
TOP = "metaplast_unit"

XBAR_PROGRAM = ord("P")
"""Tag of a harness message of programming operations: ``<IBB`` (address, device, level) each."""
XBAR_REQUEST = ord("R")
"""Tag of a harness message with one crossbar request (op and payload); the answer is one
message of status and payload."""
OPERATION = struct.Struct("<IBB")
MESSAGE_BYTES = 1 << 20
"""Longer than any message either way (the harness's buffer is as long)."""


def harness_source() -> str:
    """The C++ harness, read from the installed package."""
    return resources.files(__package__).joinpath(HARNESS).read_text()


def board_executable(
    layout: Layout,
    *,
    baud: int = UNIT_BAUD,
    tile: int | None = None,
    single_port: bool = False,
) -> Path:
    """The compiled board for ``layout`` (built on first use, then cached).

    Its unit reports a clock of ``baud * DIVISOR`` so that INFO's baud rate is ``baud``.
    ``tile``: the unit's crossbar port for an array of tiles of at most that many rows or
    columns (the harness then talks to a driver), or None for a unit without the port.
    ``single_port``: the unit with single-port memories (the SPRAM configuration).
    """
    from metaplast.gateware.top import DigitalUnitTop, verilog

    verilator_version()  # no Verilator: say so before the Verilog is generated
    clock_hz = max(1, baud) * DIVISOR
    top = DigitalUnitTop(
        layout, clock_hz=clock_hz, baud_divisor=DIVISOR, crossbar=tile, single_port=single_port
    )
    defines = () if tile is None else (
        "METAPLAST_XBAR", f"XBAR_PROGRAM={XBAR_PROGRAM}", f"XBAR_REQUEST={XBAR_REQUEST}"
    )  # fmt: skip
    return compile_harness(verilog(top, name=TOP), harness_source(), top=TOP, defines=defines)


def serve_verilog_pty(
    layout: Layout,
    announce: Callable[[str], None],
    *,
    baud: int = UNIT_BAUD,
    array: ArrayDriver | None = None,
    single_port: bool = False,
) -> None:
    """Build (or find) the board, open a pty, announce it and serve until stopped.

    Without an array the process execs the compiled harness, which inherits the pty (both
    ends, so that a host may close the port and come back): signals reach the simulator
    directly and nothing is left behind when it stops. With one it starts the harness as a
    child with a socket to it and serves the array until the harness ends (then a
    ConfigError unless it ended cleanly) or this process is stopped (then it stops the
    harness; a harness whose parent dies exits too).
    """
    tile = None if array is None else array.tile
    exe = board_executable(layout, baud=baud, tile=tile, single_port=single_port)
    master, slave = open_pty(announce)
    args = [str(exe), "--fd", str(master), "--divisor", str(DIVISOR)]
    if array is None:
        os.set_inheritable(master, True)
        os.set_inheritable(slave, True)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(exe, args)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    harness = subprocess.Popen(
        [*args, "--port", str(theirs.fileno())], pass_fds=(master, slave, theirs.fileno())
    )
    os.close(master)
    os.close(slave)
    theirs.close()
    try:
        with ours:
            serve_array(ours, PortCommands(array, synapses=layout.synapses,
                                           max_block=layout.max_block))  # fmt: skip
    finally:
        if harness.poll() is None:
            harness.terminate()
        code = harness.wait()
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):  # Ctrl-C and kill reach both
        raise ConfigError(f"the verilog board's harness stopped (exit {code})")


def serve_array(sock: socket.socket, commands: PortCommands) -> None:
    """Answer the harness's messages with ``commands`` until it closes its socket."""
    driver = commands.driver
    while message := sock.recv(MESSAGE_BYTES):
        tag, body = message[0], message[1:]
        if tag == XBAR_PROGRAM:
            for operation in OPERATION.iter_unpack(body):
                driver.device_operation(*operation)
        elif tag == XBAR_REQUEST:
            status, answer = commands.answer(Op(body[0]), body[1:])
            try:
                sock.send(bytes((status,)) + answer)
            except (BrokenPipeError, ConnectionResetError):
                return  # the harness ended while we answered
        else:
            raise ConfigError(f"the verilog board's harness sent an unknown message {tag:#x}")
