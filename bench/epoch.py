"""One training epoch of metaplast against a plain PyTorch float QNN of the same size.

The baseline is what one would write without this project: ``nn.Parameter`` hidden weights,
the 17-level quantizer with a straight-through estimator in the forward pass, batch norm, sign
activations and ``torch.optim.Adam``, no metaplasticity. The metaplastic sessions train at
m* = 3 from the start (a consolidating epoch: every update goes through the meta LUT). The
runs alternate in one process and the medians are compared, so machine noise hits all of them
alike. Each row also says where its time went, per batch (``metrics.json``'s ``time``).

    .venv/bin/python bench/epoch.py --data-dir ../shared/datasets [--hidden 512,512] [--repeats 3]

``--fallback`` adds the fixed-point session on the torch operations (what a machine without
numba runs), for what the fused update is worth.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import torch
from torch import nn

from metaplast import fused_update, rule
from metaplast.host.config import SessionConfig
from metaplast.host.qnn import activation
from metaplast.host.session import PHASES, Session, TaskData, load_task


class PlainQNN(nn.Module):
    """``quantizer``: ``approx`` (:func:`metaplast.rule.approx`, any level set: the baseline
    of the targets) or ``round`` (uniform levels only: scale, round, clamp; a leaner
    baseline)."""

    def __init__(
        self, sizes: tuple[int, ...], levels: tuple[float, ...], quantizer: str = "approx"
    ) -> None:
        super().__init__()
        self.levels = torch.tensor(levels)
        self.quantizer = quantizer
        self.low, self.step = levels[0], levels[1] - levels[0]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(o, i) * 0.1)
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(n) for n in sizes[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, bn) in enumerate(zip(self.weights, self.norms, strict=True)):
            wq = w + (self.quantize(w.detach()) - w).detach()
            x = bn(x @ wq.t())
            if i != last:
                x = activation("sign", x)
        return x

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        if self.quantizer == "approx":
            return rule.approx(w, self.levels)
        k = ((w - self.low) / self.step).round_().clamp_(0, len(self.levels) - 1)
        return k.mul_(self.step).add_(self.low)


def plain_epoch(
    model: PlainQNN,
    opt: torch.optim.Optimizer,
    data: TaskData,
    batch: int,
    seed: int,
) -> dict[str, float]:
    """One epoch; seconds spent in the forward pass, the backward pass and the optimizer."""
    model.train()
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))
    loss_fn = nn.CrossEntropyLoss()
    spent = dict.fromkeys(("forward", "backward", "adam"), 0.0)
    for idx in order.split(batch):
        t0 = time.perf_counter()
        loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        spent["forward"] += t1 - t0
        spent["backward"] += t2 - t1
        spent["adam"] += time.perf_counter() - t2
    return spent


def session_epoch(arithmetic: str, hidden: tuple[int, ...], data: TaskData, seed: int) -> dict:
    session = Session(
        SessionConfig.of(
            hidden=hidden,
            arithmetic=arithmetic,
            activation="sign",  # as the plain QNN
            mstar=3.0,
            pretrain_epochs=0,
            seed=seed,
        )
    )
    session.set_mstar(3.0)
    session.train_epoch(data, 1, progress=False)
    return dict(session.timing)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--limit", type=int, default=None, help="training images per epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fallback", action="store_true", help="add the torch-operations path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = load_task("mnist", args.data_dir, args.limit)
    rows = ["plain float QNN", "plain, round quantizer", "metaplast fixed", "metaplast float"]
    if args.fallback:
        rows.append("metaplast fixed, torch ops")
    totals: dict[str, list[float]] = defaultdict(list)
    phases: dict[str, list[dict[str, float]]] = defaultdict(list)
    few = TaskData("mnist", data.x_train[:200], data.y_train[:200], data.x_test, data.y_test)
    for arithmetic in ("fixed", "float"):  # the kernels load (or compile) before the clock runs
        session_epoch(arithmetic, hidden, few, 0)
    for r in range(args.repeats):
        for row in rows:
            torch.manual_seed(r)
            t0 = time.perf_counter()
            if row.startswith("plain"):
                quantizer = "round" if "round" in row else "approx"
                plain = PlainQNN((784, *hidden, 10), rule.DEFAULT_LEVELS, quantizer)
                opt = torch.optim.Adam(plain.parameters(), lr=0.005)
                t0 = time.perf_counter()
                spent = plain_epoch(plain, opt, data, 100, r)
            elif row.endswith("torch ops"):
                with fused_update.torch_operations():
                    spent = session_epoch("fixed", hidden, data, r)
            else:
                spent = session_epoch(row.split()[-1], hidden, data, r)
            totals[row].append(time.perf_counter() - t0)
            phases[row].append(spent)
    batches = -(-len(data.y_train) // 100)
    base = statistics.median(totals["plain float QNN"])
    print(
        f"one MNIST epoch ({len(data.y_train)} images, 784-{'-'.join(map(str, hidden))}-10, "
        f"batch 100, {torch.get_num_threads()} threads, median of {args.repeats}; update "
        f"kernel: {fused_update.describe()['backend']}; machine load "
        f"{os.getloadavg()[0]:.2f})"
    )
    shown = [ph for ph in PHASES if ph != "evaluation"]
    print(f"| training | seconds | ratio | {' | '.join(shown)} (ms per batch) |")
    print("|---|---|---|" + "---|" * len(shown))
    for row in rows:
        med = statistics.median(totals[row])
        per = [statistics.median(s.get(ph, 0.0) for s in phases[row]) for ph in shown]
        cells = " | ".join(f"{1000 * x / batches:.2f}" for x in per)
        print(f"| {row} | {med:.2f} | {med / base:.2f} | {cells} |")


if __name__ == "__main__":
    main()
