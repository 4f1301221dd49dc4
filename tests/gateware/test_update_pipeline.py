"""The learning core (update pipeline and meta LUT) in the Amaranth simulator, against the model."""

from __future__ import annotations

import random
from typing import Any

import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator
from core_check import (
    CONTRACTS,
    Scenario,
    adversarial_hidden,
    adversarial_updates,
    core_testbenches,
    expected,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplast.gateware.synapse_core import SynapseCore
from metaplast.gateware.update_pipeline import (
    UpdatePipeline,
    thermometer_count,
    thermometer_lookup,
)

from .sim import simulate


def run(s: Scenario, name: str) -> Scenario:
    """Simulate ``s``; its events, final weights and counters must be the model's."""
    core, play, watch = core_testbenches(s)

    def check() -> None:
        assert s.observed() == expected(s)

    simulate(core, play, background=watch, name=name, check=check)
    return s


PORTS = pytest.mark.parametrize("single_port", [False, True], ids=["dual-port", "single-port"])
"""Every behaviour checked with the memories in dual-port block RAM and in single-port SPRAM."""


@PORTS
@pytest.mark.parametrize("name", sorted(CONTRACTS))
@pytest.mark.parametrize("ready_prob", [1.0, 0.3])
def test_adversarial_vectors_match_the_model(
    name: str, ready_prob: float, single_port: bool
) -> None:
    c = CONTRACTS[name]
    rng = random.Random(1)
    hidden = adversarial_hidden(c, 96, rng)
    updates = adversarial_updates(c, hidden, 400, rng)
    s = run(
        Scenario(c, 96, hidden, updates, ready_prob=ready_prob, single_port=single_port),
        f"adversarial-{name}-{single_port}",
    )
    assert len(s.events) > 20  # the vectors do cross levels


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.data())
def test_random_updates_match_the_model(data: st.DataObject) -> None:
    c = CONTRACTS[data.draw(st.sampled_from(sorted(CONTRACTS)))]
    synapses = data.draw(st.integers(1, 40))
    hidden = data.draw(
        st.lists(st.integers(c.w_min, c.w_max), min_size=synapses, max_size=synapses)
    )
    span = 1 << (c.update_width - 1)
    updates = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, synapses - 1),
                st.integers(-span, span - 1),
                st.integers(0, 2**32 - 1),
            ),
            max_size=60,
        )
    )
    mstar = data.draw(st.sampled_from([0.0, 1.5, 3.0, 6.0]))
    single_port = data.draw(st.booleans())
    s = Scenario(c, synapses, hidden, updates, mstar=mstar, ready_prob=0.6, single_port=single_port)
    run(s, "random")


@PORTS
def test_counters_saturate(single_port: bool) -> None:
    c = CONTRACTS["default"]
    lo, hi = c.level_ints[7], c.level_ints[9]
    # alternate one synapse between two levels: every update is a level change
    updates = [(0, (lo - hi if i % 2 == 0 else hi - lo) << c.guard_bits, 0) for i in range(9)]
    s = Scenario(c, 2, [lo, 0], updates, mstar=0.0, counter_width=3, single_port=single_port)
    run(s, f"saturate-{single_port}")
    assert s.counts[0] == 7


def test_one_update_per_clock_over_distinct_addresses() -> None:
    c = CONTRACTS["default"]
    n = 512
    hidden = [0] * n
    updates = [(a, 1 << c.guard_bits, 7) for a in range(n)]
    s = run(Scenario(c, n, hidden, updates), "throughput")
    # cycles with an update offered or in flight: n accepted, plus the seed's token (its hash
    # into stage 3), the inlet's skid buffer and the pipeline's drain
    assert s.cycles == n + 1 + 1 + UpdatePipeline.depth


def test_one_update_per_two_cycles_single_port() -> None:
    c = CONTRACTS["default"]
    n = 512
    hidden = [0] * n
    updates = [(a, 1 << c.guard_bits, 7) for a in range(n)]
    s = run(Scenario(c, n, hidden, updates, single_port=True), "throughput-single")
    # an update every other cycle, the seed's token, the inlet's skid buffer, the drain
    assert s.cycles == 2 * (n - 1) + 1 + 1 + 1 + UpdatePipeline.depth


def test_a_false_match_of_the_low_address_bits_costs_one_cycle() -> None:
    """Synapses 16 apart share the low bits the entering hazard is judged by: each waits one
    cycle (the exact comparison clears it), and the results are the model's."""
    c = CONTRACTS["default"]
    n = 64
    stride = 1 << UpdatePipeline.HAZARD_BITS
    hidden = [0] * (n * stride)
    sequential = [(a, 1 << c.guard_bits, 7) for a in range(n)]
    strided = [(a * stride, 1 << c.guard_bits, 7) for a in range(n)]
    base = run(Scenario(c, n * stride, hidden, sequential), "hazard-sequential")
    s = run(Scenario(c, n * stride, hidden, strided), "hazard-strided")
    assert s.cycles - base.cycles == n - 1


@PORTS
def test_a_new_seed_costs_a_cycle_at_most(single_port: bool) -> None:
    """The seed's half of the dither is hashed once per seed: a block of another seed waits a
    cycle at the inlet for its token (single-port: the token takes the cycle stage 1 has free
    between two updates), the same seed again does not, and each rounds with its own seed
    (the model's results)."""
    c = CONTRACTS["default"]
    n = 32

    def cycles(seeds: tuple[int, int]) -> int:
        updates = [(a, 3 << c.guard_bits, seeds[a // (n // 2)]) for a in range(n)]
        s = Scenario(c, n, [0] * n, updates, single_port=single_port)
        return run(s, f"seeds-{seeds}-{single_port}").cycles

    assert cycles((7, 9)) == cycles((7, 7)) + (0 if single_port else 1)


@PORTS
def test_synapses_a_multiple_of_256_apart_wait_as_one_synapse_does(single_port: bool) -> None:
    """The hazard compares the low ``WAIT_BITS``: synapse 256 right after synapse 0 waits for
    its write-back as synapse 0 again would, and both end as the model's."""
    c = CONTRACTS["default"]
    alias = 1 << UpdatePipeline.WAIT_BITS
    step = 1 << c.guard_bits

    def cycles(second: int) -> int:
        updates = [(0, step, 7), (second, step, 7)]
        s = Scenario(c, 2 * alias, [0] * (2 * alias), updates, single_port=single_port)
        return run(s, f"alias-{second}-{single_port}").cycles

    assert cycles(alias) == cycles(0) > cycles(1)


@PORTS
@pytest.mark.parametrize("gap", list(range(UpdatePipeline.depth + 2)))
def test_read_after_write_at_every_distance(single_port: bool, gap: int) -> None:
    """The same synapse again after ``gap`` other synapses, at every distance the pipeline's
    stages and write-backs can be apart, level changes (and counts) each time."""
    c = CONTRACTS["default"]
    lo, hi = c.level_ints[7], c.level_ints[9]
    down, up = (lo - hi) << c.guard_bits, (hi - lo) << c.guard_bits
    updates = []
    for i in range(12):
        updates.append((0, down if i % 2 == 0 else up, i))
        updates += [(1 + (j % 7), down if i % 2 == 0 else up, j) for j in range(gap)]
    hidden = [lo] * 8
    s = Scenario(c, 8, hidden, updates, mstar=0.0, ready_prob=0.8, single_port=single_port)
    run(s, f"raw-{gap}-{single_port}")
    assert s.counts[0] == 12


@PORTS
def test_a_slow_event_sink_holds_the_inlet_and_loses_no_event(single_port: bool) -> None:
    """Every update a level change and the sink ready one cycle in twenty: the event FIFO
    fills up to the inlet's credit, the inlet waits, and no event is lost or reordered."""
    c = CONTRACTS["default"]
    lo, hi = c.level_ints[7], c.level_ints[9]
    n = 64
    step = (hi - lo) << c.guard_bits
    updates = [(i % n, step if (i // n) % 2 == 0 else -step, i) for i in range(4 * n)]
    s = Scenario(c, n, [lo] * n, updates, mstar=0.0, ready_prob=0.05, single_port=single_port)
    core, play, watch = core_testbenches(s)
    peak = 0

    async def level(ctx: Any) -> None:
        nonlocal peak
        while True:
            _, _, held = await ctx.tick().sample(core.events_fifo.level)
            peak = max(peak, held)

    def check() -> None:
        assert s.observed() == expected(s)

    simulate(core, play, background=[*watch, level], name=f"slow-sink-{single_port}", check=check)
    assert len(s.events) == 4 * n
    # the FIFO took the pipeline's events past the inlet's credit, and never refused one
    assert SynapseCore.events_depth - UpdatePipeline.depth - 3 < peak < SynapseCore.events_depth


@PORTS
def test_crossbar_tile_of_8192_synapses(single_port: bool) -> None:
    c = CONTRACTS["default"]
    n = 8192
    rng = random.Random(8192)
    hidden = adversarial_hidden(c, n, rng)
    updates = adversarial_updates(c, hidden, 1500, rng)
    updates += [(a, rng.randint(-(1 << 20), 1 << 20), 99) for a in range(n - 300, n)]
    s = run(
        Scenario(c, n, hidden, updates, ready_prob=0.8, single_port=single_port),
        f"tile-8192-{single_port}",
    )
    assert len(s.events) > 100


@pytest.mark.parametrize("boundaries", [1, 2, 3, 7, 8, 15, 16, 17])
def test_thermometer_count_is_the_number_of_ones(boundaries: int) -> None:
    """The level encoder against a plain count, every thermometer code of each width."""
    width = boundaries.bit_length()
    m = Module()
    t = Signal(boundaries)
    count = Signal(width)
    m.d.comb += count.eq(thermometer_count(t, width))

    async def testbench(ctx: Any) -> None:
        for ones in range(boundaries + 1):
            ctx.set(t, (1 << ones) - 1)
            assert ctx.get(count) == ones, f"{ones} ones of {boundaries}"

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_thermometer_lookup_is_the_levels_weight(name: str) -> None:
    """The level's weight from its thermometer against the table, at every level."""
    c = CONTRACTS[name]
    m = Module()
    t = Signal(len(c.boundary_ints))
    weight = Signal(signed(c.hidden_width))
    m.d.comb += weight.eq(thermometer_lookup(t, c.level_ints, signed(c.hidden_width)))

    async def testbench(ctx: Any) -> None:
        for level, expected_weight in enumerate(c.level_ints):
            ctx.set(t, (1 << level) - 1)
            assert ctx.get(weight) == expected_weight, f"level {level}"

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
