"""What a one-shot transfer of a weight matrix onto a fresh crossbar does to it.

The ex-situ transfer of paper 004: every device of a fresh array is programmed once, in its
tile's order, towards its target (with the model's programming spread), every device is
disturbed by the programmings after it in its tile (if the model disturbs, as the passive V/3
scheme does), and shares of the devices are stuck in HRS or LRS wherever the chip happens to
have them. The sampler draws ``n`` such transfers at once, vectorized, from the same device
model and crossbar geometry that the in-loop crossbar uses
(:mod:`metaplast.firmware_sim.crossbar.array`).

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
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.array import Crossbar
from metaplast.firmware_sim.crossbar.devices import (
    US,
    DeviceModel,
    TiO2Passive,
    measured_stuck_maps,
)
from metaplast.firmware_sim.crossbar.pair import PairLayout
from metaplast.firmware_sim.crossbar.write_plan import WritePlan


@dataclass(frozen=True)
class Transfers:
    """``n`` transfers of one ``out x in`` matrix: the weights read back, and where a weight
    has a stuck device that its pair could not make up for (its value is then the stuck
    device's, whatever the target). ``operations`` and ``reads`` count, per transfer, the
    devices' programming operations and the read passes over the array (``None``: one
    operation per device and no read, the plain one-shot write)."""

    weights: Tensor  # n x out x in
    stuck: Tensor  # n x out x in, bool
    operations: Tensor | None = None  # n
    reads: Tensor | None = None  # n


@dataclass
class WriteCost:
    """What writing a network's transfers cost: its arrays' devices and tiles, and the
    programming operations and read passes summed over the transfers counted so far."""

    array_devices: tuple[int, ...]  # devices of each of the network's arrays
    tiles: int  # tiles one transfer of the whole network occupies
    transfers: int = 0
    operations: int = 0
    reads: int = 0

    @classmethod
    def of(cls, samplers: Sequence[TransferSampler | PaperCodeSampler]) -> WriteCost:
        return cls(tuple(s.devices for s in samplers), sum(s.tiles for s in samplers))

    def add(self, drawn: Sequence[Transfers]) -> None:
        """Count one draw of every array (in the samplers' order), ``n`` transfers each."""
        n = drawn[0].weights.shape[0]
        self.transfers += n
        for t, devices in zip(drawn, self.array_devices, strict=True):
            self.operations += int(t.operations.sum()) if t.operations is not None else n * devices
            self.reads += int(t.reads.sum()) if t.reads is not None else 0

    def describe(self) -> dict[str, float | int]:
        per = max(self.transfers, 1)
        devices = sum(self.array_devices)
        return {
            "devices": devices,
            "tiles": self.tiles,
            "operations_per_device": self.operations / max(per * devices, 1),
            "operations_per_transfer": self.operations / per,
            "read_passes_per_array": self.reads / max(per * len(self.array_devices), 1),
        }


class TransferSampler:
    """Transfers of ``out x in`` matrices onto a fresh array of ``device`` (its tile geometry).

    The pairs sit as :class:`~metaplast.firmware_sim.crossbar.pair.PairLayout` puts them (as in
    :class:`~metaplast.host.crossbar_synapses.CrossbarSynapses`); a bias is one more row
    driven by a constant 1. ``plan`` says how the lab writes the array
    (:mod:`~metaplast.firmware_sim.crossbar.write_plan`); the default is the plain one-shot write.
    """

    def __init__(
        self,
        device: DeviceModel,
        shape: tuple[int, int],
        plan: WritePlan | None = None,
        first_tile: int = 0,
    ) -> None:
        self.device = device
        self.plan = plan or WritePlan()
        self.first_tile = first_tile  # where the matrix starts on the chip (measured maps)
        if self.plan.stuck_map == "measured" and not _fits_measured_maps(device):
            raise ValueError("the measured stuck maps are 8 x 8 TiO2 arrays: use tio2-passive")
        self.shape = shape
        tile = device.array
        rows, cols = self.plan.block or (tile.tile_rows, tile.tile_cols)
        if rows > tile.tile_rows or cols > tile.tile_cols:
            raise ValueError(
                f"a {rows} x {cols} block does not fit the {tile.tile_rows} x {tile.tile_cols} tile"
            )
        block = replace(tile, tile_rows=rows, tile_cols=cols)
        plain = replace(device.with_overrides(stuck_hrs=0, stuck_lrs=0), array=block)
        pairs = PairLayout(shape)
        layout = Crossbar(plain, pairs.rows, pairs.cols, 0)
        pair = pairs.devices.flatten()  # G+ of every weight, then G-
        r = (pair // pairs.cols) % rows
        c = (pair % pairs.cols) % cols
        rank = layout.position[pair]
        if self.plan.order is not None:
            if len(self.plan.order) != rows * cols:
                raise ValueError(f"the write plan's order does not fit a {rows} x {cols} block")
            sequence = torch.empty(rows * cols, dtype=torch.int64)
            sequence[torch.tensor(self.plan.order)] = torch.arange(rows * cols)
            rank = sequence[r * cols + c]
        self.tiles, self.slots = layout.tiles, layout.slots
        self._tile = layout.tile[pair]
        self._slot = self._tile * self.slots + rank
        self._block_row, self._block_col = r, c
        # a full transfer programs every device once: k = devices of its tile tuned after it
        self.after = self._later(torch.ones(1, 2, len(pairs.plus), dtype=torch.bool))[0]
        # the measured chip does not change: read its maps once, not at every draw
        self._measured = self._measured_stuck() if self.plan.stuck_map == "measured" else None

    def _later(self, programmed: Tensor) -> Tensor:
        """Per device (``n x 2 x m``), the ``k`` of the disturbance database for one pass
        that programs the devices ``programmed`` in their tiles' order: the programmings
        after it in its tile, or all of its tile's for a device left alone."""
        n = programmed.shape[0]
        flags = programmed.reshape(n, -1).long()
        grid = torch.zeros(n, self.tiles * self.slots, dtype=torch.int64)
        grid[:, self._slot] = flags
        tiles = grid.view(n, self.tiles, self.slots)
        later = (tiles.flip(2).cumsum(2).flip(2) - tiles).view(n, -1)[:, self._slot]
        idle = tiles.sum(2)[:, self._tile]
        return torch.where(flags > 0, later, idle).view(programmed.shape)

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
        return self._program(targets, span / w_max, (dev.g_min, dev.g_max), n, gen)

    def sample_levels(
        self, levels: Tensor, contract: Contract, n: int, gen: torch.Generator
    ) -> Transfers:
        """``n`` transfers of weights given as ``contract`` level indices (``out x in``)."""
        level_g, g_unit = self.device.level_mapping(contract.device_magnitudes())
        plus, minus = contract.device_levels_of(levels.reshape(-1))
        targets = torch.stack([level_g[plus], level_g[minus]])
        g_range = (float(level_g.min()), float(level_g.max()))
        return self._program(targets, g_unit, g_range, n, gen)

    @property
    def devices(self) -> int:
        return 2 * math.prod(self.shape)

    def _program(
        self,
        targets: Tensor,
        g_unit: float,
        g_range: tuple[float, float],
        n: int,
        gen: torch.Generator,
    ) -> Transfers:
        """Program the ``2 x m`` pair targets ``n`` times as the plan says; weights are
        ``(G+ - G-) / g_unit``; a known stuck device's partner is kept within ``g_range``."""
        dev, plan = self.device, self.plan
        t = targets.expand(n, 2, -1)
        stuck_shape = (n * targets.numel(),)
        pulsed = torch.ones(t.shape, dtype=torch.bool)
        lost = torch.zeros(n, t.shape[2], dtype=torch.bool)
        if plan.known_stuck:  # the stuck map is read before anything is written
            kind, g_stuck = self._placed_stuck(n, gen)
            t, lost = _compensate(t, kind, g_stuck, g_range)
            pulsed = kind == 0
        g = dev.program(t.reshape(-1), gen).reshape(t.shape)
        if dev.disturbs:
            after = self._later(pulsed) if plan.known_stuck else self.after.expand(t.shape)
            g = g + dev.disturbance(after.reshape(-1), gen).reshape(g.shape)
        g = g.clamp_min(dev.floor)
        if not plan.known_stuck:
            kind, g_stuck = (
                v.reshape(t.shape) for v in dev.stuck.sample(stuck_shape, dev.floor, gen)
            )
            lost = (kind > 0).any(1)
        g = torch.where(kind > 0, g_stuck, g)
        operations = pulsed.flatten(1).sum(1)
        reads = torch.full((n,), int(plan.known_stuck), dtype=torch.int64)
        if plan.verify is not None:
            g, operations, reads = self._verify(g, t, kind, g_stuck, pulsed, operations, reads, gen)
        weights = (g[:, 0] - g[:, 1]) / g_unit
        return Transfers(
            weights.reshape(n, *self.shape), lost.reshape(n, *self.shape), operations, reads
        )

    def _measured_stuck(self) -> tuple[Tensor, Tensor]:
        """Kinds and conductances (``tiles x rows x cols``) when tile ``t`` of the chip (the
        matrix starts at ``first_tile``) sits on measured array ``t mod 5``: a device that
        reads below ``G_min`` is stuck in HRS at the conductance it read (paper 004's maps;
        docs/transfer.md)."""
        g = torch.stack([1 / ohms for _, ohms in measured_stuck_maps()]).to(torch.float32)
        g = g[(self.first_tile + torch.arange(self.tiles)) % len(g)]
        kind = (g < self.device.g_min).to(torch.int8)
        return kind, torch.where(kind > 0, g, torch.zeros(()))

    def _place(self, stuck: Tensor) -> tuple[Tensor, Tensor]:
        """The tile rows (``... x T x R``) and columns (``... x T x C``) that hold each tile's
        block, given the stuck devices (``... x T x rows x cols``): the columns with the fewest
        stuck devices, then the rows with the fewest within those columns."""
        bad = stuck.long()
        rows = bad.shape[-2]
        block_rows, block_cols = self.plan.block or (rows, bad.shape[-1])
        use_cols = bad.sum(-2).argsort(dim=-1, stable=True)[..., :block_cols]
        index = use_cols.unsqueeze(-2).expand(*bad.shape[:-1], block_cols)
        within = bad.gather(-1, index)
        use_rows = within.sum(-1).argsort(dim=-1, stable=True)[..., :block_rows]
        return use_rows, use_cols

    def placement(self) -> list[dict[str, object]]:
        """Where each tile's block sits on the measured chip (``stuck_map`` ``measured``):
        per tile of the matrix, its tile on the chip, the measured array there, and that
        array's rows and columns that hold the block's rows and columns, in order: what a lab
        programs by."""
        if self._measured is None:
            raise ValueError("a placement is fixed only on the measured chip")
        kind, _ = self._measured
        use_rows, use_cols = self._place(kind > 0)
        names = [name for name, _ in measured_stuck_maps()]
        return [
            {
                "tile": self.first_tile + t,
                "array": names[(self.first_tile + t) % len(names)],
                "rows": use_rows[t].tolist(),
                "cols": use_cols[t].tolist(),
            }
            for t in range(self.tiles)
        ]

    def _placed_stuck(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Stuck kinds and conductances (``n x 2 x m``) of the devices that hold the matrix
        when the lab, knowing each tile's stuck map, places a tile's block on the rows and
        columns with the fewest stuck devices (the columns first, then the rows within them)."""
        tile = self.device.array
        rows, cols = tile.tile_rows, tile.tile_cols
        shape = (n, self.tiles, rows, cols)
        if self._measured is not None:
            kind, g_stuck = (v.expand(shape) for v in self._measured)
        else:
            kind, g_stuck = (
                v.reshape(shape) for v in self.device.stuck.sample(shape, self.device.floor, gen)
            )
        use_rows, use_cols = self._place(kind > 0)
        block_rows, block_cols = use_rows.shape[-1], use_cols.shape[-1]
        phys_row = use_rows.reshape(n, -1)[:, self._tile * block_rows + self._block_row]
        phys_col = use_cols.reshape(n, -1)[:, self._tile * block_cols + self._block_col]
        flat = (self._tile * rows + phys_row) * cols + phys_col  # n x 2m
        out_shape = (n, 2, len(self._tile) // 2)
        return (
            kind.reshape(n, -1).gather(1, flat).reshape(out_shape),
            g_stuck.reshape(n, -1).gather(1, flat).reshape(out_shape),
        )

    def _verify(
        self,
        g: Tensor,
        t: Tensor,
        kind: Tensor,
        g_stuck: Tensor,
        pulsed: Tensor,
        operations: Tensor,
        reads: Tensor,
        gen: torch.Generator,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Read-verify passes: re-program every device (that the lab pulses) farther than the
        tolerance from its target, each pass disturbing the tiles it writes, until all are
        within it or the iterations run out. A stuck device the lab does not know of is
        pulsed in vain, and disturbs its tile all the same."""
        dev = self.device
        verify = self.plan.verify
        assert verify is not None
        reads = reads + 1  # the read after the first write
        for _ in range(verify.iterations):
            off = ((g - t).abs() > verify.tolerance) & pulsed
            again = off.flatten(1).any(1)
            if not bool(again.any()):
                break
            g = torch.where(off, dev.program(t.reshape(-1), gen).reshape(g.shape), g)
            if dev.disturbs:
                g = g + dev.disturbance(self._later(off).reshape(-1), gen).reshape(g.shape)
            g = torch.where(kind > 0, g_stuck, g.clamp_min(dev.floor))
            operations = operations + off.flatten(1).sum(1)
            reads = reads + again.long()
        return g, operations, reads


def side_by_side(
    device: DeviceModel, shapes: Sequence[tuple[int, int]], plan: WritePlan | None = None
) -> list[TransferSampler]:
    """Samplers of matrices that sit one after another on one chip: each starts at the tile
    after the last one's (which measured array holds a tile depends on it)."""
    samplers: list[TransferSampler] = []
    for shape in shapes:
        first = samplers[-1].first_tile + samplers[-1].tiles if samplers else 0
        samplers.append(TransferSampler(device, shape, plan, first))
    return samplers


def _fits_measured_maps(device: DeviceModel) -> bool:
    tile = device.array
    return isinstance(device, TiO2Passive) and (tile.tile_rows, tile.tile_cols) == (8, 8)


def _compensate(
    t: Tensor, kind: Tensor, g_stuck: Tensor, g_range: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """Pair targets ``n x 2 x m`` with each known stuck device's partner retargeted so that
    ``G+ - G-`` stays what it was, within ``g_range``; and the weights this cannot save
    (both devices stuck, or the partner's target out of range)."""
    low, high = g_range
    diff = t[:, 0] - t[:, 1]
    plus_stuck, minus_stuck = kind[:, 0] > 0, kind[:, 1] > 0
    want_plus = g_stuck[:, 1] + diff
    want_minus = g_stuck[:, 0] - diff
    plus = torch.where(minus_stuck & ~plus_stuck, want_plus.clamp(low, high), t[:, 0])
    minus = torch.where(plus_stuck & ~minus_stuck, want_minus.clamp(low, high), t[:, 1])
    out_of_range = torch.where(
        plus_stuck, (want_minus < low) | (want_minus > high), (want_plus < low) | (want_plus > high)
    )
    lost = (plus_stuck & minus_stuck) | ((plus_stuck ^ minus_stuck) & out_of_range)
    return torch.stack([plus, minus], 1), lost


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

    @property
    def devices(self) -> int:
        """Devices of a transfer when the tensor takes pairs (a one-sign tensor takes half)."""
        return 2 * math.prod(self.shape)

    tiles = 1  # the code programs each tensor as one array

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
