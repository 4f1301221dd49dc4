"""The crossbar port: the unit's interface to the driver of a memristor array.

The port has two halves. Programming is the :class:`~.programming_port.ProgrammingPort`'s
device operations (``prog_*``: synapse address, device, target level, strobe and busy), the
same for a unit with or without an array. The **command channel** carries the crossbar ops of
``docs/protocol.md`` (XBAR_INFO .. XBAR_VERIFY): the unit checks only the frame (CRC, length
of the buffer, retry), then forwards the request's op and payload bytes to the driver and
relays the driver's reply (a status byte, then the payload) into the response frame as it
comes. The driver parses and checks the request, so a lab's array may answer ops in whatever
way its hardware needs; ``firmware_sim/crossbar/port_commands.py`` is the reference.

Both directions are valid/ready streams of bytes, so a driver may take any number of cycles
per byte (a DAC settling, an ADC converting, a pulse sequence): the unit waits.

Two more duties of the unit, which the driver cannot do because it does not see the
hidden-weight memory:

- **Retries.** XBAR_MAP, XBAR_LATCH and XBAR_VERIFY change state: their replies (at most
  :data:`STORED_BYTES` payload bytes) are kept with the retry memory's entry, and a
  byte-identical retry is answered from them without reaching the driver. A reply whose status
  is not OK leaves the retry memory unchanged.
- **XBAR_MAP's initial levels.** The driver maps a layer at the contract's zero level; after an
  OK map the unit sweeps the layer's synapses in address order and sends, for each one off
  the zero level, the level change ``zero -> level`` to the programming port, which turns it
  into the device operation. The unit forwards a crossbar request only once the programming
  port is idle, so the driver has seen every operation a previous frame caused.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from metaplast import protocol
from metaplast.protocol import MUTATING, Layout, Op, Status

from .command_checker import PAYLOAD
from .framing import BANKS, BodyByte
from .update_pipeline import EventLayout, level_of

__all__ = [
    "STORED_BYTES",
    "XBAR_OPS",
    "CrossbarPort",
    "CrossbarRelay",
    "ReplyByte",
    "RequestByte",
    "request_bytes",
]

XBAR_OPS = tuple(op for op in Op if op.name.startswith("XBAR_"))
"""The ops the command channel carries."""

STORED_BYTES = 8
"""Payload bytes of the longest state-changing crossbar reply (XBAR_VERIFY's)."""

RequestByte = data.StructLayout({"byte": 8, "first": 1, "last": 1})
"""A byte of a request: the op (``first``), then the payload bytes; ``last`` on the final one
(on the op itself when there is no payload)."""

ReplyByte = data.StructLayout({"byte": 8, "last": 1})
"""A byte of a reply: the status, then (for OK only) the payload; ``last`` on the final one."""


def request_bytes(tile: int) -> int:
    """The longest crossbar request (op to CRC) for tiles of at most ``tile`` rows or columns:
    an XBAR_MVM of a whole tile (``ArrayDriver.max_request``)."""
    return 2 + 6 + 2 * tile + 2


class CrossbarPort:
    """Namespace of the command channel's signature."""

    class Signature(wiring.Signature):
        """The command channel, from the unit's side.

        Members
        -------
        request : ``Out(stream.Signature(RequestByte))``
            The op and payload of one crossbar request.
        reply : ``In(stream.Signature(ReplyByte))``
            The driver's answer: status, then payload (none unless OK). One reply per request,
            started after the request's last byte.
        """

        def __init__(self) -> None:
            super().__init__(
                {
                    "request": Out(stream.Signature(RequestByte)),
                    "reply": In(stream.Signature(ReplyByte)),
                }
            )

        def __eq__(self, other: object) -> bool:
            return type(other) is type(self)

        def __repr__(self) -> str:
            return "CrossbarPort.Signature()"


class CrossbarRelay(wiring.Component):
    """The command engine's part for crossbar ops: forwards a request, relays the reply, keeps
    the replies of state-changing ops for retries and sweeps a freshly mapped layer.

    Parameters
    ----------
    layout : Layout
        The unit's contract and sizes.
    bank_size : int
        Bytes of one bank of the frame buffer.
    depth : int
        Entries of the retry memory (each has a stored reply here, by its bank).

    Members
    -------
    start : ``In(1)``
        Strobe: execute the frame described by ``op``, ``seq``, ``length``, ``bank``.
    replay : ``In(1)``
        At ``start``: a retry, answered from the reply stored in ``stored_bank``.
    stored_bank : ``In(range(depth))``
    op, seq : ``In(8)``
    length : ``In(range(bank_size + 1))``
        op, seq and payload bytes of the frame.
    bank : ``In(range(BANKS))``
        Its frame-buffer bank.
    read_addr : ``Out(range(BANKS * bank_size))``
    read_data : ``In(8)``
        The frame buffer, one cycle of latency.
    prog_idle : ``In(1)``
        The programming port has no operation waiting or in progress.
    port : ``Out(CrossbarPort.Signature())``
    body : ``Out(stream.Signature(BodyByte))``
        The response, to the frame sender.
    begin, push : ``Out(1)``
        To the retry memory: a new entry (``recorded_bank`` is its bank a cycle later), and
        remember the frame with it.
    recorded_bank : ``In(range(depth))``
    access_addr : ``Out(addr_bits)``
    access_rdata : ``In(signed(hidden_width))``
        Reading hidden weights for the sweep (owned while ``sweeping``; a weight two cycles
        after its address).
    sweeping : ``Out(1)``
    events : ``Out(stream.Signature(EventLayout))``
        The sweep's level changes, to the programming port.
    done : ``Out(1)``
        Strobe: the frame is answered (and a map swept).
    """

    def __init__(self, layout: Layout, *, bank_size: int, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.layout = layout
        self.bank_size = bank_size
        self.depth = depth
        c = layout.contract
        super().__init__(
            {
                "start": In(1),
                "replay": In(1),
                "stored_bank": In(range(depth)),
                "op": In(8),
                "seq": In(8),
                "length": In(range(bank_size + 1)),
                "bank": In(range(BANKS)),
                "read_addr": Out(range(BANKS * bank_size)),
                "read_data": In(8),
                "prog_idle": In(1),
                "port": Out(CrossbarPort.Signature()),
                "body": Out(stream.Signature(BodyByte)),
                "begin": Out(1),
                "push": Out(1),
                "recorded_bank": In(range(depth)),
                "access_addr": Out(layout.addr_bits),
                "access_rdata": In(c.hidden_width),
                "sweeping": Out(1),
                "events": Out(stream.Signature(EventLayout(c, layout.addr_bits))),
                "done": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        L = self.layout  # noqa: N806
        c = L.contract
        m = Module()
        request, reply, body = self.port.request, self.port.reply, self.body
        index_bits = (self.bank_size - 1).bit_length()

        mutating = Cat(self.op == op for op in XBAR_OPS if op in MUTATING).any()
        is_map = self.op == Op.XBAR_MAP
        replay = Signal()
        k = Signal(range(self.bank_size + 1))  # frame index of a request byte; reply byte
        status = Signal(8)
        captured = Signal(8 * STORED_BYTES)  # a state-changing reply's payload
        captured_len = Signal(range(STORED_BYTES + 1))
        stored = Array(Signal(8 * STORED_BYTES, name=f"stored_{i}") for i in range(self.depth))
        stored_len = Array(
            Signal(range(STORED_BYTES + 1), name=f"stored_len_{i}") for i in range(self.depth)
        )
        # XBAR_MAP's fields after its layer byte: base u32, out u16, in u16 (payload 1 .. 8)
        fields = Signal(64)
        base, n_out, n_in = fields[:32], fields[32:48], fields[48:64]
        # the sweep counts the layer's rows and columns (no multiplier for out * in)
        address = Signal(L.addr_bits)
        row, col = Signal(16), Signal(16)

        m.d.comb += self.read_addr.eq(Cat(k[:index_bits], self.bank))
        sent = body.valid & body.ready
        taken = request.valid & request.ready

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [replay.eq(self.replay), captured_len.eq(0)]
                    m.next = "WAIT"

            with m.State("WAIT"):
                # a retry needs no driver; a request waits for the programming port
                with m.If(replay):
                    m.next = "REPLY_OP"
                with m.Elif(self.prog_idle):
                    m.next = "REQUEST_OP"

            with m.State("REQUEST_OP"):
                m.d.comb += [
                    request.valid.eq(1),
                    request.payload.byte.eq(self.op),
                    request.payload.first.eq(1),
                    request.payload.last.eq(self.length <= PAYLOAD),
                ]
                m.d.sync += k.eq(PAYLOAD)
                with m.If(taken):
                    m.next = "REPLY_OP"
                    with m.If(self.length > PAYLOAD):
                        m.next = "FETCH"

            with m.State("FETCH"):
                m.next = "REQUEST"

            with m.State("REQUEST"):
                final = k == self.length - 1
                m.d.comb += [
                    request.valid.eq(1),
                    request.payload.byte.eq(self.read_data),
                    request.payload.last.eq(final),
                ]
                with m.If(taken):
                    with m.If(is_map & (k >= 3) & (k < 11)):
                        m.d.sync += fields.eq(Cat(fields[8:], self.read_data))
                    m.d.sync += k.eq(k + 1)
                    m.next = "FETCH"
                    with m.If(final):
                        m.next = "REPLY_OP"

            with m.State("REPLY_OP"):
                m.d.comb += [body.valid.eq(1), body.payload.byte.eq(self.op | protocol.RESPONSE)]
                m.d.sync += k.eq(0)
                with m.If(sent):
                    m.next = "REPLY_SEQ"

            with m.State("REPLY_SEQ"):
                m.d.comb += [body.valid.eq(1), body.payload.byte.eq(self.seq)]
                with m.If(sent):
                    m.next = "RELAY"
                    with m.If(replay):
                        m.d.sync += [
                            status.eq(Status.OK),
                            captured.eq(stored[self.stored_bank]),
                            captured_len.eq(stored_len[self.stored_bank]),
                        ]
                        m.next = "REPLAY_STATUS"

            with m.State("RELAY"):
                m.d.comb += [
                    body.valid.eq(reply.valid),
                    body.payload.byte.eq(reply.payload.byte),
                    body.payload.last.eq(reply.payload.last),
                    reply.ready.eq(body.ready),
                ]
                with m.If(sent):
                    # counted only as far as the bytes kept: an MVM's reply is longer than a bank
                    with m.If(k <= STORED_BYTES):
                        m.d.sync += k.eq(k + 1)
                    with m.If(k == 0):
                        m.d.sync += status.eq(reply.payload.byte)
                    with m.Elif(k <= STORED_BYTES):
                        m.d.sync += [
                            captured.word_select((k - 1)[:3], 8).eq(reply.payload.byte),
                            captured_len.eq(k),
                        ]
                    with m.If(reply.payload.last):
                        m.next = "SETTLE"

            with m.State("SETTLE"):
                ok = status == Status.OK
                m.next = "DONE"
                with m.If(ok & mutating):
                    m.d.comb += self.begin.eq(1)
                    m.next = "COMMIT"
                with m.Elif(ok & is_map):
                    m.next = "SWEEP_START"

            with m.State("COMMIT"):
                m.d.comb += self.push.eq(1)
                m.d.sync += [
                    stored[self.recorded_bank].eq(captured),
                    stored_len[self.recorded_bank].eq(captured_len),
                ]
                m.next = "DONE"
                with m.If(is_map):
                    m.next = "SWEEP_START"

            with m.State("REPLAY_STATUS"):
                m.d.comb += [
                    body.valid.eq(1),
                    body.payload.byte.eq(Status.OK),
                    body.payload.last.eq(captured_len == 0),
                ]
                with m.If(sent):
                    m.d.sync += k.eq(0)
                    m.next = "REPLAY"
                    with m.If(captured_len == 0):
                        m.next = "DONE"

            with m.State("REPLAY"):
                final = k == captured_len - 1
                m.d.comb += [
                    body.valid.eq(1),
                    body.payload.byte.eq(captured[:8]),
                    body.payload.last.eq(final),
                ]
                with m.If(sent):
                    m.d.sync += [captured.eq(captured >> 8), k.eq(k + 1)]
                    with m.If(final):
                        m.next = "DONE"

            with m.State("SWEEP_START"):
                m.d.sync += [address.eq(base), row.eq(0), col.eq(0)]
                m.next = "SWEEP_ADDR"
                with m.If((n_out == 0) | (n_in == 0)):  # a driver's OK to an empty layer
                    m.next = "DONE"

            # the weight appears two cycles after its address (the memory's output register)
            with m.State("SWEEP_ADDR"):
                m.d.comb += [self.sweeping.eq(1), self.access_addr.eq(address)]
                m.next = "SWEEP_WAIT"

            with m.State("SWEEP_WAIT"):
                m.d.comb += [self.sweeping.eq(1), self.access_addr.eq(address)]
                m.next = "SWEEP_LOAD"

            with m.State("SWEEP_LOAD"):
                level = level_of(c, self.access_rdata.as_signed())
                off_zero = level != c.zero_level
                m.d.comb += [
                    self.sweeping.eq(1),
                    self.access_addr.eq(address),
                    self.events.valid.eq(off_zero),
                    self.events.payload.addr.eq(address),
                    self.events.payload.old.eq(c.zero_level),
                    self.events.payload.new.eq(level),
                ]
                with m.If(~off_zero | self.events.ready):
                    m.d.sync += [address.eq(address + 1), col.eq(col + 1)]
                    m.next = "SWEEP_ADDR"
                    with m.If(col == n_in - 1):
                        m.d.sync += [col.eq(0), row.eq(row + 1)]
                        with m.If(row == n_out - 1):
                            m.next = "DONE"

            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"

        return m
