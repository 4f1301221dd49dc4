"""The RTL-backed simulated board: the gateware itself, under the Amaranth simulator, on a pty.

Bytes from the host are driven bit by bit into the top level's ``uart_rx`` pin and the bits on
``uart_tx`` are decoded back into bytes for the host, so the real UART, framing, command engine
and update pipeline answer: nothing of the protocol is re-implemented here. It runs at the
simulator's speed (a few thousand clock cycles per second), which makes it a board for small
sessions, tiles and hybrid runs, and the reference that the fast model-backed board is
checked against.
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from amaranth.sim import Simulator

from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.crossbar.port_commands import PortCommands
from metaplast.gateware.top import DigitalUnitTop
from metaplast.protocol import Layout
from metaplast.vocabulary import UNIT_BAUD

from .crossbar_bench import PortBench
from .serial_port import open_pty
from .uart_pins import UartPins

__all__ = ["serve_rtl_pty"]

DIVISOR = 4
"""Clocks per UART bit: the smallest the UART takes, the fastest link in simulation."""


def serve_rtl_pty(
    layout: Layout,
    announce: Callable[[str], None],
    *,
    baud: int = UNIT_BAUD,
    array: ArrayDriver | None = None,
    single_port: bool = False,
) -> None:
    """Serve the gateware on a new pty until the process is stopped.

    INFO reports a clock of ``baud * DIVISOR`` so that its baud rate is ``baud``. ``array``:
    the array behind the unit's crossbar port (a :class:`PortBench` serves its command channel
    and takes the programming port's strobes), or None for a unit without the port.
    ``single_port``: the unit with single-port memories (the iCE40 UP's SPRAM configuration).
    """
    clock_hz = max(1, baud) * DIVISOR
    tile = None if array is None else array.tile
    top = DigitalUnitTop(
        layout, clock_hz=clock_hz, baud_divisor=DIVISOR, crossbar=tile, single_port=single_port
    )
    inbox: collections.deque[int] = collections.deque()
    wake = threading.Event()

    def reader() -> None:
        while True:
            select.select([master], [], [])
            try:
                data = os.read(master, 4096)
            except OSError:
                time.sleep(0.05)
                continue
            inbox.extend(data)
            wake.set()

    quiet = [0]  # bit times since the last byte in either direction

    def on_byte(byte: int) -> None:
        os.write(master, bytes((byte,)))
        quiet[0] = 0

    pins = UartPins(top.uart_rx, top.uart_tx, DIVISOR, on_byte=on_byte)

    async def host_side(ctx: Any) -> None:
        while True:
            if inbox:
                await pins.send(ctx, bytes((inbox.popleft(),)))
                quiet[0] = 0
                continue
            await pins.idle(ctx, 1)
            quiet[0] += 1
            # nothing in flight for a while: wait for the host instead of spinning
            if quiet[0] > 200 and ctx.get(top.engine.idle):
                wake.clear()
                if not inbox:
                    wake.wait(0.05)

    sim = Simulator(top)
    sim.add_clock(1 / clock_hz)
    sim.add_testbench(host_side)
    sim.add_testbench(pins.receive, background=True)
    if array is not None:
        commands = PortCommands(array, synapses=layout.synapses, max_block=layout.max_block)
        bench = PortBench(top, commands)
        sim.add_testbench(bench.serve, background=True)
        sim.add_testbench(bench.strobes, background=True)
    master, slave = open_pty(announce)
    threading.Thread(target=reader, daemon=True).start()
    try:
        sim.run()
    finally:
        os.close(master)
        os.close(slave)
