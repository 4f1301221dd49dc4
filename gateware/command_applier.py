"""Apply a checked request: write hidden weights, feed updates, load the LUT, or reset the unit.

Only a request that :class:`~.command_checker.CommandChecker` passed comes here, so nothing
is checked again: the payload's array is read a second time and each element goes where its op
sends it. While an UPDATE runs, the level changes it causes are recorded (as offsets into its
block) for its reply.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal
from amaranth.lib import crc, stream, wiring
from amaranth.lib.wiring import In, Out

from metaplast import protocol
from metaplast.protocol import Layout, Op

from .command_checker import Header, element_bytes, read_array
from .framing import descriptor_layout
from .meta_lut import LoadSignature
from .payload_reader import PayloadReader
from .retry_memory import RetryMemory
from .update_pipeline import AccessSignature, EventLayout, UpdateLayout

__all__ = ["CommandApplier"]


class CommandApplier(wiring.Component):
    """Applies one valid state-changing request, then waits until the pipeline is empty.

    WRITE_HIDDEN writes each value through ``access``; UPDATE offers each ``d`` on ``update`` (at
    the pipeline's pace); LOAD_LUT writes each entry through ``lut`` and commits the table's
    identity, m* and the CRC of the entry bytes it wrote, so that INFO reports what the unit
    holds; RESET clears every hidden weight and counter and reloads the power-up table.

    Parameters
    ----------
    layout : Layout
        The unit's contract and sizes.
    bank_size : int
        Bytes of one bank of the frame buffer.

    Members
    -------
    frame : ``In(descriptor_layout(bank_size))``
        The request; set at least two cycles before ``start`` (its array's format is two
        registers from it) and held while the applier runs.
    header : ``In(Header)``
        Its fixed fields.
    start : ``In(1)``
        Strobe: apply ``frame``.
    busy : ``Out(1)``
        Started and not done: the applier uses ``payload``.
    done : ``Out(1)``
        Strobe: applied, and every update has left the pipeline.
    payload : ``In(PayloadReader.Signature(bank_size, element_bytes(layout)))``
    update : ``Out(stream.Signature(UpdateLayout(...)))``
        To the update pipeline.
    pipeline_busy : ``In(1)``
    events : ``In(stream.Signature(EventLayout(...), always_ready=True))``
        The level changes the pipeline reports (each one once).
    access : ``Out(AccessSignature(...))``
        Into the hidden-weight and counter memories.
    lut : ``Out(LoadSignature(layout.contract))``
    record : ``Out(RetryMemory.RecordSignature())``
        The response being built: UPDATE's level changes.
    """

    def __init__(self, layout: Layout, *, bank_size: int) -> None:
        if bank_size < layout.max_request:
            raise ValueError(
                f"bank_size {bank_size} cannot hold requests of {layout.max_request} bytes"
            )
        self.layout = layout
        self.bank_size = bank_size
        c = layout.contract
        addr_bits = layout.addr_bits
        super().__init__(
            {
                "frame": In(descriptor_layout(bank_size)),
                "header": In(Header),
                "start": In(1),
                "busy": Out(1),
                "done": Out(1),
                "payload": In(PayloadReader.Signature(bank_size, element_bytes(layout))),
                "update": Out(stream.Signature(UpdateLayout(c, addr_bits))),
                "pipeline_busy": In(1),
                "events": In(stream.Signature(EventLayout(c, addr_bits), always_ready=True)),
                "access": Out(AccessSignature(c, addr_bits, layout.counter_width)),
                "lut": Out(LoadSignature(c)),
                "record": Out(RetryMemory.RecordSignature()),
            }
        )

    def elaborate(self, platform: object) -> Module:
        L = self.layout  # noqa: N806
        c = L.contract
        m = Module()
        frame, payload, header = self.frame, self.payload, self.header
        read_array(m, L, frame, payload)
        # the op decoded into registers, read from the state after `start` on (the frame is
        # held): decoded in place, it was in series with the reader's and the pipeline's control
        is_write, is_lut, is_update, is_layer = Signal(), Signal(), Signal(), Signal()
        # from a copy of the op of its own, so a cycle later again (the frame's fan-out was in
        # series with the decoding): read at `start`, two cycles after the frame is set
        is_reset = Signal()
        op = Signal(8)
        m.d.sync += [
            op.eq(frame.op),
            is_reset.eq(op == Op.RESET),
            is_write.eq(op == Op.WRITE_HIDDEN),
            is_lut.eq(op == Op.LOAD_LUT),
            is_update.eq((op == Op.UPDATE) | (op == Op.UPDATE_LAYER)),
            is_layer.eq(op == Op.UPDATE_LAYER),
        ]
        element = payload.elements.payload
        addr = (header.block.start + payload.count)[: L.addr_bits]

        # the table's identity is the CRC of the entry bytes actually written
        m.submodules.lut_crc = lut_crc = crc.Processor(protocol.CRC(8))
        # each entry byte reaches the CRC a cycle after it is read, from registers (the
        # reader's queue and its `take` were in series with the CRC's update); the CRC is read
        # at the earliest three cycles after the last byte (the reader is done a cycle after the
        # last element is taken, FINISH a cycle later)
        # the CRC's start is a cycle late as well (the engine's state was in series with its
        # update), still long before the first byte (a seek takes four cycles)
        crc_start, crc_valid, crc_data = Signal(), Signal(), Signal(8)
        m.d.comb += [
            lut_crc.start.eq(crc_start),
            lut_crc.valid.eq(crc_valid),
            lut_crc.data.eq(crc_data),
        ]
        m.d.sync += [crc_start.eq(0), crc_valid.eq(0)]

        # level changes, as offsets into the block, while the pipeline may still report them
        recording = Signal()
        m.d.comb += [
            self.record.event.valid.eq(recording & self.events.valid),
            self.record.event.payload.offset.eq(
                self.events.payload.addr - header.block.start[: L.addr_bits]
            ),
            self.record.event.payload.old.eq(self.events.payload.old),
            self.record.event.payload.new.eq(self.events.payload.new),
        ]

        # an update's fields whatever the state (only its valid waits for APPLY): chosen by the
        # state and the op, they were in series with the pipeline's inlet register
        origin = Mux(is_layer, header.layer.origin, 0)
        m.d.comb += [
            self.update.payload.origin.eq(origin[: L.addr_bits]),
            self.update.payload.addr.eq(addr),
            self.update.payload.d.eq(element[: 8 * L.update_bytes].as_signed()),
            self.update.payload.seed.eq(header.block.seed),
        ]

        # the reader runs while `running`, a flip-flop set and cleared with the state (APPLY),
        # and takes an element when the op's sink can (decoded from the state and the op, they
        # were in series with the reader's `take` and the bytes it moves)
        running = Signal()
        m.d.comb += [
            payload.run.eq(running),
            payload.elements.ready.eq(running & (~is_update | self.update.ready)),
        ]

        # RESET visits every synapse and every LUT entry
        wipe_count = max(L.synapses, c.lut_entries)
        wipe = Signal(range(wipe_count))
        power_up = c.meta_lut(0.0)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    with m.If(is_reset):
                        m.d.sync += wipe.eq(0)
                        m.next = "CLEAR"
                    with m.Else():
                        m.d.comb += payload.seek.eq(1)
                        m.d.sync += [crc_start.eq(1), running.eq(1)]
                        m.next = "APPLY"
                    m.d.comb += self.record.begin.eq(1)

            with m.State("APPLY"):
                m.d.comb += recording.eq(1)
                with m.If(is_write):
                    m.d.comb += [
                        self.access.addr.eq(addr),
                        self.access.wdata.eq(element[: 8 * L.hidden_bytes].as_signed()),
                        self.access.we.eq(payload.elements.valid),
                    ]
                with m.Elif(is_lut):
                    m.d.comb += [
                        self.lut.index.eq(payload.count),
                        self.lut.value.eq(element[: 8 * L.lut_bytes]),
                        self.lut.en.eq(payload.elements.valid),
                    ]
                    m.d.sync += [
                        crc_valid.eq(payload.raw.valid),
                        crc_data.eq(payload.raw.payload.data),
                    ]
                with m.Elif(is_update):
                    m.d.comb += self.update.valid.eq(payload.elements.valid)
                with m.If(payload.done):
                    m.d.sync += running.eq(0)
                    m.next = "FINISH"

            with m.State("FINISH"):
                m.d.comb += recording.eq(1)
                with m.If(~self.pipeline_busy):
                    m.d.comb += [
                        self.lut.commit.eq(is_lut),
                        self.lut.mstar.eq(header.lut.mstar),
                        self.lut.crc.eq(lut_crc.crc),
                        self.done.eq(1),
                    ]
                    m.next = "IDLE"

            with m.State("CLEAR"):
                table = Array(Const(v, c.meta_bits + 1) for v in power_up)
                m.d.comb += [
                    self.access.addr.eq(wipe[: L.addr_bits]),
                    self.access.we.eq(wipe < L.synapses),
                    self.access.clear.eq(wipe < L.synapses),
                    self.lut.index.eq(wipe),
                    self.lut.value.eq(table[wipe[: max(1, (c.lut_entries - 1).bit_length())]]),
                    self.lut.en.eq(wipe < c.lut_entries),
                ]
                m.d.sync += wipe.eq(wipe + 1)
                with m.If(wipe == wipe_count - 1):
                    m.next = "RESET_LUT_ID"

            with m.State("RESET_LUT_ID"):
                m.d.comb += [
                    self.lut.commit.eq(1),
                    self.lut.mstar.eq(0),
                    self.lut.crc.eq(protocol.lut_crc(power_up)),
                    self.done.eq(1),
                ]
                m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
