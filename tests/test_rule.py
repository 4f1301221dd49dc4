"""The float reference rule: Eq. 1, Eq. 2 and Algorithm 1 with the documented conventions."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplast import rule

Q = torch.tensor(rule.DEFAULT_LEVELS, dtype=torch.float64)
STEP = 0.1875
UNEQUAL = (-1.0, -0.4, -0.1, 0.0, 0.2, 0.7, 1.5)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_default_levels_are_the_papers() -> None:
    assert len(rule.DEFAULT_LEVELS) == 17
    assert rule.DEFAULT_LEVELS[0] == -1.5 and rule.DEFAULT_LEVELS[-1] == 1.5
    assert torch.allclose(Q[1:] - Q[:-1], torch.full((16,), STEP, dtype=torch.float64))


def test_approx_picks_nearest_level() -> None:
    w = t(0.0, 0.05, 0.1, -0.1, 0.7, -1.45, 1.49)
    assert rule.approx(w).tolist() == [0.0, 0.0, 0.1875, -0.1875, 0.75, -1.5, 1.5]


def test_ties_go_to_the_upper_level() -> None:
    w = t(STEP / 2, -STEP / 2, 1.5 - STEP / 2)
    assert rule.approx(w).tolist() == [STEP, 0.0, 1.5]


def test_outside_outermost_levels_maps_to_them() -> None:
    assert rule.approx(t(-3.0, 2.0)).tolist() == [-1.5, 1.5]


def test_unequal_levels() -> None:
    w = t(-0.3, -0.24, 0.11, 0.44, 0.46, 1.2)
    assert rule.approx(w, UNEQUAL).tolist() == [-0.4, -0.1, 0.2, 0.2, 0.7, 1.5]


@pytest.mark.parametrize("bad", [(0.0,), (), (1.0, 0.0), (0.0, 0.0, 1.0), (0.0, float("nan"))])
def test_bad_level_sets_are_refused(bad: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="level"):
        rule.check_levels(bad)


def test_meta_function_shape() -> None:
    mstar = 3.0
    on_level = rule.meta_function(Q, mstar=mstar)
    assert torch.allclose(on_level, torch.full_like(Q, 1 - math.tanh(mstar) ** 2))
    mid = (Q[1:] + Q[:-1]) / 2
    assert torch.allclose(rule.meta_function(mid, mstar=mstar), torch.ones_like(mid))
    w = t(0.3, 0.3 + 1e-3)
    assert torch.allclose(rule.meta_function(w, mstar=0.0), torch.ones(2, dtype=torch.float64))


def test_meta_function_uses_the_width_of_the_holding_interval() -> None:
    # W_H = 0.05 lies in [0, 0.2] (width 0.2): distance 0.05 is a quarter of that interval
    mstar = 2.0
    got = rule.meta_function(t(0.05, -0.025), UNEQUAL, mstar)
    expected_a = 1 - math.tanh(2 * mstar / 0.2 * 0.05 - mstar) ** 2
    expected_b = 1 - math.tanh(2 * mstar / 0.1 * 0.025 - mstar) ** 2  # in [-0.1, 0]
    assert got.tolist() == pytest.approx([expected_a, expected_b])


def test_negative_mstar_is_refused() -> None:
    with pytest.raises(ValueError, match="m\\*"):
        rule.meta_function(t(0.0), mstar=-1.0)
    with pytest.raises(ValueError, match="m\\*"):
        rule.update(t(0.0), t(0.1), mstar=-0.5)


def test_update_attenuates_only_moves_away_from_the_level() -> None:
    mstar = 3.0
    w = t(0.02, 0.02)  # just above level 0
    d = t(-0.01, 0.01)  # W_H - d: first moves away (up), second moves back towards 0
    m = rule.meta_function(w, mstar=mstar)
    new = rule.update(w, d, mstar=mstar)
    assert new[0].item() == pytest.approx(0.02 + 0.01 * m[0].item())
    assert new[1].item() == pytest.approx(0.01)


def test_update_on_a_level_is_not_attenuated() -> None:
    # the test of Algorithm 1 is strict: d * (W_H - W_S) = 0 takes the full step
    new = rule.update(t(0.375, 0.375), t(0.05, -0.05), mstar=5.0)
    assert new.tolist() == pytest.approx([0.325, 0.425])


def test_update_clips_to_the_outermost_cells() -> None:
    low, high = rule.hidden_range()
    assert (low, high) == (-1.5 - STEP / 2, 1.5 + STEP / 2)
    new = rule.update(t(1.55, -1.55), t(-1.0, 1.0), mstar=0.0)
    assert new.tolist() == [high, low]


@settings(max_examples=200, deadline=None)
@given(
    w=st.lists(st.floats(-1.59, 1.59), min_size=1, max_size=20),
    scale=st.floats(-0.5, 0.5),
)
def test_mstar_zero_is_plain_sgd(w: list[float], scale: float) -> None:
    wt = torch.tensor(w, dtype=torch.float64)
    d = torch.full_like(wt, scale)
    low, high = rule.hidden_range()
    assert torch.equal(rule.update(wt, d, mstar=0.0), (wt - d).clamp(low, high))


@settings(max_examples=200, deadline=None)
@given(
    w=st.floats(-1.59, 1.59),
    d=st.floats(-0.2, 0.2),
    mstar=st.floats(0.0, 6.0),
)
def test_update_never_moves_further_than_the_step(w: float, d: float, mstar: float) -> None:
    new = rule.update(t(w), t(d), mstar=mstar).item()
    assert abs(new - w) <= abs(d) + 1e-12
    low, high = rule.hidden_range()
    assert low <= new <= high
