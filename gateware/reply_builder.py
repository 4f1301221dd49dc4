"""The response to a request, byte by byte: ``op | 0x80``, seq, status, then the op's payload.

What a valid request's response carries follows from its op alone (INFO: the unit's parameters;
READ_HIDDEN, READ_COUNTERS: the values of a span of synapses; UPDATE: its level changes; the
others nothing), so the builder is told only the status, how many elements and, for UPDATE,
where its events are kept. :class:`~.framing.FrameSender` adds the framing and the CRC.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metaplast import protocol
from metaplast.protocol import Info, Layout, Op, Status

from .framing import BodyByte
from .retry_memory import RetryMemory
from .update_pipeline import AccessSignature

__all__ = ["ReplyBuilder", "ReplyOrder"]


def ReplyOrder(depth: int, max_block: int) -> data.StructLayout:  # noqa: N802
    """What to answer: the status and, for a payload of elements, how many (and for UPDATE,
    which event bank holds them)."""
    return data.StructLayout(
        {"status": range(max(Status) + 1), "elements": range(max_block + 1), "bank": range(depth)}
    )


class ReplyBuilder(wiring.Component):
    """Emits one response on ``body``, reading what it reports as it goes.

    The constant part of INFO is a ROM made from ``info``; the LUT's m* and CRC are read live, so
    INFO reports the table the unit holds. READ_HIDDEN and READ_COUNTERS read each synapse
    through ``access`` (``base`` is the first); an UPDATE's events come from the retry memory
    through ``events``, whether the UPDATE was applied just now or is being retried.

    Parameters
    ----------
    layout : Layout
        The unit's contract and sizes.
    info : Info
        The INFO payload (its m* and CRC fields are replaced by ``lut_mstar`` and ``lut_crc``).
    depth : int
        Event banks of the retry memory.

    Members
    -------
    start : ``In(1)``
        Strobe: answer the request with ``order`` (taken from the cycle after ``done`` on).
    order : ``In(ReplyOrder(depth, layout.max_block))``
        Read at ``start``.
    op : ``In(8)``
    seq : ``In(8)``
        The request's; held until ``done``.
    base : ``In(layout.addr_bits)``
        The first synapse a READ names.
    lut_mstar : ``In(16)``
    lut_crc : ``In(16)``
    access : ``Out(AccessSignature(...))``
        Reads only: ``addr`` is driven, nothing is written.
    events : ``Out(RetryMemory.ReplaySignature(depth, layout.max_block))``
    body : ``Out(stream.Signature(BodyByte))``
    done : ``Out(1)``
        Strobe, the cycle after the last byte was taken.
    """

    def __init__(self, layout: Layout, *, info: Info, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.layout = layout
        self.info = info
        self.depth = depth
        c = layout.contract
        super().__init__(
            {
                "start": In(1),
                "order": In(ReplyOrder(depth, layout.max_block)),
                "op": In(8),
                "seq": In(8),
                "base": In(layout.addr_bits),
                "lut_mstar": In(16),
                "lut_crc": In(16),
                "access": Out(AccessSignature(c, layout.addr_bits, layout.counter_width)),
                "events": Out(RetryMemory.ReplaySignature(depth, layout.max_block)),
                "body": Out(stream.Signature(BodyByte)),
                "done": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        L = self.layout  # noqa: N806
        m = Module()
        body = self.body
        order = Signal(self.order.shape())
        # the op decoded into registers (the op is held from `start`, read from OP on): decoded
        # in place, it was in series with `last`, `done` and the engine's control
        op_is = {op: Signal(name=f"is_{op.name.lower()}") for op in Op}
        m.d.sync += [op_is[op].eq(self.op == op) for op in Op]
        # whether the status is the last byte, a register too: valid from SEQ on (the op and
        # the order are held from `start`)
        payload_ops = (Op.INFO, Op.READ_HIDDEN, Op.READ_COUNTERS, Op.UPDATE, Op.UPDATE_LAYER)
        has_payload = Signal()
        no_payload = Signal()
        has_events = Signal()  # UPDATE or UPDATE_LAYER: the event count follows the status
        no_events = Signal()  # of the order, valid from SEQ on
        m.d.sync += [
            has_events.eq((self.op == Op.UPDATE) | (self.op == Op.UPDATE_LAYER)),
            no_events.eq(order.elements == 0),
            has_payload.eq(Cat(self.op == op for op in payload_ops).any()),
            no_payload.eq((order.status != Status.OK) | ~has_payload),
        ]

        info_bytes = self.info.pack()
        k = Signal(range(max(L.max_block, len(info_bytes)) + 1))  # byte of INFO, or element
        # the byte offered comes from registers, chosen by flip-flops: the header's bytes from
        # `header` and `header_last`, loaded as the state moves; an element's from `shifter`
        # (low byte first) and `final`; INFO's from `info_q` and `info_last` (chosen by the
        # state, the bytes were seven LUT levels from the state's register to the outlet's at
        # 48 MHz)
        header = Signal(8)
        header_last = Signal()
        shifter = Signal(32)  # the element being sent, low byte first
        left = Signal(range(5))  # its bytes not yet sent
        # elements after the k-th: counted down, so that the last byte is known without
        # comparing k with the order (a carry chain into `last` and the engine's `done`)
        rest = Signal.like(order.elements)
        # flags of `left` and `rest` in registers, set as they step: compared in place, they
        # were in series with `last`, the outlet's register and the counters' enables
        rest_zero = Signal()  # rest == 0
        left_one = Signal()  # left == 1
        final = Signal()  # left == 1 and rest == 0: the reply's last byte is in the shifter
        emitting = Signal()  # the state is EMIT
        # INFO's bytes: the constant ones from a ROM read port (its data a register), a cycle
        # later the live ones (m*, the LUT's CRC) put in their place, into `info_q` (the ROM's
        # multiplexer, in one cycle with the fields' comparisons, was a path of its own). The
        # ROM in block RAM where there is one (`rom_style`): in LUTs, its 107 bytes were seven
        # levels (an iCE40 EBR of 30; 2,304 synapses in block RAM still fit, in all 30)
        m.submodules.info_rom = rom = Memory(
            shape=8, depth=len(info_bytes), init=info_bytes, attrs={"rom_style": "block"}
        )
        rom_read = rom.read_port()
        # its address a copy of k of its own (k's fan-out to the events and the memories was
        # in series with the ROM's multiplexers)
        info_k = Signal(range(len(info_bytes) + 1))
        m.d.comb += rom_read.addr.eq(info_k)
        live = []  # (k is at a live byte, a register; that byte)
        for offset, field in (
            (Info.LUT_MSTAR_OFFSET, self.lut_mstar),
            (Info.LUT_CRC_OFFSET, self.lut_crc),
        ):
            for half in (0, 1):
                at = Signal(name=f"at_{offset + half}")
                m.d.sync += at.eq(info_k == offset + half)
                live.append((at, field[8 * half : 8 * half + 8]))
        # the ROM's data into a register before the live bytes' choice (the block RAM's
        # clock-to-out, 5.6 ns on the ECP5, and the choice were the 100 MHz unit's critical
        # path); `at_` stays valid, since k holds until its byte is taken
        rom_q = Signal(8)
        info_byte = Signal(8)
        m.d.comb += info_byte.eq(rom_q)
        for at, byte in live:
            with m.If(at):
                m.d.comb += info_byte.eq(byte)
        info_q = Signal(8)
        ready1 = Signal()  # the ROM's data and the `at_` flags are those of k
        ready2 = Signal()  # rom_q holds the byte at k
        fresh = Signal()  # info_q holds the byte at k
        m.d.sync += [
            rom_q.eq(rom_read.data),
            info_q.eq(info_byte),
            ready1.eq(1),
            ready2.eq(ready1),
            fresh.eq(ready2),
        ]
        info_last = Signal()  # k is INFO's last byte: valid with `fresh`, as `info_q` is
        m.d.sync += info_last.eq(info_k == len(info_bytes) - 1)

        # `body.valid` from flip-flops set and cleared with the state's changes (decoded from
        # the state, it was in series with `sent` and the state's own next value): `bvalid` in
        # every state that offers a byte but INFO, where `fresh` tells
        bvalid, in_info = Signal(), Signal()
        # the state moves, and the counters step, a cycle after a byte is taken (`sent_q`, a
        # register; the byte is not offered again in that cycle): `sent` itself was in series
        # with the state's next value and the counters' enables. A byte every two cycles at
        # most; the UART takes ten bit times for each
        sent_q = Signal()
        m.d.comb += [
            body.valid.eq((bvalid | (in_info & fresh)) & ~sent_q),
            body.payload.byte.eq(Mux(in_info, info_q, Mux(emitting, shifter[:8], header))),
            body.payload.last.eq(Mux(in_info, info_last, Mux(emitting, final, header_last))),
        ]
        sent = body.valid & body.ready
        m.d.sync += sent_q.eq(sent)
        # `done` a cycle after the last byte is taken, a register: `last` is the end of the
        # builder's own decoding, which went on into the engine's state
        m.d.sync += self.done.eq(sent & body.payload.last)
        m.d.comb += [
            self.events.bank.eq(order.bank),
            self.events.index.eq(k),
        ]
        fetch_addr = (self.base + k)[: L.addr_bits]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        order.eq(self.order),
                        bvalid.eq(1),
                        header.eq(self.op | protocol.RESPONSE),
                        header_last.eq(0),
                    ]
                    m.next = "OP"

            with m.State("OP"):
                m.d.sync += [
                    k.eq(0),
                    info_k.eq(0),
                    rest.eq(order.elements - 1),
                    rest_zero.eq(order.elements == 1),
                ]
                with m.If(sent_q):
                    m.d.sync += header.eq(self.seq)
                    m.next = "SEQ"

            with m.State("SEQ"):
                with m.If(sent_q):
                    m.d.sync += [header.eq(order.status), header_last.eq(no_payload)]
                    m.next = "STATUS"

            with m.State("STATUS"):
                with m.If(sent_q):
                    m.d.sync += bvalid.eq(0)
                    with m.If(no_payload):
                        m.next = "IDLE"
                    with m.Elif(op_is[Op.INFO]):
                        m.d.sync += in_info.eq(1)
                        m.next = "INFO"
                    with m.Elif(has_events):
                        m.d.sync += [bvalid.eq(1), header.eq(order.elements[:8])]
                        m.next = "COUNT_LO"
                    with m.Else():
                        m.next = "FETCH"

            with m.State("INFO"):
                with m.If(sent_q):
                    m.d.sync += [
                        info_k.eq(info_k + 1),
                        ready1.eq(0),
                        ready2.eq(0),
                        fresh.eq(0),
                    ]
                    with m.If(info_last):
                        m.d.sync += in_info.eq(0)
                        m.next = "IDLE"

            # UPDATE: the event count, u16
            with m.State("COUNT_LO"):
                with m.If(sent_q):
                    m.d.sync += [
                        header.eq(Cat(order.elements[8:], Const(0, 8))[:8]),
                        header_last.eq(no_events),
                    ]
                    m.next = "COUNT_HI"

            with m.State("COUNT_HI"):
                with m.If(sent_q):
                    m.d.sync += bvalid.eq(0)
                    m.next = "FETCH"
                    with m.If(no_events):
                        m.next = "IDLE"

            # each element: address it, load it three cycles later (the command engine registers
            # the address on its way to the memories, their outputs are registered), send it
            with m.State("FETCH"):
                m.d.comb += self.access.addr.eq(fetch_addr)
                m.next = "SETTLE"

            with m.State("SETTLE"):
                m.d.comb += self.access.addr.eq(fetch_addr)
                m.next = "OUTPUT"

            with m.State("OUTPUT"):
                m.d.comb += self.access.addr.eq(fetch_addr)
                m.next = "LOAD"

            with m.State("LOAD"):
                m.d.comb += self.access.addr.eq(fetch_addr)

                def load(value: Value, size: int) -> None:
                    m.d.sync += [
                        shifter.eq(value),
                        left.eq(size),
                        left_one.eq(size == 1),
                        final.eq(rest_zero if size == 1 else 0),
                    ]

                with m.If(op_is[Op.READ_HIDDEN]):
                    load(self.access.rdata.as_signed(), L.hidden_bytes)
                with m.Elif(op_is[Op.READ_COUNTERS]):
                    load(self.access.count, 2)
                with m.Else():
                    load(self.events.data, Layout.EVENT_BYTES)
                m.d.sync += [emitting.eq(1), bvalid.eq(1)]
                m.next = "EMIT"

            with m.State("EMIT"):
                with m.If(sent_q):
                    with m.If(final):
                        m.d.sync += [emitting.eq(0), bvalid.eq(0)]
                        m.next = "IDLE"
                    with m.Elif(left_one):
                        m.d.sync += [emitting.eq(0), bvalid.eq(0)]
                        m.next = "FETCH"

        # EMIT's counters and shifter step on `emitting`, a flip-flop beside the state's (the
        # state's decoding into `sent` and on into their enables was a path of its own)
        with m.If(emitting & sent_q):
            m.d.sync += [
                shifter.eq(shifter >> 8),
                left.eq(left - 1),
                left_one.eq(left == 2),
                final.eq((left == 2) & rest_zero),
            ]
            with m.If(~final & left_one):
                m.d.sync += [k.eq(k + 1), rest.eq(rest - 1), rest_zero.eq(rest == 1)]

        return m
