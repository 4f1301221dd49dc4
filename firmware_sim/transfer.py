"""What a one-shot transfer of a weight matrix onto a fresh passive crossbar does to it.

The ex-situ transfer of paper 004: signed weights map linearly onto ``[G_min, G_max]`` as a
differential pair (the range re-evaluated from the weights themselves), every device of the
array is tuned once in the tile's order, with the model's tuning imprecision, every device is
disturbed by the programmings after it in its tile (V/3 scheme, measured database), and
shares of the devices are stuck in HRS or LRS wherever the chip happens to have them. The
sampler draws ``n`` such transfers at once, vectorized, from the same device model and
crossbar geometry that the in-loop crossbar uses (:mod:`metaplast.firmware_sim.crossbar`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metaplast.firmware_sim.crossbar import Crossbar
from metaplast.firmware_sim.devices import TiO2Passive


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

    def __init__(self, device: TiO2Passive, shape: tuple[int, int]) -> None:
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
        dev = self.device
        w = w.detach().to(torch.float32).reshape(-1)
        w_max = float(w.abs().max()) or 1.0
        span = dev.g_max - dev.g_min
        targets = dev.g_min + span * torch.stack([w.clamp(min=0), (-w).clamp(min=0)]) / w_max
        size = targets.numel()
        g = dev.program(targets.expand(n, 2, -1).reshape(-1), gen).reshape(n, 2, -1)
        if dev.disturbs:
            g = g + dev.disturbance(self.after.expand(n, 2, -1).reshape(-1), gen).reshape(g.shape)
        g = g.clamp_min(dev.floor)
        kind, g_stuck = dev.stuck.sample((n * size,), dev.floor, gen)
        kind, g_stuck = kind.reshape(g.shape), g_stuck.reshape(g.shape)
        g = torch.where(kind > 0, g_stuck, g)
        weights = (g[:, 0] - g[:, 1]) / span * w_max
        stuck = (kind > 0).any(1)
        return Transfers(weights.reshape(n, *self.shape), stuck.reshape(n, *self.shape))
