"""The retry memory against a list of the last commands: which are recognised, with which events."""

from __future__ import annotations

import random
from typing import Any

import pytest

from metaplast.gateware.retry_memory import RetryMemory

from .sim import simulate
from .test_uart import rejects

Key = tuple[int, int, int]  # op, seq, crc
Event = tuple[int, int, int]  # offset, old, new


class Bench:
    """Drives a :class:`RetryMemory` as the command engine does."""

    def __init__(self, dut: RetryMemory) -> None:
        self.dut = dut

    def set_key(self, ctx: Any, key: Key) -> None:
        op, seq, crc = key
        ctx.set(self.dut.key, {"op": op, "seq": seq, "crc": crc})

    async def execute(self, ctx: Any, key: Key, events: list[Event]) -> None:
        """Record a command's response (its events arrive one per cycle), then remember it."""
        dut = self.dut
        ctx.set(dut.record.begin, 1)
        await ctx.tick()
        ctx.set(dut.record.begin, 0)
        for offset, old, new in events:
            ctx.set(dut.record.event.valid, 1)
            ctx.set(dut.record.event.payload, {"offset": offset, "old": old, "new": new})
            await ctx.tick()
        ctx.set(dut.record.event.valid, 0)
        assert ctx.get(dut.recorded.events) == len(events)
        self.set_key(ctx, key)
        ctx.set(dut.push, 1)
        await ctx.tick()
        ctx.set(dut.push, 0)

    async def look_up(self, ctx: Any, key: Key) -> list[Event] | None:
        """The stored events of ``key`` as a retry would send them, or ``None`` if forgotten."""
        dut = self.dut
        self.set_key(ctx, key)
        await ctx.tick().repeat(2)  # each byte's comparison, then the key's, are registers
        if not ctx.get(dut.hit):
            return None
        count, bank = ctx.get(dut.stored.events), ctx.get(dut.stored.bank)
        events = []
        ctx.set(dut.replay.bank, bank)
        for i in range(count):
            ctx.set(dut.replay.index, i)
            await ctx.tick().repeat(2)
            data = ctx.get(dut.replay.data)
            events.append((data.offset, data.old, data.new))
        assert ctx.get(dut.hit), "a lookup changed what is remembered"
        return events


def events_for(rng: random.Random, max_block: int) -> list[Event]:
    return [
        (rng.randrange(max_block), rng.randrange(16), rng.randrange(16))
        for _ in range(rng.randint(0, max_block))
    ]


A, B, C = (0x05, 1, 0x1234), (0x03, 2, 0xBEEF), (0x05, 3, 0x0F0F)


def test_either_of_the_last_two_is_a_retry_and_a_retry_reorders_nothing() -> None:
    dut = RetryMemory(depth=2, max_block=8)
    bench = Bench(dut)
    seen: dict[str, Any] = {}

    async def run(ctx: Any) -> None:
        await bench.execute(ctx, A, [(0, 1, 2), (5, 3, 2)])
        await bench.execute(ctx, B, [])
        for _ in range(3):  # A retried again and again: still the older of the two
            seen.setdefault("A", []).append(await bench.look_up(ctx, A))
        seen["B"] = await bench.look_up(ctx, B)
        await bench.execute(ctx, C, [(7, 0, 1)])
        seen["A after C"] = await bench.look_up(ctx, A)
        seen["B after C"] = await bench.look_up(ctx, B)
        seen["C"] = await bench.look_up(ctx, C)

    simulate(dut, [run], name="retry-two")
    assert seen["A"] == [[(0, 1, 2), (5, 3, 2)]] * 3
    assert seen["B"] == []  # remembered, with no events
    assert seen["A after C"] is None  # the third-newest is forgotten
    assert seen["B after C"] == [] and seen["C"] == [(7, 0, 1)]


def test_a_retry_repeats_op_seq_and_crc() -> None:
    dut = RetryMemory(depth=2, max_block=4)
    bench = Bench(dut)
    hits: list[bool] = []

    async def run(ctx: Any) -> None:
        await bench.execute(ctx, A, [(1, 2, 3)])
        for key in (A, (A[0] ^ 1, A[1], A[2]), (A[0], A[1] + 1, A[2]), (A[0], A[1], A[2] ^ 0x8000)):
            bench.set_key(ctx, key)
            await ctx.tick().repeat(2)
            hits.append(bool(ctx.get(dut.hit)))

    simulate(dut, [run], name="retry-key")
    assert hits == [True, False, False, False]


def test_nothing_is_remembered_at_first_and_the_newest_match_wins() -> None:
    dut = RetryMemory(depth=2, max_block=4)
    bench = Bench(dut)
    seen: list[Any] = []

    async def run(ctx: Any) -> None:
        seen.append(await bench.look_up(ctx, (0, 0, 0)))
        await bench.execute(ctx, A, [(1, 1, 1)])
        await bench.execute(ctx, A, [(2, 2, 2), (3, 3, 3)])
        seen.append(await bench.look_up(ctx, A))

    simulate(dut, [run], name="retry-newest")
    assert seen == [None, [(2, 2, 2), (3, 3, 3)]]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_random_commands_against_a_list_of_the_last(depth: int) -> None:
    """Whatever the sequence, exactly the last ``depth`` commands are recognised, each with
    its own events intact (a new response never overwrites a remembered one's bank)."""
    max_block = 6
    dut = RetryMemory(depth=depth, max_block=max_block)
    bench = Bench(dut)
    rng = random.Random(depth)
    keys = [(op, seq, crc) for op in (3, 4, 5, 7) for seq in (0, 1) for crc in (0, 0xFFFF)]
    mismatches: list[str] = []

    async def run(ctx: Any) -> None:
        remembered: list[tuple[Key, list[Event]]] = []  # newest first
        for step in range(60):
            key = rng.choice(keys)
            model = next((ev for k, ev in remembered if k == key), None)
            got = await bench.look_up(ctx, key)
            if got != model:
                mismatches.append(f"step {step}: {key} gave {got}, expected {model}")
            if got is None or rng.random() < 0.2:  # execute (a retry is answered, not executed)
                events = events_for(rng, max_block)
                await bench.execute(ctx, key, events)
                remembered = [(key, events), *remembered][:depth]

    simulate(dut, [run], name=f"retry-random-{depth}")
    assert mismatches == []


def test_parameters_are_checked() -> None:
    rejects(ValueError, "depth", lambda: RetryMemory(depth=0, max_block=4))
    rejects(ValueError, "max_block", lambda: RetryMemory(depth=2, max_block=0))
    assert RetryMemory.ReplaySignature(2, 8) == RetryMemory.ReplaySignature(2, 8)
    assert RetryMemory.ReplaySignature(2, 8) != RetryMemory.ReplaySignature(3, 8)
