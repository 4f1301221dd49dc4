"""The command engine: executes one received frame at a time and builds its response.

A frame is checked completely before anything changes (:class:`~.command_checker.CommandChecker`:
its CRC, by the receiver, its op, its length against the op's layout, its address range, and
every value it carries in a first pass over the buffered payload). Only a frame that passes is
applied (:class:`~.command_applier.CommandApplier`, a second pass), so an invalid frame is
answered with its :class:`~metaplast.protocol.Status` and changes no state. Both passes read the
payload through one :class:`~.payload_reader.PayloadReader`.

A byte-identical repetition of one of the last two state-changing commands (same op, seq and
CRC) is a retry: it is answered from the stored response (:class:`~.retry_memory.RetryMemory`,
which keeps UPDATE's events) and not applied again. :class:`~.reply_builder.ReplyBuilder` emits
every response.

Layouts and codes are those of :mod:`metaplast.protocol`; ``docs/protocol.md`` describes them.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from metaplast.protocol import RETRY_DEPTH, Capability, Info, Layout, Status

from .command_applier import CommandApplier
from .command_checker import CommandChecker, element_bytes
from .crossbar_port import XBAR_OPS, CrossbarPort, CrossbarRelay
from .framing import BodyByte, descriptor_layout
from .meta_lut import LoadSignature
from .payload_reader import PayloadReader
from .reply_builder import ReplyBuilder
from .retry_memory import RetryMemory
from .update_pipeline import AccessSignature, EventLayout, UpdateLayout

__all__ = ["CommandEngine"]


def _share(m: Module, port: Any, second_owns: Value, first: Any, second: Any) -> None:
    """Give ``port`` (seen from the side that provides it) to ``first``, or to ``second`` while
    ``second_owns``: the users' outputs are multiplexed, the provider's reach both."""
    for path, member, value in port.signature.flatten(port):
        if isinstance(value, Const):  # e.g. the ready of an always-ready stream
            continue
        a, b = (reduce(getattr, path, user) for user in (first, second))
        if member.flow == In:
            m.d.comb += value.eq(Mux(second_owns, b, a))
        else:
            m.d.comb += [a.eq(value), b.eq(value)]


class CommandEngine(wiring.Component):
    """Parameters: the unit's :class:`~metaplast.protocol.Layout`, the receive buffer's bank
    size, the clock and baud divisor that INFO reports, and ``crossbar``: whether the unit has
    a crossbar port (``xbar``, with ``prog_idle``, ``sweep`` and INFO's capability; see
    :mod:`.crossbar_port`)."""

    def __init__(
        self,
        layout: Layout,
        *,
        bank_size: int,
        clock_hz: int,
        baud_divisor: int,
        crossbar: bool = False,
    ) -> None:
        if bank_size < layout.max_request:
            raise ValueError(
                f"receive banks of {bank_size} bytes cannot hold requests of {layout.max_request}"
            )
        self.layout = layout
        self.bank_size = bank_size
        self.crossbar = crossbar
        self.info = Info.from_layout(
            layout,
            clock_hz=clock_hz,
            baud_divisor=baud_divisor,
            capabilities=Capability.CROSSBAR if crossbar else None,
        )
        c = layout.contract
        self.addr_bits = layout.addr_bits
        port = {}
        if crossbar:
            port = {
                "xbar": Out(CrossbarPort.Signature()),
                "prog_idle": In(1),
                "sweep": Out(stream.Signature(EventLayout(c, self.addr_bits))),
            }
        super().__init__(
            {
                **port,
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
        m = Module()
        m.submodules.reader = reader = PayloadReader(
            bank_size=self.bank_size, max_bytes=element_bytes(L)
        )
        m.submodules.checker = checker = CommandChecker(
            L, bank_size=self.bank_size, crossbar=self.crossbar
        )
        m.submodules.applier = applier = CommandApplier(L, bank_size=self.bank_size)
        m.submodules.retry = retry = RetryMemory(depth=RETRY_DEPTH, max_block=L.max_block)
        m.submodules.replies = replies = ReplyBuilder(L, info=self.info, depth=RETRY_DEPTH)

        frame = Signal(descriptor_layout(self.bank_size))  # the one in execution
        # the pipeline's busy a cycle late: the applier then waits a cycle longer, never less
        # (an update it offered is in the core's inlet, busy, the cycle after)
        pipeline_busy = Signal()
        m.d.sync += pipeline_busy.eq(self.pipeline_busy)
        # the applier's done a cycle late, a register: the retry memory's push and the reply
        # builder's start follow from it (in place, it was one path from the pipeline's busy
        # to the reply builder's state); the recording has ended with the applier's done
        applied = Signal()
        m.d.sync += applied.eq(applier.done)
        # the retry lookup (a comparison with every remembered key) is registered three times:
        # the comparisons in the retry memory (each byte's in LOOKUP, from the frame taken, the
        # key's in MATCH), the entry chosen here (in DISPATCH); from the checker's first state
        # on it answers for the frame until the next one
        hit = Signal()
        stored = Signal.like(retry.stored)
        m.d.sync += [hit.eq(retry.hit), stored.eq(retry.stored)]
        header = checker.header
        m.d.comb += [
            self.read_addr.eq(reader.read_addr),
            reader.read_data.eq(self.read_data),
            reader.bank.eq(frame.bank),
            checker.frame.eq(frame),
            checker.retry.eq(hit),
            applier.frame.eq(frame),
            applier.header.eq(header),
            applier.pipeline_busy.eq(pipeline_busy),
            applier.events.valid.eq(self.event_valid),
            applier.events.payload.eq(self.event),
            retry.key.op.eq(frame.op),
            retry.key.seq.eq(frame.seq),
            retry.key.crc.eq(frame.crc),
            replies.op.eq(frame.op),
            replies.seq.eq(frame.seq),
            replies.base.eq(header.span.start),
            replies.lut_mstar.eq(self.lut_mstar),
            replies.lut_crc.eq(self.lut_crc),
        ]
        m.d.comb += [
            retry.record.begin.eq(applier.record.begin),
            retry.record.event.valid.eq(applier.record.event.valid),
            retry.record.event.payload.eq(applier.record.event.payload),
        ]
        wiring.connect(m, replies.events, retry.replay)
        wiring.connect(m, wiring.flipped(self.update), applier.update)
        wiring.connect(m, wiring.flipped(self.lut), applier.lut)
        wiring.connect(m, wiring.flipped(self.body), replies.body)

        # the payload is read by the checker, then by the applier from the cycle it starts
        # (`applying` is a register, set with the START state: the reader's control follows
        # from flip-flops); the memories are written by the applier, read by the response
        applying, replying = Signal(), Signal()
        _share(m, reader.payload, applying, checker.payload, applier.payload)
        # the memories' address, enables and data leave through registers (the reads a cycle
        # later: the reply builder waits for it); the access port's users were one path with
        # the memories' write enables and address comparisons
        access = AccessSignature(self.layout.contract, self.addr_bits, L.counter_width).create()
        _share(m, wiring.flipped(access), replying, applier.access, replies.access)
        # what the memories see: what the users drove a cycle before
        held = Signal(
            data.StructLayout(
                {"addr": self.addr_bits, "we": 1, "clear": 1, "wdata": len(access.wdata)}
            )
        )
        m.d.sync += [
            held.addr.eq(access.addr),
            held.we.eq(access.we),
            held.clear.eq(access.clear),
            held.wdata.eq(access.wdata),
        ]
        m.d.comb += [
            self.access.addr.eq(held.addr),
            self.access.we.eq(held.we),
            self.access.clear.eq(held.clear),
            self.access.wdata.eq(held.wdata),
            access.rdata.eq(self.access.rdata),
            access.count.eq(self.access.count),
        ]

        # the reply builder is started a cycle after the verdict or the applier's end, from
        # registers (the engine's state and the verdict were in series with the builder's state)
        reply_start = Signal()
        reply_order = Signal.like(replies.order)
        m.d.sync += reply_start.eq(0)
        m.d.comb += [replies.start.eq(reply_start), replies.order.eq(reply_order)]

        relaying = Signal()
        relay = None
        if self.crossbar:
            m.submodules.relay = relay = CrossbarRelay(
                L, bank_size=self.bank_size, depth=RETRY_DEPTH
            )
            m.d.comb += [
                relay.op.eq(frame.op),
                relay.seq.eq(frame.seq),
                relay.length.eq(frame.length),
                relay.bank.eq(frame.bank),
                relay.read_data.eq(self.read_data),
                relay.prog_idle.eq(self.prog_idle),
                relay.recorded_bank.eq(retry.recorded.bank),
                relay.stored_bank.eq(stored.bank),
                relay.access_rdata.eq(self.access.rdata),
                retry.record.begin.eq(applier.record.begin | relay.begin),
            ]
            wiring.connect(m, wiring.flipped(self.xbar), relay.port)
            wiring.connect(m, wiring.flipped(self.sweep), relay.events)
            with m.If(relaying):
                m.d.comb += self.read_addr.eq(relay.read_addr)
            with m.If(relay.sweeping):
                m.d.comb += [
                    self.access.addr.eq(relay.access_addr),
                    self.access.we.eq(0),
                    self.access.clear.eq(0),
                ]
            with m.If(relaying):
                m.d.comb += [
                    self.body.valid.eq(relay.body.valid),
                    self.body.payload.eq(relay.body.payload),
                    relay.body.ready.eq(self.body.ready),
                    replies.body.ready.eq(0),
                ]

        def after_check() -> None:
            if relay is None:
                answer()
                return
            # a crossbar request goes to the driver; a retry of one is answered from its
            # stored reply
            is_xbar = Cat(frame.op == op for op in XBAR_OPS).any()
            replayed = hit & (checker.status == Status.OK) & is_xbar
            with m.If(checker.done & (checker.forward | replayed)):
                m.d.comb += [relay.start.eq(1), relay.replay.eq(~checker.forward)]
                m.next = "XBAR"
            with m.Else():
                answer()

        def answer() -> None:
            with m.If(checker.done & checker.apply):
                m.d.sync += applying.eq(1)
                m.next = "START"
            with m.Elif(checker.done):
                # the newest remembered response of a retry, or a READ's span
                m.d.sync += [
                    reply_start.eq(1),
                    reply_order.status.eq(checker.status),
                    reply_order.elements.eq(Mux(hit, stored.events, header.span.count)),
                    reply_order.bank.eq(stored.bank),
                ]
                m.next = "REPLY"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.frame.ready.eq(1)
                with m.If(self.frame.valid):
                    m.d.sync += frame.eq(self.frame.payload)
                    m.next = "LOOKUP"

            with m.State("LOOKUP"):
                m.next = "MATCH"

            with m.State("MATCH"):
                m.next = "DISPATCH"

            with m.State("DISPATCH"):
                # the checker's verdict is a register: it comes in CHECK at the earliest
                m.d.comb += checker.start.eq(1)
                m.next = "CHECK"

            with m.State("CHECK"):
                after_check()

            with m.State("START"):
                m.d.comb += applier.start.eq(1)
                m.next = "APPLY"

            with m.State("APPLY"):
                with m.If(applied):
                    m.d.sync += applying.eq(0)
                    m.d.comb += retry.push.eq(1)
                    m.d.sync += [
                        reply_start.eq(1),
                        reply_order.status.eq(Status.OK),
                        reply_order.elements.eq(retry.recorded.events),
                        reply_order.bank.eq(retry.recorded.bank),
                    ]
                    m.next = "REPLY"

            with m.State("REPLY"):
                m.d.comb += replying.eq(1)
                with m.If(replies.done):
                    m.next = "DONE"

            if relay is not None:
                with m.State("XBAR"):
                    m.d.comb += relaying.eq(1)
                    m.d.comb += retry.push.eq(relay.push)
                    with m.If(relay.done):
                        m.next = "DONE"

            with m.State("DONE"):
                m.d.comb += self.release.eq(1)
                m.next = "IDLE"

        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & ~self.frame.valid)

        return m
