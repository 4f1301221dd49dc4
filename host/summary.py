"""Tables and plots across run directories: one row per run, or per grid cell over seeds."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from metaplast.errors import ConfigError
from metaplast.host.rundir import METRICS

# config fields that name a cell in the seed table when they differ between its cells
CELL_FIELDS = (
    "tasks", "activation", "mstar", "hidden", "arithmetic", "crossbar", "hardware_aware", "lr",
    "init_mean", "init_std", "inputs", "bn_stats", "epochs", "pretrain_epochs", "batch_size",
    "test_batch_size", "stuck_hrs", "stuck_lrs", "endurance", "levels",
)  # fmt: skip


def run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories among ``paths``, a sweep directory standing for its runs."""
    out = []
    for path in paths:
        if (path / METRICS).exists():
            out.append(path)
        elif path.is_dir() and (found := sorted(p.parent for p in path.glob(f"*/{METRICS}"))):
            out.extend(found)
        else:
            raise ConfigError(f"{path}: neither a run directory nor a sweep of them")
    return out


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / METRICS).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path / METRICS} is not readable: {exc}") from exc


def summary_table(paths: list[Path]) -> str:
    """One markdown row per run: final and best accuracy per task, level changes. The task
    columns are every task of any run, in order of appearance; a run without one leaves its
    cells empty."""
    docs = [(path, _load(path)) for path in run_dirs(paths)]
    tasks = list(dict.fromkeys(t for _, m in docs for t in m["config"]["tasks"]))
    rows = []
    for path, metrics in docs:
        epochs = metrics["epochs"]
        cfg = metrics["config"]
        cells = [
            path.name,
            f"{len(epochs)}/{sum(cfg['epochs'])}",
            f"{cfg['mstar']:g}",
            cfg["arithmetic"],
            cfg.get("crossbar", "ideal")
            + (f" (hardware-aware: {cfg['hardware_aware']})" if cfg.get("hardware_aware") else ""),
            "-".join(map(str, cfg["hidden"])),
        ]
        for t in tasks:
            if t in cfg["tasks"]:
                cells.append(f"{100 * epochs[-1]['test_acc'][t]:.2f}")
                cells.append(f"{100 * max(e['test_acc'][t] for e in epochs):.2f}")
            else:
                cells += ["", ""]
        lc = metrics["level_changes"]
        cells += [f"{lc['mean_per_synapse']:.1f}", str(lc["max_per_synapse"])]
        prog = metrics.get("programming")
        cells += [f"{prog['mean']:.1f}", str(prog["max"])] if prog else ["", ""]
        # a run from before --bn-stats tested with running statistics
        cells += [cfg.get("activation", "sign"), cfg.get("bn_stats", "running")]
        rows.append("| " + " | ".join(cells) + " |")
    head = ["run", "epochs", "m*", "arithmetic", "crossbar", "hidden"]
    for t in tasks:
        head += [f"{t} final (%)", f"{t} best (%)"]
    head += ["level changes / synapse", "max", "operations / device", "max"]
    head += ["activation", "bn statistics"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows]) + "\n"


def _finished(m: dict[str, Any]) -> bool:
    return len(m["epochs"]) == sum(m["config"]["epochs"])


def _cells(paths: list[Path]) -> tuple[list[str], dict[tuple, list[dict[str, Any]]]]:
    """Finished runs grouped by their configuration without the seed, and the fields that
    tell the groups apart. A run found twice (the same configuration and seed in two
    folders, e.g. a screen's run reused by a later sweep) counts once."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    seen: set[tuple] = set()
    for path in run_dirs(paths):
        m = _load(path)
        whole = tuple(sorted((k, json.dumps(v)) for k, v in m["config"].items()))
        if _finished(m) and whole not in seen:
            seen.add(whole)
            cells[tuple(kv for kv in whole if kv[0] != "seed")].append(m)
    configs = [ms[0]["config"] for ms in cells.values()]
    varying = [f for f in CELL_FIELDS if len({json.dumps(c.get(f)) for c in configs}) > 1]
    return varying, cells


def accuracy(m: dict[str, Any], task: str, which: str) -> float:
    if which == "final":
        return 100 * m["epochs"][-1]["test_acc"][task]
    return 100 * max(e["test_acc"][task] for e in m["epochs"])


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else ""
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _field(value: Any) -> str:
    if isinstance(value, list):
        return "-".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def seed_table(paths: list[Path]) -> str:
    """One markdown row per grid cell (finished runs that differ only by their seed): the
    seeds, and per task the final and the best accuracy as mean ± sample std over them."""
    varying, cells = _cells(paths)
    if not cells:
        raise ConfigError("no finished run among the given paths")
    runs = [m for ms in cells.values() for m in ms]
    tasks = list(dict.fromkeys(t for m in runs for t in m["config"]["tasks"]))
    head = [*varying, "seeds"] + [f"{t} {w} (%)" for w in ("final", "best") for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for members in cells.values():
        cfg = members[0]["config"]
        row = [_field(cfg.get(f)) for f in varying]
        row.append(",".join(str(m["config"]["seed"]) for m in members))
        for which in ("final", "best"):
            for t in tasks:
                row.append(
                    mean_std([accuracy(m, t, which) for m in members if t in m["config"]["tasks"]])
                )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def seed_plot(paths: list[Path], figure: Path) -> None:
    """Final accuracy per task with error bars (sample std over seeds) against the one field
    that varies between cells (or the cells in order, named, when several do)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varying, cells = _cells(paths)
    if not cells:
        raise ConfigError("no finished run among the given paths")
    groups = list(cells.values())
    tasks = list(dict.fromkeys(t for ms in groups for t in ms[0]["config"]["tasks"]))
    numeric = len(varying) == 1 and all(
        isinstance(ms[0]["config"][varying[0]], int | float) for ms in groups
    )
    if numeric:
        groups.sort(key=lambda ms: ms[0]["config"][varying[0]])
        x = [ms[0]["config"][varying[0]] for ms in groups]
    else:
        x = list(range(len(groups)))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for t in tasks:
        values = [
            [accuracy(m, t, "final") for m in ms if t in m["config"]["tasks"]] for ms in groups
        ]
        mean = [statistics.mean(v) for v in values]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=t)
    if numeric:
        ax.set_xlabel(varying[0])
    else:
        labels = [", ".join(_field(ms[0]["config"].get(f)) for f in varying) for ms in groups]
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("final test accuracy (%), mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
