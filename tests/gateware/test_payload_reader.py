"""The payload reader over a real frame-buffer memory: elements, bytes, counts and pace."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from amaranth import Module
from amaranth.lib.memory import Memory

from metaplast.gateware.payload_reader import PayloadReader

from .sim import simulate
from .test_uart import rejects

BANK = 64


def with_buffer(reader: PayloadReader, contents: bytes) -> Module:
    """``reader`` on a two-bank frame buffer holding ``contents`` (bank 0 first)."""
    m = Module()
    m.submodules.reader = reader
    m.submodules.buffer = buffer = Memory(shape=8, depth=2 * reader.bank_size, init=contents)
    port = buffer.read_port()
    m.d.comb += [port.addr.eq(reader.read_addr), reader.read_data.eq(port.data)]
    return m


@dataclass
class Pass:
    """What one read from a seek to ``done`` produced."""

    elements: list[int] = field(default_factory=list)
    raw: list[tuple[int, int]] = field(default_factory=list)  # (index, byte)
    counts: list[int] = field(default_factory=list)  # `count` after each element taken
    partial: bool = False
    cycles: int = 0  # from the cycle after the seek to the first with `done`


async def read(
    ctx: Any,
    reader: PayloadReader,
    *,
    bank: int = 0,
    seek_to: int,
    end: int,
    size: int,
    signed: bool,
    ready: float = 1.0,
    rng: random.Random | None = None,
) -> Pass:
    """Seek, then run until ``done``, taking elements with probability ``ready``; check the
    stream rule (an element offered stays, unchanged, until taken) on the way."""
    port, rng = reader.payload, rng or random.Random(0)
    ctx.set(reader.bank, bank)
    ctx.set(port.size, size)
    ctx.set(port.signed, signed)
    ctx.set(port.end, end)
    ctx.set(port.seek_to, seek_to)
    ctx.set(port.seek, 1)
    ctx.set(port.run, 0)
    await ctx.tick()
    ctx.set(port.seek, 0)
    ctx.set(port.run, 1)
    out, waiting = Pass(), None
    while not ctx.get(port.done):
        assert out.cycles < 20 * BANK, "the reader never finished"
        take = rng.random() < ready
        ctx.set(port.elements.ready, take)
        valid, value = ctx.get(port.elements.valid), ctx.get(port.elements.payload)
        if waiting is not None:
            assert valid and value == waiting, "an offered element changed before it was taken"
        if ctx.get(port.raw.valid):
            out.raw.append((ctx.get(port.raw.payload.index), ctx.get(port.raw.payload.data)))
        await ctx.tick()
        out.cycles += 1
        waiting = value if valid and not take else None
        if valid and take:
            out.elements.append(value)
            out.counts.append(ctx.get(port.count))
    out.partial = bool(ctx.get(port.partial))
    ctx.set(port.run, 0)
    return out


def boundary_values(size: int, signed: bool) -> list[int]:
    bits = 8 * size
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return [lo, lo + 1, -2, -1, 0, 1, hi - 1, hi, -(1 << (bits - 2)), 1 << (bits - 2)]
    return [0, 1, (1 << (bits - 1)) - 1, 1 << (bits - 1), (1 << bits) - 2, (1 << bits) - 1]


def encode(values: list[int], size: int, signed: bool) -> bytes:
    return b"".join(v.to_bytes(size, "little", signed=signed) for v in values)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_elements_of_every_size_at_their_boundaries(size: int, signed: bool) -> None:
    """Every element's value, sign- or zero-extended from its size, one byte per cycle."""
    values = boundary_values(size, signed)
    start = 3  # not aligned to anything
    payload = encode(values, size, signed)
    reader = PayloadReader(bank_size=BANK, max_bytes=4)
    contents = bytes(range(0xA0, 0xA0 + start)) + payload
    results: list[Pass] = []

    async def bench(ctx: Any) -> None:
        results.append(
            await read(
                ctx, reader, seek_to=start, end=start + len(payload), size=size, signed=signed
            )
        )

    simulate(with_buffer(reader, contents), [bench], name=f"reader-{size}-{signed}")
    (got,) = results
    assert got.elements == values
    assert got.counts == list(range(1, len(values) + 1))
    assert got.raw == list(enumerate(payload, start))
    assert not got.partial
    # a byte per cycle after the three cycles that seek, request and queue the first (the
    # seek and the address are registers); the last element taken at once
    assert got.cycles == 3 + len(payload) + 1


def test_a_shorter_element_does_not_keep_the_bytes_of_a_longer_one() -> None:
    """Bytes above the element's size are its sign (or zero), not what a longer one left."""
    reader = PayloadReader(bank_size=BANK, max_bytes=3)
    long = encode([0x7FFFFF, -1], 3, True)  # leaves 0x7F then 0xFF in the top byte
    short = encode([-2, 5, 0x8001 - 0x10000], 2, True)
    unsigned = encode([0xFFFF], 2, False)
    contents = long + short + unsigned
    results: list[Pass] = []

    async def bench(ctx: Any) -> None:
        results.append(await read(ctx, reader, seek_to=0, end=6, size=3, signed=True))
        results.append(await read(ctx, reader, seek_to=6, end=12, size=2, signed=True))
        results.append(await read(ctx, reader, seek_to=0, end=6, size=3, signed=True))
        results.append(await read(ctx, reader, seek_to=12, end=14, size=2, signed=False))

    simulate(with_buffer(reader, contents), [bench], name="reader-mixed")
    assert [r.elements for r in results] == [
        [0x7FFFFF, -1],
        [-2, 5, -0x7FFF],
        [0x7FFFFF, -1],
        [0xFFFF],
    ]
    assert [r.counts[-1] for r in results] == [2, 3, 2, 1]  # the count restarts at each seek


@pytest.mark.parametrize("extra", [1, 2])
def test_a_payload_that_is_not_whole_elements_is_partial(extra: int) -> None:
    reader = PayloadReader(bank_size=BANK, max_bytes=3)
    values = [100, -100, 7]
    payload = encode(values, 3, True) + bytes(range(1, extra + 1))
    results: list[Pass] = []

    async def bench(ctx: Any) -> None:
        results.append(
            await read(ctx, reader, seek_to=2, end=2 + len(payload), size=3, signed=True)
        )
        results.append(await read(ctx, reader, seek_to=2, end=2 + 9, size=3, signed=True))
        results.append(await read(ctx, reader, seek_to=2, end=2, size=3, signed=True))

    simulate(with_buffer(reader, b"\x00\x00" + payload), [bench], name=f"reader-partial-{extra}")
    partial, whole, empty = results
    assert partial.elements == values and partial.partial
    assert len(partial.raw) == len(payload)  # the leftover bytes are read all the same
    assert whole.elements == values and not whole.partial
    assert empty.elements == [] and not empty.partial and empty.counts == []
    assert empty.cycles == 1  # nothing to read: done as soon as the seek is done


def test_a_slow_sink_gets_every_element_in_order() -> None:
    rng = random.Random(11)
    values = [rng.randrange(-(1 << 15), 1 << 15) for _ in range(12)]
    payload = encode(values, 2, True)
    reader = PayloadReader(bank_size=BANK, max_bytes=3)
    results: list[Pass] = []

    async def bench(ctx: Any) -> None:
        results.append(
            await read(
                ctx, reader, bank=1, seek_to=4, end=4 + len(payload), size=2, signed=True,
                ready=0.3, rng=random.Random(5),
            )
        )  # fmt: skip

    contents = bytes(BANK) + bytes(4) + payload  # in bank 1: the bank is part of the address
    simulate(with_buffer(reader, contents), [bench], name="reader-slow")
    (got,) = results
    assert got.elements == values
    assert got.raw == list(enumerate(payload, 4))
    assert got.cycles > 1 + len(payload) + 1  # it waited for the sink


def test_reading_stops_while_run_is_low() -> None:
    reader = PayloadReader(bank_size=BANK, max_bytes=2)
    payload = encode([1, 2, 3, 4], 2, False)
    seen: list[int] = []

    async def bench(ctx: Any) -> None:
        port = reader.payload
        ctx.set(port.size, 2)
        ctx.set(port.end, len(payload))
        ctx.set(port.elements.ready, 1)
        ctx.set(port.seek, 1)
        await ctx.tick()
        ctx.set(port.seek, 0)
        for cycle in range(60):
            ctx.set(port.run, cycle % 10 < 2)  # two cycles in ten
            if ctx.get(port.elements.valid):
                seen.append(ctx.get(port.elements.payload))
            assert ctx.get(port.raw.valid) <= (cycle % 10 < 2)
            await ctx.tick()
        assert ctx.get(port.done)

    simulate(with_buffer(reader, payload), [bench], name="reader-run")
    assert seen == [1, 2, 3, 4]


def test_parameters_are_checked() -> None:
    rejects(ValueError, "bank_size", lambda: PayloadReader(bank_size=48, max_bytes=2))
    rejects(ValueError, "max_bytes", lambda: PayloadReader(bank_size=64, max_bytes=0))
    assert PayloadReader.Signature(64, 3) == PayloadReader.Signature(64, 3)
    assert PayloadReader.Signature(64, 3) != PayloadReader.Signature(64, 2)
