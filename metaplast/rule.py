"""The metaplastic learning rule of paper 003, in float: the readable reference.

Everything here works on torch tensors and follows the paper's equations literally; the
fixed-point arithmetic that the gateware implements (:mod:`metaplast.contract`) is measured
against it.

Conventions the paper leaves open, fixed here once for every half of the project:

* **Levels** are any strictly increasing set of at least two values (17 uniform levels in
  [-1.5, 1.5] by default). Unequal spacing is allowed: the quantizer and the meta-function only
  look at the two levels around a hidden weight.
* **Ties** (``W_H`` exactly half-way between two levels) go to the *upper* level: level ``i``
  owns the half-open cell ``[b_(i-1), b_i)`` where ``b_i`` is the midpoint of ``Q_i`` and
  ``Q_(i+1)``. At a tie ``M = 1`` whichever level is chosen, so the choice only decides which
  way Algorithm 1's sign test looks.
* **Outside the outermost levels** the hidden weight is clipped to the outermost cells, each as
  wide on its outer side as on its inner side: ``W_H`` stays in
  ``[Q_1 - I_1/2, Q_n + I_(n-1)/2]``. There the interval of Eq. 2 is the outermost one, and a
  weight pushed outwards is attenuated like any weight leaving its level, then clipped. This
  bounds the hidden weight (the gateware needs a range) without ever changing its level.
* **Algorithm 1's test is strict**: ``d * (W_H - W_S) < 0`` attenuates, so a weight that sits
  exactly on its level moves by the full step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_LEVELS",
    "approx",
    "check_levels",
    "hidden_range",
    "level_boundaries",
    "level_index",
    "meta_function",
    "uniform_levels",
    "update",
]


def uniform_levels(count: int = 17, low: float = -1.5, high: float = 1.5) -> tuple[float, ...]:
    """``count`` equally spaced levels from ``low`` to ``high`` (the paper's 17 in [-1.5, 1.5])."""
    if count < 2:
        raise ValueError(f"a level set needs at least 2 levels, got {count}")
    if not high > low:
        raise ValueError(f"level range must be increasing, got [{low}, {high}]")
    step = (high - low) / (count - 1)
    return tuple(low + i * step for i in range(count))


DEFAULT_LEVELS: tuple[float, ...] = uniform_levels()


def check_levels(levels: Sequence[float] | Tensor) -> Tensor:
    """Validate a level set and return it as a float64 tensor.

    A set that is unsorted, has repeats or has fewer than two levels cannot define intervals,
    so it is refused here rather than producing a silently wrong quantizer.
    """
    q = torch.as_tensor(levels, dtype=torch.float64).flatten()
    if q.numel() < 2:
        raise ValueError(f"a level set needs at least 2 levels, got {q.numel()}")
    if not torch.isfinite(q).all():
        raise ValueError("levels must be finite numbers")
    if not (q[1:] > q[:-1]).all():
        raise ValueError(f"levels must be strictly increasing, got {q.tolist()}")
    return q


def _levels_like(levels: Sequence[float] | Tensor, w: Tensor) -> Tensor:
    return check_levels(levels).to(dtype=w.dtype, device=w.device)


def level_boundaries(q: Tensor) -> Tensor:
    """The midpoints between adjacent levels: level ``i`` owns ``[b_(i-1), b_i)``."""
    return (q[1:] + q[:-1]) / 2


def level_index(w_hidden: Tensor, levels: Sequence[float] | Tensor) -> Tensor:
    """Index of the level nearest to each hidden weight (Eq. 1), ties to the upper level."""
    q = _levels_like(levels, w_hidden)
    return torch.bucketize(w_hidden, level_boundaries(q), right=True)


def approx(w_hidden: Tensor, levels: Sequence[float] | Tensor = DEFAULT_LEVELS) -> Tensor:
    """``W_S = Approx(W_H, Q)`` (Eq. 1): the level nearest to each hidden weight."""
    q = _levels_like(levels, w_hidden)
    return q[level_index(w_hidden, q)]


def _interval_width(w_hidden: Tensor, q: Tensor, idx: Tensor) -> Tensor:
    """Width ``I_D`` of the interval between two adjacent levels that holds ``W_H``."""
    below = torch.where(w_hidden >= q[idx], idx, idx - 1).clamp(0, q.numel() - 2)
    return q[below + 1] - q[below]


def _meta(w_hidden: Tensor, q: Tensor, idx: Tensor, mstar: float) -> Tensor:
    width = _interval_width(w_hidden, q, idx)
    x = 2 * mstar / width * (w_hidden - q[idx]).abs() - mstar
    return 1 - torch.tanh(x) ** 2


def meta_function(
    w_hidden: Tensor, levels: Sequence[float] | Tensor = DEFAULT_LEVELS, mstar: float = 0.0
) -> Tensor:
    """``M(W_H) = 1 - tanh^2(2 m*/I_D |W_H - W_S| - m*)`` (Eq. 2).

    ``M`` is smallest (``1 - tanh^2 m*``) on a level and 1 half-way between two levels, so a
    weight sitting on its level resists being pushed off it; ``m* = 0`` gives ``M = 1``.
    """
    if mstar < 0:
        raise ValueError(f"m* must be >= 0, got {mstar}")
    q = _levels_like(levels, w_hidden)
    return _meta(w_hidden, q, level_index(w_hidden, q), mstar)


def hidden_range(levels: Sequence[float] | Tensor = DEFAULT_LEVELS) -> tuple[float, float]:
    """The closed range a hidden weight is kept in: the outermost cells, mirrored outwards."""
    q = check_levels(levels)
    return (float(q[0] - (q[1] - q[0]) / 2), float(q[-1] + (q[-1] - q[-2]) / 2))


def update(
    w_hidden: Tensor,
    d: Tensor,
    levels: Sequence[float] | Tensor = DEFAULT_LEVELS,
    mstar: float = 0.0,
) -> Tensor:
    """New hidden weights after a step ``d = eta * U_W`` (Algorithm 1, lines 6-12).

    ``W_H - d * M`` where the step pushes ``W_H`` away from its level
    (``d * (W_H - W_S) < 0``), ``W_H - d`` otherwise; then clipped to :func:`hidden_range`.
    """
    if mstar < 0:
        raise ValueError(f"m* must be >= 0, got {mstar}")
    q = _levels_like(levels, w_hidden)
    idx = level_index(w_hidden, q)
    attenuate = d * (w_hidden - q[idx]) < 0
    step = torch.where(attenuate, d * _meta(w_hidden, q, idx, mstar), d)
    low, high = hidden_range(q)
    return (w_hidden - step).clamp(low, high)
