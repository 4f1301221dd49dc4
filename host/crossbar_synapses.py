"""A layer whose quantized weights live on a crossbar model as differential device pairs.

The hidden weights stay where they were (float rule, bit-exact unit, or a board behind a
link): :class:`CrossbarSynapses` wraps that array, and whenever a synapse changes level it
programs the devices of its pair that must change, exactly as the digital unit's programming
port asks (:meth:`~metaplast.contract.Contract.device_operations`). The forward and backward
MVMs of the layer run on the crossbar's conductances, so its variability, stuck and worn-out
devices and disturbances act on training as they would on a chip.

The pairs sit in the array as :class:`~metaplast.firmware_sim.crossbar.pair.PairLayout` puts
them; the layer's output is the difference of each pair's column currents divided by the
conductance of one weight unit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.array import Crossbar
from metaplast.firmware_sim.crossbar.devices import DeviceModel
from metaplast.firmware_sim.crossbar.pair import PairLayout
from metaplast.firmware_sim.unit.digital_unit import LevelChanges
from metaplast.fused_update import Step
from metaplast.host.synapses import SynapseArray


class CrossbarSynapses:
    """``inner``'s hidden weights; the quantized weights programmed onto a :class:`Crossbar`."""

    def __init__(
        self, inner: SynapseArray, contract: Contract, device: DeviceModel, seed: int
    ) -> None:
        self.inner = inner
        self.shape = inner.shape
        self.level_values = inner.level_values
        self.contract = contract
        self.pairs = PairLayout(self.shape)
        self.crossbar = Crossbar(device, self.pairs.rows, self.pairs.cols, seed)
        self.targets, self.g_unit = device.level_mapping(contract.device_magnitudes())
        self.crossbar.reset(float(self.targets[0]))
        self.level = torch.full((len(self.pairs.plus),), contract.zero_level, dtype=torch.int64)
        levels = inner.levels().flatten()
        changed = (levels != self.level).nonzero().squeeze(1)
        self._program(changed, levels[changed])

    def _program(self, changed: Tensor, new: Tensor) -> None:
        """Program the devices of synapses ``changed`` (increasing) from ``self.level`` to
        ``new``: only the device of a pair whose level differs."""
        new_p, new_n, dp, dn = self.contract.device_changes(self.level[changed], new)
        index = torch.cat([self.pairs.plus[changed[dp]], self.pairs.minus[changed[dn]]])
        targets = torch.cat([self.targets[new_p[dp]], self.targets[new_n[dn]]])
        self.crossbar.program(index, targets)
        self.level[changed] = new.to(torch.int64)

    def device_levels(self) -> Tensor:
        """Device level each device was last programmed to, ``rows x cols`` like the array."""
        return self.pairs.place(*self.contract.device_levels_of(self.level))

    # SynapseArray ---------------------------------------------------------------------------

    def levels(self) -> Tensor:
        return self.inner.levels()

    def quantized(self) -> Tensor:
        """The weights one read of the crossbar gives (``(G+ - G-) / g_unit``)."""
        return self.pairs.difference(self.crossbar.read()).t() / self.g_unit

    def apply(self, d: Step) -> LevelChanges:
        changes = self.inner.apply(d)
        self._program(changes.address, changes.new_level)
        return changes

    def set_mstar(self, mstar: float) -> None:
        self.inner.set_mstar(mstar)

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(),
            "crossbar": self.crossbar.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.crossbar.load_state_dict(state["crossbar"])
        self.level = self.inner.levels().flatten().to(torch.int64).clone()

    # the layer's MVMs on the crossbar -------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """Inputs on the rows; G+ minus G- column currents, in weight units."""
        return self.pairs.difference(self.crossbar.mvm(x)) / self.g_unit

    def backward(self, delta: Tensor) -> Tensor:
        """Errors on the columns (``+delta`` on G+, ``-delta`` on G-); row currents."""
        return self.crossbar.mvm_t(self.pairs.interleave(delta)) / self.g_unit

    def mvm(self, x: Tensor, w: Tensor) -> Tensor:
        """``x @ W.T`` computed by the crossbar, differentiable: ``w`` receives the gradient
        ``delta.T @ x`` (the digital outer product), ``x`` the transposed crossbar MVM."""
        return _CrossbarMVM.apply(x, w, self)


class _CrossbarMVM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, layer: CrossbarSynapses) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.layer = layer
        return layer.forward(x)

    @staticmethod
    def backward(ctx, delta: Tensor) -> tuple[Tensor | None, Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # the first layer's inputs are data: no transposed MVM for a gradient nobody reads
        dx = ctx.layer.backward(delta) if ctx.needs_input_grad[0] else None
        return dx, delta.t() @ x, None
