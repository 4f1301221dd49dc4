"""The quantized MLP of paper 003: crossbar weights ``W_S``, batch norm and binary activations.

Activation: ``sign`` (+1/-1) with the hard-tanh straight-through estimator, as in the
metaplastic BNN code of Laborieux et al. that the paper builds on. A binary activation is what
a crossbar's input drivers apply most easily (two read voltages, no DAC), and it keeps the
hidden layers' MVMs exactly those of a binary-input crossbar. The first layer takes the pixel
intensities scaled to [-1, 1] as analog read voltages. ``hardtanh`` (a full-precision
activation) is available for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS: tuple[str, ...] = ("sign", "hardtanh")


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
    if name == "sign":
        return _SignSTE.apply(x)
    if name == "hardtanh":
        return torch.nn.functional.hardtanh(x)
    raise ValueError(f"unknown activation {name!r}; choose from {ACTIVATIONS}")


class QuantizedMLP(nn.Module):
    """An MLP whose linear weights are leaf tensors set from the synapse arrays each step.

    The weights are not ``nn.Parameter``s: the optimizer never writes them. Their gradients
    are read by the session, turned into updates, and applied where the hidden weights live.
    """

    def __init__(self, sizes: Sequence[int], act: str = "sign") -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose from {ACTIVATIONS}")
        self.sizes = tuple(sizes)
        self.act = act
        self.weights: list[Tensor] = [
            torch.zeros(n_out, n_in, requires_grad=True)
            for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True)
        ]
        self.norms = nn.ModuleList(nn.BatchNorm1d(n) for n in self.sizes[1:])
        # per layer, an MVM ``(x, w) -> x @ w.T`` done elsewhere (a crossbar); None: in torch
        self.mvms: list[Callable[[Tensor, Tensor], Tensor] | None] = [None] * len(self.weights)

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
                x = activation(self.act, x)
        return x
