"""One layer's weights on a crossbar: its differential pairs, their programming from the
digital unit's level changes, its reads and its MVMs through the array's converters.

The same object serves the host's in-loop crossbar
(:class:`~metaplast.host.crossbar_synapses.CrossbarSynapses`) and the board's array driver
(:class:`~metaplast.firmware_sim.crossbar.driver.ArrayDriver`), so that a layer on a board's
array and the same layer in process program, read and multiply alike, draw for draw.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.array import Crossbar
from metaplast.firmware_sim.crossbar.devices import DeviceModel
from metaplast.firmware_sim.crossbar.pair import PairLayout
from metaplast.firmware_sim.crossbar.periphery import G_LSB, Periphery


class ArrayLayer:
    """An ``out x in`` weight matrix as pairs on a :class:`Crossbar` of ``device``, reset and
    then programmed to the weight levels ``levels`` (flat, the matrix's order)."""

    def __init__(
        self,
        shape: tuple[int, int],
        contract: Contract,
        device: DeviceModel,
        seed: int,
        levels: Tensor,
        periphery: Periphery | None = None,
    ) -> None:
        self.contract = contract
        self.periphery = periphery or Periphery()
        self.pairs = PairLayout(shape)
        self.crossbar = Crossbar(device, self.pairs.rows, self.pairs.cols, seed)
        self.targets, g_unit = device.level_mapping(contract.device_magnitudes())
        # the board's converters read one weight unit as whole conductance codes too
        self.g_unit = round(g_unit / G_LSB) * G_LSB if self.periphery.exact else g_unit
        self.crossbar.reset(float(self.targets[0]))
        self.level = torch.full((len(self.pairs.plus),), contract.zero_level, dtype=torch.int64)
        levels = levels.flatten()
        changed = (levels != self.level).nonzero().squeeze(1)
        self.program(changed, levels[changed])

    def program(self, changed: Tensor, new: Tensor) -> None:
        """Program the pairs of synapses ``changed`` (increasing) from their levels to
        ``new``, in one pass: every G+ that must change, then every G-, each single shot."""
        new_p, new_n, dp, dn = self.contract.device_changes(self.level[changed], new)
        index = torch.cat([self.pairs.plus[changed[dp]], self.pairs.minus[changed[dn]]])
        targets = torch.cat([self.targets[new_p[dp]], self.targets[new_n[dn]]])
        self.crossbar.program(index, targets)
        self.level[changed] = new.to(torch.int64)

    def program_devices(
        self, plus: Tensor, plus_level: Tensor, minus: Tensor, minus_level: Tensor
    ) -> None:
        """Program the G+ of synapses ``plus`` (increasing) to device levels ``plus_level``,
        then the G- of synapses ``minus`` (increasing) to ``minus_level``, in one pass: what
        :meth:`program` does, given as the programming port's device operations."""
        index = torch.cat([self.pairs.plus[plus], self.pairs.minus[minus]])
        targets = torch.cat([self.targets[plus_level], self.targets[minus_level]])
        self.crossbar.program(index, targets)
        p, n = self.contract.device_levels_of(self.level)
        p[plus], n[minus] = plus_level, minus_level
        self.level = p - n + self.contract.zero_level

    def device_levels(self) -> Tensor:
        """Device level each device was last programmed to, ``rows x cols`` like the array."""
        return self.pairs.place(*self.contract.device_levels_of(self.level))

    def verify(self, tolerance: float, iterations: int) -> tuple[int, int]:
        """Program-and-verify: up to ``iterations`` passes that read the array and reprogram
        every working device farther than ``tolerance`` (S) from its level's target (each
        pass disturbing its tiles as any programming does). Returns the devices a last read
        finds still outside (stuck and worn-out ones included) and the operations spent."""
        targets = self.targets[self.device_levels().flatten()]
        operations = 0
        for _ in range(iterations):
            bar = self.crossbar
            off = (self.crossbar.read().flatten() - targets).abs() > tolerance
            index = (off & (bar.stuck == 0) & ~bar.failed).nonzero().squeeze(1)
            if index.numel() == 0:
                break
            bar.program(index, targets[index])
            operations += index.numel()
        outside = (self.crossbar.read().flatten() - targets).abs() > tolerance
        return int(outside.sum()), operations

    def read(self) -> Tensor:
        """One read of the conductances (S, ``rows x cols``) through the converters."""
        return self.periphery.read(self.crossbar.read())

    def weights(self) -> Tensor:
        """The weights one read of the array gives (``(G+ - G-) / g_unit``, ``out x in``)."""
        return self.pairs.difference(self.read()).t() / self.g_unit

    def forward(self, x: Tensor) -> Tensor:
        """Inputs on the rows; G+ minus G- column currents, in weight units."""
        g = self.crossbar.read()
        return self.pairs.difference(self.periphery.mvm(x, g)) / self.g_unit

    def backward(self, delta: Tensor) -> Tensor:
        """Errors on the columns (``+delta`` on G+, ``-delta`` on G-); row currents."""
        g = self.crossbar.read()
        return self.periphery.mvm(self.pairs.interleave(delta), g.t()) / self.g_unit
