"""8N1 UART receiver and transmitter with byte streams, and the baud divisor they take.

The host link is a plain serial line: one start bit, eight data bits LSB first, one stop bit, no
parity. ``divisor`` is the number of clock cycles per bit on both sides.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MAX_BAUD_ERROR", "MAX_DIVISOR_ERROR", "MIN_DIVISOR", "UARTRx", "UARTTx", "divisor_for"]

MIN_DIVISOR = 4
"""Fewer cycles per bit leave no room to find the middle of a bit."""

MAX_BAUD_ERROR = 0.03
"""The host baud error, either way, that :class:`UARTRx` tolerates at every divisor."""

MAX_DIVISOR_ERROR = 0.01
"""How far the rate a whole divisor makes may be from the baud asked for: a third of
:data:`MAX_BAUD_ERROR`, so the host's own clock error and the far receiver's sample point keep
the rest."""


def _check_divisor(divisor: int) -> None:
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"divisor must be an integer, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be at least {MIN_DIVISOR} cycles per bit, not {divisor}")


def divisor_for(clock_hz: int, baud: int) -> int:
    """Cycles per bit for ``baud`` at ``clock_hz``, rounded to nearest.

    Raises :exc:`ValueError`, naming the UART, the clock and the baud, when the rounded divisor
    misses ``baud`` by more than :data:`MAX_DIVISOR_ERROR` (1 %) or is below
    :data:`MIN_DIVISOR`: a build or a simulated board refuses such a rate before any tool runs.
    """
    if clock_hz <= 0 or baud <= 0:
        raise ValueError(f"clock_hz and baud must be positive, not {clock_hz} and {baud}")
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(
            f"the UART cannot run {baud} baud at {clock_hz} Hz: it needs "
            f"{clock_hz / baud:.2f} cycles per bit, at least {MIN_DIVISOR} are required"
        )
    error = abs(clock_hz / divisor - baud) / baud
    if error > MAX_DIVISOR_ERROR:
        raise ValueError(
            f"the UART cannot run {baud} baud at {clock_hz} Hz: divisor {divisor} gives "
            f"{clock_hz / divisor:.0f} baud, {error:.1%} off (more than {MAX_DIVISOR_ERROR:.0%})"
        )
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver: the ``rx`` pin to a stream of bytes.

    The line is sampled through a two-flop synchronizer. A falling edge starts a character; the
    start bit is checked again at its middle (a shorter low pulse is a glitch and is ignored), then
    every data bit and the stop bit are sampled at their middles.

    The middle is counted from the first clock edge that sees the line low, which comes 0 to 1
    cycle after the host's edge: a sample taken ``n`` cycles after it lands ``n`` to ``n + 1``
    cycles into the character. Bit ``i`` (0 the start bit) is therefore sampled
    ``((2 i + 1) divisor - 1) // 2`` cycles after it, so the sample's one-cycle spread is centred
    on the bit's middle (exactly for an odd divisor, half a cycle early for an even one; half a
    cycle late, as a plain ``divisor // 2`` would be, costs a host 3 % fast its last bits at
    divisor 4). A stop bit read low is read again one cycle later before it counts as a framing
    error: at small divisors a slow host's stop bit may begin just after its sample point, and a
    fast host's next start bit just after the cycle after. Measured with every byte value back
    to back and the start edges at every clock phase: at divisor 4 a host from 3.0 % slow to
    5.0 % fast is understood, at divisors 5 to 16 from 4 to 5 % either way
    (:data:`MAX_BAUD_ERROR` is the promise).

    A serial line cannot be paused, so the receiver cannot be stalled. A received byte is held on
    ``data`` (``valid`` high) until it is taken; if the next byte completes before that, the new
    byte is lost and ``overrun`` pulses. A consumer that keeps ``data.ready`` high never loses one.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    rx : ``In(1, init=1)``
        The serial input pin (asynchronous; idle high).
    data : ``Out(stream.Signature(8))``
        Received bytes.
    frame_error : ``Out(1)``
        One-cycle pulse when a stop bit is 0; that byte is not emitted.
    overrun : ``Out(1)``
        One-cycle pulse when a byte is lost because the previous one was not taken yet.
    """

    def __init__(self, divisor: int) -> None:
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__(
            {
                "rx": In(1, init=1),
                "data": Out(stream.Signature(8)),
                "frame_error": Out(1),
                "overrun": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()

        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        # The line has been high since the last start bit, so a low level in IDLE is a falling
        # edge; a line held low (a break, or after a framing error) starts nothing.
        armed = Signal(init=1)
        with m.If(rx):
            m.d.sync += armed.eq(1)

        timer = Signal(range(self.divisor))
        sample = timer == 0  # the middle of the current bit
        with m.If(~sample):
            m.d.sync += timer.eq(timer - 1)

        shreg = Signal(8)
        bit = Signal(range(8))
        stop_seen = Signal()  # the character ends well: emit its byte

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(armed & ~rx):
                    # the first sample comes timer + 1 cycles after this edge was seen
                    m.d.sync += [armed.eq(0), timer.eq((self.divisor - 1) // 2 - 1)]
                    m.next = "START"
            with m.State("START"):
                with m.If(sample):
                    with m.If(rx):
                        m.next = "IDLE"  # too short for a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(sample):
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], rx)),
                        timer.eq(self.divisor - 1),
                        bit.eq(bit + 1),
                    ]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(sample):
                    with m.If(rx):
                        m.d.comb += stop_seen.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "STOP_AGAIN"
            with m.State("STOP_AGAIN"):
                m.next = "IDLE"
                with m.If(rx):
                    m.d.comb += stop_seen.eq(1)
                with m.Else():
                    m.d.comb += self.frame_error.eq(1)

        with m.If(stop_seen):
            with m.If(self.data.valid & ~self.data.ready):
                m.d.comb += self.overrun.eq(1)
            with m.Else():
                m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]

        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: a stream of bytes to the ``tx`` pin.

    Every bit lasts exactly ``divisor`` cycles. The next byte is accepted in the last cycle of the
    stop bit, so a stream that keeps ``valid`` high is sent with no idle time between bytes.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least 4.

    Members
    -------
    data : ``In(stream.Signature(8))``
        Bytes to send.
    tx : ``Out(1, init=1)``
        The serial output pin (idle high).
    """

    def __init__(self, divisor: int) -> None:
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()

        shreg = Signal(10, init=0x3FF)  # stop bit, data bits, start bit; shifted out LSB first
        bits_left = Signal(range(11))
        timer = Signal(range(self.divisor))
        # what the counters are, in flip-flops that step with them: `ready` is then one gate
        # (compared in place, it was the end of the frame sender's path through `ready`)
        idle = Signal(init=1)  # bits_left == 0
        last_bit = Signal()  # bits_left == 1
        bit_done = Signal(init=1)  # timer == 0

        m.d.comb += [
            self.tx.eq(shreg[0]),
            self.data.ready.eq(idle | (last_bit & bit_done)),
        ]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [
                shreg.eq(Cat(Const(0, 1), self.data.payload, Const(1, 1))),
                bits_left.eq(10),
                idle.eq(0),
                last_bit.eq(0),
                timer.eq(self.divisor - 1),
                bit_done.eq(0),
            ]
        with m.Elif(~idle):
            with m.If(bit_done):
                m.d.sync += [
                    shreg.eq(Cat(shreg[1:], Const(1, 1))),
                    bits_left.eq(bits_left - 1),
                    idle.eq(last_bit),
                    last_bit.eq(bits_left == 2),
                    timer.eq(self.divisor - 1),
                    bit_done.eq(0),
                ]
            with m.Else():
                m.d.sync += [timer.eq(timer - 1), bit_done.eq(timer == 1)]

        return m
