"""Tables of the crossbar results (docs/results.md, section 9) from the runs that made them.

Reads the run directories written by ``experiments/crossbar_paper.sh`` (and the full paper
run, if given) and prints markdown: accuracy over seeds on the 1T1R model and the ideal
crossbar, stuck devices, endurance-limited devices, Table I (device counts, footprint
against the BNN of 2 x 4096 neurons, accuracy) and the programming operations per device
(Fig. 5b). Nothing is computed that the runs did not record, except the device counts.

    .venv/bin/python experiments/crossbar_report.py runs/crossbar [--paper-run RUN]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

TASKS = ("mnist", "fashion-mnist")


def weights(sizes: list[int]) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


BNN_WEIGHTS = weights([784, 4096, 4096, 10])  # paper 003's BNN baseline


def load(run: Path) -> dict[str, Any] | None:
    path = run / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    done = len(m["epochs"]) == sum(m["config"]["epochs"])
    return m if done else None


def accs(m: dict[str, Any]) -> dict[str, float]:
    """Final accuracy per task, and the best each task reached (the paper's 'maximum')."""
    final = m["epochs"][-1]["test_acc"]
    out = {f"{t} final": 100 * final[t] for t in TASKS}
    out.update({f"{t} best": 100 * max(e["test_acc"][t] for e in m["epochs"]) for t in TASKS})
    return out


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def seeds_table(root: Path) -> str:
    rows = ["| crossbar | seeds | " + " | ".join(f"{k} (%)" for k in _keys()) + " |"]
    rows.append("|---|---|" + "---|" * len(_keys()))
    for name in ("hfox", "ideal", "tio2"):
        runs = [m for r in sorted((root / f"seeds-{name}").glob("seed-*")) if (m := load(r))]
        if not runs:
            continue
        cells = [mean_std([accs(m)[k] for m in runs]) for k in _keys()]
        seeds = ",".join(str(m["config"]["seed"]) for m in runs)
        rows.append(f"| {runs[0]['config']['crossbar']} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _keys() -> list[str]:
    return [f"{t} {w}" for w in ("final", "best") for t in TASKS]


def runs_under(*folders: Path) -> list[dict[str, Any]]:
    return [m for f in folders for r in sorted(f.glob("*")) if r.is_dir() and (m := load(r))]


def grouped_table(runs: list[dict[str, Any]], key, head: str, label, extra, extra_head: str) -> str:
    """One row per value of ``key(config)``: the runs' seeds, ``extra`` (mean over the
    seeds) and the accuracies as mean ± std over the seeds."""
    rows = [
        f"| {head} | seeds | {extra_head} | " + " | ".join(f"{k} (%)" for k in _keys()) + " |",
        "|---|---|---|" + "---|" * len(_keys()),
    ]
    groups: dict[Any, list[dict[str, Any]]] = {}
    for m in runs:
        groups.setdefault(key(m["config"]), []).append(m)
    for value in sorted(groups, key=lambda v: (v is None, v)):
        ms = sorted(groups[value], key=lambda m: m["config"]["seed"])
        seeds = ",".join(str(m["config"]["seed"]) for m in ms)
        cells = [mean_std([accs(m)[k] for m in ms]) for k in _keys()]
        rows.append(f"| {label(value)} | {seeds} | {extra(ms)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def stuck_table(root: Path) -> str:
    runs = runs_under(root / "stuck-hfox")
    seeds = {m["config"]["seed"] for m in runs}
    runs += [m for m in runs_under(root / "seeds-hfox") if m["config"]["seed"] in seeds]

    def stuck(ms: list[dict[str, Any]]) -> str:
        n = [m["crossbar"]["stuck_hrs_devices"] + m["crossbar"]["stuck_lrs_devices"] for m in ms]
        return f"{statistics.mean(n):,.0f} of {ms[0]['devices']:,}"

    return grouped_table(
        runs,
        lambda c: c["stuck_hrs"] or 0.0,
        "stuck (HRS + LRS)",
        lambda v: f"{200 * v:g} %",
        stuck,
        "stuck devices (mean)",
    )


def endurance_table(root: Path) -> str:
    runs = runs_under(root / "endurance-hfox")
    seeds = {m["config"]["seed"] for m in runs}
    runs += [m for m in runs_under(root / "seeds-hfox") if m["config"]["seed"] in seeds]

    def worn(ms: list[dict[str, Any]]) -> str:
        n = statistics.mean(m["crossbar"]["worn_out_devices"] for m in ms)
        return f"{n:,.0f} ({100 * n / ms[0]['devices']:.2f} %)"

    return grouped_table(
        runs,
        lambda c: c["endurance"],
        "endurance (operations)",
        lambda v: f"{v:,}" if v else "1e5 (file)",
        worn,
        "devices worn out (mean)",
    )


def sizes_table(root: Path) -> str:
    rows = [
        "| hidden | weights | devices (2 per weight) | BNN 1T1R / QNN | BNN 2T2R / QNN | "
        "MNIST final (%) | F-MNIST final (%) | MNIST best (%) | F-MNIST best (%) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    runs = {256: load(root / "seeds-hfox" / "seed-0")}
    for h in (512, 1024):
        runs[h] = load(root / "sizes-hfox" / f"hidden-{h}x{h}")
    for h, m in runs.items():
        w = weights([784, h, h, 10])
        cells = ["-"] * 4
        if m is not None:
            a = accs(m)
            cells = [f"{a[k]:.2f}" for k in ("mnist final", "fashion-mnist final")]
            cells += [f"{a[k]:.2f}" for k in ("mnist best", "fashion-mnist best")]
        rows.append(
            f"| {h}-{h} | {w:,} | {2 * w:,} | {BNN_WEIGHTS / (2 * w):.1f}x | "
            f"{2 * BNN_WEIGHTS / (2 * w):.1f}x | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows)


def programming_line(m: dict[str, Any], name: str) -> str:
    p = m["programming"]
    return (
        f"| {name} | {p['devices']:,} | {p['mean']:.1f} | {p['max']} | "
        f"{100 * p['frac_under_25']:.2f} | {100 * p['frac_over_50']:.2f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="the OUT of experiments/crossbar_paper.sh")
    p.add_argument("--paper-run", type=Path, default=None, help="the full paper-preset run")
    args = p.parse_args()
    print("### Seeds\n\n" + seeds_table(args.root))
    print("\n### Stuck devices (1T1R model)\n\n" + stuck_table(args.root))
    print("\n### Endurance-limited devices (1T1R model)\n\n" + endurance_table(args.root))
    print("\n### Table I\n\n" + sizes_table(args.root))
    print("\n### Programming operations per device\n")
    print("| run | devices | mean | max | under 25 (%) | over 50 (%) |\n|---|---|---|---|---|---|")
    print("| paper 003, Fig. 5b | 1.3 M | | | 76.12 | 10.16 |")
    if args.paper_run and (m := load(args.paper_run)):
        print(programming_line(m, f"{args.paper_run.name} (paper preset)"))
        a = accs(m)
        print(f"\npaper-preset run: {', '.join(f'{k} {v:.2f} %' for k, v in a.items())}")
    if m0 := load(args.root / "seeds-hfox" / "seed-0"):
        print(programming_line(m0, "quick preset, seed 0"))


if __name__ == "__main__":
    main()
