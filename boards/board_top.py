"""The digital unit on a board: its UART on the board's USB serial, its programming port on a
header, a heartbeat LED (the clock runs, the design is loaded) and an activity LED.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from metaplast.gateware.top import DigitalUnitTop

from .platforms import Board
from .pll import PLL

__all__ = ["BoardTop"]

ACTIVITY_SECONDS = 0.05
"""The activity LED stays lit this long after a byte arrives or a device is programmed (to
within one tick of ``2**TICK_BITS`` clock cycles, 1.4 ms at 48 MHz)."""

TICK_BITS = 16


class BoardTop(Elaboratable):
    """Wraps ``unit`` for ``board``; the platform must have the board's ``prog`` resource.

    ``clock_hz`` is the unit's clock (the LEDs' timing): the oscillator's, or with ``pll`` the
    PLL's, which then makes the ``sync`` domain.
    """

    def __init__(
        self,
        board: Board,
        unit: DigitalUnitTop,
        *,
        clock_hz: int | None = None,
        pll: PLL | None = None,
    ) -> None:
        self.board = board
        self.unit = unit
        self.clock_hz = clock_hz or board.clock_hz
        self.pll = pll

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.unit = unit = self.unit
        board = self.board
        if self.pll is not None:
            m.submodules.pll = self.pll

        def pin(direction: str, resource: object) -> io.Buffer:
            buffer = io.Buffer(direction, resource)
            m.submodules += buffer
            return buffer

        uart = platform.request("uart", 0, dir="-")
        prog = platform.request("prog", 0, dir="-")
        m.d.comb += [
            unit.uart_rx.eq(pin("i", uart.rx).i),
            pin("o", uart.tx).o.eq(unit.uart_tx),
            pin("o", prog.addr).o.eq(unit.prog_addr),
            pin("o", prog.level).o.eq(unit.prog_level),
            pin("o", prog.device).o.eq(unit.prog_device),
            pin("o", prog.strobe).o.eq(unit.prog_strobe),
        ]
        # the programming circuit runs on its own clock
        m.submodules.busy_sync = FFSynchronizer(pin("i", prog.busy).i, unit.prog_busy)
        for res in board.extra_resources:
            m.d.comb += pin("o", platform.request(res.name, res.number, dir="-")).o.eq(1)

        # a free-running counter whose top bit toggles about once a second
        beat = Signal(max(1, self.clock_hz.bit_length() - 1))
        m.d.sync += beat.eq(beat + 1)
        led = platform.request("led", board.heartbeat_led, dir="-")
        m.d.comb += pin("o", led).o.eq(beat[-1])

        # the activity LED counts the heartbeat's ticks of 2**16 cycles, not cycles: a 20-bit
        # down counter was a carry chain that nextpnr split into pieces (37 ns on the iCE40)
        tick_bits = min(TICK_BITS, len(beat))
        tick = Signal()
        m.d.sync += tick.eq(beat[:tick_bits].all())
        lit = max(1, round(self.clock_hz * ACTIVITY_SECONDS / 2**tick_bits))
        hold = Signal(range(lit + 1))
        with m.If(~unit.uart_rx | unit.prog_strobe):
            m.d.sync += hold.eq(lit)
        with m.Elif(tick & (hold != 0)):
            m.d.sync += hold.eq(hold - 1)
        led = platform.request("led", board.activity_led, dir="-")
        m.d.comb += pin("o", led).o.eq(hold != 0)
        return m
