"""A request's payload read from the frame buffer as a stream of little-endian elements.

Requests carry arrays of fields whose size depends on the op (hidden weights, updates, LUT
entries). The command engine reads such an array twice, once to check every value and once to
apply it, through the receive buffer's one-byte read port. :class:`PayloadReader` turns that
port into a stream of whole elements at one byte per clock, and shows every byte as it is read
too (for the fixed fields before the array, and for a CRC over the bytes).
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .framing import BANKS

__all__ = ["PayloadReader", "RawByte"]


def RawByte(bank_size: int) -> data.StructLayout:  # noqa: N802
    """A byte as read from the frame buffer, with its index in the frame."""
    return data.StructLayout({"data": 8, "index": range(bank_size)})


class PayloadReader(wiring.Component):
    """Reads bytes ``seek_to`` to ``end - 1`` of a frame and assembles them into elements.

    The buffer answers a cycle after it is addressed. The reader's address is a register: it
    reads ahead, up to three bytes, into a queue, and takes them from there. A seek is done in
    the cycle after it is asked for; the first byte can be taken four cycles after the seek.
    It takes one byte per cycle while ``run`` is set and no complete element is waiting, so a
    sink that is always ready receives an element every ``size`` cycles.

    Parameters
    ----------
    bank_size : int
        Bytes of one bank of the frame buffer (a power of two, as
        :class:`~.framing.FrameReceiver` makes it).
    max_bytes : int
        Bytes of the largest element.

    Members
    -------
    read_addr : ``Out(range(BANKS * bank_size))``
        Address of the frame buffer's read port.
    read_data : ``In(8)``
        The byte at ``read_addr`` of the previous cycle.
    bank : ``In(range(BANKS))``
        The bank that holds the frame.
    payload : ``Out(PayloadReader.Signature(bank_size, max_bytes))``
        The reading port.
    """

    class Signature(wiring.Signature):
        """The reading port, from the reader's side.

        Members
        -------
        seek : ``In(1)``
            Strobe: restart at byte ``seek_to``, with no element begun and ``count`` at zero
            (from the cycle after the next; ``done`` is low in the next).
        seek_to : ``In(range(bank_size))``
        end : ``In(range(bank_size + 1))``
            Index just past the last byte to read (a frame's length, or the end of fixed fields);
            taken at ``seek``.
        size : ``In(range(max_bytes + 1))``
            Bytes per element, 1 or more; set at ``seek`` at the latest and held while elements
            are read.
        signed : ``In(1)``
            Elements are two's complement: their value is sign-extended (else zero-extended).
        run : ``In(1)``
            Read while set.
        elements : ``Out(stream.Signature(signed(8 * max_bytes + 1)))``
            Whole elements, each one's value whatever its size.
        raw : ``Out(stream.Signature(RawByte(bank_size), always_ready=True))``
            Every byte in the cycle it is read, element or not.
        count : ``Out(range(bank_size + 1))``
            Elements taken since the last seek.
        done : ``Out(1)``
            Every byte up to ``end`` read and every element taken.
        partial : ``Out(1)``
            Bytes of an unfinished element are held: what was read is not a whole number of
            elements.
        """

        def __init__(self, bank_size: int, max_bytes: int) -> None:
            self.bank_size = bank_size
            self.max_bytes = max_bytes
            super().__init__(
                {
                    "seek": In(1),
                    "seek_to": In(range(bank_size)),
                    "end": In(range(bank_size + 1)),
                    "size": In(range(max_bytes + 1)),
                    "signed": In(1),
                    "run": In(1),
                    "elements": Out(stream.Signature(signed(8 * max_bytes + 1))),
                    "raw": Out(stream.Signature(RawByte(bank_size), always_ready=True)),
                    "count": Out(range(bank_size + 1)),
                    "done": Out(1),
                    "partial": Out(1),
                }
            )

        def __eq__(self, other: object) -> bool:
            return (
                type(other) is type(self)
                and other.bank_size == self.bank_size
                and other.max_bytes == self.max_bytes
            )

        def __repr__(self) -> str:
            return f"PayloadReader.Signature({self.bank_size}, {self.max_bytes})"

    def __init__(self, *, bank_size: int, max_bytes: int) -> None:
        if bank_size < 1 or bank_size & (bank_size - 1):
            raise ValueError(f"bank_size must be a power of two, not {bank_size}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self.bank_size = bank_size
        self.max_bytes = max_bytes
        super().__init__(
            {
                "read_addr": Out(range(BANKS * bank_size)),
                "read_data": In(8),
                "bank": In(range(BANKS)),
                "payload": Out(self.Signature(bank_size, max_bytes)),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        port = self.payload
        bits = (self.bank_size - 1).bit_length()

        # producer: the read address is a register (it was the end of a path through the
        # users' control and the take decision, into the buffer's read-first logic). Bytes are
        # read ahead into a queue of three, whoever takes them: a byte requested in one cycle
        # arrives in the next and is queued at the end of it
        ahead = Signal(range(self.bank_size + 1))  # the next byte to request
        ahead_last = Signal.like(ahead)  # end - 1, from the seek
        more = Signal()  # bytes are left to request
        arriving = Signal()  # read_data holds the byte requested in the previous cycle
        # a ring of four: where a byte goes and where the head is are registers, whatever
        # is taken in the same cycle
        queue = Array(Signal(8, name=f"queue_{i}") for i in range(4))
        put, get = Signal(2), Signal(2)
        queued = Signal(range(4))
        head = queue[get]
        request = Signal()
        m.d.comb += [
            request.eq(more & (queued + arriving <= 2)),
            self.read_addr.eq(Cat(ahead[:bits], self.bank)),
        ]

        # consumer: the bytes in order from the head of the queue
        index = Signal(range(self.bank_size + 1))  # of the byte at the head of the queue
        last = Signal.like(index)  # the index of the last byte to read (end - 1), from the seek
        at_end = Signal()  # index == end: every byte taken
        lane = Signal(range(self.max_bytes))  # where it goes in the element
        held = Signal(8 * self.max_bytes)
        full = Signal()  # a whole element waits in `held`
        # the seek itself is registered too, and done in the next cycle (the users' control
        # reached every register of the reader through it)
        seeking = Signal()
        seek_to = Signal.like(port.seek_to)
        end = Signal.like(port.end)
        m.d.sync += [seeking.eq(port.seek), seek_to.eq(port.seek_to), end.eq(port.end)]
        take = Signal()
        # the element's last lane, a register (`size` is set with the seek, a cycle before it
        # is done): the subtraction and the comparison with `lane` were in series with `take`
        # and every enable behind it, at 48 MHz on the iCE40
        size_less_1 = Signal.like(lane)
        m.d.sync += size_less_1.eq(port.size - 1)
        last_lane = lane == size_less_1
        m.d.comb += take.eq(
            (queued != 0) & ~seeking & port.run & ~at_end & (~full | port.elements.ready)
        )

        with m.If(seeking):
            m.d.sync += [
                ahead.eq(seek_to),
                ahead_last.eq(end - 1),
                more.eq(seek_to < end),
                arriving.eq(0),
                queued.eq(0),
                get.eq(put),
                index.eq(seek_to),
                last.eq(end - 1),
                at_end.eq(seek_to >= end),
                lane.eq(0),
                full.eq(0),
                port.count.eq(0),
            ]
        with m.Else():
            m.d.sync += arriving.eq(request)
            with m.If(request):
                m.d.sync += [ahead.eq(ahead + 1), more.eq(ahead != ahead_last)]
            # the head leaves with `take`, the arriving byte joins at the end
            with m.If(arriving):
                m.d.sync += [queue[put].eq(self.read_data), put.eq(put + 1)]
            with m.If(take):
                m.d.sync += get.eq(get + 1)
            m.d.sync += queued.eq(queued + arriving - take)

            with m.If(take):
                m.d.sync += [
                    held.word_select(lane, 8).eq(head),
                    index.eq(index + 1),
                    at_end.eq(index == last),
                    lane.eq(Mux(last_lane, 0, lane + 1)),
                ]
            with m.If(port.elements.valid & port.elements.ready):
                m.d.sync += port.count.eq(port.count + 1)
            with m.If(take & last_lane):
                m.d.sync += full.eq(1)
            with m.Elif(port.elements.ready):
                m.d.sync += full.eq(0)

        # the bytes above the element's size (left from a longer one) repeat its sign or are 0
        sign = Signal()
        for size in range(1, self.max_bytes + 1):
            with m.If(port.size == size):
                m.d.comb += sign.eq(port.signed & held[8 * size - 1])
        fill = sign.replicate(8)
        value = [Mux(port.size > i, held.word_select(i, 8), fill) for i in range(self.max_bytes)]
        m.d.comb += [
            port.elements.valid.eq(full),
            port.elements.payload.eq(Cat(*value, sign)),
            port.raw.valid.eq(take),
            port.raw.payload.data.eq(head),
            port.raw.payload.index.eq(index),
            port.done.eq(at_end & ~full & ~seeking),
            port.partial.eq(lane != 0),
        ]
        return m
