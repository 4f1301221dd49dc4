"""Checking the learning core against the bit-exact model under the Amaranth simulator.

A :class:`Scenario` is initial hidden weights, a LUT and a stream of ``(address, d, seed)``
updates; :func:`core_testbenches` plays it into
:class:`~metaplast.gateware.synapse_core.SynapseCore` (with random back-pressure on the
events) and :func:`expected` computes what the model says. It lives beside the tests, not in
the package: the tests use it, and so can a lab that changes the gateware
(``experiments/bit_exactness.py``). The vector generators aim at the corners: weights on
levels and boundaries, exact landings, saturation, zero and extreme updates, the same synapse
back to back.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import torch

from metaplast.contract import Contract
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.gateware.synapse_core import SynapseCore

__all__ = [
    "CONTRACTS",
    "Scenario",
    "adversarial_hidden",
    "adversarial_updates",
    "core_testbenches",
    "expected",
]

Testbench = Callable[[Any], Coroutine[Any, Any, None]]

CONTRACTS: dict[str, Contract] = {
    "default": Contract(),
    # unequal levels, narrow words, a small LUT, nearest rounding: the other corners
    "uneven-12bit": Contract(
        levels=(-1.0, -0.55, -0.2, 0.0, 0.15, 0.5, 1.1),
        hidden_width=12,
        guard_bits=4,
        lut_entries=16,
        meta_bits=8,
        rounding="nearest",
    ),
}
"""Contracts the gateware is checked with (tests, cocotb, ``experiments/bit_exactness.py``)."""


@dataclass
class Scenario:
    """What to play into the core, and (filled by the run) what came out."""

    contract: Contract
    synapses: int
    hidden: list[int]
    updates: list[tuple[int, int, int]]  # (address, d, seed)
    mstar: float = 3.0
    ready_prob: float = 1.0
    """Probability that the event sink is ready in a cycle (below 1 the pipeline stalls)."""
    counter_width: int = 16
    single_port: bool = False
    """The memories in single-port stores (SPRAM), one update per two cycles."""
    seed: int = 0
    events: list[tuple[int, int, int]] = field(default_factory=list)
    final: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    cycles: int = 0
    """Cycles with an update offered or in flight."""

    def observed(self) -> tuple[list[tuple[int, int, int]], list[int], list[int]]:
        return self.events, self.final, self.counts


def expected(s: Scenario) -> tuple[list[tuple[int, int, int]], list[int], list[int]]:
    """Events, final hidden weights and (saturated) change counts according to the model."""
    unit = DigitalUnit(s.contract, s.synapses)
    unit.load_lut(s.mstar)
    unit.write(0, s.hidden)
    events = []
    for addr, d, seed in s.updates:
        ch = unit.update(torch.tensor([d]), start=addr, seed=seed)
        events += zip(
            ch.address.tolist(), ch.old_level.tolist(), ch.new_level.tolist(), strict=True
        )
    limit = (1 << s.counter_width) - 1
    return events, unit.read().tolist(), unit.change_count.clamp(max=limit).tolist()


def core_testbenches(s: Scenario) -> tuple[SynapseCore, list[Testbench], list[Testbench]]:
    """The core for ``s``, the testbench that plays ``s`` and the background ones that watch.

    The main testbench loads the LUT and the weights through the core's ports, streams the
    updates (one per cycle when the core is ready), waits for the pipeline to drain and reads
    every weight and counter back into ``s``.
    """
    core = SynapseCore(
        s.contract, s.synapses, counter_width=s.counter_width, single_port=s.single_port
    )
    table = s.contract.meta_lut(s.mstar)
    rng = random.Random(s.seed)

    async def play(ctx: Any) -> None:
        while ctx.get(core.initializing):  # a single-port core clears its memories first
            await ctx.tick()
        for i, v in enumerate(table):
            ctx.set(core.load.index, i)
            ctx.set(core.load.value, v)
            ctx.set(core.load.en, 1)
            await ctx.tick()
        ctx.set(core.load.en, 0)
        for a, v in enumerate(s.hidden):
            ctx.set(core.access.addr, a)
            ctx.set(core.access.wdata, v)
            ctx.set(core.access.we, 1)
            ctx.set(core.access.clear, 1)
            await ctx.tick()
        ctx.set(core.access.we, 0)
        ctx.set(core.access.clear, 0)
        for addr, d, seed in s.updates:
            ctx.set(core.update.valid, 1)
            ctx.set(core.update.payload, {"addr": addr, "d": d, "seed": seed})
            await ctx.tick().until(core.update.ready)
        ctx.set(core.update.valid, 0)
        await ctx.tick()
        while ctx.get(core.busy):
            await ctx.tick()
        for a in range(s.synapses):
            ctx.set(core.access.addr, a)
            await ctx.tick().repeat(2)
            s.final.append(ctx.get(core.access.rdata))
            s.counts.append(ctx.get(core.access.count))

    # background testbenches use plain ticks: they are closed mid-wait when the run ends
    async def sink(ctx: Any) -> None:
        while True:
            ctx.set(core.events.ready, rng.random() < s.ready_prob)
            _, _, valid, ready, ev = await ctx.tick().sample(
                core.events.valid, core.events.ready, core.events.payload
            )
            if valid and ready:
                s.events.append((int(ev.addr), int(ev.old), int(ev.new)))

    async def clock(ctx: Any) -> None:
        while True:
            _, _, valid, busy = await ctx.tick().sample(core.update.valid, core.busy)
            if valid or busy:
                s.cycles += 1

    return core, [play], [sink, clock]


def adversarial_hidden(c: Contract, n: int, rng: random.Random) -> list[int]:
    """Weights on levels, on boundaries and one below, at midpoints, at both clip ends."""
    special = [c.w_min, c.w_max, c.w_min + 1, c.w_max - 1, 0]
    special += list(c.level_ints) + list(c.boundary_ints) + [b - 1 for b in c.boundary_ints]
    lv = c.level_ints
    special += [(a + b) // 2 for a, b in zip(lv[:-1], lv[1:], strict=True)]
    return [special[i] if i < len(special) else rng.randint(c.w_min, c.w_max) for i in range(n)]


def adversarial_updates(
    c: Contract, hidden: list[int], n: int, rng: random.Random
) -> list[tuple[int, int, int]]:
    """Zero and extreme updates, exact landings on boundaries and levels, back-to-back repeats."""
    top = (1 << (c.update_width - 1)) - 1
    out = []
    shadow = list(hidden)
    for _ in range(n):
        addr = rng.randrange(len(hidden)) if rng.random() < 0.7 else out[-1][0] if out else 0
        w = shadow[addr]
        kind = rng.randrange(7)
        if kind == 0:
            d = 0
        elif kind == 1:
            d = rng.choice([top, -top - 1])
        elif kind == 2:  # a full step (M = 1 when moving towards the level) onto a boundary
            d = (w - rng.choice(c.boundary_ints)) << c.guard_bits
        elif kind == 3:
            d = (w - rng.choice(c.level_ints)) << c.guard_bits
        elif kind == 4:
            d = rng.randint(-(1 << c.guard_bits), 1 << c.guard_bits)
        else:
            d = rng.randint(-(1 << (c.update_width - 3)), 1 << (c.update_width - 3))
        d = max(-top - 1, min(top, d))
        out.append((addr, d, rng.getrandbits(32)))
        shadow[addr] = max(c.w_min, min(c.w_max, w - (d >> c.guard_bits)))
    return out
