"""Bit-exact, vectorized model of the FPGA's digital unit.

It holds what the gateware holds (hidden-weight memory, the loaded meta LUT, per-synapse
level-change counters) and applies update blocks with :meth:`metaplast.contract.Contract.apply`,
the same arithmetic the gateware implements, in one fused pass where
:mod:`metaplast.fused_update` can compile it. The in-process training session, the simulated
board and the gateware tests all use it, which is what makes the fast path trustworthy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from metaplast import fused_update
from metaplast.contract import Contract, address_hash
from metaplast.fused_update import Step, step_tensor


class LevelChanges(NamedTuple):
    """Level-change events of one update block: each drives one reprogramming."""

    address: Tensor
    old_level: Tensor
    new_level: Tensor

    def __len__(self) -> int:
        return int(self.address.numel())


class DigitalUnit:
    """Hidden-weight memory, meta LUT and level-change detector for ``synapses`` synapses."""

    def __init__(self, contract: Contract, synapses: int) -> None:
        if synapses < 1:
            raise ValueError(f"synapse count must be >= 1, got {synapses}")
        self.contract = contract
        self.synapses = synapses
        self.hidden = torch.zeros(synapses, dtype=torch.int64)
        self.change_count = torch.zeros(synapses, dtype=torch.int64)
        self.mstar = 0.0
        self.lut: tuple[int, ...] = contract.meta_lut(0.0)
        self._levels = contract.level_of(self.hidden)
        self._addr_hash: Tensor | None = None  # the torch path's dither hashes, when it runs
        self._scratch = fused_update.Scratch(synapses)

    def load_lut(self, mstar: float) -> None:
        """Switch the meta-function, as the session does after pre-training."""
        self.load_table(self.contract.meta_lut(mstar), mstar)

    def load_table(self, entries: Sequence[int], mstar: float) -> None:
        """Load LUT entries as sent over the link (any table, not only one of Eq. 2's)."""
        c = self.contract
        if len(entries) != c.lut_entries or not all(0 <= e <= c.meta_one for e in entries):
            raise ValueError(f"a LUT is {c.lut_entries} entries in 0..{c.meta_one}")
        self.lut = tuple(int(e) for e in entries)
        self.mstar = float(mstar)

    def reset(self) -> None:
        """Power-up state: zero weights and counts, the ``m* = 0`` LUT."""
        self.hidden.zero_()
        self.change_count.zero_()
        self._levels = self.contract.level_of(self.hidden)
        self.load_lut(0.0)

    def _span(self, start: int, count: int) -> slice:
        if start < 0 or count < 0 or start + count > self.synapses:
            raise IndexError(
                f"synapses {start}..{start + count - 1} out of range 0..{self.synapses - 1}"
            )
        return slice(start, start + count)

    def write(self, start: int, values: Tensor | Sequence[int]) -> None:
        """Write raw hidden-weight integers (no events: this is initialization, not learning)."""
        v = torch.as_tensor(values, dtype=torch.int64).flatten()
        c = self.contract
        if v.numel() and (v.min() < c.w_min or v.max() > c.w_max):
            raise ValueError(f"hidden weights must lie in [{c.w_min}, {c.w_max}]")
        span = self._span(start, v.numel())
        self.hidden[span] = v
        self._levels[span] = self.contract.level_of(v)

    def read(self, start: int = 0, count: int | None = None) -> Tensor:
        count = self.synapses - start if count is None else count
        return self.hidden[self._span(start, count)].clone()

    def levels(self) -> Tensor:
        """Level index of every synapse: what the crossbar is programmed to."""
        return self._levels

    def load_hidden(self, hidden: Tensor) -> None:
        """Replace the whole memory (restoring a checkpoint)."""
        if hidden.shape != self.hidden.shape:
            raise ValueError(f"expected {self.synapses} hidden weights, got {hidden.numel()}")
        self.write(0, hidden)

    def update(self, d: Tensor, *, start: int = 0, seed: int = 0, origin: int = 0) -> LevelChanges:
        """Apply one block of updates (update format) to synapses ``start .. start+len(d)-1``;
        the dither hashes ``address - origin`` (``origin <= start``: the block's layer's first
        synapse), so that a layer rounds the same at any place in the memory."""
        d = torch.as_tensor(d, dtype=torch.int64).flatten()
        return self._update(d, start, seed, origin)

    def update_step(self, step: Step, *, start: int = 0, seed: int = 0) -> LevelChanges:
        """Apply a host's step ``eta * U_W`` (float, or Adam's not yet computed), quantized to
        the update format as :meth:`Contract.update_to_int` does before sending it: what a
        host and its unit do together, in one pass where the kernels run."""
        return self._update(step, start, seed, 0)

    def _update(self, d: Step, start: int, seed: int, origin: int) -> LevelChanges:
        if not 0 <= origin <= start:
            raise ValueError(f"the dither origin {origin} must be in 0 .. start ({start})")
        n = d.m.numel() if isinstance(d, fused_update.AdamStep) else d.numel()
        span = self._span(start, n)
        fused = fused_update.fixed_update(
            self.contract,
            self.hidden[span],
            self._levels[span],
            self.change_count[span],
            d.flatten() if isinstance(d, Tensor) else d,
            self.lut,
            start=start - origin,
            seed=seed,
            scratch=self._scratch,
        )
        if fused is not None:
            address, old, new = fused
            return LevelChanges(address + span.start, old, new)
        if not isinstance(d, Tensor) or d.is_floating_point():
            d = self.contract.update_to_int(step_tensor(d).flatten())
        if self._addr_hash is None:
            self._addr_hash = address_hash(torch.arange(self.synapses))
        new, before, after = self.contract.apply(
            self.hidden[span],
            d,
            self.lut,
            dither=self.contract.dither(seed, self._addr_hash[span.start - origin :][:n]),
            level=self._levels[span],
        )
        changed = torch.nonzero(before != after).flatten()
        old_level = before[changed]
        self.hidden[span] = new
        self._levels[span] = after
        self.change_count[span.start + changed] += 1
        return LevelChanges(span.start + changed, old_level, after[changed])
