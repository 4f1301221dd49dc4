"""The reply builder against the command model: the same response bytes, op by op."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Any

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib.memory import Memory
from core_check import CONTRACTS

from metaplast.contract import Contract
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.gateware.reply_builder import ReplyBuilder
from metaplast.protocol import (
    RESPONSE,
    FrameDecoder,
    Info,
    Layout,
    Op,
    Status,
    decode_events,
    encode_frame,
    mstar_code,
)

from .sim import simulate

DEPTH = 2
CLOCK_HZ, DIVISOR = 12_000_000, 4


@dataclass
class Request:
    """What the engine tells the builder about one request, and what the model answers."""

    op: int
    seq: int
    status: int
    elements: int = 0
    bank: int = 0
    base: int = 0
    lut_mstar: int = 0
    lut_crc: int = 0
    body: bytes = b""
    """The model's response without the framing: op | 0x80, seq, status, payload."""


def model_reply(model: CommandModel, data: bytes) -> bytes:
    (frame,) = FrameDecoder().feed(model.feed(data))
    return bytes((frame.op, frame.seq)) + frame.payload


def scenario(layout: Layout, rng: random.Random) -> tuple[list[Request], CommandModel, dict]:
    """A session through the model (weights, a LUT, updates), then the requests to answer.

    Returns the requests, the model in its final state (what the memories hold) and the events
    of the last two UPDATEs by event bank.
    """
    c, n, block = layout.contract, layout.synapses, layout.max_block
    model = CommandModel(layout, clock_hz=CLOCK_HZ, baud_divisor=DIVISOR)
    for start in range(0, n, block):
        w = [rng.randint(c.w_min, c.w_max) for _ in range(min(block, n - start))]
        model.feed(encode_frame(Op.WRITE_HIDDEN, 1, layout.write_hidden(start, w)))
    model.feed(encode_frame(Op.LOAD_LUT, 2, layout.load_lut(2.5)))
    requests, banks = [], {}
    big = 1 << (c.update_width - 2)
    for i in range(4):
        count = rng.randint(1, block)
        start = rng.randrange(n - count + 1)
        d = [rng.randint(-big, big) for _ in range(count)]
        body = model_reply(model, encode_frame(Op.UPDATE, 10 + i, layout.update(start, i, d)))
        events = decode_events(body[3:])
        if i >= 2:  # the last two, as the retry memory keeps them
            bank = i % DEPTH
            banks[bank] = events
            requests.append(Request(Op.UPDATE, 10 + i, Status.OK, len(events), bank, body=body))
    info = model.info()
    live = {"lut_mstar": mstar_code(info.lut_mstar), "lut_crc": info.lut_crc}
    for seq, (op, payload) in enumerate(
        [
            (Op.WRITE_HIDDEN, layout.write_hidden(0, [0])),  # OK, no payload (before the reads)
            (Op.INFO, b""),
            (Op.READ_HIDDEN, layout.span(0, min(block, n))),
            (Op.READ_COUNTERS, layout.span(0, min(block, n))),
            (Op.READ_HIDDEN, layout.span(n - 1, 1)),
            (Op.READ_COUNTERS, layout.span(n - 3, 3)),
            (Op.READ_HIDDEN, layout.span(n - 1, 2)),  # RANGE: no payload
            (Op.INFO, b"\x00"),  # LENGTH
            (0x55, b""),  # OPCODE
        ],
        start=40,
    ):
        body = model_reply(model, encode_frame(op, seq, payload))
        base, elements = 0, 0
        if op in (Op.READ_HIDDEN, Op.READ_COUNTERS):
            base, elements = struct.unpack_from("<IH", payload)
        requests.append(Request(op, seq, body[2], elements, base=base, body=body, **live))
    # a frame the receiver rejected (its CRC): answered with the received op and seq
    bad = encode_frame(Op.UPDATE, 77, layout.update(0, 0, [1]))
    bad = bad[:-3] + bytes([bad[-3] ^ 1]) + bad[-2:]
    (frame,) = FrameDecoder().feed(bad)
    body = bytes((frame.op | RESPONSE, frame.seq, Status.CRC))
    assert model_reply(model, bad) == body
    requests.append(Request(frame.op, frame.seq, Status.CRC, body=body))
    return requests, model, banks


def with_memories(builder: ReplyBuilder, model: CommandModel, banks: dict) -> Module:
    """The builder reading the model's weights, counts and the kept events from block RAM."""
    L = builder.layout  # noqa: N806
    c = L.contract
    m = Module()
    m.submodules.builder = builder
    limit = (1 << L.counter_width) - 1
    hidden = Memory(
        shape=signed(c.hidden_width), depth=L.synapses, init=model.unit.read(0, L.synapses).tolist()
    )
    counts = Memory(
        shape=unsigned(L.counter_width),
        depth=L.synapses,
        init=model.unit.change_count.clamp(max=limit).tolist(),
    )
    index_bits = (L.max_block - 1).bit_length()
    words = [0] * (DEPTH << index_bits)
    for bank, events in banks.items():
        for i, (offset, old, new) in enumerate(events):
            words[(bank << index_bits) + i] = offset | old << 16 | new << 24
    events = Memory(shape=32, depth=len(words), init=words)
    m.submodules += [hidden, counts, events]
    h, k, e = hidden.read_port(), counts.read_port(), events.read_port()
    # as in the unit: the engine registers the address, the pipeline the memories' outputs,
    # the retry memory its events'
    addr = Signal.like(builder.access.addr)
    m.d.sync += [
        addr.eq(builder.access.addr),
        builder.access.rdata.eq(h.data),
        builder.access.count.eq(k.data),
        builder.events.data.eq(e.data),
    ]
    m.d.comb += [
        h.addr.eq(addr),
        k.addr.eq(addr),
        e.addr.eq(Cat(builder.events.index[:index_bits], builder.events.bank)),
    ]
    return m


def check_against_model(layout: Layout, name: str, ready: float) -> None:
    rng = random.Random(7)
    requests, model, banks = scenario(layout, rng)
    answer(layout, requests, model, banks, name, ready, rng)


def answer(
    layout: Layout,
    requests: list[Request],
    model: CommandModel,
    banks: dict,
    name: str,
    ready: float,
    rng: random.Random,
) -> None:
    """Have the builder answer ``requests`` from the model's state; compare with the model."""
    info = Info.from_layout(layout, clock_hz=CLOCK_HZ, baud_divisor=DIVISOR)
    dut = ReplyBuilder(layout, info=info, depth=DEPTH)
    sent: list[bytes] = []

    async def bench(ctx: Any) -> None:
        for r in requests:
            for port, value in (
                (dut.op, r.op), (dut.seq, r.seq), (dut.base, r.base),
                (dut.lut_mstar, r.lut_mstar), (dut.lut_crc, r.lut_crc),
            ):  # fmt: skip
                ctx.set(port, value)
            ctx.set(dut.order, {"status": r.status, "elements": r.elements, "bank": r.bank})
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.order, {"status": 0, "elements": 0, "bank": 0})  # read at start only
            body, last, cycles = bytearray(), False, 0
            while not last:
                assert cycles < 50 * (len(r.body) + 4), f"reply to {r.op:#x} stalled at {body}"
                take = rng.random() < ready
                ctx.set(dut.body.ready, take)
                if ctx.get(dut.body.valid) and take:
                    body.append(ctx.get(dut.body.payload.byte))
                    last = bool(ctx.get(dut.body.payload.last))
                assert not ctx.get(dut.done)
                await ctx.tick()
                cycles += 1
            assert ctx.get(dut.done), "done is the cycle after the last byte was taken"
            await ctx.tick()  # a start is taken from the cycle after done
            ctx.set(dut.body.ready, 0)
            sent.append(bytes(body))

    def check() -> None:
        assert sent == [r.body for r in requests]

    simulate(with_memories(dut, model, banks), [bench], name=name, check=check)


def test_every_kind_of_response_is_the_models() -> None:
    check_against_model(Layout(Contract(), 48, max_block=16), "reply-default", ready=1.0)


def test_a_slow_sender_and_uneven_widths() -> None:
    # 12-bit weights in two bytes, 4-bit counters, 7 levels, 20 synapses
    layout = Layout(CONTRACTS["uneven-12bit"], 20, max_block=8, counter_width=4)
    check_against_model(layout, "reply-uneven", ready=0.4)


def test_more_than_255_events() -> None:
    """The event count's high byte: a block of 256 in which every synapse changes level."""
    layout = Layout(Contract(), 256, max_block=256)
    c = layout.contract
    model = CommandModel(layout, clock_hz=CLOCK_HZ, baud_divisor=DIVISOR)
    model.feed(encode_frame(Op.WRITE_HIDDEN, 1, layout.write_hidden(0, [0] * 256)))
    d = [-(1 << (c.update_width - 2))] * 256  # about one weight unit down: a level at least
    body = model_reply(model, encode_frame(Op.UPDATE, 2, layout.update(0, 5, d)))
    events = decode_events(body[3:])
    assert len(events) == 256
    request = Request(Op.UPDATE, 2, Status.OK, len(events), bank=1, body=body)
    answer(layout, [request], model, {1: events}, "reply-256", 1.0, random.Random(0))
