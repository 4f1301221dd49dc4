"""What a one-shot transfer of a weight matrix onto a fresh crossbar does to it.

The ex-situ transfer of paper 004: every device of a fresh array is programmed once, in its
tile's order, towards its target (with the model's programming spread), every device is
disturbed by the programmings after it in its tile (if the model disturbs, as the passive V/3
scheme does), and shares of the devices are stuck in HRS or LRS wherever the chip happens to
have them. The sampler draws ``n`` such transfers at once, vectorized, from the same device
model and crossbar geometry that the in-loop crossbar uses
(:mod:`metaplast.firmware_sim.crossbar`).

Two ways to choose the targets:

- :meth:`TransferSampler.sample`: signed float weights map linearly onto the conductance
  range ``[G_min, G_max]`` of a tunable (analog) device as a differential pair, the range
  re-evaluated from the weights themselves (``max |w|`` maps to ``G_max - G_min``);
- :meth:`TransferSampler.sample_levels`: weights on a numeric contract's levels go onto the
  device levels of their pair exactly as the digital unit's programming port asks, for any
  device model (the multi-level 1T1R cell of paper 003 included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar import Crossbar
from metaplast.firmware_sim.devices import DeviceModel, TiO2Passive


@dataclass(frozen=True)
class Transfers:
    """``n`` transfers of one ``out x in`` matrix: the weights read back, and where a weight
    has a stuck device (its value is then the stuck device's, whatever the target)."""

    weights: Tensor  # n x out x in
    stuck: Tensor  # n x out x in, bool


class TransferSampler:
    """Transfers of ``out x in`` matrices onto a fresh array of ``device`` (its tile geometry).

    ``W[j, i]`` sits on row ``i``, G+ in column ``2j`` and G- in column ``2j + 1``, as in
    :class:`~metaplast.host.crossbar_synapses.CrossbarSynapses`; a bias is one more row
    driven by a constant 1.
    """

    def __init__(self, device: DeviceModel, shape: tuple[int, int]) -> None:
        self.device = device
        n_out, n_in = shape
        self.shape = shape
        layout = Crossbar(device.with_overrides(stuck_hrs=0, stuck_lrs=0), n_in, 2 * n_out, 0)
        # a full transfer programs every device once: k = devices of its tile tuned after it
        devices, k = layout.later_in_tile(torch.arange(layout.size))
        after = torch.empty(layout.size, dtype=torch.int64)
        after[devices] = k
        j, i = torch.meshgrid(torch.arange(n_out), torch.arange(n_in), indexing="ij")
        plus = (i * 2 * n_out + 2 * j).flatten()
        self.after = torch.stack([after[plus], after[plus + 1]])  # 2 x (out * in)

    def sample(self, w: Tensor, n: int, gen: torch.Generator) -> Transfers:
        """``n`` transfers of the float weights ``w`` by the linear mapping (tunable devices)."""
        dev = self.device
        if not isinstance(dev, TiO2Passive):
            raise TypeError(
                f"a linear weight mapping needs a tunable device with a conductance range; "
                f"{dev.kind} has discrete levels: transfer contract levels (sample_levels)"
            )
        w = w.detach().to(torch.float32).reshape(-1)
        w_max = float(w.abs().max()) or 1.0
        span = dev.g_max - dev.g_min
        targets = dev.g_min + span * torch.stack([w.clamp(min=0), (-w).clamp(min=0)]) / w_max
        return self._program(targets, span / w_max, n, gen)

    def sample_levels(
        self, levels: Tensor, contract: Contract, n: int, gen: torch.Generator
    ) -> Transfers:
        """``n`` transfers of weights given as ``contract`` level indices (``out x in``)."""
        level_g, g_unit = self.device.level_mapping(contract.device_magnitudes())
        plus, minus = contract.device_levels_of(levels.reshape(-1))
        return self._program(torch.stack([level_g[plus], level_g[minus]]), g_unit, n, gen)

    def _program(self, targets: Tensor, g_unit: float, n: int, gen: torch.Generator) -> Transfers:
        """Program the ``2 x m`` pair targets ``n`` times; weights are ``(G+ - G-) / g_unit``."""
        dev = self.device
        size = targets.numel()
        g = dev.program(targets.expand(n, 2, -1).reshape(-1), gen).reshape(n, 2, -1)
        if dev.disturbs:
            g = g + dev.disturbance(self.after.expand(n, 2, -1).reshape(-1), gen).reshape(g.shape)
        g = g.clamp_min(dev.floor)
        kind, g_stuck = dev.stuck.sample((n * size,), dev.floor, gen)
        kind, g_stuck = kind.reshape(g.shape), g_stuck.reshape(g.shape)
        g = torch.where(kind > 0, g_stuck, g)
        weights = (g[:, 0] - g[:, 1]) / g_unit
        stuck = (kind > 0).any(1)
        return Transfers(weights.reshape(n, *self.shape), stuck.reshape(n, *self.shape))
