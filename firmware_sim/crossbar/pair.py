"""Where a weight's differential pair sits in a crossbar array.

``W[j, i]`` (``out x in``) is two devices on row ``i``, the row its input drives: G+ in
column ``2j`` and G- in column ``2j + 1``, so that a layer's output is the difference of
neighbouring column currents. Which device levels a weight level puts on its pair, and which
device a level change programs, is the numeric contract's
(:meth:`~metaplast.contract.Contract.device_levels_of`,
:meth:`~metaplast.contract.Contract.device_changes`); this module is the layout that every
array user shares: the in-loop crossbar, the transfers and the device maps of a run.
"""

from __future__ import annotations

import torch
from torch import Tensor


class PairLayout:
    """The ``in x 2 out`` array of an ``out x in`` weight matrix."""

    def __init__(self, shape: tuple[int, int]) -> None:
        n_out, n_in = shape
        self.shape = shape
        self.rows, self.cols = n_in, 2 * n_out
        j, i = torch.meshgrid(torch.arange(n_out), torch.arange(n_in), indexing="ij")
        self.plus = (i * self.cols + 2 * j).flatten()  # flat array index of G+, W's order
        self.minus = self.plus + 1

    @property
    def devices(self) -> Tensor:
        """Flat array indices of every weight's G+, then of every weight's G- (``2 x m``)."""
        return torch.stack([self.plus, self.minus])

    def place(self, plus: Tensor, minus: Tensor) -> Tensor:
        """Per-weight values of G+ and G- (``m`` each) as the ``rows x cols`` array."""
        out = torch.empty(self.rows * self.cols, dtype=plus.dtype)
        out[self.plus], out[self.minus] = plus, minus
        return out.reshape(self.rows, self.cols)

    @staticmethod
    def difference(columns: Tensor) -> Tensor:
        """G+ minus G- of every pair of neighbouring columns (the last dimension)."""
        return columns[..., 0::2] - columns[..., 1::2]

    @staticmethod
    def interleave(delta: Tensor) -> Tensor:
        """``+delta`` on every G+ column and ``-delta`` on every G- column (the last
        dimension doubles): what drives the columns in the transposed product."""
        return torch.stack([delta, -delta], dim=-1).flatten(-2)
