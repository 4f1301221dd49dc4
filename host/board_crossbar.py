"""A layer whose crossbar is the board's array (``metaplast train --crossbar board``).

The hidden weights live on the board (:class:`~metaplast.host.synapses.LinkSynapses`), and so
do the devices: the board programs them from its own level changes, and the layer's forward
and backward products are the board's. The host turns each input vector into the board
converters' codes (``firmware_sim/crossbar/periphery.py``), has the array read once per pass
(XBAR_LATCH), sends the codes tile by tile (XBAR_MVM), adds up the tiles' integer currents and
turns them into floats exactly as the in-process crossbar with the ``board`` periphery does:
the same session on the board's array and in process end bit for bit alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metaplast.firmware_sim.crossbar.pair import PairLayout
from metaplast.firmware_sim.crossbar.periphery import G_LSB, currents, input_codes, product
from metaplast.firmware_sim.unit.digital_unit import LevelChanges
from metaplast.fused_update import Step
from metaplast.host.crossbar_synapses import crossbar_mvm
from metaplast.host.link import Link
from metaplast.host.synapses import LinkSynapses
from metaplast.protocol import XbarInfo


class BoardArrayLayer:
    """Layer ``index`` of the board's array: its products over the link."""

    def __init__(
        self,
        link: Link,
        index: int,
        shape: tuple[int, int],
        info: XbarInfo,
        training: Callable[[], bool],
    ) -> None:
        self.link = link
        self.training = training
        self.index = index
        self.info = info
        self.pairs = PairLayout(shape)
        self.g_unit = info.g_unit_code * G_LSB

    def _products(self, v: Tensor, transposed: bool) -> Tensor:
        """Currents (A) of input vectors ``v`` on the rows (columns, ``transposed``)."""
        codes, exponents = input_codes(v)
        rows, cols = self.pairs.rows, self.pairs.cols
        tile_in, tile_out = self.info.tile_rows, self.info.tile_cols
        n_in, n_out = rows, cols
        if transposed:
            tile_in, tile_out, n_in, n_out = tile_out, tile_in, cols, rows
        requests = []
        for vector in codes.to(torch.int64).tolist():
            for t_in, i0 in enumerate(range(0, n_in, tile_in)):
                for t_out in range(-(-n_out // tile_out)):
                    tile = (t_out, t_in) if transposed else (t_in, t_out)
                    requests.append((tile, vector[i0 : i0 + tile_in]))
        self.link.xbar_latch(self.index)
        replies = iter(self.link.xbar_mvm(self.index, transposed, requests))
        out = np.zeros((len(codes), n_out), dtype=np.int64)
        for b in range(len(codes)):
            for _ in range(-(-n_in // tile_in)):
                for o0 in range(0, n_out, tile_out):
                    out[b, o0 : o0 + tile_out] += next(replies)
        return currents(torch.from_numpy(out).to(torch.float64), exponents)

    def read_codes(self) -> Tensor:
        """One read of the layer's conductances, as codes (float64, ``rows x cols``)."""
        self.link.xbar_latch(self.index)
        codes = self.link.xbar_read(self.index, 0, self.pairs.rows * self.pairs.cols)
        return torch.from_numpy(codes).to(torch.float64).reshape(self.pairs.rows, self.pairs.cols)

    def forward(self, x: Tensor) -> Tensor:
        """Inputs on the rows; G+ minus G- column currents, in weight units. Training: the
        board's products, vector by vector. Evaluation, as in paper 003: the conductances
        read from the array once, the products computed from them (the same integers)."""
        out = self._products(x, False) if self.training() else product(x, self.read_codes())
        return self.pairs.difference(out) / self.g_unit

    def backward(self, delta: Tensor) -> Tensor:
        """Errors on the columns (``+delta`` on G+, ``-delta`` on G-); row currents."""
        return self._products(self.pairs.interleave(delta), True) / self.g_unit

    def weights(self) -> Tensor:
        """The weights one read of the board's array gives (``(G+ - G-) / g_unit``)."""
        g = (self.read_codes() * G_LSB).to(torch.float32)
        return self.pairs.difference(g).t() / self.g_unit


class BoardCrossbarSynapses:
    """``inner``'s hidden weights on the board, mapped onto the board's array as layer
    ``index`` (the devices' variability drawn from ``seed``, as in process)."""

    def __init__(
        self,
        inner: LinkSynapses,
        link: Link,
        index: int,
        info: XbarInfo,
        seed: int,
        training: Callable[[], bool],
    ) -> None:
        self.inner = inner
        self.link = link
        self.index = index
        self.seed = seed
        self.shape = inner.shape
        self.level_values = inner.level_values
        self.tiles = self._map()
        self.layer = BoardArrayLayer(link, index, self.shape, info, training)  # type: ignore[arg-type]

    def _map(self) -> int:
        """Map the layer: the board resets its devices and programs them to the levels of the
        hidden weights it holds."""
        return self.link.xbar_map(self.index, self.inner.base, self.shape, self.seed)  # type: ignore[arg-type]

    def array_state(self) -> dict[str, Tensor]:
        """The layer's devices as the board reports them, ``rows x cols``: conductances (S,
        one read), the device levels they were programmed to, and operations per device
        (``XBAR_COUNTERS``). Stuck and worn-out devices are the array's to know."""
        pairs = self.layer.pairs
        levels = self.inner.levels().flatten().to(torch.int64)
        counts = self.link.xbar_counters(self.index, 0, pairs.rows * pairs.cols)
        return {
            "g": self.layer.read_codes() * G_LSB,
            "level": pairs.place(*self.inner.contract.device_levels_of(levels)),
            "counts": torch.from_numpy(counts.astype(np.int64)).reshape(pairs.rows, pairs.cols),
        }

    def levels(self) -> Tensor:
        return self.inner.levels()

    def quantized(self) -> Tensor:
        return self.layer.weights()

    def apply(self, d: Step) -> LevelChanges:
        """The board's update; the board programs its array from the same events."""
        return self.inner.apply(d)

    def set_mstar(self, mstar: float) -> None:
        self.inner.set_mstar(mstar)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the checkpoint's hidden weights onto the board, then the layer mapped again,
        so that every device is programmed from its reset state to the checkpoint's level
        (whether the board kept running or was restarted). The devices are the same ones (the
        map's seed), but their programming draws are new: a resumed session goes on from the
        checkpoint's digital state, not bit for bit like an uninterrupted one, as a physical
        array could not either."""
        self.inner.load_state_dict(state["inner"])
        self.tiles = self._map()

    def mvm(self, x: Tensor, w: Tensor) -> Tensor:
        return crossbar_mvm(x, w, self.layer)
