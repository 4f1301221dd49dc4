"""The numeric contract between the gateware and the bit-exact model.

One definition of the digital unit's arithmetic, imported by the gateware, by the vectorized
model (:mod:`metaplast.firmware_sim.unit.digital_unit`) and by the host that quantizes updates. The
float rule it approximates is :mod:`metaplast.rule`; ``docs/numeric-contract.md`` explains the
choices and ``docs/precision.md`` the measurements behind the defaults.

Formats (all two's complement, integers scaled by ``2**frac``):

* hidden weight ``W_H``: ``hidden_width`` bits, ``frac_bits = hidden_width - int_bits`` where
  ``int_bits`` (sign included) is the fewest that hold the clip range of the level set
  (2 for the paper's levels: range [-2, 2));
* update ``d = eta * U_W``: ``hidden_width + guard_bits`` bits with ``frac_bits + guard_bits``
  fraction bits, so that steps smaller than one hidden LSB survive until the final rounding;
* meta factor ``M``: unsigned, ``meta_bits`` fraction bits, ``meta_bits + 1`` bits wide so that
  ``M = 1`` is exact (``m* = 0`` is then plain SGD, bit for bit).

One update, per synapse (Algorithm 1 with the conventions of :mod:`metaplast.rule`)::

    lvl   = #{k : w >= boundary[k]}                     level index, ties to the upper level
    ws    = level[lvl]
    ivl   = interval holding w (lvl if w >= ws else lvl - 1, clamped to 0 .. n-2)
    j     = min(N - 1, (|w - ws| * recip[ivl]) >> recip_shift)      LUT index
    m     = lut[j] if d * (w - ws) < 0 else 2**meta_bits
    step  = (d * m + r) >> R          R = guard_bits + meta_bits; r = 2**(R-1) (nearest) or dither
    w'    = clamp(w - step, w_min, w_max)

The stochastic dither of a synapse is ``mix32(address) ^ mix32(seed)`` (``address`` counted
from the block's layer's origin where the host gives one), cut to the dropped
bits: ``mix32`` is a bijective add/shift/xor hash (no multiplier, cheap in LUTs) and ``seed`` a
32-bit value the host sends with each update block, so that a retried block rounds exactly as
the first attempt. Over the blocks, each synapse sees a uniform dither: its rounding is unbiased.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

from metaplast.rule import DEFAULT_LEVELS, check_levels, hidden_range
from metaplast.vocabulary import ROUNDINGS

__all__ = ["MIX32_ROUNDS", "Contract", "Rounding", "address_hash", "mix32"]

Rounding = Literal["nearest", "stochastic"]

_MASK32 = 0xFFFFFFFF
# (a, b) of each round ``x += x << a; x ^= x >> b`` of the dither hash
MIX32_ROUNDS: tuple[tuple[int, int], ...] = ((10, 6), (3, 11), (15, 16), (7, 13))


def mix32(x: Tensor | int) -> Tensor | int:
    """A bijective 32-bit mixer made of shift-adds and xor-shifts (no multiplier in gateware).

    ``x + (x << k)`` is ``x * (2**k + 1)`` modulo 2**32 (one adder), and ``x ^ (x >> k)`` is one
    row of XOR gates; both are invertible, so distinct addresses get distinct outputs.
    """
    x = x & _MASK32
    for add_shift, xor_shift in MIX32_ROUNDS:
        x = (x + (x << add_shift)) & _MASK32
        x = x ^ (x >> xor_shift)
    return x


def address_hash(addresses: Tensor) -> Tensor:
    """Per-synapse half of the dither: fixed for an address, so the gateware may store it."""
    return mix32(addresses.to(torch.int64))  # type: ignore[return-value]


@dataclass(frozen=True)
class Contract:
    """Every parameter of the digital unit's arithmetic, and the integers derived from them."""

    levels: tuple[float, ...] = DEFAULT_LEVELS
    hidden_width: int = 16
    guard_bits: int = 8
    lut_entries: int = 64
    meta_bits: int = 10
    rounding: Rounding = "stochastic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(float(v) for v in check_levels(self.levels)))
        if not 8 <= self.hidden_width <= 32:
            raise ValueError(f"hidden_width must be 8..32 bits, got {self.hidden_width}")
        if not 0 <= self.guard_bits <= 16:
            raise ValueError(f"guard_bits must be 0..16, got {self.guard_bits}")
        if self.lut_entries < 1 or self.lut_entries & (self.lut_entries - 1):
            raise ValueError(f"lut_entries must be a power of two, got {self.lut_entries}")
        if not 1 <= self.meta_bits <= 16:
            raise ValueError(f"meta_bits must be 1..16, got {self.meta_bits}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.frac_bits < 1:
            raise ValueError(
                f"hidden_width {self.hidden_width} leaves no fraction bits for levels spanning "
                f"{hidden_range(self.levels)}"
            )
        ints = self.level_ints
        if len(set(ints)) != len(ints):
            raise ValueError(
                f"levels {self.levels} collide at {self.frac_bits} fraction bits; widen the "
                "hidden weight"
            )

    # formats ---------------------------------------------------------------------------------

    @cached_property
    def int_bits(self) -> int:
        """Integer bits of ``W_H`` including the sign: the fewest that hold the clip range."""
        bound = max(abs(v) for v in hidden_range(self.levels))
        bits = 1
        while 2 ** (bits - 1) <= bound:
            bits += 1
        return bits

    @property
    def frac_bits(self) -> int:
        return self.hidden_width - self.int_bits

    @property
    def update_width(self) -> int:
        return self.hidden_width + self.guard_bits

    @property
    def update_frac_bits(self) -> int:
        return self.frac_bits + self.guard_bits

    @property
    def meta_one(self) -> int:
        """The integer that stands for ``M = 1``."""
        return 1 << self.meta_bits

    @property
    def round_shift(self) -> int:
        """Bits dropped when ``d * M`` is brought back to the hidden weight's LSB."""
        return self.guard_bits + self.meta_bits

    # levels ----------------------------------------------------------------------------------

    @cached_property
    def level_ints(self) -> tuple[int, ...]:
        return tuple(round(v * 2**self.frac_bits) for v in self.levels)

    @cached_property
    def boundary_ints(self) -> tuple[int, ...]:
        """``w >= boundary[k]`` for exactly ``k < level``; an odd sum rounds up (ties go up)."""
        q = self.level_ints
        return tuple((a + b + 1) >> 1 for a, b in zip(q[:-1], q[1:], strict=True))

    @property
    def zero_level(self) -> int:
        """Index of the level that the differential pair encodes as two matched devices."""
        return min(range(len(self.levels)), key=lambda k: abs(self.levels[k]))

    @property
    def device_level_count(self) -> int:
        """Levels each device of the pair needs (9 for the paper's 17 weight levels)."""
        return max(self.zero_level, len(self.levels) - 1 - self.zero_level) + 1

    def device_levels(self, level: int) -> tuple[int, int]:
        """Device levels ``(G+, G-)`` of weight level ``level``; one of them is always 0.

        One step up or down the weight levels changes one device, which is what lets a level
        change reprogram only the device of the pair that must change.
        """
        s = level - self.zero_level
        return max(s, 0), max(-s, 0)

    def device_levels_of(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`device_levels` of every element of ``levels``."""
        s = levels.to(torch.int64) - self.zero_level
        return s.clamp(min=0), (-s).clamp(min=0)

    def device_changes(self, old: Tensor, new: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`device_operations` for every element at once, without the order: the new
        device levels ``(G+, G-)`` and which of the two devices each change programs."""
        old_p, old_n = self.device_levels_of(old)
        new_p, new_n = self.device_levels_of(new)
        return new_p, new_n, old_p != new_p, old_n != new_n

    def device_magnitudes(self) -> tuple[float, ...]:
        """Weight magnitude each device level encodes, level 0 first (``|Q|`` on either side;
        the larger where the level set is not symmetric)."""
        q, z = self.levels, self.zero_level
        out = []
        for k in range(self.device_level_count):
            sides = [abs(q[z + s * k] - q[z]) for s in (1, -1) if 0 <= z + s * k < len(q)]
            out.append(max(sides))
        return tuple(out)

    def device_operations(self, old: int, new: int) -> list[tuple[int, int]]:
        """``(device, target level)`` programmings for a level change (device 0: G+, 1: G-).

        Only devices whose level differs are programmed; when both do, the one that returns to
        0 goes first, so the pair never holds a weight beyond the two ends of the change.
        """
        (old_p, old_n), (new_p, new_n) = self.device_levels(old), self.device_levels(new)
        ops = [(0, new_p)] if old_p != new_p else []
        if old_n != new_n:
            ops.insert(0 if old_n > 0 else len(ops), (1, new_n))
        return ops

    @cached_property
    def w_min(self) -> int:
        return math.ceil(hidden_range(self.levels)[0] * 2**self.frac_bits)

    @cached_property
    def w_max(self) -> int:
        return math.floor(hidden_range(self.levels)[1] * 2**self.frac_bits)

    @cached_property
    def interval_ints(self) -> tuple[int, ...]:
        q = self.level_ints
        return tuple(b - a for a, b in zip(q[:-1], q[1:], strict=True))

    @cached_property
    def offset_max(self) -> int:
        """The largest ``|w - ws|`` over the clip range (a level's farthest weight: a boundary
        beside it, or a clip end past an outer level): the width of the LUT index's product."""
        q, b = self.level_ints, self.boundary_ints
        lows, highs = (self.w_min, *b), (*(x - 1 for x in b), self.w_max)
        return max(max(abs(v - lo), abs(hi - v)) for v, lo, hi in zip(q, lows, highs, strict=True))

    @cached_property
    def recip_shift(self) -> int:
        """Keeps every reciprocal at 15 significant bits or more."""
        widest = max(self.interval_ints)
        return max(0, math.ceil(15 + math.log2(widest) - math.log2(2 * self.lut_entries)))

    @cached_property
    def recips(self) -> tuple[int, ...]:
        """Per interval, ``2N/I`` scaled by ``2**recip_shift``: times ``|w - ws|``, the index."""
        scale = 2 * self.lut_entries * 2**self.recip_shift
        return tuple(round(scale / width) for width in self.interval_ints)

    # meta LUT --------------------------------------------------------------------------------

    def meta_lut(self, mstar: float) -> tuple[int, ...]:
        """LUT contents for ``m*``: entry ``j`` is Eq. 2 at the middle of bin ``j``.

        Bin ``j`` covers normalized distances ``2|W_H - W_S|/I_D`` in ``[j/N, (j+1)/N)``.
        """
        if mstar < 0:
            raise ValueError(f"m* must be >= 0, got {mstar}")
        n = self.lut_entries
        out = []
        for j in range(n):
            x = (j + 0.5) / n
            m = 1.0 - math.tanh(mstar * (x - 1.0)) ** 2
            out.append(min(self.meta_one, round(m * self.meta_one)))
        return tuple(out)

    def lut_identity(self, mstar: float) -> str:
        """Short hash of a LUT's contents and shape, so host and board can agree on it."""
        payload = f"{self.lut_entries}:{self.meta_bits}:" + ",".join(map(str, self.meta_lut(mstar)))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # conversions -----------------------------------------------------------------------------

    def hidden_to_int(self, w: Tensor) -> Tensor:
        """Float hidden weights to the hidden format, nearest, clipped to the hidden range."""
        scaled = torch.round(w.to(torch.float64) * 2**self.frac_bits).to(torch.int64)
        return scaled.clamp(self.w_min, self.w_max)

    def hidden_to_float(self, w: Tensor) -> Tensor:
        return w.to(torch.float64) / 2**self.frac_bits

    def update_to_int(self, d: Tensor) -> Tensor:
        """``d = eta * U_W`` in the update format (nearest, saturated), as the host sends it."""
        scaled = torch.round(d.to(torch.float64) * 2**self.update_frac_bits)
        limit = 2 ** (self.update_width - 1)
        return scaled.clamp(-limit, limit - 1).to(torch.int64)

    def level_tensor(self, device: torch.device | str | None = None) -> Tensor:
        return torch.tensor(self.level_ints, dtype=torch.int64, device=device)

    def level_values(self) -> Tensor:
        """The levels as the hardware represents them (float64)."""
        return torch.tensor(self.level_ints, dtype=torch.float64) / 2**self.frac_bits

    # the update ------------------------------------------------------------------------------

    _TABLE_LIMIT = 1 << 21

    @cached_property
    def _tables(self) -> tuple[Tensor, Tensor] | None:
        """Level and LUT index of every hidden value, when the format is narrow enough.

        A gather from these is several times faster than the search and arithmetic it
        replaces; both paths compute the same function (tested), the tables just cache it.
        """
        if self.w_max - self.w_min >= self._TABLE_LIMIT:
            return None
        w = torch.arange(self.w_min, self.w_max + 1, dtype=torch.int64)
        lvl, _, j = self._locate(w, self._search_level(w))
        return lvl, j

    def _search_level(self, w: Tensor) -> Tensor:
        bounds = torch.tensor(self.boundary_ints, dtype=torch.int64, device=w.device)
        return torch.bucketize(w, bounds, right=True)

    def _locate(self, w: Tensor, lvl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        offset = w - self.level_tensor(w.device)[lvl]
        ivl = torch.where(offset >= 0, lvl, lvl - 1).clamp_(0, len(self.levels) - 2)
        recips = torch.tensor(self.recips, dtype=torch.int64, device=w.device)
        j = ((offset.abs() * recips[ivl]) >> self.recip_shift).clamp_(max=self.lut_entries - 1)
        return lvl, offset, j

    def level_of(self, w: Tensor) -> Tensor:
        """Level index of hidden weights in the hidden format (within ``[w_min, w_max]``)."""
        tables = self._tables
        if tables is None or w.device != tables[0].device:
            return self._search_level(w)
        return tables[0][w - self.w_min]

    def locate(self, w: Tensor, level: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Level index, offset ``w - ws`` and meta-LUT index of hidden weights (hidden format)."""
        tables = self._tables
        if tables is None or w.device != tables[0].device:
            return self._locate(w, self.level_of(w) if level is None else level)
        lvl = tables[0][w - self.w_min] if level is None else level
        return lvl, w - self.level_tensor(w.device)[lvl], tables[1][w - self.w_min]

    def dither(self, seed: int, addr_hash: Tensor) -> Tensor:
        """Stochastic-rounding dither of one block for synapses with hashes ``addr_hash``."""
        return (addr_hash ^ mix32(int(seed))) & ((1 << self.round_shift) - 1)

    def apply(
        self,
        w: Tensor,
        d: Tensor,
        lut: Sequence[int] | Tensor,
        *,
        dither: Tensor | None = None,
        level: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One update of every synapse in ``w`` (int64) by ``d`` (int64, update format).

        Returns ``(w_new, level_before, level_after)``. ``dither`` (from :meth:`dither`) is
        required for stochastic rounding; ``level``, the known level of ``w``, saves a search.
        """
        lut_t = torch.as_tensor(lut, dtype=torch.int64, device=w.device)
        lvl, offset, j = self.locate(w, level)
        attenuate = (d * offset) < 0
        m = torch.where(attenuate, lut_t[j], self.meta_one)
        if self.rounding == "nearest":
            r: Tensor | int = 1 << (self.round_shift - 1)
        elif dither is None:
            raise ValueError("stochastic rounding needs the block's dither")
        else:
            r = dither
        step = (d * m + r) >> self.round_shift
        w_new = (w - step).clamp_(self.w_min, self.w_max)
        return w_new, lvl, self.level_of(w_new)

    def describe(self) -> dict[str, object]:
        """The contract as plain data (for INFO, run directories and docs)."""
        return {
            "levels": list(self.levels),
            "level_ints": list(self.level_ints),
            "boundary_ints": list(self.boundary_ints),
            "hidden_width": self.hidden_width,
            "int_bits": self.int_bits,
            "frac_bits": self.frac_bits,
            "w_min": self.w_min,
            "w_max": self.w_max,
            "update_width": self.update_width,
            "update_frac_bits": self.update_frac_bits,
            "guard_bits": self.guard_bits,
            "lut_entries": self.lut_entries,
            "meta_bits": self.meta_bits,
            "recip_shift": self.recip_shift,
            "recips": list(self.recips),
            "rounding": self.rounding,
        }
