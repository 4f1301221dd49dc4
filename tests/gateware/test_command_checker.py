"""The checker (with its payload reader on a frame buffer) against the command model's verdicts."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Any

from core_check import CONTRACTS

from metaplast.contract import Contract
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.gateware.command_checker import CommandChecker
from metaplast.protocol import (
    MUTATING,
    FrameDecoder,
    Layout,
    Op,
    Status,
    encode_frame,
    signed_bytes,
)

from .sim import FrameBufferBench, simulate

TINY = Layout(Contract(), 48, max_block=16)
UNEVEN = Layout(CONTRACTS["uneven-12bit"], 20, max_block=8, counter_width=4)
GATEWARE_OPS = [Op(op) for op in range(Op.INFO, Op.RESET + 1)]
"""The ops the unit executes (later versions of the protocol add others)."""


class Harness(FrameBufferBench):
    """A checker reading through a payload reader from a frame buffer the bench fills."""

    def __init__(self, layout: Layout) -> None:
        self.checker = CommandChecker(layout, bank_size=layout.receive_buffer)
        super().__init__(layout, self.checker)


@dataclass
class Verdict:
    status: int
    apply: bool
    cycles: int  # from start to done
    header: Any


async def check(ctx: Any, h: Harness, body: bytes, bank: int, *, retry: bool = False) -> Verdict:
    """Store ``body`` (op to CRC) in ``bank``, describe it as the receiver would, start the
    checker and wait for its verdict."""
    for i, b in enumerate(body[: h.bank_size]):
        ctx.set(h.write_addr, bank * h.bank_size + i)
        ctx.set(h.write_data, b)
        ctx.set(h.write_en, 1)
        await ctx.tick()
    ctx.set(h.write_en, 0)
    (frame,) = FrameDecoder(max_frame=h.bank_size).feed(b"\xc0" + stuff_free(body) + b"\xc0")
    checker = h.checker
    ctx.set(
        checker.frame,
        {
            "bank": bank,
            "length": min(len(body), h.bank_size) - 2,
            "status": frame.error or Status.OK,
            "op": frame.op,
            "seq": frame.seq,
            "crc": frame.crc,
        },
    )
    ctx.set(checker.retry, retry)
    await ctx.tick()  # the frame a cycle before the start (the op's decoding is two registers)
    ctx.set(checker.start, 1)
    cycles = 0
    while not ctx.get(checker.done):
        assert cycles < 4 * h.bank_size, "no verdict"
        await ctx.tick()
        ctx.set(checker.start, 0)
        cycles += 1
    verdict = Verdict(
        ctx.get(checker.status), bool(ctx.get(checker.apply)), cycles, ctx.get(checker.header)
    )
    ctx.set(checker.start, 0)
    await ctx.tick()
    return verdict


def stuff_free(body: bytes) -> bytes:
    """``body`` as the decoder reads it back (escaped, so that its bytes survive)."""
    return body.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")


def model_status(layout: Layout, body: bytes) -> int:
    """The status a fresh model (nothing to retry) answers ``body`` with."""
    decoder = FrameDecoder(max_frame=layout.receive_buffer)  # the receiver's limit
    (frame,) = decoder.feed(b"\xc0" + stuff_free(body) + b"\xc0")
    (reply,) = FrameDecoder().feed(CommandModel(layout).handle(frame))
    return reply.payload[0]


def unframe(wire: bytes) -> bytes:
    """The body (op to CRC) of a frame from :func:`encode_frame`."""
    return wire[1:-1].replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")


def requests(layout: Layout, rng: random.Random, count: int) -> list[bytes]:
    """Bodies of valid and invalid requests of every op, many on the edges of a check."""
    c, n, block = layout.contract, layout.synapses, layout.max_block
    limit = 1 << (c.update_width - 1)
    bad_value = {
        Op.WRITE_HIDDEN: [c.w_min - 1, c.w_max + 1],
        # only where the format is narrower than its bytes
        Op.UPDATE: [-limit - 1, limit] if c.update_width < 8 * layout.update_bytes else [],
        Op.LOAD_LUT: [c.meta_one + 1, 0xFFFF],
    }
    good_value = {
        Op.WRITE_HIDDEN: [c.w_min, c.w_max, 0, -1],
        Op.UPDATE: [-limit, limit - 1, 0, 1],
        Op.LOAD_LUT: [0, c.meta_one],
    }
    out = []
    for i in range(count):
        op = rng.choice([*GATEWARE_OPS, 0x00, 0x55])
        seq = i & 0xFF
        if op in (Op.INFO, Op.RESET):
            payload = bytes(rng.choice([0, 0, 0, 1, 2]))
        elif op in (Op.READ_HIDDEN, Op.READ_COUNTERS):
            k = rng.choice([0, 1, block, block + 1, rng.randint(1, block)])
            start = rng.choice([0, n - k, n - k + 1, rng.randrange(n), 1 << 31])
            payload = struct.pack("<IH", start & 0xFFFFFFFF, k)
            payload = payload[: rng.choice([6, 6, 6, 5])] + bytes(rng.choice([0, 0, 1]))
        elif op in (Op.WRITE_HIDDEN, Op.UPDATE, Op.LOAD_LUT):
            k = c.lut_entries if op == Op.LOAD_LUT else rng.choice([0, 1, block, block + 1])
            k = k if rng.random() < 0.7 else rng.randint(1, block)
            values = [rng.choice(good_value[op]) for _ in range(k)]
            if values and bad_value[op] and rng.random() < 0.4:
                values[rng.randrange(k)] = rng.choice(bad_value[op])
            size = {Op.WRITE_HIDDEN: layout.hidden_bytes, Op.UPDATE: layout.update_bytes}
            if op == Op.LOAD_LUT:
                head, array = struct.pack("<H", 300), b"".join(struct.pack("<H", v) for v in values)
            else:
                start = rng.choice([0, n - k, n - k + 1, rng.randrange(n)]) & 0xFFFFFFFF
                head = struct.pack("<I", start)
                if op == Op.UPDATE:
                    head += struct.pack("<I", seq)  # the seed
                array = b"".join(signed_bytes([v], size[op]) for v in values)
            payload = head + array
            if rng.random() < 0.2:
                payload = payload[: rng.randrange(len(payload) + 1)]  # cut anywhere
            elif rng.random() < 0.2:
                payload += bytes(rng.randint(1, 2))  # a partial element
        else:
            payload = bytes(rng.randint(0, 3))
        body = unframe(encode_frame(op, seq, payload))
        if rng.random() < 0.05:
            body = body[:-1] + bytes([body[-1] ^ 0x10])  # the receiver finds a bad CRC
        out.append(body)
    return out


def run_against_model(layout: Layout, name: str, count: int) -> None:
    bodies = requests(layout, random.Random(layout.synapses), count)
    h = Harness(layout)
    verdicts: list[Verdict] = []

    async def bench(ctx: Any) -> None:
        for i, body in enumerate(bodies):
            verdicts.append(await check(ctx, h, body, i % 2))

    simulate(h, [bench], name=name)
    expected = [model_status(layout, body) for body in bodies]
    got = [v.status for v in verdicts]
    assert got == expected
    assert {Status.OK, Status.LENGTH, Status.RANGE, Status.VALUE, Status.OPCODE} <= set(got)
    for body, v in zip(bodies, verdicts, strict=True):
        assert v.apply == (v.status == Status.OK and body[0] in MUTATING)


def test_verdicts_are_the_models() -> None:
    run_against_model(TINY, "checker-tiny", 160)


def test_verdicts_with_uneven_widths() -> None:
    run_against_model(UNEVEN, "checker-uneven", 120)


def test_fixed_fields_and_the_pace_of_the_check() -> None:
    L = TINY  # noqa: N806
    h = Harness(L)
    frames = [
        unframe(encode_frame(Op.READ_HIDDEN, 1, L.span(7, 9))),
        unframe(encode_frame(Op.LOAD_LUT, 2, L.load_lut(3.0))),
    ] + [unframe(encode_frame(Op.UPDATE, 3, L.update(20, 0xC0FFEE, [5] * k))) for k in (1, 4, 16)]
    verdicts: list[Verdict] = []

    async def bench(ctx: Any) -> None:
        for body in frames:
            verdicts.append(await check(ctx, h, body, 0))

    simulate(h, [bench], name="checker-fields")
    read, lut, *updates = verdicts
    assert (read.header.span.start, read.header.span.count) == (7, 9)
    assert lut.header.lut.mstar == 3 * 256
    assert all((u.header.block.start, u.header.block.seed) == (20, 0xC0FFEE) for u in updates)
    assert all(v.status == Status.OK for v in verdicts)
    # the payload is read at one byte per cycle: each element adds its size in cycles
    k1, k4, k16 = (u.cycles for u in updates)
    assert k4 - k1 == 3 * L.update_bytes and k16 - k4 == 12 * L.update_bytes


def test_a_retry_is_not_checked_again_but_a_bad_frame_is_still_bad() -> None:
    L = TINY  # noqa: N806
    h = Harness(L)
    good = unframe(encode_frame(Op.UPDATE, 5, L.update(0, 1, [1, 2, 3])))
    corrupted = good[:-1] + bytes([good[-1] ^ 1])
    unknown = unframe(encode_frame(0x66, 5))
    verdicts: list[Verdict] = []

    async def bench(ctx: Any) -> None:
        for body in (good, corrupted, unknown):
            verdicts.append(await check(ctx, h, body, 1, retry=True))

    simulate(h, [bench], name="checker-retry")
    assert [(v.status, v.apply, v.cycles) for v in verdicts] == [
        (Status.OK, False, 2),  # two cycles after it started (registered op and verdict)
        (Status.CRC, False, 2),
        (Status.OPCODE, False, 2),
    ]
