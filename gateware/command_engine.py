"""The command engine: executes one received frame at a time and builds its response.

A frame is checked completely before anything changes: its CRC (by the receiver), its op, its
length against the op's layout, its address range, and every value it carries (a first pass
over the buffered payload). Only a frame that passes is applied (a second pass), so an invalid
frame is answered with its :class:`~metaplast.protocol.Status` and changes no state.

A byte-identical repetition of one of the last two state-changing commands (same op, seq and
CRC) is a retry: it is answered from the stored response (for UPDATE, the events kept in its
bank of the event buffer) and not applied again. Two, so that a host may keep two frames in
flight (the receiver has two buffers) and still retry either.

Layouts and codes are those of :mod:`metaplast.protocol`; ``docs/protocol.md`` describes them.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import crc, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metaplast import protocol
from metaplast.protocol import RETRY_DEPTH, Info, Layout, Op, Status

from .framing import BodyByte, descriptor_layout
from .meta_lut import LoadSignature
from .update_pipeline import AccessSignature, EventLayout, UpdateLayout

__all__ = ["CommandEngine"]

# where the payload of each op starts in the frame buffer (index 0 is op, 1 is seq)
_PAYLOAD = 2
_HEADER_BYTES = 8  # the fixed fields read before the elements: start u32 and count/seed u32
# ops that carry an array of elements: the bytes of fixed fields before it
_ARRAY_HEAD = {Op.WRITE_HIDDEN: 4, Op.UPDATE: 8, Op.LOAD_LUT: 2}


class CommandEngine(wiring.Component):
    """Parameters: the unit's :class:`~metaplast.protocol.Layout`, the receive buffer's bank
    size, and the clock and baud divisor that INFO reports."""

    def __init__(self, layout: Layout, *, bank_size: int, clock_hz: int, baud_divisor: int) -> None:
        if bank_size < layout.max_request:
            raise ValueError(
                f"receive banks of {bank_size} bytes cannot hold requests of {layout.max_request}"
            )
        self.layout = layout
        self.bank_size = bank_size
        self.info = Info.from_layout(layout, clock_hz=clock_hz, baud_divisor=baud_divisor)
        c = layout.contract
        self.addr_bits = layout.addr_bits
        super().__init__(
            {
                "frame": In(stream.Signature(descriptor_layout(bank_size))),
                "read_addr": Out(range(2 * bank_size)),
                "read_data": In(8),
                "release": Out(1),
                "body": Out(stream.Signature(BodyByte)),
                "update": Out(stream.Signature(UpdateLayout(c, self.addr_bits))),
                "event_valid": In(1),
                "event": In(EventLayout(c, self.addr_bits)),
                "pipeline_busy": In(1),
                "access": Out(AccessSignature(c, self.addr_bits, layout.counter_width)),
                "lut": Out(LoadSignature(c)),
                "lut_mstar": In(16),
                "lut_crc": In(16),
            }
        )
        self.idle = Signal()
        """No frame in execution or waiting (for simulations that sleep while nothing happens)."""

    def elaborate(self, platform: object) -> Module:
        L = self.layout  # noqa: N806
        c = L.contract
        m = Module()

        desc = Signal(descriptor_layout(self.bank_size))
        status = Signal(8)
        hdr = Signal(8 * _HEADER_BYTES)
        start = hdr[:32]
        count16 = hdr[32:48]
        seed = hdr[32:64]
        lut_mstar_field = hdr[:16]
        plen = Signal(range(self.bank_size + 1))
        m.d.comb += plen.eq(desc.length - _PAYLOAD)

        # the payload as a stream of little-endian elements -----------------------------------
        esize = max(L.hidden_bytes, L.update_bytes, L.lut_bytes)
        idx = Signal(range(self.bank_size + 1))
        lane = Signal(range(esize))
        acc = Signal(8 * esize)
        elem_full = Signal()
        elem_taken = Signal()
        count = Signal(range(max(self.bank_size, L.synapses, c.lut_entries) + 1))
        in_stream = Signal()
        consume = Signal()
        esize_now = Signal(range(esize + 1))
        m.d.comb += consume.eq(in_stream & (idx < desc.length) & (~elem_full | elem_taken))
        next_idx = Mux(consume, idx + 1, idx)
        m.d.comb += self.read_addr.eq(Cat(next_idx[: (self.bank_size - 1).bit_length()], desc.bank))
        completing = consume & (lane == esize_now - 1)
        with m.If(consume):
            m.d.sync += [
                acc.word_select(lane, 8).eq(self.read_data),
                idx.eq(idx + 1),
                lane.eq(Mux(lane == esize_now - 1, 0, lane + 1)),
            ]
        with m.If(elem_full & elem_taken):
            m.d.sync += count.eq(count + 1)
        with m.If(completing):
            m.d.sync += elem_full.eq(1)
        with m.Elif(elem_taken):
            m.d.sync += elem_full.eq(0)
        stream_done = (idx == desc.length) & ~elem_full

        hidden_value = acc[: 8 * L.hidden_bytes].as_signed()
        update_value = acc[: 8 * L.update_bytes].as_signed()
        lut_value = acc[:16]
        update_limit = 1 << (c.update_width - 1)

        op_is = {op: desc.op == op for op in Op}
        first_element = Signal(range(self.bank_size))
        for op, head in _ARRAY_HEAD.items():
            with m.If(op_is[op]):
                m.d.comb += first_element.eq(_PAYLOAD + head)
        with m.If(op_is[Op.WRITE_HIDDEN]):
            m.d.comb += esize_now.eq(L.hidden_bytes)
        with m.Elif(op_is[Op.UPDATE]):
            m.d.comb += esize_now.eq(L.update_bytes)
        with m.Else():
            m.d.comb += esize_now.eq(L.lut_bytes)

        element_bad = Signal()
        with m.If(op_is[Op.WRITE_HIDDEN]):
            m.d.comb += element_bad.eq((hidden_value < c.w_min) | (hidden_value > c.w_max))
        with m.Elif(op_is[Op.UPDATE]):
            m.d.comb += element_bad.eq(
                (update_value < -update_limit) | (update_value >= update_limit)
            )
        with m.Else():
            m.d.comb += element_bad.eq(lut_value > c.meta_one)

        # the last two state-changing commands, for retries -----------------------------------
        # entry 0 is the newest; an UPDATE's entry also names the event bank holding its reply
        depth = RETRY_DEPTH
        last_valid = Signal(depth)
        last_op = [Signal(8, name=f"last_op_{i}") for i in range(depth)]
        last_seq = [Signal(8, name=f"last_seq_{i}") for i in range(depth)]
        last_crc = [Signal(16, name=f"last_crc_{i}") for i in range(depth)]
        last_bank = Signal(depth)
        last_events = [
            Signal(range(L.max_block + 1), name=f"last_events_{i}") for i in range(depth)
        ]
        mutating = Signal()
        m.d.comb += mutating.eq(Cat(op_is[op] for op in protocol.MUTATING).any())
        hits = Signal(depth)
        for i in range(depth):
            m.d.comb += hits[i].eq(
                last_valid[i]
                & mutating
                & (desc.op == last_op[i])
                & (desc.seq == last_seq[i])
                & (desc.crc == last_crc[i])
            )
        hit = Signal(range(depth))  # the newest matching entry
        for i in reversed(range(depth)):
            with m.If(hits[i]):
                m.d.comb += hit.eq(i)

        # level-change events of the last two UPDATEs, one bank each --------------------------
        bank_depth = 1 << (L.max_block - 1).bit_length() if L.max_block > 1 else 1
        m.submodules.events = events = Memory(shape=32, depth=2 * bank_depth, init=[])
        ev_wr = events.write_port()
        ev_rd = events.read_port()
        ev_count = Signal(range(L.max_block + 1))
        ev_bank = Signal()  # where the UPDATE being applied writes its events
        reply_bank = Signal()  # where the reply being sent reads them

        def remember() -> list:
            """The command just applied becomes entry 0; the others move down."""
            stmts = [
                last_valid.eq(Cat(1, last_valid[:-1])),
                last_bank.eq(Cat(ev_bank, last_bank[:-1])),
            ]
            for i in reversed(range(1, depth)):
                stmts += [
                    last_op[i].eq(last_op[i - 1]),
                    last_seq[i].eq(last_seq[i - 1]),
                    last_crc[i].eq(last_crc[i - 1]),
                    last_events[i].eq(last_events[i - 1]),
                ]
            stmts += [
                last_op[0].eq(desc.op),
                last_seq[0].eq(desc.seq),
                last_crc[0].eq(desc.crc),
                last_events[0].eq(ev_count),
            ]
            return stmts

        capturing = Signal()
        ev_offset, ev_old, ev_new = Signal(16), Signal(8), Signal(8)
        m.d.comb += [
            ev_offset.eq(self.event.addr - start[: self.addr_bits]),
            ev_old.eq(self.event.old),
            ev_new.eq(self.event.new),
            ev_wr.en.eq(capturing & self.event_valid),
            ev_wr.addr.eq(Cat(ev_count[: (bank_depth - 1).bit_length()], ev_bank)),
            ev_wr.data.eq(Cat(ev_offset, ev_old, ev_new)),
        ]
        with m.If(capturing & self.event_valid):
            m.d.sync += ev_count.eq(ev_count + 1)

        # the LUT's identity is the CRC of the entry bytes actually written
        m.submodules.lut_crc = lut_crc = crc.Processor(protocol.CRC(8))

        # response bytes ----------------------------------------------------------------------
        reply_none, reply_info, reply_hidden, reply_counts, reply_events = range(5)
        reply = Signal(range(5))
        k = Signal(range(max(L.max_block, len(self.info.pack())) + 1))
        shifter = Signal(32)
        left = Signal(range(5))
        info_rom = Array(Const(b, 8) for b in self.info.pack())
        info_byte = Signal(8)
        m.d.comb += info_byte.eq(info_rom[k])
        for offset, field in (
            (Info.LUT_MSTAR_OFFSET, self.lut_mstar),
            (Info.LUT_CRC_OFFSET, self.lut_crc),
        ):
            with m.If(k == offset):
                m.d.comb += info_byte.eq(field[:8])
            with m.If(k == offset + 1):
                m.d.comb += info_byte.eq(field[8:])
        info_len = len(self.info.pack())
        elements = Signal(range(L.max_block + 1))  # of the reply
        sent = self.body.valid & self.body.ready

        range_end = Signal(34)
        m.d.comb += range_end.eq(start + count)
        read_end = Signal(34)
        m.d.comb += read_end.eq(start + count16)

        m.d.comb += ev_rd.addr.eq(Cat(k[: (bank_depth - 1).bit_length()], reply_bank))

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.frame.ready.eq(1)
                with m.If(self.frame.valid):
                    m.d.sync += [desc.eq(self.frame.payload), reply.eq(reply_none)]
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.If(desc.status != Status.OK):
                    m.d.sync += status.eq(desc.status)
                    m.next = "RESPOND"
                with m.Elif(~Cat(op_is.values()).any()):
                    m.d.sync += status.eq(Status.OPCODE)
                    m.next = "RESPOND"
                with m.Elif(hits.any()):
                    m.d.sync += [
                        status.eq(Status.OK),
                        reply.eq(Mux(op_is[Op.UPDATE], reply_events, reply_none)),
                        elements.eq(Array(last_events)[hit]),
                        reply_bank.eq(last_bank.bit_select(hit, 1)),
                    ]
                    m.next = "RESPOND"
                with m.Else():
                    m.d.sync += [idx.eq(_PAYLOAD), count.eq(0)]
                    m.next = "HEADER"

            with m.State("HEADER"):
                # idx is read one cycle ahead: shift in the byte of the previous address
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx > _PAYLOAD):
                    m.d.sync += hdr.eq(Cat(hdr[8:], self.read_data))
                with m.If(idx == _PAYLOAD + _HEADER_BYTES):
                    m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += [status.eq(Status.OK), lane.eq(0), count.eq(0)]
                with m.Switch(desc.op):
                    with m.Case(Op.INFO):
                        with m.If(plen != 0):
                            m.d.sync += status.eq(Status.LENGTH)
                        with m.Else():
                            m.d.sync += reply.eq(reply_info)
                        m.next = "RESPOND"
                    with m.Case(Op.READ_HIDDEN, Op.READ_COUNTERS):
                        with m.If((plen != 6) | (count16 == 0) | (count16 > L.max_block)):
                            m.d.sync += status.eq(Status.LENGTH)
                        with m.Elif(read_end > L.synapses):
                            m.d.sync += status.eq(Status.RANGE)
                        with m.Else():
                            m.d.sync += [
                                reply.eq(Mux(op_is[Op.READ_HIDDEN], reply_hidden, reply_counts)),
                                elements.eq(count16),
                            ]
                        m.next = "RESPOND"
                    with m.Case(*_ARRAY_HEAD):
                        lut_size = _ARRAY_HEAD[Op.LOAD_LUT] + L.lut_bytes * c.lut_entries
                        too_short = Mux(
                            op_is[Op.LOAD_LUT],
                            plen != lut_size,
                            plen < first_element - _PAYLOAD,
                        )
                        m.d.sync += idx.eq(first_element)
                        m.next = "PRIME"
                        with m.If(too_short):
                            m.d.sync += status.eq(Status.LENGTH)
                            m.next = "RESPOND"
                    with m.Case(Op.RESET):
                        m.d.sync += count.eq(0)
                        m.next = "CLEAR"
                        with m.If(plen != 0):
                            m.d.sync += status.eq(Status.LENGTH)
                            m.next = "RESPOND"

            # first pass: check every element ---------------------------------------------
            with m.State("PRIME"):
                m.next = "VALIDATE"

            with m.State("VALIDATE"):
                m.d.comb += [in_stream.eq(1), elem_taken.eq(elem_full)]
                with m.If(elem_full & element_bad):
                    m.d.sync += status.eq(Status.VALUE)
                with m.If(stream_done):
                    m.next = "VERDICT"

            with m.State("VERDICT"):
                is_block = op_is[Op.WRITE_HIDDEN] | op_is[Op.UPDATE]
                m.next = "RESPOND"
                with m.If((lane != 0) | (is_block & ((count == 0) | (count > L.max_block)))):
                    m.d.sync += status.eq(Status.LENGTH)
                with m.Elif(is_block & (range_end > L.synapses)):
                    m.d.sync += status.eq(Status.RANGE)
                with m.Elif(status == Status.OK):
                    m.d.sync += [count.eq(0), ev_count.eq(0), idx.eq(first_element)]
                    with m.If(op_is[Op.UPDATE]):
                        # the other bank: the newest UPDATE's reply stays retrievable
                        m.d.sync += ev_bank.eq(~ev_bank)
                    m.d.comb += lut_crc.start.eq(1)
                    m.next = "PRIME_APPLY"

            # second pass: apply ----------------------------------------------------------
            with m.State("PRIME_APPLY"):
                m.next = "APPLY"

            with m.State("APPLY"):
                m.d.comb += [in_stream.eq(1), capturing.eq(1)]
                addr = (start + count)[: self.addr_bits]
                with m.Switch(desc.op):
                    with m.Case(Op.WRITE_HIDDEN):
                        m.d.comb += [
                            elem_taken.eq(elem_full),
                            self.access.addr.eq(addr),
                            self.access.wdata.eq(hidden_value),
                            self.access.we.eq(elem_full),
                        ]
                    with m.Case(Op.LOAD_LUT):
                        m.d.comb += [
                            elem_taken.eq(elem_full),
                            self.lut.index.eq(count),
                            self.lut.value.eq(lut_value),
                            self.lut.en.eq(elem_full),
                            lut_crc.valid.eq(consume),
                            lut_crc.data.eq(self.read_data),
                        ]
                    with m.Case(Op.UPDATE):
                        m.d.comb += [
                            elem_taken.eq(self.update.ready),
                            self.update.valid.eq(elem_full),
                            self.update.payload.addr.eq(addr),
                            self.update.payload.d.eq(update_value),
                            self.update.payload.seed.eq(seed),
                        ]
                with m.If(stream_done):
                    m.next = "FINISH_APPLY"

            with m.State("FINISH_APPLY"):
                m.d.comb += capturing.eq(1)
                with m.If(~self.pipeline_busy):
                    m.d.comb += [
                        self.lut.commit.eq(op_is[Op.LOAD_LUT]),
                        self.lut.mstar.eq(lut_mstar_field),
                        self.lut.crc.eq(lut_crc.crc),
                    ]
                    m.d.sync += remember()
                    m.d.sync += [
                        reply.eq(Mux(op_is[Op.UPDATE], reply_events, reply_none)),
                        elements.eq(ev_count),
                        reply_bank.eq(ev_bank),
                    ]
                    m.next = "RESPOND"

            # RESET: clear both memories, reload the power-up LUT ----------------------------
            with m.State("CLEAR"):
                table = Array(Const(v, c.meta_bits + 1) for v in L.contract.meta_lut(0.0))
                m.d.comb += [
                    self.access.addr.eq(count[: self.addr_bits]),
                    self.access.we.eq(count < L.synapses),
                    self.access.clear.eq(count < L.synapses),
                    self.access.wdata.eq(0),
                    self.lut.index.eq(count),
                    self.lut.value.eq(table[count[: max(1, (c.lut_entries - 1).bit_length())]]),
                    self.lut.en.eq(count < c.lut_entries),
                ]
                m.d.sync += count.eq(count + 1)
                with m.If(count == max(L.synapses, c.lut_entries) - 1):
                    m.d.sync += remember()
                    m.d.sync += [ev_count.eq(0), elements.eq(0)]
                    m.next = "RESET_LUT_ID"

            with m.State("RESET_LUT_ID"):
                init_table = c.meta_lut(0.0)
                m.d.comb += [
                    self.lut.commit.eq(1),
                    self.lut.mstar.eq(0),
                    self.lut.crc.eq(protocol.lut_crc(init_table)),
                ]
                m.next = "RESPOND"

            # the response -------------------------------------------------------------------
            with m.State("RESPOND"):
                m.d.comb += [
                    self.body.valid.eq(1),
                    self.body.payload.byte.eq(desc.op | protocol.RESPONSE),
                ]
                m.d.sync += k.eq(0)
                with m.If(sent):
                    m.next = "R_SEQ"

            with m.State("R_SEQ"):
                m.d.comb += [self.body.valid.eq(1), self.body.payload.byte.eq(desc.seq)]
                with m.If(sent):
                    m.next = "R_STATUS"

            with m.State("R_STATUS"):
                no_payload = (status != Status.OK) | (reply == reply_none)
                m.d.comb += [
                    self.body.valid.eq(1),
                    self.body.payload.byte.eq(status),
                    self.body.payload.last.eq(no_payload),
                ]
                with m.If(sent):
                    with m.If(no_payload):
                        m.next = "DONE"
                    with m.Elif(reply == reply_info):
                        m.next = "R_INFO"
                    with m.Elif(reply == reply_events):
                        m.next = "R_COUNT_LO"
                    with m.Else():
                        m.next = "R_FETCH"

            with m.State("R_INFO"):
                m.d.comb += [
                    self.body.valid.eq(1),
                    self.body.payload.byte.eq(info_byte),
                    self.body.payload.last.eq(k == info_len - 1),
                ]
                with m.If(sent):
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == info_len - 1):
                        m.next = "DONE"

            with m.State("R_COUNT_LO"):
                m.d.comb += [self.body.valid.eq(1), self.body.payload.byte.eq(elements[:8])]
                with m.If(sent):
                    m.next = "R_COUNT_HI"

            with m.State("R_COUNT_HI"):
                m.d.comb += [
                    self.body.valid.eq(1),
                    self.body.payload.byte.eq(Cat(elements[8:], Const(0, 8))[:8]),
                    self.body.payload.last.eq(elements == 0),
                ]
                with m.If(sent):
                    m.next = "R_FETCH"
                    with m.If(elements == 0):
                        m.next = "DONE"

            with m.State("R_FETCH"):
                m.d.comb += self.access.addr.eq((start + k)[: self.addr_bits])
                m.next = "R_LOAD"

            with m.State("R_LOAD"):
                m.d.comb += self.access.addr.eq((start + k)[: self.addr_bits])
                with m.Switch(reply):
                    with m.Case(reply_hidden):
                        m.d.sync += [
                            shifter.eq(self.access.rdata.as_signed()),
                            left.eq(L.hidden_bytes),
                        ]
                    with m.Case(reply_counts):
                        m.d.sync += [shifter.eq(self.access.count), left.eq(2)]
                    with m.Default():
                        m.d.sync += [shifter.eq(ev_rd.data), left.eq(Layout.EVENT_BYTES)]
                m.next = "R_EMIT"

            with m.State("R_EMIT"):
                final = (left == 1) & (k == elements - 1)
                m.d.comb += [
                    self.body.valid.eq(1),
                    self.body.payload.byte.eq(shifter[:8]),
                    self.body.payload.last.eq(final),
                ]
                with m.If(sent):
                    m.d.sync += [shifter.eq(shifter >> 8), left.eq(left - 1)]
                    with m.If(final):
                        m.next = "DONE"
                    with m.Elif(left == 1):
                        m.d.sync += k.eq(k + 1)
                        m.next = "R_FETCH"

            with m.State("DONE"):
                m.d.comb += self.release.eq(1)
                m.next = "IDLE"

        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & ~self.frame.valid)

        return m
