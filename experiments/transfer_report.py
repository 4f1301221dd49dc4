"""Tables and the Fig. 6 pair of docs/results.md (section 10) from experiments/transfer_paper.sh,
and the tables of experiments/transfer_audit.sh (``--audit``) and transfer_levers.sh
(``--levers``).

.venv/bin/python experiments/transfer_report.py [OUT] [--figure docs/figures/transfer-fig6.png]
.venv/bin/python experiments/transfer_report.py runs/transfer-audit --audit
.venv/bin/python experiments/transfer_report.py runs/transfer-levers --levers
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

from metaplast.firmware_sim.crossbar.devices import load_device
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


def _moons_cells(recs: list[dict[str, Any]]) -> str:
    """share >= 95 %, share >= 90 %, accuracy per transfer and software test accuracy, as
    table cells (mean ± std over the records)."""
    return " | ".join(
        _ms(v)
        for v in (
            [r["share_ge_95"] for r in recs],
            [r["share_ge_90"] for r in recs],
            [r["accuracy_mean"] for r in recs],
            [r["software_accuracy"]["test"] for r in recs],
        )
    )


def _task_cells(recs: list[dict[str, Any]], task: str) -> str:
    """For one task of session transfers: software accuracy, accuracy per transfer, worst
    transfer and share >= 95 %, as table cells."""
    stats = [r["tasks"][task] for r in recs]
    return " | ".join(
        _ms(v)
        for v in (
            [r["software_accuracy"][task] for r in recs],
            [s["accuracy_mean"] for s in stats],
            [s["accuracy_min"] for s in stats],
            [s["share_ge_95"] for s in stats],
        )
    )


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
                f"| {bias} | {training} | {len(recs)} | {_moons_cells(recs)} | {p95} / {p90} |"
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
            share90 = _ms([r["tasks"][task]["share_ge_90"] for r in recs])
            rows.append(
                f"| {session} | {trained} | {crossbar} | {task} | {len(recs)} | "
                f"{_task_cells(recs, task)} | {share90} |"
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


def _seeds(out: Path, stem: str) -> list[dict[str, Any]]:
    """The records of ``out/stem-seed*`` (every seed that finished)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{stem}-seed*/transfer.json"))]


def _cell(recs: list[dict[str, Any]]) -> str:
    """share >= 95 % with the software test accuracy in brackets, mean (± std) over seeds."""
    if not recs:
        return "-"
    share = _ms([r["share_ge_95"] for r in recs])
    return f"{share} ({_ms([r['software_accuracy']['test'] for r in recs])})"


def _heredoc_names(script: str, delimiter: str) -> list[list[str]]:
    """The first ``|``-separated field of every line of each here-document ``<<'DELIMITER'``
    in the experiment script ``script``: the choices or plans it runs, in its order (the
    script is where they are declared)."""
    text = Path(__file__).with_name(script).read_text()
    blocks = text.split(f"<<'{delimiter}'\n")[1:]
    return [
        [line.split("|")[0] for line in block.split(f"\n{delimiter}\n")[0].splitlines()]
        for block in blocks
    ]


def audit_tables(out: Path) -> str:
    """Both recipes, and the one-choice screen, from experiments/transfer_audit.sh."""
    rows = [
        "| recipe | training | seeds | share ≥ 95 % | share ≥ 90 % | accuracy mean |"
        " software test | paper (≥ 95 / ≥ 90) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for recipe in ("project", "paper-code"):
        for training in ("regular", "hardware-aware"):
            recs = _seeds(out / "recipes", f"{recipe}-{training}")
            if recs:
                p95, p90 = PAPER[training]
                rows.append(
                    f"| {recipe} | {training} | {len(recs)} | {_moons_cells(recs)} | "
                    f"{p95} / {p90} |"
                )
    rows += [
        "",
        "| choice | seeds | project + the code's choice: regular | hardware-aware |"
        " paper-code - that choice: regular | hardware-aware |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    base = [_seeds(out / "recipes", f"{r}-{t}") for r in ("project", "paper-code")
            for t in ("regular", "hardware-aware")]  # fmt: skip
    rows.append(f"| (none) | {len(base[1])} | " + " | ".join(_cell(b) for b in base) + " |")
    screen = out / "screen"
    (choices,) = _heredoc_names("transfer_audit.sh", "EOF")
    for name in choices:
        cells = [_seeds(screen, f"{side}{name}-{t}") for side in ("project+", "paper-code-")
                 for t in ("regular", "hardware-aware")]  # fmt: skip
        seeds = max(len(c) for c in cells)
        rows.append(f"| {name} | {seeds} | " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _cost(recs: list[dict[str, Any]]) -> str:
    cost = recs[0].get("write_cost", {})
    if not cost:
        return "- | -"
    ops = statistics.mean(r["write_cost"]["operations_per_device"] for r in recs)
    reads = statistics.mean(r["write_cost"]["read_passes_per_array"] for r in recs)
    return f"{ops:.2f} / {reads:.1f} | {cost['devices']} / {cost['tiles']}"


def levers_tables(out: Path) -> str:
    """Every write plan and network lever of experiments/transfer_levers.sh, in its order."""
    moons_plans, mnist_plans = _heredoc_names("transfer_levers.sh", "PLANS")
    rows = [
        "| lever | training | seeds | share ≥ 95 % | share ≥ 90 % | accuracy mean |"
        " software test | operations per device / read passes per array | devices / tiles |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for plan in moons_plans:
        for training in ("regular", "hardware-aware"):
            recs = _seeds(out, f"{plan}-{training}")
            if recs:
                rows.append(
                    f"| {plan} | {training} | {len(recs)} | {_moons_cells(recs)} | {_cost(recs)} |"
                )
    rows += [
        "",
        "| session | plan | task | seeds | software | accuracy per transfer | worst transfer |"
        " share ≥ 95 % | operations per device / read passes per array | devices / tiles |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted((out / "mnist").glob("*/transfer.json")):
        run = path.parent.name  # SESSION-seedS-PLAN
        plan = next(p for p in sorted(mnist_plans, key=len, reverse=True) if run.endswith(f"-{p}"))
        groups.setdefault((run.rsplit("-seed", 1)[0], plan), []).append(
            json.loads(path.read_text())
        )
    order = {p: i for i, p in enumerate(mnist_plans)}
    for (session, plan), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        for task in recs[0]["tasks"]:
            rows.append(
                f"| {session} | {plan} | {task} | {len(recs)} | {_task_cells(recs, task)} | "
                f"{_cost(recs)} |"
            )
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="runs/transfer")
    p.add_argument("--figure", default=None, help="write the Fig. 6 pair here")
    p.add_argument("--audit", action="store_true", help="OUT is transfer_audit.sh's")
    p.add_argument("--levers", action="store_true", help="OUT is transfer_levers.sh's")
    args = p.parse_args()
    out = Path(args.out)
    if args.audit:
        print(audit_tables(out))
        return
    if args.levers:
        print(levers_tables(out))
        return
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
