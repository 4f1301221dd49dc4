"""Where a layer's hidden weights live and how updates reach them.

A training session talks to every layer's synapses through one small interface, so that the
same loop drives the float reference rule, the bit-exact model of the digital unit, and
a board across a serial link (:class:`LinkSynapses`), or a crossbar model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from metaplast import fused_update, rule
from metaplast.contract import Contract
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit, LevelChanges
from metaplast.fused_update import Step, step_tensor

if TYPE_CHECKING:
    from metaplast.host.link import Link


class SynapseArray(Protocol):
    """A layer's synapses: hidden weights somewhere, quantized weights for the MVMs."""

    shape: tuple[int, ...]
    level_values: Tensor  # W_S of each level index, float32

    def quantized(self) -> Tensor:
        """``W_S`` as float32 in ``shape``: what the crossbar holds."""
        ...

    def levels(self) -> Tensor:
        """Level index of every synapse, in ``shape``: what the devices are programmed to."""
        ...

    def apply(self, d: Step) -> LevelChanges:
        """Apply ``d = eta * U_W`` (float, or Adam's step) with Algorithm 1; return the level
        changes, addresses as flat indices into ``shape``, in increasing order."""
        ...

    def set_mstar(self, mstar: float) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FloatSynapses:
    """Hidden weights in float32, updated with the reference rule of :mod:`metaplast.rule`."""

    def __init__(self, w_hidden: Tensor, levels: tuple[float, ...]) -> None:
        self.shape = tuple(w_hidden.shape)
        self.level_values = torch.tensor(levels, dtype=torch.float32)
        low, high = rule.hidden_range(levels)
        self.float_levels = fused_update.FloatLevels.of(self.level_values)
        self.hidden = w_hidden.to(torch.float32).clamp(low, high)
        self.level = rule.level_index(self.hidden, self.level_values)
        self.mstar = 0.0
        self._scratch = fused_update.Scratch(self.hidden.numel())

    def quantized(self) -> Tensor:
        return self.level_values[self.level]

    def levels(self) -> Tensor:
        return self.level

    def apply(self, d: Step) -> LevelChanges:
        fused = fused_update.float_update(
            self.hidden, self.level, d, self.float_levels, self.mstar, self._scratch
        )
        if fused is not None:
            return LevelChanges(*fused)
        before = self.level
        d = step_tensor(d).to(torch.float32)
        self.hidden = rule.update(self.hidden, d, self.level_values, self.mstar)
        self.level = rule.level_index(self.hidden, self.level_values)
        changed = torch.nonzero((self.level != before).flatten()).flatten()
        return LevelChanges(changed, before.flatten()[changed], self.level.flatten()[changed])

    def set_mstar(self, mstar: float) -> None:
        self.mstar = float(mstar)

    def state_dict(self) -> dict[str, Any]:
        return {"hidden": self.hidden.clone(), "mstar": self.mstar}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hidden = state["hidden"].clone()
        self.level = rule.level_index(self.hidden, self.level_values)
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

    def levels(self) -> Tensor:
        return self.unit.levels().reshape(self.shape)

    def apply(self, d: Step) -> LevelChanges:
        events = self.unit.update_step(d, seed=block_seed(self.seed, self.steps))
        self.steps += 1
        return events

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


class LinkSynapses:
    """Hidden weights on a digital unit behind a serial link, at ``base .. base + size - 1``.

    The host keeps only the level of each synapse, which the level-change events of every
    update block keep current (what the crossbar would be reprogrammed to). The arithmetic
    and the dither are the board's. On a unit of protocol version 2 the dither hashes each
    synapse's index in the layer (UPDATE_LAYER), so the layer ends exactly as a
    :class:`FixedSynapses` with the same seed at any ``base``; a version-1 unit hashes the
    board address, which is the same only at ``base`` 0.
    """

    def __init__(
        self, w_hidden: Tensor, contract: Contract, seed: int, link: Link, base: int
    ) -> None:
        self.shape = tuple(w_hidden.shape)
        self.size = w_hidden.numel()
        self.contract = contract
        self.link = link
        self.base = base
        self.seed = seed
        self.steps = 0
        self.mstar = 0.0
        self.count_offset = torch.zeros(self.size, dtype=torch.int64)
        self.level_values = contract.level_values().to(torch.float32)
        self._write(contract.hidden_to_int(w_hidden.flatten()))

    def _write(self, hidden: Tensor) -> None:
        self.link.write_hidden(self.base, hidden.numpy())
        self.level = self.contract.level_of(hidden)

    def quantized(self) -> Tensor:
        return self.level_values[self.level].reshape(self.shape)

    def levels(self) -> Tensor:
        return self.level.reshape(self.shape)

    def apply(self, d: Step) -> LevelChanges:
        from metaplast.host.link import LinkError

        d_int = self.contract.update_to_int(step_tensor(d).flatten()).numpy()
        seed = block_seed(self.seed, self.steps)
        self.steps += 1
        block = self.link.layout.max_block if self.link.layout else 256
        starts = range(0, self.size, block)
        blocks = [(self.base + s, seed, d_int[s : s + block]) for s in starts]
        events = []
        origin = self.base if self.link.info and self.link.info.version >= 2 else None
        for addr, old, new in self.link.update_blocks(blocks, origin=origin):
            i = addr - self.base
            if int(self.level[i]) != old:
                raise LinkError(
                    f"{self.link.name}: synapse {addr} changed from level {old}, but the "
                    f"host had it at {int(self.level[i])}: the board's state is not ours"
                )
            self.level[i] = new
            events.append((i, old, new))
        events.sort()
        columns = torch.tensor(events, dtype=torch.int64).reshape(-1, 3).t()
        return LevelChanges(*columns)

    def set_mstar(self, mstar: float) -> None:
        if mstar != self.mstar:
            self.link.load_lut(mstar)
            self.mstar = float(mstar)

    def state_dict(self) -> dict[str, Any]:
        """The same keys as :class:`FixedSynapses`: checkpoints move between the two."""
        counts = torch.tensor(self.link.read_counters(self.base, self.size), dtype=torch.int64)
        return {
            "hidden_int": torch.tensor(self.link.read_hidden(self.base, self.size)),
            "change_count": self.count_offset + counts,
            "mstar": self.mstar,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._write(state["hidden_int"].to(torch.int64))
        # the board's counters cannot be written: they count on from zero after a reset
        counts = torch.tensor(self.link.read_counters(self.base, self.size), dtype=torch.int64)
        self.count_offset = state["change_count"].to(torch.int64) - counts
        self.mstar = -1.0
        self.set_mstar(float(state["mstar"]))
        self.steps = int(state["steps"])
