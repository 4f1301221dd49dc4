"""Hardware-aware ex-situ training and simulated transfers (paper 004), for any model made of
``torch.nn.Linear`` layers.

Hardware-aware training runs every batch through weights as one transfer onto a fresh passive
crossbar would leave them
(:class:`~metaplast.firmware_sim.crossbar.transfer.TransferSampler`), with the
reparametrization trick: ``W_t = W + (transfer(W) - W).detach()`` passes the gradient to ``W``
unchanged, and a weight whose device is stuck gets no gradient at all. Simulated transfers
evaluate a trained model on ``n`` independent transfers at once (``torch.func.vmap``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.devices import DeviceModel
from metaplast.firmware_sim.crossbar.transfer import (
    SAMPLERS,
    PaperCodeSampler,
    Transfers,
    TransferSampler,
    WriteCost,
    side_by_side,
)
from metaplast.firmware_sim.crossbar.write_plan import WritePlan

BIASES: tuple[str, ...] = ("row", "separate", "digital", "paper")


@dataclass(frozen=True)
class _Mapped:
    """Parameters that share one crossbar matrix (and so one weight-to-conductance scale):
    their ``out x k`` views side by side."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    widths: tuple[int, ...]  # columns of each parameter in the matrix
    sampler: TransferSampler | PaperCodeSampler

    def matrix(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].reshape(self.sampler.shape[0], -1) for n in self.names], 1)

    def split(self, matrix: Tensor) -> dict[str, Tensor]:
        """``matrix`` (``[n x] out x in``) back into the parameters, a leading ``n`` kept."""
        lead = matrix.shape[:-2]
        parts = torch.split(matrix, list(self.widths), dim=-1)
        return {
            n: p.reshape(*lead, *s) for n, s, p in zip(self.names, self.shapes, parts, strict=True)
        }


class HardwareAware:
    """The transfers of ``model``'s ``torch.nn.Linear`` layers onto arrays of ``device``.

    ``bias`` says where a layer's bias lives: ``row``, one more crossbar row driven by a
    constant input, sharing the weights' scale; ``separate``, devices of its own with its own
    scale; ``digital``, added exactly by the periphery; ``paper``, as the paper's code places
    them: every tensor on its own scale, a single-element tensor (the output bias) exact.
    ``sampler`` (:data:`~metaplast.firmware_sim.crossbar.transfer.SAMPLERS`) says how a tensor
    becomes conductances: this project's tiled crossbar, or the paper's code.
    ``stuck_gradient``: whether a weight on a stuck device still gets its gradient (the
    paper's code: it does, and the trainer restores the weight after the step; this project:
    it gets none). ``plan`` says how the lab writes its arrays (this project's sampler only);
    training samples transfers written the same way.
    """

    def __init__(
        self,
        model: nn.Module,
        device: DeviceModel,
        seed: int,
        bias: str = "row",
        sampler: str = "project",
        stuck_gradient: bool = False,
        plan: WritePlan | None = None,
    ) -> None:
        plan = plan or WritePlan()
        if bias not in BIASES:
            raise ValueError(f"bias must be one of {BIASES}, got {bias!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if sampler != "project" and not plan.plain:
            raise ValueError(f"a write plan needs this project's sampler, not {sampler!r}")
        self.model = model
        self.stuck_gradient = stuck_gradient
        self.last_stuck: dict[str, Tensor] = {}
        self.gen = torch.Generator().manual_seed(seed)
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not layers:
            raise ValueError("the model has no torch.nn.Linear layer to put on a crossbar")
        params = dict(model.named_parameters())
        groups: list[tuple[tuple[str, ...], tuple[int, ...], tuple[int, int]]] = []
        for name, m in layers:
            prefix = f"{name}." if name else ""
            tensors = [[f"{prefix}weight"]]
            if m.bias is not None and bias == "row":
                tensors[0].append(f"{prefix}bias")
            elif m.bias is not None and bias in ("separate", "paper"):
                tensors.append([f"{prefix}bias"])
            for names in tensors:
                if bias == "paper" and sum(params[n].numel() for n in names) == 1:
                    continue  # the paper's code leaves a single-element tensor exact
                widths = tuple(params[n].numel() // m.out_features for n in names)
                groups.append((tuple(names), widths, (m.out_features, sum(widths))))
        shapes = [shape for _, _, shape in groups]
        samplers: list[TransferSampler | PaperCodeSampler]
        if sampler == "project":
            samplers = list(side_by_side(device, shapes, plan))
        else:
            coords = "paper-code" if sampler == "paper-code" else "physical"
            samplers = [PaperCodeSampler(device, shape, coords) for shape in shapes]
        self.mapped = [
            _Mapped(names, tuple(params[n].shape for n in names), widths, mapping)
            for (names, widths, _), mapping in zip(groups, samplers, strict=True)
        ]
        self.write_cost = WriteCost.of(samplers)

    def training_params(self) -> dict[str, Tensor]:
        """One transfer, differentiable by the reparametrization trick; which weights sit on a
        stuck device is kept in :attr:`last_stuck`."""
        params = dict(self.model.named_parameters())
        out: dict[str, Tensor] = {}
        for g in self.mapped:
            w = g.matrix(params)
            t = g.sampler.sample(w, 1, self.gen)
            out.update(g.split(reparametrize(w, t, stuck_gradient=self.stuck_gradient)))
            self.last_stuck.update(g.split(t.stuck[0]))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The model's output through one freshly sampled transfer."""
        return functional_call(self.model, self.training_params(), (x,))

    @torch.no_grad()
    def transfer_outputs(self, x: Tensor, n: int, chunk: int = 1000) -> Tensor:
        """The model's outputs for ``x`` on ``n`` independent transfers: ``n x batch x out``.
        What writing them cost is left in :attr:`write_cost`."""
        params = dict(self.model.named_parameters())
        self.write_cost = WriteCost.of([g.sampler for g in self.mapped])
        outs = []
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            draws = [g.sampler.sample(g.matrix(params), k, self.gen) for g in self.mapped]
            self.write_cost.add(draws)
            drawn: dict[str, Tensor] = {}
            for g, t in zip(self.mapped, draws, strict=True):
                drawn.update(g.split(t.weights))
            outs.append(vmap(lambda p: functional_call(self.model, p, (x,)))(drawn))
        return torch.cat(outs)


def reparametrize(w: Tensor, transfer: Transfers, stuck_gradient: bool = False) -> Tensor:
    """``w`` as one transfer left it, with the gradient of ``w`` (reparametrization trick);
    a weight on a stuck device takes the stuck value and gets no gradient (unless
    ``stuck_gradient``, as in the paper's code)."""
    t, stuck = transfer.weights[0], transfer.stuck[0]
    through = w + (t - w).detach()
    return through if stuck_gradient else torch.where(stuck, t, through)


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

    def table(self) -> dict[str, int]:
        """Test points per bracket of the share of transfers that classify them correctly
        (paper 004, Table 1)."""
        pp = self.per_point
        edges = (1.0, 0.95, 0.90, 0.80, 0.70, 0.60, 0.50)
        out = {"100": int((pp >= 1.0).sum())}
        for hi, lo in zip(edges, edges[1:], strict=False):
            out[f"{100 * lo:.0f}-{100 * hi:.0f}"] = int(
                ((pp >= lo - 1e-12) & (pp < hi - 1e-12)).sum()
            )
        out["<50"] = int((pp < 0.5 - 1e-12).sum())
        return out

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


class LevelTransfers:
    """Hardware-aware training of a quantized network whose weights sit on a numeric
    contract's levels (the metaplastic sessions): in training mode each layer multiplies by
    the weights one transfer of its current levels onto ``device`` would leave, with the
    reparametrization trick; in evaluation mode by the ideal weights.

    ``levels`` gives a layer's current level indices (they move every batch); ``training``
    says whether the model is in training mode.
    """

    def __init__(
        self,
        levels: Sequence[Callable[[], Tensor]],
        shapes: Sequence[tuple[int, int]],
        contract: Contract,
        device: DeviceModel,
        training: Callable[[], bool],
        gen: torch.Generator,
    ) -> None:
        self.levels = list(levels)
        self.samplers = [TransferSampler(device, shape) for shape in shapes]
        self.contract = contract
        self.training = training
        self.gen = gen

    def mvm(self, layer: int) -> Callable[[Tensor, Tensor], Tensor]:
        """The MVM ``(x, w) -> x @ w'.T`` of ``layer``, ``w'`` a fresh transfer of ``w``."""

        def mvm(x: Tensor, w: Tensor) -> Tensor:
            if not self.training():
                return x @ w.t()
            t = self.samplers[layer].sample_levels(self.levels[layer](), self.contract, 1, self.gen)
            return x @ reparametrize(w, t).t()

        return mvm
