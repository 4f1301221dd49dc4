"""Tables and figures of paper 003's experiments (docs/results.md) from the runs that made them.

Reads run directories (finished runs only) and prints markdown; nothing is computed that the
runs did not record. The grouped table is ``metaplast summary --over-seeds``'s: runs that
differ only by their seed are one row, mean ± std over the seeds of the final accuracy of each
task and of the best it reached (the paper's "maximum accuracy").

    .venv/bin/python experiments/paper003_report.py runs/paper003/paper      # grouped table
    .venv/bin/python experiments/paper003_report.py --fig2a runs/paper003/fig2a --figure F.png
    .venv/bin/python experiments/paper003_report.py --permuted runs/paper003/permuted \\
        --figure F.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from metaplast.host.summary import accuracy, mean_std, seed_table


def load(run: Path) -> dict[str, Any] | None:
    path = run / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    return m if len(m["epochs"]) == sum(m["config"]["epochs"]) else None


def finished(paths: list[Path]) -> list[dict[str, Any]]:
    """The finished runs under ``paths``, each configuration and seed once."""
    runs: dict[tuple, dict[str, Any]] = {}
    for p in paths:
        for run in [p] if (p / "metrics.json").exists() else sorted(p.glob("*/")):
            if (m := load(run)) is not None:
                key = tuple(sorted((k, json.dumps(v)) for k, v in m["config"].items()))
                runs.setdefault(key, m)
    return list(runs.values())


def fig2a(runs: list[dict[str, Any]], figure: Path | None) -> str:
    """Final accuracy of each task against m* (mean ± std over seeds), the paper's Fig. 2a."""
    by_mstar: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for m in runs:
        by_mstar[m["config"]["mstar"]].append(m)
    tasks = runs[0]["config"]["tasks"]
    xs = sorted(by_mstar)
    table = ["| m* | seeds | " + " | ".join(f"{t} final (%)" for t in tasks) + " |"]
    table.append("|---|---|" + "---|" * len(tasks))
    stats = {t: [] for t in tasks}
    for x in xs:
        cells = []
        for t in tasks:
            vals = [accuracy(m, t, "final") for m in by_mstar[x]]
            cells.append(mean_std(vals))
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            stats[t].append((statistics.mean(vals), sd))
        seeds = ",".join(str(m["config"]["seed"]) for m in by_mstar[x])
        table.append(f"| {x:g} | {seeds} | " + " | ".join(cells) + " |")
    if figure is not None:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for t in tasks:
            mean, sd = zip(*stats[t], strict=True)
            ax.errorbar(xs, mean, yerr=sd, marker="o", capsize=3, label=t)
        ax.axvspan(2, 4, color="0.9", label="paper: both kept")
        ax.set_xlabel("m*")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(figure, dpi=120)
        plt.close(fig)
    return "\n".join(table)


def after_each_task(m: dict[str, Any]) -> list[dict[str, float]]:
    """The test accuracy of every task at the end of each task's training."""
    epochs = m["epochs"]
    ends = [i for i, e in enumerate(epochs[:-1]) if epochs[i + 1]["task"] != e["task"]]
    return [epochs[i]["test_acc"] for i in [*ends, len(epochs) - 1]]


def permuted(runs: list[dict[str, Any]], figure: Path | None) -> str:
    """Per m*: every task's accuracy after each task (rows: after task k) and the mean over
    the tasks seen so far."""
    out = []
    runs = sorted(runs, key=lambda m: m["config"]["mstar"])
    for m in runs:
        tasks = m["config"]["tasks"]
        out.append(f"m* = {m['config']['mstar']:g} (seed {m['config']['seed']}):\n")
        out.append("| after | " + " | ".join(tasks) + " | mean of tasks seen |")
        out.append("|---|" + "---|" * (len(tasks) + 1))
        for k, acc in enumerate(after_each_task(m)):
            seen = [100 * acc[t] for t in tasks[: k + 1]]
            cells = [f"{100 * acc[t]:.1f}" if i <= k else "" for i, t in enumerate(tasks)]
            out.append(f"| {tasks[k]} | " + " | ".join(cells) + f" | {statistics.mean(seen):.1f} |")
        out.append("")
    if figure is not None and runs:
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for m in runs:
            tasks = m["config"]["tasks"]
            accs = after_each_task(m)
            label = f"m* = {m['config']['mstar']:g}"
            means = [
                statistics.mean(100 * a[t] for t in tasks[: k + 1]) for k, a in enumerate(accs)
            ]
            axes[0].plot(range(1, len(tasks) + 1), means, "o-", label=label)
            axes[1].plot(
                range(1, len(tasks) + 1), [100 * accs[-1][t] for t in tasks], "o-", label=label
            )
        axes[0].set_xlabel("tasks learned")
        axes[0].set_ylabel("mean accuracy of the tasks seen (%)")
        axes[1].set_xlabel("task")
        axes[1].set_ylabel("accuracy after the last task (%)")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.set_ylim(0, 100)
            ax.set_xticks(range(1, len(runs[0]["config"]["tasks"]) + 1))
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(figure, dpi=120)
        plt.close(fig)
    return "\n".join(out)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="run directories, or folders of them")
    p.add_argument("--fig2a", type=Path, help="an m* sweep's folder: Fig. 2a")
    p.add_argument("--permuted", type=Path, help="permuted-MNIST runs' folder")
    p.add_argument("--figure", type=Path, help="where the figure goes")
    args = p.parse_args()
    if args.fig2a:
        print(fig2a(finished([args.fig2a]), args.figure))
    elif args.permuted:
        print(permuted(finished([args.permuted]), args.figure))
    else:
        print(seed_table(args.runs), end="")


if __name__ == "__main__":
    main()
