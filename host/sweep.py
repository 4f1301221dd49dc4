"""Parameter sweeps: one session per point of a grid, in parallel, each in its own run directory.

A sweep is resumable like a session: each point resumes from its own checkpoint, so an
interrupted sweep rerun with the same command only trains what is missing.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaplast.host.config import ConfigError, SessionConfig
from metaplast.host.rundir import write_json


def _point_name(point: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return (
            "x".join(map(str, v))
            if isinstance(v, tuple | list)
            else f"{v:g}"
            if isinstance(v, float)
            else str(v)
        )

    return "_".join(f"{k}-{fmt(v)}" for k, v in point.items())


def grid(base: SessionConfig, vary: dict[str, Sequence[Any]]) -> list[tuple[str, SessionConfig]]:
    """Every combination of the varied fields over ``base``; errors name the bad point."""
    names = {f.name for f in dataclasses.fields(SessionConfig) if f.init}
    unknown = sorted(set(vary) - names)
    if unknown:
        raise ConfigError(f"--vary: unknown field(s) {unknown}; known fields are {sorted(names)}")
    out = []
    for values in itertools.product(*vary.values()):
        point = dict(zip(vary, values, strict=True))
        try:
            config = SessionConfig.from_dict({**base.to_dict(), **point})
        except ConfigError as exc:
            raise ConfigError(f"sweep point {point}: {exc}") from exc
        out.append((_point_name(point), config))
    return out


def _run_point(job: tuple[str, dict[str, Any], str, str | None, int]) -> dict[str, Any]:
    import torch

    from metaplast.host.session import train

    name, config_dict, out, data_dir, threads = job
    torch.set_num_threads(threads)
    metrics = train(
        SessionConfig.from_dict(config_dict),
        Path(out) / name,
        data_dir,
        resume=True,
        progress=False,
    )
    last = metrics["epochs"][-1]
    return {
        "name": name,
        "final_test_acc": last["test_acc"],
        "seconds": sum(e["seconds"] for e in metrics["epochs"]),
        "level_changes": metrics["level_changes"]["total"],
    }


def run_sweep(
    base: SessionConfig,
    vary: dict[str, Sequence[Any]],
    out: str | Path,
    data_dir: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Train every grid point (``jobs`` at a time) and write ``sweep.json`` and ``sweep.md``.

    Each session gets ``threads`` torch threads (default: the cores shared out over the jobs).
    """
    points = grid(base, vary)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    work = [
        (name, cfg.to_dict(), str(out), None if data_dir is None else str(data_dir), threads)
        for name, cfg in points
    ]
    if jobs > 1:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            results = pool.map(_run_point, work, chunksize=1)
    else:
        results = [_run_point(w) for w in work]
    for (_, cfg), res in zip(points, results, strict=True):
        res["point"] = {k: getattr(cfg, k) for k in vary}
    write_json(
        out / "sweep.json",
        {"base": base.to_dict(), "vary": {k: list(v) for k, v in vary.items()}, "results": results},
    )
    (out / "sweep.md").write_text(markdown_table(results, base.tasks))
    if len(vary) == 1:
        _plot(results, next(iter(vary)), base.tasks, out / "sweep.png")
    return results


def markdown_table(results: list[dict[str, Any]], tasks: Sequence[str]) -> str:
    keys = list(results[0]["point"]) if results else []
    head = "| " + " | ".join(keys + [f"{t} (%)" for t in tasks] + ["level changes"]) + " |"
    rule = "|" + "---|" * (len(keys) + len(tasks) + 1)
    rows = [
        "| "
        + " | ".join(
            [str(r["point"][k]) for k in keys]
            + [f"{100 * r['final_test_acc'][t]:.2f}" for t in tasks]
            + [str(r["level_changes"])]
        )
        + " |"
        for r in results
    ]
    return "\n".join([head, rule, *rows]) + "\n"


def _plot(results: list[dict[str, Any]], key: str, tasks: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["point"][key] for r in results]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for t in tasks:
        ax.plot(x, [100 * r["final_test_acc"][t] for r in results], "o-", label=t)
    ax.set_xlabel(key)
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
