"""A layer whose quantized weights live on a crossbar model as differential device pairs.

The hidden weights stay where they were (float rule, bit-exact unit, or a board behind a
link): :class:`CrossbarSynapses` wraps that array, and whenever a synapse changes level it
programs the devices of its pair that must change, exactly as the digital unit's programming
port asks (:meth:`~metaplast.contract.Contract.device_operations`). The forward and backward
MVMs of the layer run on the crossbar's conductances, so its variability, stuck and worn-out
devices and disturbances act on training as they would on a chip.

The pairs sit in the array as :class:`~metaplast.firmware_sim.crossbar.pair.PairLayout` puts
them; the layer's output is the difference of each pair's column currents divided by the
conductance of one weight unit. :class:`_CrossbarMVM` makes any layer with ``forward`` and
``backward`` MVMs (in process, or on a board's array) a differentiable product.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.array import Crossbar
from metaplast.firmware_sim.crossbar.devices import DeviceModel
from metaplast.firmware_sim.crossbar.layer import ArrayLayer
from metaplast.firmware_sim.crossbar.periphery import Periphery
from metaplast.firmware_sim.unit.digital_unit import LevelChanges
from metaplast.fused_update import Step
from metaplast.host.synapses import SynapseArray


class LayerMVMs(Protocol):
    """A layer's two products on an array: what :func:`crossbar_mvm` differentiates."""

    def forward(self, x: Tensor) -> Tensor: ...

    def backward(self, delta: Tensor) -> Tensor: ...


def crossbar_mvm(x: Tensor, w: Tensor, layer: LayerMVMs) -> Tensor:
    """``x @ W.T`` computed by ``layer``'s array, differentiable: ``w`` receives the gradient
    ``delta.T @ x`` (the digital outer product), ``x`` the transposed MVM."""
    return _CrossbarMVM.apply(x, w, layer)


class CrossbarSynapses:
    """``inner``'s hidden weights; the quantized weights programmed onto a crossbar
    (an :class:`ArrayLayer`: the pairs, their programming, reads and MVMs)."""

    def __init__(
        self,
        inner: SynapseArray,
        contract: Contract,
        device: DeviceModel,
        seed: int,
        periphery: Periphery | None = None,
    ) -> None:
        self.inner = inner
        self.shape = inner.shape
        self.level_values = inner.level_values
        self.layer = ArrayLayer(self.shape, contract, device, seed, inner.levels(), periphery)

    @property
    def crossbar(self) -> Crossbar:
        return self.layer.crossbar

    def array_state(self) -> dict[str, Tensor]:
        """The devices' state, each ``rows x cols`` like the array: conductances (S), the
        device level each was last programmed to, operations, stuck and worn-out maps."""
        x = self.crossbar
        grid = {
            "g": x.g,
            "level": self.layer.device_levels(),
            "counts": x.counts,
            "stuck": x.stuck,
            "worn_out": x.failed,
        }
        return {name: t.reshape(x.rows, x.cols) for name, t in grid.items()}

    # SynapseArray ---------------------------------------------------------------------------

    def levels(self) -> Tensor:
        return self.inner.levels()

    def quantized(self) -> Tensor:
        """The weights one read of the crossbar gives (``(G+ - G-) / g_unit``)."""
        return self.layer.weights()

    def apply(self, d: Step) -> LevelChanges:
        """The inner array's update; its level-change events program the pairs."""
        changes = self.inner.apply(d)
        self.layer.program(changes.address, changes.new_level)
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
        self.layer.level = self.inner.levels().flatten().to(torch.int64).clone()

    # the layer's MVMs on the crossbar -------------------------------------------------------

    def mvm(self, x: Tensor, w: Tensor) -> Tensor:
        return crossbar_mvm(x, w, self.layer)


class _CrossbarMVM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, layer: LayerMVMs) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.layer = layer
        return layer.forward(x)

    @staticmethod
    def backward(ctx, delta: Tensor) -> tuple[Tensor | None, Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # the first layer's inputs are data: no transposed MVM for a gradient nobody reads
        dx = ctx.layer.backward(delta) if ctx.needs_input_grad[0] else None
        return dx, delta.t() @ x, None
