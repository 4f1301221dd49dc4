"""Parameter sweeps: one session per point of a grid, each in its own run directory.

A sweep is resumable like a session: each point resumes from its own checkpoint, so an
interrupted sweep rerun with the same command only trains what is missing, and a finished
point costs nothing. The sessions run on this machine (``local``: a pool of processes) or as
tasks on a Ray cluster (``ray``, :mod:`metaplast.host.sweep_ray`); either way a session is the
same function of its configuration, seed and thread count, writes the same run directory, and
ends the same. A session that fails is reported by name with its error; the others go on.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from metaplast.errors import ConfigError
from metaplast.host.config import SessionConfig
from metaplast.host.rundir import write_json
from metaplast.host.summary import seed_plot, seed_table

EXECUTORS: tuple[str, ...] = ("local", "ray")


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
    names = set(SessionConfig.flat_keys())
    unknown = sorted(set(vary) - names)
    if unknown:
        raise ConfigError(f"--vary: unknown field(s) {unknown}; known fields are {sorted(names)}")
    empty = [k for k, v in vary.items() if not v]
    if empty:
        raise ConfigError(f"--vary: no values for {empty}")
    out = []
    for values in itertools.product(*vary.values()):
        point = dict(zip(vary, values, strict=True))
        try:
            config = SessionConfig.from_dict({**base.to_dict(), **point})
        except ConfigError as exc:
            raise ConfigError(f"sweep point {point}: {exc}") from exc
        out.append((_point_name(point), config))
    return out


def parse_seeds(text: str) -> list[int]:
    """``0-14``, ``0,3,7`` or a mix (``0-4,10``): the seeds of a sweep's repetitions."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if last < first or first < 0:
                raise ValueError(part)
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise ConfigError(
            f"--seeds {text!r}: expected seeds >= 0 like 0-14 or 0,3,7 (a range low-high)"
        ) from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed appears twice")
    return seeds


@dataclasses.dataclass(frozen=True)
class Job:
    """One session of a sweep, as plain data: what a worker anywhere needs to run it."""

    name: str
    config: dict[str, Any]
    out: str
    data_dir: str | None
    threads: int

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.name


def run_job(job: Job) -> dict[str, Any]:
    """Train (or resume, or find finished) one session; its result row for the sweep table.
    Runs in a worker process: a local pool's or a Ray task's."""
    import torch

    from metaplast.host.session import train

    torch.set_num_threads(job.threads)
    metrics = train(
        SessionConfig.from_dict(job.config),
        job.run_dir,
        job.data_dir,
        resume=True,
        progress=False,
    )
    last = metrics["epochs"][-1]
    return {
        "name": job.name,
        "final_test_acc": last["test_acc"],
        "seconds": sum(e["seconds"] for e in metrics["epochs"]),
        "level_changes": metrics["level_changes"]["total"],
    }


def run_job_reporting(job: Job) -> dict[str, Any]:
    """:func:`run_job`, an error turned into a row that names it (the sweep goes on)."""
    try:
        return run_job(job)
    except Exception as exc:  # the sweep reports any failure of one session and goes on
        return failure(job, exc)


def failure(job: Job, exc: BaseException) -> dict[str, Any]:
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return {"name": job.name, "error": detail}


def run_local(jobs: list[Job], workers: int, report: Callable[[dict[str, Any]], None]) -> None:
    """The jobs on this machine, ``workers`` at a time, each in a fresh process."""
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(run_job_reporting, jobs, chunksize=1):
                report(result)
            # workers that exit on their own release what they hold; terminating them (what
            # leaving the block does) leaves the resource tracker warning of leaked semaphores
            pool.close()
            pool.join()
    else:
        for job in jobs:
            report(run_job_reporting(job))


def run_sweep(
    base: SessionConfig,
    vary: dict[str, Sequence[Any]],
    out: str | Path,
    data_dir: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
    *,
    executor: str = "local",
    address: str | None = None,
    announce: Callable[[str], None] = lambda line: print(line, flush=True),
) -> list[dict[str, Any]]:
    """Train every grid point and write ``sweep.json``, ``sweep.md`` (with mean ± std over the
    seeds when they vary) and, when one field varies besides the seed, ``sweep.png`` (with error
    bars over the seeds); return the result rows, the failed points' with an ``error``.

    ``local``: ``jobs`` sessions at a time on this machine, each with ``threads`` torch threads
    (default: the cores shared out over the jobs). ``ray``: every session a task of the Ray
    cluster at ``address`` (``auto``: the running one; ``None``: start one here) that asks for
    ``threads`` CPUs (default 1); Ray schedules and retries them.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {EXECUTORS}, got {executor!r}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    points = grid(base, vary)
    out = Path(out)
    if executor == "ray":
        threads = threads or 1
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // max(1, jobs))
    # absolute paths: a worker elsewhere (a Ray node) has its own working directory
    data = None if data_dir is None else str(Path(data_dir).resolve())
    work = [Job(name, cfg.to_dict(), str(out.resolve()), data, threads) for name, cfg in points]
    run_ray = None
    if executor == "ray":
        from metaplast.host.sweep_ray import connect

        run_ray = connect(address)  # before anything is written: a bad cluster loses nothing
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}

    def report(result: dict[str, Any]) -> None:
        results[result["name"]] = result
        if "error" in result:
            announce(
                f"sweep: {len(results)}/{len(work)} {result['name']} FAILED: {result['error']}"
            )
            return
        accs = ", ".join(f"{t} {100 * a:.2f} %" for t, a in result["final_test_acc"].items())
        announce(f"sweep: {len(results)}/{len(work)} {result['name']}: {accs}")

    if run_ray is not None:
        run_ray(work, report)
    else:
        run_local(work, jobs, report)
    rows = [results[job.name] for job in work]
    for (_, cfg), row in zip(points, rows, strict=True):
        row["point"] = {k: getattr(cfg, k) for k in vary}
    done = [r for r in rows if "error" not in r]
    write_json(
        out / "sweep.json",
        {
            "base": base.to_dict(),
            "vary": {k: list(v) for k, v in vary.items()},
            "executor": executor,
            "results": rows,
        },
    )
    table = markdown_table(done, base.tasks)
    cells = [k for k in vary if k != "seed"]
    if "seed" in vary and done:
        table += "\nOver the seeds:\n\n" + seed_table([out / r["name"] for r in done])
    (out / "sweep.md").write_text(table + _failures(rows))
    if len(cells) <= 1 and done:
        seed_plot([out / r["name"] for r in done], out / "sweep.png")
    return rows


def _failures(rows: Iterable[dict[str, Any]]) -> str:
    failed = [r for r in rows if "error" in r]
    if not failed:
        return ""
    return "\nFailed sessions:\n\n" + "".join(f"- {r['name']}: {r['error']}\n" for r in failed)


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


def exit_status(rows: list[dict[str, Any]]) -> int:
    """0 when every session finished, 1 when some failed (they are named on stderr)."""
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"metaplast sweep: session {r['name']} failed: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
