"""The quantized MLP of paper 003: crossbar weights ``W_S``, batch norm and few-level activations.

Activations, as a crossbar's input drivers would apply them:

* ``sign`` (+1/-1) with the hard-tanh straight-through estimator, as in the metaplastic BNN
  code of Laborieux et al. that the paper builds on: two read voltages, no DAC;
* ``hardtanh:K`` and ``relu:K``: ``K`` evenly spaced levels in [-1, 1] or [0, 1] (a
  ``log2 K``-bit DAC per row; the gradient passes where the input is inside the range), or in
  [-R, R] and [0, R] (``relu:K:R``);
* ``hardtanh`` and ``relu``: full precision (an analog driver), for comparison.

The first layer takes the pixel intensities as analog read voltages, in [-1, 1] (``signed``)
or [0, 1] (``unsigned``, as the reference code feeds them).

Batch norm (``bn_stats``): ``batch`` normalizes every batch, test batches included, with its
own statistics, as the reference code does (``track_running_stats=False``), so that only its
affine parameters are state; ``running`` tests with the running averages of training.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metaplast.vocabulary import BN_STATS

ACTIVATIONS: tuple[str, ...] = (
    "sign",
    "hardtanh",
    "relu",
    "hardtanh:K",
    "relu:K",
    "hardtanh:K:R",
    "relu:K:R",
)


@dataclass(frozen=True)
class Activation:
    """A parsed activation name: its range, and how many levels (0: full precision)."""

    name: str
    low: float
    high: float
    levels: int

    @classmethod
    def parse(cls, name: str) -> Activation:
        if name == "sign":
            return cls(name, -1.0, 1.0, 2)
        m = re.fullmatch(r"(hardtanh|relu)(?::(\d+)(?::([0-9.]+))?)?", name)
        if m is None:
            raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")
        levels = int(m.group(2) or 0)
        if m.group(2) is not None and not 2 <= levels <= 256:
            raise ValueError(f"activation {name!r}: between 2 and 256 levels")
        try:
            high = float(m.group(3) or 1.0)
        except ValueError:
            raise ValueError(f"activation {name!r}: the range R is a number") from None
        if not high > 0:
            raise ValueError(f"activation {name!r}: the range R must be > 0")
        return cls(name, -high if m.group(1) == "hardtanh" else 0.0, high, levels)

    @property
    def step(self) -> float:
        return (self.high - self.low) / (self.levels - 1)

    @property
    def values(self) -> Tensor:
        """The output levels of a few-level activation."""
        return self.low + self.step * torch.arange(self.levels, dtype=torch.float32)

    @property
    def thresholds(self) -> Tensor:
        """The inputs at which a few-level activation steps up (its comparators)."""
        if self.name == "sign":
            return torch.zeros(1)
        return self.low + self.step * (torch.arange(self.levels - 1) + 0.5)

    def __call__(self, x: Tensor) -> Tensor:
        if self.name == "sign":
            return _SignSTE.apply(x)
        if self.name == "relu":
            return torch.relu(x)
        if self.name == "hardtanh":
            return nn.functional.hardtanh(x)
        clipped = torch.clamp(x, self.low, self.high)
        if not self.levels:
            return clipped
        q = torch.round((clipped - self.low) / self.step) * self.step + self.low
        return clipped + (q - clipped).detach()


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def activation(name: str, x: Tensor) -> Tensor:
    return Activation.parse(name)(x)


class QuantizedMLP(nn.Module):
    """An MLP whose linear weights are leaf tensors set from the synapse arrays each step.

    The weights are not ``nn.Parameter``s: the optimizer never writes them. Their gradients
    are read by the session, turned into updates, and applied where the hidden weights live.
    """

    def __init__(self, sizes: Sequence[int], act: str = "sign", bn_stats: str = "running") -> None:
        super().__init__()
        if bn_stats not in BN_STATS:
            raise ValueError(f"bn_stats must be one of {BN_STATS}, got {bn_stats!r}")
        self.sizes = tuple(sizes)
        self.act = Activation.parse(act)
        self.weights: list[Tensor] = [
            torch.zeros(n_out, n_in, requires_grad=True)
            for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True)
        ]
        running = bn_stats == "running"
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(n, track_running_stats=running) for n in self.sizes[1:]
        )
        # per layer, an MVM ``(x, w) -> x @ w.T`` done elsewhere (a crossbar); None: in torch
        self.mvms: list[Callable[[Tensor, Tensor], Tensor] | None] = [None] * len(self.weights)

    def multiply_with(self, layer: int, mvm: Callable[[Tensor, Tensor], Tensor] | None) -> None:
        """Let ``mvm`` compute ``layer``'s product ``x @ W.T`` (a crossbar, sampled transfers);
        ``None`` gives it back to torch. Gradients still reach the weight tensor."""
        self.mvms[layer] = mvm

    def set_weights(self, quantized: Sequence[Tensor | None]) -> None:
        """Copy ``W_S`` into the layers; ``None`` for a layer whose MVM runs elsewhere (its
        weight tensor then only collects the gradient)."""
        for w, q in zip(self.weights, quantized, strict=True):
            if q is not None:
                with torch.no_grad():
                    w.copy_(q)

    @torch.no_grad()
    def set_levels(self, layer: int, address: Tensor, values: Tensor) -> None:
        """Write ``values`` into ``W_S`` of ``layer`` at flat ``address``: the synapses whose
        level changed, the rest being as :meth:`set_weights` or this left them."""
        self.weights[layer].view(-1)[address] = values

    def zero_weight_grads(self) -> None:
        for w in self.weights:
            w.grad = None

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.weights) - 1
        for i, (w, bn, mvm) in enumerate(zip(self.weights, self.norms, self.mvms, strict=True)):
            x = bn(x @ w.t() if mvm is None else mvm(x, w))
            if i != last:
                x = self.act(x)
        return x
