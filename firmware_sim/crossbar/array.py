"""A crossbar of memristive devices: programmed device by device, read, and multiplied with.

The array is ``rows x cols`` devices of one :mod:`~metaplast.firmware_sim.crossbar.devices` model:
inputs drive the rows (source lines), currents sum on the columns (bit lines), and the
transposed product drives the columns and sums on the rows. The array is cut into tiles;
within a tile, devices are programmed in the geometry's order, which is what a passive
array's disturbance depends on. Each device counts its programming operations; a device past
its endurance no longer switches and is reported as failed. Stuck devices are drawn once, at
fabrication, and never move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metaplast.firmware_sim.crossbar.devices import DeviceModel


@dataclass(frozen=True)
class ProgramReport:
    """What one :meth:`Crossbar.program` call did."""

    programmed: int  # devices that switched to a new conductance
    ignored: int  # pulses on stuck or failed devices
    failed: Tensor  # flat indices of devices that wore out in this call


class Crossbar:
    """``rows x cols`` devices of ``device``, reset to its lowest state at fabrication."""

    def __init__(self, device: DeviceModel, rows: int, cols: int, seed: int) -> None:
        self.device = device
        self.rows, self.cols = rows, cols
        self.gen = torch.Generator().manual_seed(seed)
        geo = device.array
        r = torch.arange(rows)[:, None].expand(rows, cols)
        c = torch.arange(cols)[None, :].expand(rows, cols)
        tile_cols = -(-cols // geo.tile_cols)
        self.tile = ((r // geo.tile_rows) * tile_cols + c // geo.tile_cols).flatten()
        rr, cc = r % geo.tile_rows, c % geo.tile_cols
        pos = rr * geo.tile_cols + cc if geo.order == "row-major" else cc * geo.tile_rows + rr
        self.position = pos.flatten()
        self.tiles = int(self.tile.max()) + 1
        self.slots = geo.tile_rows * geo.tile_cols
        # flat index of the device in each tile's programming slot (-1: past the array's edge)
        self.members = torch.full((self.tiles, self.slots), -1, dtype=torch.int64)
        self.members[self.tile, self.position] = torch.arange(rows * cols)
        self.stuck, g_stuck = device.stuck.sample((rows * cols,), device.floor, self.gen)
        self.g = torch.where(self.stuck > 0, g_stuck, device.floor)
        self.counts = torch.zeros(rows * cols, dtype=torch.int32)
        self.failed = torch.zeros(rows * cols, dtype=torch.bool)

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def reset(self, target: float) -> None:
        """Bring every working device to ``target`` (the RESET before a transfer or a
        training run). Not counted: it is part of preparing the array, not of learning."""
        live = (self.stuck == 0) & ~self.failed
        full = torch.full((int(live.sum()),), target, dtype=torch.float32)
        self.g[live] = self.device.program(full, self.gen)

    def program(self, index: Tensor, targets: Tensor) -> ProgramReport:
        """Program the devices at flat ``index`` towards conductances ``targets`` (S).

        Every device is programmed at most once per call, in the tile's order; each later
        programming in a tile disturbs the tile's devices programmed before it (and all of
        its devices that this call leaves alone) as the device model says.
        """
        index = index.to(torch.int64)
        if index.numel() == 0:
            return ProgramReport(0, 0, index)
        if torch.unique(index).numel() != index.numel():
            raise ValueError("a device is programmed at most once per call")
        self.counts[index] += 1
        endurance = self.device.endurance
        worn = (
            (self.counts[index] > endurance) & ~self.failed[index]
            if endurance is not None
            else torch.zeros(index.shape, dtype=torch.bool)
        )
        self.failed[index[worn]] = True
        live = (self.stuck[index] == 0) & ~self.failed[index]
        self.g[index[live]] = self.device.program(targets[live].to(torch.float32), self.gen)
        if self.device.disturbs:
            self._disturb(index)
        return ProgramReport(int(live.sum()), int((~live).sum() - worn.sum()), index[worn])

    def later_in_tile(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The devices of the tiles that programming ``index`` touches, and for each how many
        of those programmings come after it in its tile's order (all of them for a device
        not in ``index``): the ``k`` of the disturbance database.

        Works on the touched tiles only, as a ``tiles x slots`` grid in programming order:
        the programmings after a slot are a reversed cumulative sum of the grid.
        """
        tiles = torch.unique(self.tile[index])
        row = torch.empty(self.tiles, dtype=torch.int64)
        row[tiles] = torch.arange(len(tiles))
        programmed = torch.zeros(len(tiles), self.slots, dtype=torch.int64)
        programmed[row[self.tile[index]], self.position[index]] = 1
        later = programmed.flip(1).cumsum(1).flip(1) - programmed
        after = torch.where(programmed > 0, later, programmed.sum(1, keepdim=True)).flatten()
        devices = self.members[tiles].flatten()
        real = devices >= 0
        return devices[real], after[real]

    def _disturb(self, index: Tensor) -> None:
        """V/3-style disturbance: a device moves by how many of its tile came after it."""
        devices, after = self.later_in_tile(index)
        movable = (self.stuck == 0) & ~self.failed
        hit = ((after > 0) & movable[devices]).nonzero().squeeze(1)
        devices = devices[hit]
        delta = self.device.disturbance(after[hit], self.gen)
        self.g[devices] = (self.g[devices] + delta).clamp_min(self.device.floor)

    def read(self) -> Tensor:
        """Conductances (S) as one read sees them, ``rows x cols``."""
        g = self.g.reshape(self.rows, self.cols)
        if self.device.read_noise > 0:
            noise = torch.randn(g.shape, generator=self.gen) * self.device.read_noise
            g = g * (1 + noise)
        return g

    def mvm(self, v: Tensor) -> Tensor:
        """Column currents for row voltages ``v`` (``batch x rows``)."""
        return v @ self.read()

    def mvm_t(self, v: Tensor) -> Tensor:
        """Row currents for column voltages ``v`` (``batch x cols``): the transposed MVM."""
        return v @ self.read().t()

    def state_dict(self) -> dict[str, Any]:
        return {
            "g": self.g.clone(),
            "counts": self.counts.clone(),
            "failed": self.failed.clone(),
            "stuck": self.stuck.clone(),
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g = state["g"].clone()
        self.counts = state["counts"].clone()
        self.failed = state["failed"].clone()
        self.stuck = state["stuck"].clone()
        self.gen.set_state(state["gen"])
