"""Where a layer's hidden weights live and how updates reach them.

A training session talks to every layer's synapses through one small interface, so that the
same loop drives the float reference rule, the bit-exact model of the digital unit, and (later)
a board across a serial link or a crossbar model.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from metaplast import rule
from metaplast.contract import Contract
from metaplast.firmware_sim.digital_unit import DigitalUnit


class SynapseArray(Protocol):
    """A layer's synapses: hidden weights somewhere, quantized weights for the MVMs."""

    shape: tuple[int, ...]

    def quantized(self) -> Tensor:
        """``W_S`` as float32 in ``shape``: what the crossbar holds."""
        ...

    def apply(self, d: Tensor) -> Tensor:
        """Apply ``d = eta * U_W`` with Algorithm 1; return the bool mask of level changes."""
        ...

    def set_mstar(self, mstar: float) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FloatSynapses:
    """Hidden weights in float32, updated with the reference rule of :mod:`metaplast.rule`."""

    def __init__(self, w_hidden: Tensor, levels: tuple[float, ...]) -> None:
        self.shape = tuple(w_hidden.shape)
        self.levels = torch.tensor(levels, dtype=torch.float32)
        low, high = rule.hidden_range(levels)
        self.hidden = w_hidden.to(torch.float32).clamp(low, high)
        self.level = rule.level_index(self.hidden, self.levels)
        self.mstar = 0.0

    def quantized(self) -> Tensor:
        return self.levels[self.level]

    def apply(self, d: Tensor) -> Tensor:
        before = self.level
        self.hidden = rule.update(self.hidden, d.to(torch.float32), self.levels, self.mstar)
        self.level = rule.level_index(self.hidden, self.levels)
        return self.level != before

    def set_mstar(self, mstar: float) -> None:
        self.mstar = float(mstar)

    def state_dict(self) -> dict[str, Any]:
        return {"hidden": self.hidden.clone(), "mstar": self.mstar}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hidden = state["hidden"].clone()
        self.level = rule.level_index(self.hidden, self.levels)
        self.mstar = float(state["mstar"])


def block_seed(base: int, step: int) -> int:
    """32-bit dither seed of update block ``step`` (splitmix64 of base and step)."""
    z = (base * 0x9E3779B97F4A7C15 + (step + 1) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & 0xFFFFFFFF


class FixedSynapses:
    """Hidden weights in the bit-exact model of the digital unit (the gateware's arithmetic)."""

    def __init__(self, w_hidden: Tensor, contract: Contract, seed: int) -> None:
        self.shape = tuple(w_hidden.shape)
        self.contract = contract
        self.unit = DigitalUnit(contract, w_hidden.numel())
        self.unit.write(0, contract.hidden_to_int(w_hidden.flatten()))
        self.level_values = contract.level_values().to(torch.float32)
        self.seed = seed
        self.steps = 0

    def quantized(self) -> Tensor:
        return self.level_values[self.unit.levels()].reshape(self.shape)

    def apply(self, d: Tensor) -> Tensor:
        events = self.unit.update(
            self.contract.update_to_int(d.flatten()), seed=block_seed(self.seed, self.steps)
        )
        self.steps += 1
        mask = torch.zeros(self.unit.synapses, dtype=torch.bool)
        mask[events.address] = True
        return mask.reshape(self.shape)

    def set_mstar(self, mstar: float) -> None:
        self.unit.load_lut(mstar)

    @property
    def hidden(self) -> Tensor:
        """Hidden weights as float (for inspection and plots)."""
        return self.contract.hidden_to_float(self.unit.hidden).reshape(self.shape)

    def state_dict(self) -> dict[str, Any]:
        return {
            "hidden_int": self.unit.hidden.clone(),
            "change_count": self.unit.change_count.clone(),
            "mstar": self.unit.mstar,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.unit.load_hidden(state["hidden_int"])
        self.unit.change_count = state["change_count"].clone()
        self.unit.load_lut(state["mstar"])
        self.steps = int(state["steps"])
