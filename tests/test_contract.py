"""The numeric contract: formats, LUT, and the vectorized update against a scalar spec."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplast import rule
from metaplast.contract import Contract, address_hash, mix32
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit

UNEQUAL = (-1.0, -0.4, -0.1, 0.0, 0.2, 0.7, 1.5)
CONTRACTS = [
    Contract(),
    Contract(hidden_width=12, rounding="nearest", lut_entries=16, meta_bits=6, guard_bits=4),
    Contract(hidden_width=24, guard_bits=0),
    Contract(levels=UNEQUAL, hidden_width=14, lut_entries=32),
]


def spec_update(c: Contract, w: int, d: int, lut: tuple[int, ...], dither: int) -> int:
    """The contract's update for one synapse, written from the module docstring with ints."""
    lvl = sum(1 for b in c.boundary_ints if w >= b)
    ws = c.level_ints[lvl]
    ivl = min(max(lvl if w >= ws else lvl - 1, 0), len(c.levels) - 2)
    j = min(c.lut_entries - 1, (abs(w - ws) * c.recips[ivl]) >> c.recip_shift)
    m = lut[j] if d * (w - ws) < 0 else c.meta_one
    r = (1 << (c.round_shift - 1)) if c.rounding == "nearest" else dither
    step = (d * m + r) >> c.round_shift
    return min(max(w - step, c.w_min), c.w_max)


def test_default_formats() -> None:
    c = Contract()
    assert (c.hidden_width, c.int_bits, c.frac_bits) == (16, 2, 14)
    assert c.level_ints[8] == 0 and c.level_ints[-1] == 24576 and c.level_ints[9] == 3072
    assert c.boundary_ints[8] == 1536
    assert (c.w_min, c.w_max) == (-26112, 26112)
    assert (c.update_width, c.update_frac_bits) == (24, 22)
    assert all(a < b for a, b in zip(c.boundary_ints, c.boundary_ints[1:], strict=False))


@pytest.mark.parametrize("c", CONTRACTS, ids=range(len(CONTRACTS)))
def test_offset_max_is_the_farthest_weight_from_its_level(c: Contract) -> None:
    """Every weight of the clip range, its level by the spec: the gateware cuts the offset's
    magnitude to ``offset_max``'s bits, so it must bound every one and be reached."""
    w = torch.arange(c.w_min, c.w_max + 1)
    lvl = (w[:, None] >= torch.tensor(c.boundary_ints)).sum(1)
    offsets = (w - torch.tensor(c.level_ints)[lvl]).abs()
    assert int(offsets.max()) == c.offset_max


def test_int_bits_follow_the_level_range() -> None:
    assert Contract(levels=(-0.5, 0.0, 0.5)).int_bits == 1
    assert Contract(levels=rule.uniform_levels(5, -3.0, 3.0)).int_bits == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_width": 4}, "hidden_width"),
        ({"lut_entries": 48}, "power of two"),
        ({"rounding": "truncate"}, "rounding"),
        ({"levels": (0.0, 1e-6, 1.0), "hidden_width": 10}, "collide"),
        ({"levels": (1.0, 0.0)}, "increasing"),
    ],
)
def test_bad_contracts_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Contract(**kwargs)


def test_lut_contents() -> None:
    c = Contract()
    assert c.meta_lut(0.0) == (c.meta_one,) * c.lut_entries
    lut = c.meta_lut(3.0)
    assert list(lut) == sorted(lut)
    assert lut[0] == round((1 - math.tanh(3.0 * (0.5 / 64 - 1)) ** 2) * c.meta_one)
    assert lut[-1] <= c.meta_one
    assert c.lut_identity(3.0) != c.lut_identity(2.0)
    assert c.lut_identity(3.0) == Contract().lut_identity(3.0)
    with pytest.raises(ValueError):
        c.meta_lut(-1.0)


@pytest.mark.parametrize("c", CONTRACTS[:2] + CONTRACTS[3:])
def test_tables_equal_the_arithmetic(c: Contract) -> None:
    w = torch.arange(c.w_min, c.w_max + 1)
    assert c._tables is not None
    lvl, off, j = c.locate(w)
    ref_lvl = c._search_level(w)
    _, ref_off, ref_j = c._locate(w, ref_lvl)
    assert torch.equal(lvl, ref_lvl) and torch.equal(off, ref_off) and torch.equal(j, ref_j)


def test_wide_formats_compute_without_tables() -> None:
    assert CONTRACTS[2]._tables is None


@pytest.mark.parametrize("ci", range(len(CONTRACTS)))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_vectorized_update_matches_the_scalar_spec(ci: int, data: st.DataObject) -> None:
    c = CONTRACTS[ci]
    n = data.draw(st.integers(1, 40))
    special = list(c.level_ints) + list(c.boundary_ints) + [c.w_min, c.w_max, 0]
    w_strategy = st.one_of(st.integers(c.w_min, c.w_max), st.sampled_from(special))
    dlim = 2 ** (c.update_width - 1)
    d_strategy = st.one_of(
        st.integers(-dlim, dlim - 1),
        st.integers(-(2**c.guard_bits), 2**c.guard_bits),
        st.sampled_from([0, -dlim, dlim - 1, 1, -1]),
    )
    w = torch.tensor(data.draw(st.lists(w_strategy, min_size=n, max_size=n)))
    d = torch.tensor(data.draw(st.lists(d_strategy, min_size=n, max_size=n)))
    mstar = data.draw(st.sampled_from([0.0, 1.0, 3.0, 5.0]))
    seed = data.draw(st.integers(0, 2**32 - 1))
    lut = c.meta_lut(mstar)
    dither = c.dither(seed, address_hash(torch.arange(n)))
    new, before, after = c.apply(w, d, lut, dither=dither)
    expected = [
        spec_update(c, int(wi), int(di), lut, int(ri))
        for wi, di, ri in zip(w, d, dither, strict=True)
    ]
    assert new.tolist() == expected
    assert torch.equal(before, c.level_of(w)) and torch.equal(after, c.level_of(new))


def test_mstar_zero_is_rounded_plain_sgd() -> None:
    c = Contract(rounding="nearest")
    w = torch.arange(-20000, 20000, 37)
    d = torch.randint(-(2**16), 2**16, w.shape, generator=torch.Generator().manual_seed(1))
    new, _, _ = c.apply(w, d, c.meta_lut(0.0))
    step = (d + (1 << (c.guard_bits - 1))) >> c.guard_bits
    assert torch.equal(new, (w - step).clamp(c.w_min, c.w_max))


def test_saturation_at_both_ends() -> None:
    c = Contract(rounding="nearest")
    big = 2 ** (c.update_width - 1) - 1
    new, _, after = c.apply(
        torch.tensor([c.w_max, c.w_min]), torch.tensor([-big, big]), c.meta_lut(0.0)
    )
    assert new.tolist() == [c.w_max, c.w_min]
    assert after.tolist() == [len(c.levels) - 1, 0]


def test_stochastic_rounding_is_unbiased_for_sub_lsb_steps() -> None:
    c = Contract()
    n = 4096
    w = torch.zeros(n, dtype=torch.int64)
    d = torch.full((n,), -(2**c.guard_bits) // 10)  # a tenth of an LSB, towards the level
    hashes = address_hash(torch.arange(n))
    total = torch.zeros(n, dtype=torch.int64)
    for seed in range(50):
        new, _, _ = c.apply(w, d, c.meta_lut(0.0), dither=c.dither(seed, hashes))
        total += new - w
    mean = total.double().mean().item() / 50
    assert mean == pytest.approx(0.1, abs=0.01)
    nearest = Contract(rounding="nearest")
    assert nearest.apply(w, d, nearest.meta_lut(0.0))[0].abs().sum() == 0


def test_stochastic_rounding_needs_a_dither() -> None:
    with pytest.raises(ValueError, match="dither"):
        Contract().apply(
            torch.zeros(1, dtype=torch.int64),
            torch.ones(1, dtype=torch.int64),
            Contract().meta_lut(0.0),
        )


def test_mix32_is_a_bijection_on_a_block() -> None:
    x = torch.arange(1 << 16)
    assert torch.unique(mix32(x)).numel() == 1 << 16
    bits = (mix32(x) & 0xFF).double()
    assert bits.mean().item() == pytest.approx(127.5, abs=2)


@pytest.mark.parametrize("mstar", [0.0, 3.0])
def test_fixed_point_tracks_the_float_rule(mstar: float) -> None:
    """Within the LUT's bin error and one LSB of rounding, the contract is the float rule."""
    c = Contract(hidden_width=20, rounding="nearest", lut_entries=256, meta_bits=14)
    g = torch.Generator().manual_seed(3)
    w_f = (torch.rand(20000, generator=g, dtype=torch.float64) * 3.1) - 1.55
    d_f = (torch.rand(20000, generator=g, dtype=torch.float64) - 0.5) * 0.02
    w_i = c.hidden_to_int(w_f)
    d_i = c.update_to_int(d_f)
    new_i, _, _ = c.apply(w_i, d_i, c.meta_lut(mstar))
    new_f = rule.update(
        c.hidden_to_float(w_i), d_i / 2**c.update_frac_bits, c.level_values(), mstar
    )
    # slope of M is at most m* per unit of normalized distance; a bin is 1/N wide
    bound = 0.01 * (mstar / 256 + 2**-c.meta_bits) + 2**-c.frac_bits
    assert (c.hidden_to_float(new_i) - new_f).abs().max().item() <= bound


def test_digital_unit_events_and_counters() -> None:
    c = Contract(rounding="nearest")
    unit = DigitalUnit(c, 6)
    unit.write(0, [0, 1500, 1600, -1500, c.w_max, c.w_min])
    unit.load_lut(3.0)
    lsb = 2**c.guard_bits
    events = unit.update(torch.tensor([0, -100 * lsb, -100 * lsb, 100 * lsb, -lsb, lsb]))
    assert events.address.tolist() == [1, 3]
    assert events.old_level.tolist() == [8, 8]
    assert events.new_level.tolist() == [9, 7]
    assert unit.change_count.tolist() == [0, 1, 0, 1, 0, 0]
    assert torch.equal(unit.levels(), c.level_of(unit.read()))
    more = unit.update(torch.tensor([-100 * lsb]), start=2)
    assert len(more) == 0 and unit.read(2, 1).item() == 1600 + 200


def test_digital_unit_refuses_bad_access() -> None:
    unit = DigitalUnit(Contract(), 4)
    with pytest.raises(IndexError):
        unit.read(3, 2)
    with pytest.raises(IndexError):
        unit.update(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError):
        unit.write(0, [10**9])
    with pytest.raises(ValueError):
        DigitalUnit(Contract(), 0)


@pytest.mark.parametrize(
    "levels", [rule.DEFAULT_LEVELS, (-1.0, -0.25, 0.0, 0.5, 1.0, 2.0), (-1.5, -0.5, 0.5, 1.5)]
)
def test_vectorized_device_levels_and_operation_counts(levels: tuple[float, ...]) -> None:
    from metaplast.host.programming import ProgrammingCounter

    c = Contract(levels=levels)
    n = len(levels)
    every = torch.arange(n)
    p, m = c.device_levels_of(every)
    assert [(int(a), int(b)) for a, b in zip(p, m, strict=True)] == [
        c.device_levels(k) for k in range(n)
    ]
    assert int(torch.maximum(p, m).max()) == c.device_level_count - 1
    mags = c.device_magnitudes()
    assert mags[0] == 0 and list(mags) == sorted(mags) and len(mags) == c.device_level_count
    # every transition costs as many operations as the programming port emits for it
    old, new = torch.meshgrid(every, every, indexing="ij")
    counter = ProgrammingCounter(c, [old])
    start = counter.counts[0].clone()
    counter.record(0, new)
    ops = (counter.counts[0] - start).sum(0)
    for a in range(n):
        for b in range(n):
            assert int(ops[a, b]) == len(c.device_operations(a, b))
