"""Parse and check a request completely before anything changes.

A request is checked in the order the model (:class:`~metaplast.firmware_sim.unit.command_model.
CommandModel`) checks it: the receiver's verdict on the frame, the op, the length against the
op's layout, the address range, then every value it carries (a pass over the payload). Only
after that is anything applied, so an invalid request changes no state.

The payload layouts are :mod:`metaplast.protocol`'s (``docs/protocol.md``).
"""

from __future__ import annotations

from typing import Any

from amaranth import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from metaplast.protocol import Layout, Op, Status

from .framing import descriptor_layout
from .payload_reader import PayloadReader

__all__ = ["PAYLOAD", "CommandChecker", "Header", "array_format", "element_bytes", "read_array"]

PAYLOAD = 2
"""Index of a request's payload in the frame (0 is op, 1 is seq)."""

Header = data.UnionLayout(
    {
        "span": data.StructLayout({"start": 32, "count": 16}),
        "block": data.StructLayout({"start": 32, "seed": 32}),
        "layer": data.StructLayout({"start": 32, "seed": 32, "origin": 32}),
        "lut": data.StructLayout({"mstar": 16}),
    }
)
"""The fixed fields at the start of a payload, as each op reads them: the synapses of
READ_HIDDEN and READ_COUNTERS; the first synapse of WRITE_HIDDEN and UPDATE and UPDATE's seed;
UPDATE_LAYER's, with its dither's origin; LOAD_LUT's m*. The first 12 bytes of every payload are
read into it, whatever the op."""

_HEADER_BYTES = Header.size // 8

# ops that carry an array of elements: the bytes of fixed fields before it
_ARRAY_HEAD = {Op.WRITE_HIDDEN: 4, Op.UPDATE: 8, Op.UPDATE_LAYER: 12, Op.LOAD_LUT: 2}

# the ops this unit executes; any other is answered OPCODE
_OPS = (Op.INFO, Op.READ_HIDDEN, Op.READ_COUNTERS, *_ARRAY_HEAD, Op.RESET)


def element_bytes(layout: Layout) -> int:
    """Bytes of the largest element any op carries: what a :class:`PayloadReader` must hold."""
    return max(layout.hidden_bytes, layout.update_bytes, layout.lut_bytes)


def array_format(layout: Layout, op: Value) -> tuple[Value, Value, Value]:
    """Where the array of ``op``'s elements starts in the frame, the bytes of each, and whether
    they are signed (LUT entries are not)."""
    first = Mux(
        op == Op.WRITE_HIDDEN,
        PAYLOAD + _ARRAY_HEAD[Op.WRITE_HIDDEN],
        Mux(
            op == Op.UPDATE,
            PAYLOAD + _ARRAY_HEAD[Op.UPDATE],
            Mux(
                op == Op.UPDATE_LAYER,
                PAYLOAD + _ARRAY_HEAD[Op.UPDATE_LAYER],
                PAYLOAD + _ARRAY_HEAD[Op.LOAD_LUT],
            ),
        ),
    )
    size = Mux(
        op == Op.WRITE_HIDDEN,
        layout.hidden_bytes,
        Mux((op == Op.UPDATE) | (op == Op.UPDATE_LAYER), layout.update_bytes, layout.lut_bytes),
    )
    return first, size, op != Op.LOAD_LUT


def read_array(m: Module, layout: Layout, frame: Any, payload: Any) -> Value:
    """Point ``payload`` (a payload reader's port) at the array of ``frame``'s op: its element
    size and sign, to the frame's end, from the second cycle after ``frame`` is set. Returns
    where the array starts (a seek's target), a register."""
    # the format in registers, two cycles after the frame is set, from a copy of the op of
    # its own (the op's decoding and the multiplexers were in series with the reader's seek
    # and the length checks; from the frame, with its fan-out's routing)
    op = Signal(8, name="array_op")
    m.d.sync += op.eq(frame.op)
    fmt = array_format(layout, op)
    first, size, is_signed = (
        Signal(len(v), name=f"array_{n}")
        for v, n in zip(fmt, ("first", "size", "signed"), strict=True)
    )
    m.d.sync += [first.eq(fmt[0]), size.eq(fmt[1]), is_signed.eq(fmt[2])]
    m.d.comb += [
        payload.size.eq(size),
        payload.signed.eq(is_signed),
        payload.end.eq(frame.length),
        payload.seek_to.eq(first),
    ]
    return first


class CommandChecker(wiring.Component):
    """The verdict on one request: a :class:`~metaplast.protocol.Status`, and whether to apply it.

    Started on a frame, it answers two cycles later for a frame the receiver rejected, an
    unknown op or a retry (``retry``: a repetition of a remembered command, checked when it
    first ran). Otherwise it reads the payload's fixed fields into ``header``, checks the
    length and range and, for an op that carries an array, reads the array once through
    ``payload`` checking every element; the verdict follows the model's order: LENGTH, then
    RANGE, then VALUE. ``retry`` is read from the cycle after ``start``.

    With ``crossbar``, the crossbar ops are known too: the unit does not check their
    payloads (the driver behind the crossbar port does), so a valid frame of one is answered
    two cycles later with ``forward``.

    Parameters
    ----------
    layout : Layout
        The unit's payload sizes.
    bank_size : int
        Bytes of one bank of the frame buffer.
    crossbar : bool
        The unit has a crossbar port.

    Members
    -------
    frame : ``In(descriptor_layout(bank_size))``
        The request, as the receiver describes it; set at least a cycle before ``start`` (its
        op's classes are decoded in two registers) and held while the checker runs.
    start : ``In(1)``
        Strobe: check ``frame``.
    retry : ``In(1)``
        ``frame`` repeats one of the remembered commands.
    payload : ``In(PayloadReader.Signature(bank_size, element_bytes(layout)))``
        The frame's payload.
    done : ``Out(1)``
        Strobe: the verdict is on ``status`` and ``apply`` (registers, set a cycle after the
        verdict is reached).
    status : ``Out(range(max(Status) + 1))``
    apply : ``Out(1)``
        The request is valid and changes state: it is to be applied (not set for a retry).
    forward : ``Out(1)``
        A crossbar request (not a retry): to be forwarded to the driver.
    header : ``Out(Header)``
        The payload's fixed fields, from ``done`` until the next ``start`` (not read for a frame
        answered at once).
    """

    def __init__(self, layout: Layout, *, bank_size: int, crossbar: bool = False) -> None:
        if bank_size < layout.max_request:
            raise ValueError(
                f"bank_size {bank_size} cannot hold requests of {layout.max_request} bytes"
            )
        self.layout = layout
        self.bank_size = bank_size
        self.crossbar = crossbar
        super().__init__(
            {
                "frame": In(descriptor_layout(bank_size)),
                "start": In(1),
                "retry": In(1),
                "payload": In(PayloadReader.Signature(bank_size, element_bytes(layout))),
                "done": Out(1),
                "status": Out(range(max(Status) + 1)),
                "apply": Out(1),
                "forward": Out(1),
                "header": Out(Header),
            }
        )

    def elaborate(self, platform: object) -> Module:
        L = self.layout  # noqa: N806
        c = L.contract
        m = Module()
        frame, payload, header = self.frame, self.payload, self.header
        xbar_ops = tuple(op for op in Op if op.name.startswith("XBAR_")) if self.crossbar else ()
        op_now = {op: frame.op == op for op in (*_OPS, *xbar_ops)}
        plen = Signal(range(self.bank_size + 1))  # a register: the checks below a cycle later
        m.d.sync += plen.eq(frame.length - PAYLOAD)
        first = read_array(m, L, frame, payload)

        # what depends on the frame alone is registered: the frame is held from `start`, and
        # these are read from the next state on (the op's decoding and the length checks were
        # in series with the reader's control and the verdict)
        op_is = {op: Signal(name=f"is_{op.name.lower()}") for op in op_now}
        m.d.sync += [op_is[op].eq(op_now[op]) for op in op_now]
        # the classes of ops the verdict asks about, registers as well, from the decodes a cycle
        # later (each an OR of several decodes, which were in series with the verdict's
        # priorities; from the frame, its wide fan-out's routing was): in CLASSIFY when the
        # frame is set a cycle before `start`
        classes = {
            "known": tuple(op_now),
            "xbar": xbar_ops,
            "read": (Op.READ_HIDDEN, Op.READ_COUNTERS),
            "array": tuple(_ARRAY_HEAD),
            "block": (Op.WRITE_HIDDEN, Op.UPDATE, Op.UPDATE_LAYER),
            "update": (Op.UPDATE, Op.UPDATE_LAYER),
        }
        op_in = {name: Signal(name=f"op_{name}") for name in classes}
        m.d.sync += [
            op_in[name].eq(Cat(op_is[op] for op in ops).any() if ops else 0)
            for name, ops in classes.items()
        ]
        is_xbar = op_in["xbar"]
        lut_size = _ARRAY_HEAD[Op.LOAD_LUT] + L.lut_bytes * c.lut_entries
        plen_zero, plen_span, too_short = Signal(), Signal(), Signal()
        m.d.sync += [
            plen_zero.eq(plen == 0),
            plen_span.eq(plen == 6),
            too_short.eq(Mux(op_is[Op.LOAD_LUT], plen != lut_size, plen < first - PAYLOAD)),
        ]

        # each element checked from registers: the element a cycle after it is taken, the
        # comparisons of each width into flags a cycle later, `bad_value` from them after that
        # (the reader's sign extension, the comparisons and the op's choice were one path).
        # The last element's verdict is in `bad_value` three cycles after it is taken: in
        # VERDICT (the reader is done a cycle after it, then TALLY)
        element = Signal.like(payload.elements.payload)
        checking = [Signal(name=f"checking{i}") for i in range(2)]
        m.d.sync += [
            element.eq(payload.elements.payload),
            checking[0].eq(payload.elements.valid & payload.elements.ready),
            checking[1].eq(checking[0]),
        ]
        # each op's values narrowed to its element width (the reader extends from exactly it)
        hidden = element[: 8 * L.hidden_bytes].as_signed()
        update = element[: 8 * L.update_bytes].as_signed()
        entry = element[: 8 * L.lut_bytes]
        update_limit = 1 << (c.update_width - 1)
        bad_hidden, bad_update, bad_entry = Signal(), Signal(), Signal()
        m.d.sync += [
            bad_hidden.eq((hidden < c.w_min) | (hidden > c.w_max)),
            bad_update.eq((update < -update_limit) | (update >= update_limit)),
            bad_entry.eq(entry > c.meta_one),
        ]
        bad_element = Signal()
        with m.If(op_is[Op.WRITE_HIDDEN]):
            m.d.comb += bad_element.eq(bad_hidden)
        with m.Elif(op_in["update"]):
            m.d.comb += bad_element.eq(bad_update)
        with m.Else():
            m.d.comb += bad_element.eq(bad_entry)
        bad_value = Signal()  # cleared in CHECK, before the array's first element is taken
        with m.If(checking[1] & bad_element):
            m.d.sync += bad_value.eq(1)

        # the fixed fields' checks in registers, two cycles after the last field byte (MEASURE):
        # an adder and wide comparisons of the fields were in series with the verdict. A span
        # ends beyond the synapses when its start has a bit set above the low `low` bits (the
        # synapses are fewer than 2 ** low) or when the start's low bits plus the count are
        # more than the synapses: a short adder, not one of 34 bits
        low = L.addr_bits + 1
        read_far, read_low = Signal(), Signal(low + 17)
        span_bad, span_over, origin_after = Signal(), Signal(), Signal()
        m.d.sync += [
            read_far.eq(header.span.start[low:] != 0),
            read_low.eq(header.span.start[:low] + header.span.count),
            span_over.eq(read_far | (read_low > L.synapses)),
            span_bad.eq((header.span.count == 0) | (header.span.count > L.max_block)),
        ]
        # UPDATE_LAYER's origin after its start: the comparison in halves, a cycle apart (one
        # of 32 bits was a carry chain too long); valid long before VERDICT
        halves = [Signal(name=f"origin_{name}") for name in ("hi_gt", "hi_eq", "lo_gt")]
        origin, start = header.layer.origin, header.layer.start
        m.d.sync += [
            halves[0].eq(origin[16:] > start[16:]),
            halves[1].eq(origin[16:] == start[16:]),
            halves[2].eq(origin[:16] > start[:16]),
            origin_after.eq(halves[0] | (halves[1] & halves[2])),
        ]
        # the block's checks, registers too: its end's of the final count in TALLY (the count
        # is final when the reader is done), the comparisons in VERDICT
        range_far, range_low = Signal(), Signal(low + len(payload.count) + 1)
        count_bad, range_over = Signal(), Signal()
        m.d.sync += [
            range_far.eq(header.block.start[low:] != 0),
            range_low.eq(header.block.start[:low] + payload.count),
            range_over.eq(range_far | (range_low > L.synapses)),
            count_bad.eq((payload.count == 0) | (payload.count > L.max_block)),
        ]

        # the verdict leaves through registers, a cycle after it is reached: the range
        # comparisons and the retry lookup were one combinational path with the engine's
        # dispatch and the payload reader's control
        verdict = Signal(
            data.StructLayout({"done": 1, "status": self.status.shape(), "apply": 1, "forward": 1})
        )
        m.d.sync += [
            self.done.eq(verdict.done),
            self.status.eq(verdict.status),
            self.apply.eq(verdict.apply),
            self.forward.eq(verdict.forward),
        ]

        # the reader runs while `reading`, a flip-flop set and cleared with the state (in
        # HEADER and VALIDATE): decoded from the state, it was in series with the reader's
        # `take` and on into the state and the header's shift
        reading = Signal()
        m.d.comb += [payload.run.eq(reading), payload.elements.ready.eq(reading)]

        # each field byte into the header a cycle after it is read, from registers (the reader's
        # `take` reached every bit of the header's enable); the last one is in before MEASURE
        field_valid, field_byte = Signal(), Signal(8)
        m.d.sync += field_valid.eq(0)
        with m.If(field_valid):
            m.d.sync += header.eq(Cat(header.as_value()[8:], field_byte))

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    # the reader is pointed at the fixed fields whatever the verdict: its
                    # control then waits for no comparison
                    m.d.comb += [
                        payload.seek.eq(1),
                        payload.seek_to.eq(PAYLOAD),
                        payload.end.eq(PAYLOAD + _HEADER_BYTES),
                    ]
                    m.next = "CLASSIFY"

            with m.State("CLASSIFY"):
                # from the registered decoding of the op
                m.next = "IDLE"
                with m.If(frame.status != Status.OK):
                    m.d.comb += [verdict.done.eq(1), verdict.status.eq(frame.status)]
                with m.Elif(~op_in["known"]):
                    m.d.comb += [verdict.done.eq(1), verdict.status.eq(Status.OPCODE)]
                with m.Elif(self.retry):
                    m.d.comb += verdict.done.eq(1)
                with m.Elif(is_xbar):
                    m.d.comb += [verdict.done.eq(1), verdict.forward.eq(1)]
                with m.Else():
                    m.d.sync += reading.eq(1)
                    m.next = "HEADER"

            with m.State("HEADER"):
                # whatever the length: the checks below use only the fields the op has. The
                # reader stops at the fields' end (the seek's), and is done a cycle or two later
                with m.If(payload.raw.valid):
                    m.d.sync += [field_valid.eq(1), field_byte.eq(payload.raw.payload.data)]
                with m.If(payload.done):
                    m.d.sync += reading.eq(0)
                    m.next = "MEASURE"

            with m.State("MEASURE"):
                # the checks of the final fields are in their registers a cycle later, the
                # range's (after its sum) two
                m.next = "MEASURE_END"

            with m.State("MEASURE_END"):
                m.next = "CHECK"

            with m.State("CHECK"):
                m.d.sync += bad_value.eq(0)
                m.next = "IDLE"
                with m.If(op_is[Op.INFO]):
                    m.d.comb += verdict.done.eq(1)
                    with m.If(~plen_zero):
                        m.d.comb += verdict.status.eq(Status.LENGTH)
                with m.Elif(op_in["read"]):
                    m.d.comb += verdict.done.eq(1)
                    with m.If(~plen_span | span_bad):
                        m.d.comb += verdict.status.eq(Status.LENGTH)
                    with m.Elif(span_over):
                        m.d.comb += verdict.status.eq(Status.RANGE)
                with m.Elif(op_in["array"]):
                    m.d.comb += payload.seek.eq(1)
                    m.d.sync += reading.eq(1)
                    m.next = "VALIDATE"
                    with m.If(too_short):
                        m.d.comb += [verdict.done.eq(1), verdict.status.eq(Status.LENGTH)]
                        m.d.sync += reading.eq(0)
                        m.next = "IDLE"
                with m.Elif(op_is[Op.RESET]):
                    m.d.comb += verdict.done.eq(1)
                    with m.If(~plen_zero):
                        m.d.comb += verdict.status.eq(Status.LENGTH)
                    with m.Else():
                        m.d.comb += verdict.apply.eq(1)

            with m.State("VALIDATE"):
                with m.If(payload.done):
                    m.d.sync += reading.eq(0)
                    m.next = "TALLY"

            with m.State("TALLY"):
                m.next = "VERDICT"

            with m.State("VERDICT"):
                is_block = op_in["block"]
                m.d.comb += verdict.done.eq(1)
                m.next = "IDLE"
                with m.If(payload.partial | (is_block & count_bad)):
                    m.d.comb += verdict.status.eq(Status.LENGTH)
                with m.Elif((is_block & range_over) | (op_is[Op.UPDATE_LAYER] & origin_after)):
                    m.d.comb += verdict.status.eq(Status.RANGE)
                with m.Elif(bad_value):
                    m.d.comb += verdict.status.eq(Status.VALUE)
                with m.Else():
                    m.d.comb += verdict.apply.eq(1)

        return m
