"""``train``, ``sweep``, ``summary`` and ``evaluate``: training sessions and their runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from metaplast.cli.options import (
    SESSION_OPTIONS,
    add_baudrate_option,
    add_session_options,
    int_list,
    positive_int,
    session_config,
)


def add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="run a metaplastic training session",
        description="Train a metaplastic QNN on a sequence of tasks.",
    )
    add_session_options(p)
    p.add_argument("--out", default=None, help="run directory (default runs/<preset>-seed<S>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--port",
        default=None,
        help="train on a board (or board-sim) behind this serial port, pty or socket:// URL",
    )
    p.add_argument(
        "--link-layers",
        type=int_list,
        default=None,
        help="with --port: the layers whose synapses live on the board, e.g. 0 or 0,2 "
        "(default all; the others stay in the in-process model, same arithmetic)",
    )
    add_baudrate_option(p, "with --port: the UART rate")
    p.add_argument("--link-timeout", type=float, default=2.0, help="seconds per attempt")


def _report(rec: dict[str, Any]) -> None:
    accs = "  ".join(f"{t} {100 * a:.2f} %" for t, a in rec["test_acc"].items())
    worn = f", {rec['worn_out_devices']} devices worn out" if rec.get("worn_out_devices") else ""
    print(
        f"epoch {rec['epoch']:3d} [{rec['task']}, m*={rec['mstar']:g}] {accs}  "
        f"({rec['level_changes']} level changes{worn}, {rec['seconds']:.1f} s)",
        flush=True,
    )


def run_train(args: argparse.Namespace) -> int:
    import torch

    from metaplast.host.session import train

    if args.threads:
        torch.set_num_threads(args.threads)

    seed = args.seed if args.seed is not None else 0
    out = Path(args.out) if args.out else Path("runs") / f"{args.preset or 'quick'}-seed{seed}"
    config = session_config(args, out)
    link = None
    if args.port:
        from metaplast.host.link import Link

        link = Link.open(args.port, baudrate=args.baudrate, timeout=args.link_timeout)
    try:
        metrics = train(
            config,
            out,
            args.data_dir,
            resume=args.resume,
            progress=not args.no_progress,
            on_epoch=_report,
            link=link,
            link_layers=args.link_layers,
            fresh_on_resume=False,
        )
    finally:
        if link is not None:
            link.close()
            s = link.stats
            print(
                f"link {args.port}: {s.commands} commands, {s.retries} retries "
                f"{s.retry_reasons or ''}, {s.bytes_sent:,} bytes sent, "
                f"{s.bytes_received:,} received"
            )
    final = metrics["epochs"][-1]["test_acc"]
    print("final test accuracy: " + ", ".join(f"{t} {100 * a:.2f} %" for t, a in final.items()))
    prog = metrics["programming"]
    print(
        f"programming operations per device: mean {prog['mean']:.1f}, max {prog['max']}, "
        f"{100 * prog['frac_under_25']:.2f} % under 25, {100 * prog['frac_over_50']:.2f} % over 50"
    )
    print(f"run directory: {out}")
    return 0


def add_sweep(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="train one session per point of a parameter grid",
        description="Vary session options over a grid; e.g. the m* sweep of "
        "Fig. 2a: metaplast sweep --vary mstar=0,1,2,3,4,5 --out DIR",
    )
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="FIELD=V1,V2,...",
        help="a config field and its values; tuple values are separated by '/', "
        "e.g. hidden=256,256/512,512 (repeatable: the grid is the product)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="repetitions: the seeds of every grid point, e.g. 0-14 or 0,3,7 "
        "(metaplast summary --over-seeds gives mean and std per point)",
    )
    add_session_options(p)
    p.add_argument("--out", required=True, help="sweep directory (one run directory per point)")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: --jobs sessions at a time on this machine; ray: every session a task "
        "of a Ray cluster (pip install 'metaplast[cluster]'; docs/cluster.md)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --executor ray: the cluster's HOST:PORT, or auto for the one running "
        "here (default: start a local one)",
    )
    p.add_argument("--jobs", type=int, default=1, help="local: sessions trained in parallel")


def _parse_vary(specs: list[str]) -> dict[str, list[Any]]:
    from metaplast.errors import ConfigError

    converters = {field: kw.get("type", str) for field, kw in SESSION_OPTIONS.items()}
    vary: dict[str, list[Any]] = {}
    for spec in specs:
        field, sep, values = spec.partition("=")
        field = field.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"--vary {spec!r}: expected FIELD=V1,V2,...")
        if field not in converters:
            raise ConfigError(f"--vary: unknown field {field!r}; known: {sorted(converters)}")
        parts = values.split("/") if "/" in values or field in TUPLE_FIELDS else values.split(",")
        try:
            vary[field] = [converters[field](v) for v in parts]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"--vary {field}: {exc}") from exc
    return vary


TUPLE_FIELDS = ("tasks", "epochs", "hidden", "levels")


def run_sweep(args: argparse.Namespace) -> int:
    from metaplast.errors import ConfigError
    from metaplast.host.sweep import exit_status, markdown_table, parse_seeds, run_sweep

    config = session_config(args, None)
    vary = _parse_vary(args.vary)
    if args.seeds is not None:
        if "seed" in vary or args.seed is not None:
            raise ConfigError("--seeds: give the seeds once (not also --seed or --vary seed=)")
        vary["seed"] = parse_seeds(args.seeds)
    if not vary:
        raise ConfigError("give at least one --vary FIELD=V1,V2,... or --seeds")
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address is for --executor ray")
    rows = run_sweep(
        config,
        vary,
        args.out,
        args.data_dir,
        jobs=args.jobs,
        threads=args.threads,
        executor=args.executor,
        address=args.address,
    )
    print(markdown_table([r for r in rows if "error" not in r], config.tasks), end="")
    print(f"sweep directory: {args.out}")
    return exit_status(rows)


def run_summary(args: argparse.Namespace) -> int:
    from metaplast.errors import ConfigError
    from metaplast.host.summary import seed_plot, seed_table, summary_table

    paths = [Path(p) for p in args.runs]
    if args.plot and not args.over_seeds:
        raise ConfigError("--plot draws the --over-seeds table: give both")
    print((seed_table if args.over_seeds else summary_table)(paths), end="")
    if args.plot:
        seed_plot(paths, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test a finished run one input at a time, as a chip classifies",
        description="Per task of a finished run: accuracy with batch statistics (as the "
        "session tested), with batch-norm statistics re-estimated from N unlabeled training "
        "inputs of the task (then every input classified alone), and with each neuron's "
        "batch norm and activation folded into comparator thresholds. Writes evaluate.json "
        "in the run directory, and periphery.npz: per task and layer, the comparator "
        "thresholds and polarities (few-level activations) or gains and offsets (full "
        "precision) of the network calibrated on the most inputs.",
    )
    p.add_argument("run", help="a finished run directory")
    p.add_argument(
        "--calibrate",
        type=int_list,
        default=(10, 30, 100, 300, 1000),
        help="numbers of calibration inputs to try, e.g. 100,300 (default 10,30,100,300,1000)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="test batch of the batch-statistics column (default: the session's); the "
        "calibrated and folded columns classify one input at a time whatever it is",
    )
    p.add_argument("--seed", type=int, default=0, help="which calibration inputs are drawn")
    p.add_argument("--data-dir", default=None, help="as for train")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads")


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from metaplast.host.evaluate import evaluate_run
    from metaplast.host.rundir import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    record = evaluate_run(
        args.run,
        args.calibrate,
        data_dir=args.data_dir,
        test_batch_size=args.batch_size,
        seed=args.seed,
    )
    import numpy as np

    np.savez_compressed(Path(args.run) / "periphery.npz", **record.pop("arrays"))
    write_json(Path(args.run) / "evaluate.json", record)
    counts = [str(n) for n in args.calibrate]
    print(
        f"| task | batch statistics (batch {record['test_batch_size']}) | "
        + " | ".join(f"calibrated on {n}" for n in counts)
        + " | "
        + " | ".join(f"folded, {n}" for n in counts)
        + " |"
    )
    print("|---|---|" + "---|" * (2 * len(counts)))
    for task, row in record["tasks"].items():
        cells = [f"{100 * row['batch_statistics']:.2f}"]
        cells += [f"{100 * row['calibrated'][n]:.2f}" for n in counts]
        cells += [f"{100 * row['folded'][n]:.2f}" if n in row["folded"] else "-" for n in counts]
        print(f"| {task} | " + " | ".join(cells) + " |")
    print(f"written: {Path(args.run) / 'evaluate.json'}")
    return 0


def add_summary(sub: Any) -> None:
    p = sub.add_parser(
        "summary",
        help="a markdown table of runs (one row each, or mean ± std over seeds)",
        description="A markdown table of run directories (a sweep directory stands for its "
        "runs): one row per run, or with --over-seeds one row per grid cell, the runs that "
        "differ only by their seed, with mean ± std over the seeds.",
    )
    p.add_argument("runs", nargs="+", help="run or sweep directories")
    p.add_argument(
        "--over-seeds",
        action="store_true",
        help="one row per cell: final and best accuracy, mean ± std over the seeds",
    )
    p.add_argument("--plot", default=None, help="with --over-seeds: error-bar plot to this PNG")
