"""One training epoch of metaplast against a plain PyTorch float QNN of the same size.

The baseline is what one would write without this project: ``nn.Parameter`` hidden weights,
the 17-level quantizer with a straight-through estimator in the forward pass, batch norm, sign
activations and ``torch.optim.Adam``, no metaplasticity. The runs alternate in one process and
the medians are compared, so machine noise hits all of them alike.

    .venv/bin/python bench/epoch.py --data-dir ../shared/datasets [--hidden 512,512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from metaplast import rule
from metaplast.host.config import SessionConfig
from metaplast.host.qnn import activation
from metaplast.host.session import Session, load_task


class PlainQNN(nn.Module):
    def __init__(self, sizes: tuple[int, ...], levels: tuple[float, ...]) -> None:
        super().__init__()
        self.levels = torch.tensor(levels)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(o, i) * 0.1)
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(n) for n in sizes[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, bn) in enumerate(zip(self.weights, self.norms, strict=True)):
            wq = w + (rule.approx(w.detach(), self.levels) - w).detach()
            x = bn(x @ wq.t())
            if i != last:
                x = activation("sign", x)
        return x


def plain_epoch(
    model: PlainQNN,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    seed: int,
) -> None:
    model.train()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    loss_fn = nn.CrossEntropyLoss()
    for idx in order.split(batch):
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--limit", type=int, default=None, help="training images per epoch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = load_task("mnist", args.data_dir, args.limit)
    times: dict[str, list[float]] = {
        "plain float QNN": [],
        "metaplast float": [],
        "metaplast fixed": [],
    }
    for r in range(args.repeats):
        torch.manual_seed(r)
        plain = PlainQNN((784, *hidden, 10), rule.DEFAULT_LEVELS)
        opt = torch.optim.Adam(plain.parameters(), lr=0.005)
        t0 = time.perf_counter()
        plain_epoch(plain, opt, data.x_train, data.y_train, 100, r)
        times["plain float QNN"].append(time.perf_counter() - t0)
        for arithmetic in ("float", "fixed"):
            session = Session(
                SessionConfig(
                    hidden=hidden, arithmetic=arithmetic, mstar=3.0, pretrain_epochs=0, seed=r
                )
            )
            session.set_mstar(3.0)
            t0 = time.perf_counter()
            session.train_epoch(data, 1, progress=False)
            times[f"metaplast {arithmetic}"].append(time.perf_counter() - t0)
    base = statistics.median(times["plain float QNN"])
    print(
        f"one MNIST epoch ({len(data.y_train)} images, 784-{'-'.join(map(str, hidden))}-10, "
        f"batch 100, {torch.get_num_threads()} threads, median of {args.repeats})"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:18s} {med:7.2f} s   ratio {med / base:.2f}")


if __name__ == "__main__":
    main()
