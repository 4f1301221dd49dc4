"""A sweep's sessions as tasks on a Ray cluster: Ray schedules, retries and reports them.

Each session is one task asking for as many CPUs as the session has torch threads. A task
whose worker dies (a node lost, a process killed) is retried by Ray, up to
:data:`MAX_RETRIES` times, on any worker; it resumes from the session's last checkpoint in the
run directory, which is why the sweep's ``--out`` must be a folder every node sees (a shared
file system). A task that fails for its own reasons (a configuration or data error) is not
retried: the sweep reports it and goes on. ``docs/cluster.md`` is the guide.

Ray is an optional dependency (``pip install 'metaplast[cluster]'``); this module is imported
only when a sweep asks for ``--executor ray``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metaplast.errors import ConfigError
from metaplast.host.sweep import Job, failure, run_job

MAX_RETRIES = 3
"""Times Ray retries a session whose worker died; each retry resumes from the checkpoint."""

Runner = Callable[[list[Job], Callable[[dict[str, Any]], None]], None]


def connect(address: str | None) -> Runner:
    """Join the cluster at ``address`` (``auto``: the one running on this machine's node;
    ``None``: start a local one) and return the function that runs a sweep's jobs on it.
    Errors (no Ray, nobody at the address) come before anything is written."""
    if address is not None:
        _token_mode_if_a_token_exists()  # before Ray is imported: it reads the mode then
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray, an optional dependency: pip install 'metaplast[cluster]'"
        ) from None
    if address not in (None, "auto"):
        _check_reachable(address)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray cluster" if address is None else f"the Ray cluster at {address}"
        raise ConfigError(f"--address: cannot join {where}: {exc}") from exc
    return _runner(ray)


def _token_mode_if_a_token_exists() -> None:
    """Ray (2.60 here) starts a head in token-authentication mode when a token exists on the
    machine (``~/.ray/auth_token``, written by any earlier local Ray), but a driver joining it
    by address does not infer the mode and is refused ("Authentication token is missing").
    Unless the user chose a mode, a driver that has a token uses it: a cluster without
    authentication accepts such a driver too (both checked on this machine)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH", str(Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or Path(token_file).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _check_reachable(address: str) -> None:
    """A quick TCP connect, so that a wrong address fails in seconds, not after Ray's own
    minute-long retries."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--address {address!r}: expected HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({exc})") from None


def _runner(ray: Any) -> Runner:
    session = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_job)

    def run(jobs: list[Job], report: Callable[[dict[str, Any]], None]) -> None:
        try:
            pending = {session.options(num_cpus=job.threads).remote(job): job for job in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    report(ray.get(ready[0]))
                except ray.exceptions.RayTaskError as exc:  # the session's own error
                    report(failure(job, exc.cause if exc.cause is not None else exc))
                except ray.exceptions.RayError as exc:  # its workers died too often
                    report(failure(job, exc))
        finally:
            ray.shutdown()  # leaves a joined cluster running; stops one started here

    return run
