"""The applier (with its payload reader on a frame buffer) in front of a stand-in pipeline."""

from __future__ import annotations

import random
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from core_check import CONTRACTS

from metaplast.contract import Contract
from metaplast.gateware.command_applier import CommandApplier
from metaplast.protocol import Layout, Op, Status, lut_crc, mstar_code

from .sim import FrameBufferBench, simulate

TINY = Layout(Contract(), 48, max_block=16)
UNEVEN = Layout(CONTRACTS["uneven-12bit"], 20, max_block=8, counter_width=4)
PIPELINE_DEPTH = 5


class Harness(FrameBufferBench):
    """A applier reading through a payload reader from a frame buffer the bench fills."""

    def __init__(self, layout: Layout) -> None:
        self.applier = CommandApplier(layout, bank_size=layout.receive_buffer)
        super().__init__(layout, self.applier)


@dataclass
class Effects:
    """Everything the applier did while applying one request."""

    writes: list[tuple[int, int, bool]] = field(default_factory=list)  # addr, wdata, clear
    updates: list[tuple[int, int, int, int]] = field(default_factory=list)  # cycle, addr, d, seed
    lut: list[tuple[int, int]] = field(default_factory=list)
    commits: list[tuple[int, int]] = field(default_factory=list)  # m*, CRC
    records: list[tuple[int, int, int]] = field(default_factory=list)
    begins: int = 0
    done_at: int = 0
    last_event_at: int = -1


def levels(addr: int, d: int) -> tuple[int, int] | None:
    """The stand-in pipeline's level change for an update (every other one changes)."""
    return (addr % 7, (addr + d) % 7) if d % 2 else None


async def apply(
    ctx: Any, h: Harness, payload: bytes, op: int, *, ready: float, rng: random.Random
) -> Effects:
    """Store the request in bank 1, start the applier, play the pipeline until it is done."""
    body = bytes((op, 9)) + payload
    for i, b in enumerate(body):
        ctx.set(h.write_addr, h.bank_size + i)
        ctx.set(h.write_data, b)
        ctx.set(h.write_en, 1)
        await ctx.tick()
    ctx.set(h.write_en, 0)
    a = h.applier
    ctx.set(a.frame, {"bank": 1, "length": len(body), "status": Status.OK, "op": op, "seq": 9})
    ctx.set(a.header.as_value(), int.from_bytes(payload[:8].ljust(8, b"\0"), "little"))
    await ctx.tick().repeat(2)  # the frame two cycles before the start (the array's format)
    ctx.set(a.start, 1)
    out, pending, cycle = Effects(), deque(), 0  # pending: (due cycle, addr, old, new)
    while True:
        assert cycle < 40 * h.bank_size, "the applier never finished"
        take = rng.random() < ready
        ctx.set(a.update.ready, take)
        event = pending[0] if pending and pending[0][0] <= cycle else None
        ctx.set(a.events.valid, event is not None)
        if event is not None:
            ctx.set(a.events.payload, {"addr": event[1], "old": event[2], "new": event[3]})
            pending.popleft()
            out.last_event_at = cycle
        ctx.set(a.pipeline_busy, bool(pending))
        if ctx.get(a.access.we):
            out.writes.append(
                (ctx.get(a.access.addr), ctx.get(a.access.wdata), bool(ctx.get(a.access.clear)))
            )
        if ctx.get(a.update.valid) and take:
            u = ctx.get(a.update.payload)
            out.updates.append((cycle, u.addr, u.d, u.seed))
            change = levels(u.addr, u.d)
            if change is not None:
                pending.append((cycle + PIPELINE_DEPTH, u.addr, *change))
        if ctx.get(a.lut.en):
            out.lut.append((ctx.get(a.lut.index), ctx.get(a.lut.value)))
        if ctx.get(a.lut.commit):
            out.commits.append((ctx.get(a.lut.mstar), ctx.get(a.lut.crc)))
        out.begins += ctx.get(a.record.begin)
        if ctx.get(a.record.event.valid):
            r = ctx.get(a.record.event.payload)
            out.records.append((r.offset, r.old, r.new))
        done = ctx.get(a.done)
        await ctx.tick()
        ctx.set(a.start, 0)
        cycle += 1
        if done:
            out.done_at = cycle
            break
    assert not ctx.get(a.busy)
    return out


def run(layout: Layout, requests: list[tuple[int, bytes]], name: str, ready: float) -> list:
    h = Harness(layout)
    results: list[Effects] = []
    stray: list[bool] = []

    async def bench(ctx: Any) -> None:
        rng = random.Random(1)
        for op, payload in requests:
            results.append(await apply(ctx, h, payload, op, ready=ready, rng=rng))
            # a level change that no UPDATE being applied caused is not recorded
            ctx.set(h.applier.events.valid, 1)
            stray.append(bool(ctx.get(h.applier.record.event.valid)))
            await ctx.tick()
            ctx.set(h.applier.events.valid, 0)

    simulate(h, [bench], name=name)
    assert not any(stray)
    return results


def check_all_ops(layout: Layout, name: str, ready: float) -> None:
    c, n = layout.contract, layout.synapses
    rng = random.Random(layout.synapses)
    hidden = [rng.randint(c.w_min, c.w_max) for _ in range(layout.max_block)]
    table = c.meta_lut(2.0)
    big = 1 << (c.update_width - 2)
    d = [rng.randint(-big, big) for _ in range(layout.max_block - 1)]
    start, seed = n - len(d), 0x9E3779B9
    requests = [
        (Op.WRITE_HIDDEN, layout.write_hidden(3, hidden)),
        (Op.UPDATE, layout.update(start, seed, d)),
        (Op.LOAD_LUT, layout.load_lut(2.0)),
        (Op.RESET, b""),
    ]
    write, update, load, reset = run(layout, requests, name, ready)

    assert write.writes == [(3 + i, v, False) for i, v in enumerate(hidden)]
    assert not (write.updates or write.lut or write.commits or write.records)

    assert [u[1:] for u in update.updates] == [(start + i, v, seed) for i, v in enumerate(d)]
    changes = [(start + i, levels(start + i, v)) for i, v in enumerate(d)]
    assert update.records == [(a - start, *ch) for a, ch in changes if ch is not None]
    assert update.records and update.done_at > update.last_event_at  # waits for the pipeline
    assert not (update.writes or update.lut or update.commits)

    assert load.lut == list(enumerate(table))
    assert load.commits == [(mstar_code(2.0), lut_crc(table))]

    assert reset.writes == [(a, 0, True) for a in range(n)]
    assert reset.lut == list(enumerate(c.meta_lut(0.0)))
    assert reset.commits == [(0, lut_crc(c.meta_lut(0.0)))]

    assert [e.begins for e in (write, update, load, reset)] == [1, 1, 1, 1]


def test_every_op_does_what_the_protocol_says() -> None:
    check_all_ops(TINY, "applier-tiny", ready=1.0)


def test_a_slow_pipeline_and_uneven_widths() -> None:
    check_all_ops(UNEVEN, "applier-uneven", ready=0.35)


def test_updates_leave_at_one_per_element_size() -> None:
    """The pace the engine's throughput rests on: an always-ready pipeline takes an update every
    ``update_bytes`` cycles, the first in the cycle after its last byte is read (the start cycle
    asks for the seek, the next one seeks, the two after request the first byte and queue
    it)."""
    L = TINY  # noqa: N806
    (effects,) = run(L, [(Op.UPDATE, L.update(0, 1, [2] * L.max_block))], "applier-pace", 1.0)
    cycles = [u[0] for u in effects.updates]
    assert cycles[0] == 4 + L.update_bytes
    assert {b - a for a, b in zip(cycles, cycles[1:], strict=False)} == {L.update_bytes}


def test_the_lut_crc_covers_the_bytes_written() -> None:
    """A table other than the contract's: the identity is computed, not looked up."""
    L = TINY  # noqa: N806
    entries = [(i * 37) % (L.contract.meta_one + 1) for i in range(L.contract.lut_entries)]
    payload = struct.pack("<H", 0x0123) + b"".join(struct.pack("<H", e) for e in entries)
    (effects,) = run(L, [(Op.LOAD_LUT, payload)], "applier-crc", 1.0)
    assert effects.commits == [(0x0123, lut_crc(entries))]
