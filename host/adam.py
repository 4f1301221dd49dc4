"""Adam's update direction for weights that the optimizer must not write itself.

The hidden weights live in a synapse array (the digital unit, a board, the float rule), which
applies Algorithm 1 to the step it is given; Adam only supplies that step. It hands it over
as an :class:`~metaplast.fused_update.AdamStep`, so that a fused kernel can finish the step
in the same pass as the update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metaplast.fused_update import AdamStep


class Adam:
    """Adam's moments for one layer; :meth:`step` gives ``lr * m_hat / (sqrt(v_hat) + eps)``."""

    def __init__(
        self, shape: tuple[int, ...], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = torch.zeros(shape)
        self.v = torch.zeros(shape)
        self.t = 0
        self._denom = torch.empty(shape)

    def step(self, grad: Tensor, lr: float) -> AdamStep:
        """Move the moments by ``grad``; the step to apply before the next call."""
        self.t += 1
        self.m.mul_(self.b1).add_(grad, alpha=1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        torch.div(self.v, 1 - self.b2**self.t, out=self._denom)
        self._denom.sqrt_().add_(self.eps)
        return AdamStep(self.m, self._denom, 1 - self.b1**self.t, lr)

    def direction(self, grad: Tensor) -> Tensor:
        """``U_W`` itself (the step at ``lr = 1``), as a tensor."""
        return self.step(grad, 1.0).tensor()

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m.clone(), "v": self.v.clone(), "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v, self.t = state["m"].clone(), state["v"].clone(), int(state["t"])
        self._denom = torch.empty_like(self.v)
