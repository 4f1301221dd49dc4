"""The digital unit on a board: its UART on the board's USB serial, its programming port on a
header, a heartbeat LED (the clock runs, the design is loaded) and an activity LED; a unit
with the crossbar port has its command channel on the board's ``xbar`` pins (a
:class:`~metaplast.gateware.crossbar_link.CrossbarLink` to a driver off the FPGA) or on a
lab's own driver inside the FPGA.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In

from metaplast.gateware.crossbar_link import CrossbarLink, longest_reply
from metaplast.gateware.crossbar_port import CrossbarPort
from metaplast.gateware.top import DigitalUnitTop

from .platforms import Board
from .pll import PLL

__all__ = ["LINK_TIMEOUT_S", "BoardTop"]

ACTIVITY_SECONDS = 0.05
"""The activity LED stays lit this long after a byte arrives or a device is programmed (to
within one tick of ``2**TICK_BITS`` clock cycles, 1.4 ms at 48 MHz)."""

TICK_BITS = 16

LINK_TIMEOUT_S = 0.5
"""How long the crossbar link waits for a driver's whole reply before it answers CRC: under the
host's one-second silence, so the host hears a transient error and resends rather than time
out; a driver whose slowest op (a program-and-verify) takes longer needs a longer one."""


class BoardTop(Elaboratable):
    """Wraps ``unit`` for ``board``; the platform must have the board's ``prog`` resource.

    ``clock_hz`` is the unit's clock (the LEDs' timing): the oscillator's, or with ``pll`` the
    PLL's, which then makes the ``sync`` domain.

    A unit built with ``crossbar`` needs a driver behind its command channel: ``driver``, a
    lab's component inside the FPGA with a member ``port`` of signature
    ``In(CrossbarPort.Signature())`` (it may request its own pins from the platform), or by
    default a :class:`~metaplast.gateware.crossbar_link.CrossbarLink` on the platform's
    ``xbar`` resource (:meth:`.Board.xbar_resource`) at the unit's baud divisor, waiting
    ``link_timeout_s`` for each reply.
    """

    def __init__(
        self,
        board: Board,
        unit: DigitalUnitTop,
        *,
        clock_hz: int | None = None,
        pll: PLL | None = None,
        driver: wiring.Component | None = None,
        link_timeout_s: float = LINK_TIMEOUT_S,
    ) -> None:
        self.board = board
        self.unit = unit
        self.clock_hz = clock_hz or board.clock_hz
        self.pll = pll
        if driver is not None:
            if unit.crossbar is None:
                raise ValueError("a crossbar driver needs a unit built with crossbar=TILE")
            members = driver.signature.members
            port = members["port"] if "port" in members else None
            if port != In(CrossbarPort.Signature()):
                raise TypeError(
                    f"the crossbar driver {driver!r} needs a member port: "
                    f"In(CrossbarPort.Signature()), not {port!r}"
                )
        elif unit.crossbar is not None:
            if link_timeout_s <= 0:
                raise ValueError(f"the link timeout must be positive, not {link_timeout_s} s")
            driver = CrossbarLink(
                divisor=unit.baud_divisor,
                max_reply=longest_reply(unit.crossbar, unit.layout.max_block),
                timeout=max(1, round(link_timeout_s * self.clock_hz)),
            )
        self.driver = driver

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.unit = unit = self.unit
        board = self.board
        if self.pll is not None:
            # the PLL drives the domain's clock and reset; the domain is the top level's
            m.domains.sync = ClockDomain("sync")
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
        if self.driver is not None:
            m.submodules.crossbar_driver = self.driver
            wiring.connect(m, unit.xbar, self.driver.port)
            if isinstance(self.driver, CrossbarLink):
                xbar = platform.request("xbar", 0, dir="-")
                m.d.comb += [
                    pin("o", xbar.tx).o.eq(self.driver.tx),
                    self.driver.rx.eq(pin("i", xbar.rx).i),
                ]
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
