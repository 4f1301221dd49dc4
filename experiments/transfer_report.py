"""Tables and the Fig. 6 pair of docs/results.md (section 10) from experiments/transfer_paper.sh.

.venv/bin/python experiments/transfer_report.py [OUT] [--figure docs/figures/transfer-fig6.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import nn

from metaplast.firmware_sim.devices import load_device
from metaplast.host import plots
from metaplast.host.hardware_aware import HardwareAware
from metaplast.host.transfer_run import load_moons, plane_votes

PAPER = {"regular": (18.5, 71.0), "hardware-aware": (79.5, 87.5)}


def _load(path: Path) -> dict[str, Any]:
    return json.loads((path / "transfer.json").read_text())


def _ms(values: list[float]) -> str:
    pct = [100 * v for v in values]
    if len(pct) == 1:
        return f"{pct[0]:.1f}"
    return f"{statistics.mean(pct):.1f} ± {statistics.stdev(pct):.1f}"


def moons_table(out: Path) -> str:
    rows = [
        "| bias | training | seeds | share ≥ 95 % | share ≥ 90 % | accuracy mean | software test |"
        " paper (≥ 95 / ≥ 90) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for bias in ("row", "separate", "digital"):
        for training in ("regular", "hardware-aware"):
            runs = sorted((out / "moons").glob(f"{training}-{bias}-seed*/transfer.json"))
            recs = [json.loads(r.read_text()) for r in runs]
            if not recs:
                continue
            p95, p90 = PAPER[training]
            rows.append(
                f"| {bias} | {training} | {len(recs)} | {_ms([r['share_ge_95'] for r in recs])} | "
                f"{_ms([r['share_ge_90'] for r in recs])} | "
                f"{_ms([r['accuracy_mean'] for r in recs])} | "
                f"{_ms([r['software_accuracy']['test'] for r in recs])} | {p95} / {p90} |"
            )
    return "\n".join(rows)


def brackets_table(out: Path, seed: int = 0) -> str:
    paper = {
        "regular": [0, 37, 105, 27, 12, 7, 6, 6],
        "hardware-aware": [0, 159, 16, 8, 4, 3, 2, 8],
    }
    cols = []
    for bias in ("row", "separate"):
        for training in ("regular", "hardware-aware"):
            path = out / "moons" / f"{training}-{bias}-seed{seed}"
            if (path / "transfer.json").exists():
                cols.append((f"{training}, {bias}", list(_load(path)["table"].items())))
    cols += [(f"{t}, paper", list(zip(cols[0][1], paper[t], strict=False))) for t in paper]
    head = "| share of transfers right | " + " | ".join(c[0] for c in cols) + " |"
    rows = [head, "| --- |" + " --- |" * len(cols)]
    for i, (label, _) in enumerate(cols[0][1]):
        rows.append(f"| {label} | " + " | ".join(str(c[1][i][1]) for c in cols) + " |")
    return "\n".join(rows)


def mnist_table(out: Path) -> str:
    """One row per session kind, trained-for model, target model and task; mean ± std over
    the seeds that ran."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for path in (out / "mnist").glob("*/transfer.json"):
        rec = json.loads(path.read_text())
        tasks = rec["session"]["tasks"]
        key = (
            len(tasks),
            " then ".join(tasks),
            {None: 0, "tio2-passive": 1, "hfox-1t1r": 2}[rec["session"]["hardware_aware"]],
            rec["session"]["hardware_aware"] or "(regular)",
            rec["config"]["crossbar"],
        )
        groups.setdefault(key, []).append(rec)
    rows = [
        "| session | trained for | transferred onto | task | seeds | software | accuracy per"
        " transfer | worst transfer | share ≥ 95 % | share ≥ 90 % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in sorted(groups):
        _, session, _, trained, crossbar = key
        recs = groups[key]
        for task in recs[0]["tasks"]:
            stats = [r["tasks"][task] for r in recs]
            rows.append(
                f"| {session} | {trained} | {crossbar} | {task} | {len(recs)} | "
                f"{_ms([r['software_accuracy'][task] for r in recs])} | "
                f"{_ms([s['accuracy_mean'] for s in stats])} | "
                f"{_ms([s['accuracy_min'] for s in stats])} | "
                f"{_ms([s['share_ge_95'] for s in stats])} | "
                f"{_ms([s['share_ge_90'] for s in stats])} |"
            )
    return "\n".join(rows)


def fig6(out: Path, figure: Path, bias: str = "row", seed: int = 0) -> None:
    """Regular and hardware-aware networks side by side, 1,000 transfers each."""
    torch.set_num_threads(1)
    x, y = load_moons("test")
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.3))
    for ax, training in zip(axes, ("regular", "hardware-aware"), strict=True):
        path = out / "moons" / f"{training}-{bias}-seed{seed}"
        rec = _load(path)
        model = nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 1))
        model.load_state_dict(torch.load(path / "model.pt"))
        hw = HardwareAware(model, load_device("tio2-passive"), seed=seed + 1, bias=bias)
        share = 100 * rec["share_ge_95"]
        title = (
            f"{training} ({bias} bias, seed {seed})\n{share:.1f} % of test points right in ≥ 95 %"
        )
        im = plots.variability_panel(ax, plane_votes(hw, 1000), x, y, title)
    fig.colorbar(im, ax=axes, label="disagreement between transfers")
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="runs/transfer")
    p.add_argument("--figure", default=None, help="write the Fig. 6 pair here")
    args = p.parse_args()
    out = Path(args.out)
    # each part only where its runs exist (transfer_paper.sh ... moons|mnist runs one of them)
    if any((out / "moons").glob("*/transfer.json")):
        print("## Half moons, 10,000 transfers per network (mean ± std over seeds)\n")
        print(moons_table(out), "\n")
        print("## Table 1 brackets, seed 0\n")
        print(brackets_table(out), "\n")
    if any((out / "mnist").glob("*/transfer.json")):
        print("## The metaplastic network\n")
        print(mnist_table(out))
    if args.figure:
        fig6(out, Path(args.figure))


if __name__ == "__main__":
    main()
