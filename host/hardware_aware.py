"""Hardware-aware ex-situ training and simulated transfers (paper 004), for any model made of
``torch.nn.Linear`` layers.

Hardware-aware training runs every batch through weights as one transfer onto a fresh passive
crossbar would leave them (:class:`~metaplast.firmware_sim.transfer.TransferSampler`), with the
reparametrization trick: ``W_t = W + (transfer(W) - W).detach()`` passes the gradient to ``W``
unchanged, and a weight whose device is stuck gets no gradient at all. Simulated transfers
evaluate a trained model on ``n`` independent transfers at once (``torch.func.vmap``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metaplast.firmware_sim.devices import TiO2Passive
from metaplast.firmware_sim.transfer import TransferSampler


def _linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            yield name, module


class HardwareAware:
    """The transfers of ``model``'s linear layers (weights and biases, a bias being one more
    crossbar row driven by 1) onto arrays of ``device``."""

    def __init__(self, model: nn.Module, device: TiO2Passive, seed: int) -> None:
        self.model = model
        self.gen = torch.Generator().manual_seed(seed)
        self.layers = list(_linears(model))
        if not self.layers:
            raise ValueError("the model has no torch.nn.Linear layer to put on a crossbar")
        self.samplers = {
            name: TransferSampler(device, (m.out_features, m.in_features + (m.bias is not None)))
            for name, m in self.layers
        }

    @staticmethod
    def _matrix(m: nn.Linear) -> Tensor:
        return m.weight if m.bias is None else torch.cat([m.weight, m.bias[:, None]], 1)

    def _split(self, name: str, m: nn.Linear, matrix: Tensor) -> dict[str, Tensor]:
        prefix = f"{name}." if name else ""
        if m.bias is None:
            return {f"{prefix}weight": matrix}
        return {f"{prefix}weight": matrix[..., :-1], f"{prefix}bias": matrix[..., -1]}

    def training_params(self) -> dict[str, Tensor]:
        """One transfer, differentiable by the reparametrization trick."""
        params = {}
        for name, m in self.layers:
            w = self._matrix(m)
            t = self.samplers[name].sample(w, 1, self.gen)
            weights, stuck = t.weights[0], t.stuck[0]
            noisy = torch.where(stuck, weights, w + (weights - w).detach())
            params.update(self._split(name, m, noisy))
        return params

    def forward(self, x: Tensor) -> Tensor:
        """The model's output through one freshly sampled transfer."""
        return functional_call(self.model, self.training_params(), (x,))

    @torch.no_grad()
    def transfer_outputs(self, x: Tensor, n: int, chunk: int = 1000) -> Tensor:
        """The model's outputs for ``x`` on ``n`` independent transfers: ``n x batch x out``."""
        outs = []
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            params: dict[str, Tensor] = {}
            for name, m in self.layers:
                t = self.samplers[name].sample(self._matrix(m), k, self.gen)
                params.update(self._split(name, m, t.weights))
            outs.append(vmap(lambda p: functional_call(self.model, p, (x,)))(params))
        return torch.cat(outs)


def predictions(outputs: Tensor) -> Tensor:
    """Class per output row: a single logit is thresholded at 0, several take the argmax."""
    return (outputs[..., 0] > 0).long() if outputs.shape[-1] == 1 else outputs.argmax(-1)


@dataclass(frozen=True)
class TransferStats:
    """Per-test-point correctness across transfers, the statistics of paper 004 (Table 1)."""

    correct: Tensor  # transfers x points, bool

    @property
    def per_point(self) -> Tensor:
        return self.correct.double().mean(0)

    def share_at_least(self, fraction: float) -> float:
        """Share of test points classified correctly by at least ``fraction`` of transfers."""
        return float((self.per_point >= fraction - 1e-12).double().mean())

    def summary(self) -> dict[str, float]:
        acc = self.correct.double().mean(1)
        return {
            "share_ge_95": self.share_at_least(0.95),
            "share_ge_90": self.share_at_least(0.90),
            "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std()) if len(acc) > 1 else 0.0,
            "accuracy_min": float(acc.min()),
            "accuracy_max": float(acc.max()),
        }
