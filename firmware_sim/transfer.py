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

:class:`PaperCodeSampler` draws transfers as the code published with paper 004 does
(``3it-inpaqt/Hardware-Aware-Article``, ``hardaware_linear.py`` at commit 3fd4467), quirks
included, so that the paper's numbers can be reproduced and each of its choices measured
against this project's (``docs/transfer.md``, the audit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar import Crossbar
from metaplast.firmware_sim.devices import US, DeviceModel, TiO2Passive


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


SAMPLERS: tuple[str, ...] = ("project", "paper-code", "paper-code-physical")
"""How a float weight tensor becomes conductances: this project's tiled crossbar, the paper's
code, or the paper's code on this project's physical coordinates (to tell its two halves
apart)."""


class PaperCodeSampler:
    """Transfers of one parameter tensor as the paper 004 code draws them.

    - **Coordinates** (``paper-code``): each component of a differential pair is min-max
      scaled from ``[0, max |w|]`` onto ``[-S, +S]``, ``S = G_max - G_min`` (400 uS): a zero
      component sits at ``-S``, and a weight reads back as ``(G+ - G-) max|w| / 2S``, so every
      additive conductance (disturbance, a stuck device) counts half as much in weight units
      as on the physical ``[G_min, G_max]`` (``physical``: this project's mapping).
    - **Tuning**: a relative offset first (normal, per device), then the relative spread,
      evaluated on the offset conductance (in those coordinates: zero at 0 uS).
    - **Disturbance**: one array per tensor, programmed with the output index fastest, then
      the input (the code wraps at 8 rows, the hidden width it was written for; here at the
      tensor's own row count); the device at position ``p`` of ``n`` takes the database's entry
      for ``n - p`` later programmings (one more than were programmed after it), the last one
      none. G+ and G- draw separately with the same count. No floor.
    - **Stuck devices**: at the model's rates, per device and per transfer, their measured
      conductances written in the same coordinates.
    - **One-sign tensors** (all entries >= 0, or all <= 0) take one device per weight, min-max
      scaled from ``[min w, max w]`` onto ``[G_min, G_max]``, the offset subtracted.

    The code's outlier rule (a drawn disturbance beyond 4 standard deviations of its ``k``
    becomes +60 uS) is not reproduced: with the published database it never fires for ``k >=
    2`` (every sample is within +-40 uS, below 4 sigma), and ``k = 1`` never occurs.
    """

    def __init__(
        self, device: DeviceModel, shape: tuple[int, ...], coordinates: str = "paper-code"
    ) -> None:
        if not isinstance(device, TiO2Passive):
            raise TypeError(f"the paper's mapping needs a tunable device, not {device.kind}")
        if coordinates not in ("paper-code", "physical"):
            raise ValueError(f"coordinates must be paper-code or physical, got {coordinates!r}")
        self.device = device
        self.shape = tuple(shape)
        self.coordinates = coordinates
        numel = math.prod(self.shape)
        index = torch.arange(numel).reshape(self.shape)
        if len(self.shape) == 2 and self.shape[0] > 1:
            position = index.t().flatten().argsort()  # output (row) index fastest
        else:
            position = torch.arange(numel)
        self.after = numel - position
        self.after[position == numel - 1] = 0

    def sample(self, w: Tensor, n: int, gen: torch.Generator) -> Transfers:
        """``n`` transfers of the tensor ``w`` (of this sampler's shape)."""
        w = w.detach().to(torch.float32).reshape(-1)
        if w.numel() > 1 and (bool((w >= 0).all()) or bool((w <= 0).all())):
            weights, stuck = self._single(w, n, gen)
        else:
            weights, stuck = self._pair(w, n, gen)
        return Transfers(weights.reshape(n, *self.shape), stuck.reshape(n, *self.shape))

    def _tune(self, g: Tensor, gen: torch.Generator, offset_sign: float) -> Tensor:
        dev = self.device
        offset = dev.offset_mean + dev.offset_std * torch.randn(g.shape, generator=gen)
        g = g + offset_sign * offset / 100 * g
        sigma = (dev.std_slope * g / US + dev.std_base) / 100 * g
        g = g + sigma * torch.randn(g.shape, generator=gen)
        if dev.disturbs:
            g = g + dev.disturbance(self.after.expand(g.shape), gen)
        return g

    def _stick(self, g: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        kind, g_stuck = self.device.stuck.sample(tuple(g.shape), 0.0, gen)
        return torch.where(kind > 0, g_stuck, g), kind > 0

    def _pair(self, w: Tensor, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        dev = self.device
        span = dev.g_max - dev.g_min
        w_max = float(w.abs().max()) or 1.0
        if self.coordinates == "paper-code":
            zero, unit = -span, 2 * span / w_max
        else:
            zero, unit = dev.g_min, span / w_max
        g = zero + unit * torch.stack([w.clamp(min=0), (-w).clamp(min=0)])
        g = self._tune(g.expand(n, 2, -1), gen, +1.0)
        g, stuck = self._stick(g, gen)
        return (g[:, 0] - g[:, 1]) / unit, stuck.any(1)

    def _single(self, w: Tensor, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        dev = self.device
        span = dev.g_max - dev.g_min
        low = float(w.min())
        scale = float(w.max()) - low or 1.0  # scikit-learn's MinMaxScaler on a constant
        g = dev.g_min + span * (w - low) / scale
        g = self._tune(g.expand(n, -1), gen, -1.0)
        g, stuck = self._stick(g, gen)
        return low + (g - dev.g_min) * scale / span, stuck
