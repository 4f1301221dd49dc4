"""A training epoch with the crossbar in the loop against the ideal-crossbar epoch.

Same session config but for ``crossbar``; the runs alternate in one process (ideal, then
each model, repeated) and the medians are compared, so machine noise hits all of them alike.
Each session times two epochs: the first, at m* = 0 from a fresh initialization, where most
synapses change level and reprogram devices every batch (the worst case), and a second one
at m* = 3 (consolidating, as most of a metaplastic run is). Target: at most 1.5 times the
ideal epoch.

    .venv/bin/python bench/crossbar_epoch.py --data-dir ../shared/datasets [--hidden 512,512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metaplast.host.config import SessionConfig
from metaplast.host.session import Session, TaskData, load_task


def epoch_seconds(config: SessionConfig, data: TaskData) -> tuple[float, float]:
    session = Session(config)
    times = []
    for epoch, mstar in ((1, 0.0), (2, 3.0)):
        session.set_mstar(mstar)
        t0 = time.perf_counter()
        session.train_epoch(data, epoch, progress=False)
        times.append(time.perf_counter() - t0)
    return times[0], times[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--train-limit", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = load_task("mnist", args.data_dir, args.train_limit)
    kinds = ("ideal", "hfox-1t1r", "tio2-passive")
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for k in kinds:
            cfg = SessionConfig.of(
                hidden=hidden, crossbar=k, train_limit=args.train_limit, activation="sign"
            )
            times[k].append(epoch_seconds(cfg, data))
    print(
        f"784-{args.hidden.replace(',', '-')}-10, {args.train_limit} images, batch 100, "
        f"{args.threads} thread(s), median of {args.repeats}"
    )
    base = [statistics.median(t[i] for t in times["ideal"]) for i in (0, 1)]
    print(f"{'':13s} {'epoch 1 (m*=0)':>24s} {'epoch 2 (m*=3)':>24s}")
    for k in kinds:
        med = [statistics.median(t[i] for t in times[k]) for i in (0, 1)]
        cells = [f"{m:7.2f} s  ratio {m / b:5.2f}" for m, b in zip(med, base, strict=True)]
        print(f"{k:13s} {cells[0]:>24s} {cells[1]:>24s}")


if __name__ == "__main__":
    main()
