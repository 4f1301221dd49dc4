"""The array behind a digital unit's crossbar port, in simulation: what a lab's DAC, ADC and
pulse hardware does for the unit, made of the project's device models.

The unit maps a span of its synapses onto the array as a layer (``XBAR_MAP``), at the
contract's zero level; from then on every device operation of the unit's programming port
(``address, device, level``) that falls on those synapses is programmed onto the layer's
pairs, the unit's sweep of the layer's present levels right after the map included. The
driver sees operations, not the unit's memory: an RTL unit and the model unit drive it alike.
Programming is collected per layer and done in one pass (every G+ that must change, in
address order, then every G-) before the layer's next read: the host's step boundary, since
a training step reads each layer before the next step's updates. So a layer on a board's
array programs, reads and multiplies exactly as
:class:`~metaplast.firmware_sim.crossbar.layer.ArrayLayer` does in process, draw for draw.
Reads are latched (``XBAR_LATCH``): one read of the layer's conductances serves every tile
MVM of a pass, as one read serves a whole batch in process.

Inputs and results are integers (``firmware_sim/crossbar/periphery.py``, the ``board``
converters): 16-bit input codes in, products with conductance codes out, exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.devices import DeviceModel
from metaplast.firmware_sim.crossbar.layer import ArrayLayer
from metaplast.firmware_sim.crossbar.pair import PairLayout
from metaplast.firmware_sim.crossbar.periphery import (
    G_LSB,
    INPUT_BITS,
    Periphery,
    conductance_codes,
)

MAX_LAYERS = 16
"""Layers one unit maps onto its array."""


class DriverError(Exception):
    """A request the array cannot serve; ``kind`` names the protocol status it becomes."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Mapped:
    base: int
    layer: ArrayLayer
    # (device, index in layer) -> device level, the operations waiting for the layer's pass
    pending: dict[tuple[int, int], int] = field(default_factory=dict)
    latched: Tensor | None = None  # conductance codes of the last read, float64

    @property
    def size(self) -> int:
        return len(self.layer.level)


class ArrayDriver:
    """``device``'s array behind a unit of ``contract``: layers, programming, reads, MVMs."""

    def __init__(self, device: DeviceModel, contract: Contract) -> None:
        self.device = device
        self.contract = contract
        self.periphery = Periphery("board")
        self.layers: dict[int, _Mapped] = {}
        _, g_unit = device.level_mapping(contract.device_magnitudes())
        self.g_unit_code = round(g_unit / G_LSB)

    # configuration ----------------------------------------------------------------------------

    def map_layer(self, index: int, base: int, shape: tuple[int, int], seed: int) -> int:
        """Map synapses ``base ..`` (an ``out x in`` layer) onto fresh pairs of the array,
        reset to the zero level; the tiles it takes. The unit then sends the device
        operations that bring them to its synapses' levels (:meth:`device_operation`)."""
        n_out, n_in = shape
        if not 0 <= index < MAX_LAYERS:
            raise DriverError("range", f"layer {index} is not in 0 .. {MAX_LAYERS - 1}")
        if n_out < 1 or n_in < 1:
            raise DriverError("value", f"a layer of {n_out} x {n_in} synapses")
        end = base + n_out * n_in
        for other, m in self.layers.items():
            if other != index and base < m.base + m.size and m.base < end:
                raise DriverError("range", f"synapses {base}..{end - 1} overlap layer {other}")
        geo = self.device.array
        taken = sum(m.layer.crossbar.tiles for i, m in self.layers.items() if i != index)
        pairs = PairLayout(shape)
        needed = geo.tiles_for(pairs.rows, pairs.cols)
        if geo.tiles is not None and taken + needed > geo.tiles:
            raise DriverError(
                "range",
                f"the array has {geo.tiles} tiles; {taken} are taken and the layer needs {needed}",
            )
        zero = torch.full((n_out * n_in,), self.contract.zero_level, dtype=torch.int64)
        layer = ArrayLayer(shape, self.contract, self.device, seed, zero, self.periphery)
        self.layers[index] = _Mapped(base, layer)
        return layer.crossbar.tiles

    @property
    def tile(self) -> int:
        """The largest tile dimension (rows or columns): what the unit in front of this array
        is built for (``DigitalUnitTop(..., crossbar=tile)``)."""
        geo = self.device.array
        return max(geo.tile_rows, geo.tile_cols)

    @property
    def max_request(self) -> int:
        """The longest crossbar request (op to CRC): an XBAR_MVM of a whole tile."""
        return 2 + 6 + 2 * self.tile + 2

    # programming --------------------------------------------------------------------------------

    def device_operation(self, address: int, device: int, level: int) -> None:
        """One operation of the unit's programming port: device ``device`` (0: G+, 1: G-) of
        synapse ``address`` to device level ``level``. One on a mapped synapse waits for its
        layer's pass; a device that already has one waiting has that one programmed first
        (a pass programs each device once)."""
        for m in self.layers.values():
            if m.base <= address < m.base + m.size:
                key = (device, address - m.base)
                if key in m.pending:
                    self._flush(m)
                m.pending[key] = level
                return

    def _flush(self, m: _Mapped) -> None:
        if not m.pending:
            return
        ops = [sorted((i, v) for (d, i), v in m.pending.items() if d == side) for side in (0, 1)]
        m.pending.clear()
        plus, minus = (torch.tensor(o, dtype=torch.int64).reshape(-1, 2) for o in ops)
        m.layer.program_devices(plus[:, 0], plus[:, 1], minus[:, 0], minus[:, 1])
        m.latched = None

    def _layer(self, index: int) -> _Mapped:
        m = self.layers.get(index)
        if m is None:
            raise DriverError("range", f"layer {index} is not mapped")
        return m

    # reads and products -----------------------------------------------------------------------

    def latch(self, index: int) -> None:
        """Program the layer's waiting changes, then read its conductances once."""
        m = self._layer(index)
        self._flush(m)
        m.latched = conductance_codes(m.layer.crossbar.read())

    def _latched(self, m: _Mapped, index: int) -> Tensor:
        if m.pending or m.latched is None:
            raise DriverError("stale", f"layer {index} has changed since its last latch")
        return m.latched

    def mvm(self, index: int, transposed: bool, tile: tuple[int, int], codes: Tensor) -> Tensor:
        """One tile's integer currents (int64) for input ``codes`` on its rows (or, with
        ``transposed``, on its columns). Checked in the protocol's order: the layer and the
        tile (range), the number of inputs (length), their codes (value), the latch."""
        m = self._layer(index)
        geo = self.device.array
        rows, cols = m.layer.pairs.rows, m.layer.pairs.cols
        r0, c0 = tile[0] * geo.tile_rows, tile[1] * geo.tile_cols
        if not (0 <= r0 < rows and 0 <= c0 < cols):
            raise DriverError("range", f"tile {tile} is outside layer {index}'s array")
        r1, c1 = min(rows, r0 + geo.tile_rows), min(cols, c0 + geo.tile_cols)
        inputs = c1 - c0 if transposed else r1 - r0
        if codes.numel() != inputs:
            raise DriverError("length", f"tile {tile} takes {inputs} inputs, got {codes.numel()}")
        if bool((codes.abs() > 2 ** (INPUT_BITS - 1) - 1).any()):
            raise DriverError("value", "an input code of -32768")
        block = self._latched(m, index)[r0:r1, c0:c1]
        return (codes.to(torch.float64) @ (block.t() if transposed else block)).to(torch.int64)

    def read(self, index: int, start: int, count: int) -> Tensor:
        """Conductance codes of the layer's devices ``start ..`` (flat, row by row) as the
        last latch read them."""
        m = self._layer(index)
        if start + count > m.layer.crossbar.size:
            raise DriverError("range", f"devices {start}..{start + count - 1} of layer {index}")
        return self._latched(m, index).flatten()[start : start + count].to(torch.int64)

    def counters(self, index: int, start: int, count: int) -> Tensor:
        """Programming operations of the layer's devices ``start ..`` (its waiting changes
        programmed first)."""
        m = self._layer(index)
        if start + count > m.layer.crossbar.size:
            raise DriverError("range", f"devices {start}..{start + count - 1} of layer {index}")
        self._flush(m)
        return m.layer.crossbar.counts[start : start + count].to(torch.int64)

    def verify(self, index: int, tolerance: float, iterations: int) -> tuple[int, int]:
        """Program-and-verify: up to ``iterations`` passes that read the layer and reprogram
        every working device farther than ``tolerance`` (S) from its level's target; the
        devices still outside, and the operations spent."""
        m = self._layer(index)
        if not tolerance > 0 or iterations < 1:
            raise DriverError("value", "a verify needs a tolerance > 0 and >= 1 iteration")
        self._flush(m)
        remaining, operations = m.layer.verify(tolerance, iterations)
        m.latched = None
        return remaining, operations
