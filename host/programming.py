"""Programming operations per device over a run: the endurance budget of Fig. 5b.

Counted from the level changes the digital unit reports, exactly as its programming port turns
them into device operations (only the devices of a pair whose level differs are programmed),
including the first programming of the initial weights onto a RESET array. A crossbar model
counts the pulses its devices receive; the two agree by construction, and a test holds them
to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.unit.digital_unit import LevelChanges


class ProgrammingCounter:
    """Per layer, ``(2, *shape)`` operation counts (G+ then G-) and the last levels seen."""

    def __init__(self, contract: Contract, levels: Sequence[Tensor]) -> None:
        self.contract = contract
        zero = contract.zero_level
        self.levels = [torch.full_like(lv, zero, dtype=torch.int64) for lv in levels]
        self.counts = [torch.zeros((2, *lv.shape), dtype=torch.int32) for lv in levels]
        for i, lv in enumerate(levels):
            self.record(i, lv)

    def record(
        self, layer: int, levels: Tensor, changed: LevelChanges | Tensor | None = None
    ) -> None:
        """Count the operations that take ``layer`` from its last levels to ``levels``;
        ``changed`` (the level changes, or a mask of the synapses that changed) spares
        looking at the rest."""
        last = self.levels[layer].view(-1)
        new = levels.reshape(-1)
        if isinstance(changed, LevelChanges):
            idx = changed.address
        else:
            where = (new != last) if changed is None else changed.reshape(-1)
            idx = where.nonzero().squeeze(1)
        _, _, plus, minus = self.contract.device_changes(last[idx], new[idx])
        counts = self.counts[layer].view(2, -1)
        counts[0, idx] += plus.to(torch.int32)
        counts[1, idx] += minus.to(torch.int32)
        last[idx] = new[idx].to(torch.int64)

    def total(self) -> int:
        return sum(int(c.sum()) for c in self.counts)

    def summary(self) -> dict[str, Any]:
        """The ``programming`` section of ``metrics.json``."""
        ops = torch.cat([c.flatten() for c in self.counts]).to(torch.float64)
        return {
            "devices": int(ops.numel()),
            "total": int(ops.sum()),
            "mean": float(ops.mean()),
            "max": int(ops.max()),
            "frac_under_25": float((ops < 25).double().mean()),
            "frac_over_50": float((ops > 50).double().mean()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "levels": [v.clone() for v in self.levels],
            "counts": [c.clone() for c in self.counts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.levels = [v.clone() for v in state["levels"]]
        self.counts = [c.clone() for c in state["counts"]]
