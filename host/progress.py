"""Progress on long work: a live bar on a terminal, a few plain lines in a file or a pipe.

A bar redrawn ten times a second turns a log file into thousands of carriage returns; when
stderr is not a terminal, the same loop prints one line per tenth of the work instead, and
one when it ends. Work whose caller already prints a line per step (a session's epochs) asks
for a heartbeat instead: a line only when it has been quiet for a while (an epoch over a noisy
serial link), so that a log shows it is alive without doubling every quick epoch's line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

STEPS = 10  # lines per loop when the output is not a terminal


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    unit: str,
    total: int | None = None,
    enabled: bool = True,
    heartbeat: float | None = None,
) -> Iterator[T]:
    """``iterable`` with progress on stderr: a tqdm bar on a terminal, else a line at every
    tenth of ``total`` (``len(iterable)`` when it has one) and at the end; with ``heartbeat``,
    a line whenever that many seconds passed since the last, and at the end only after one."""
    if not enabled:
        yield from iterable
        return
    if sys.stderr.isatty():
        yield from tqdm(iterable, desc=desc, unit=unit, total=total, leave=False)
        return
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    start = last = time.perf_counter()
    every = max(1, (total or 0) // STEPS)
    done = lines = 0
    for item in iterable:
        yield item
        done += 1
        if heartbeat is None:
            if total and done % every == 0 and done < total:
                _line(desc, done, total, unit, time.perf_counter() - start)
        elif (now := time.perf_counter()) - last >= heartbeat:
            _line(desc, done, total, unit, now - start)
            last, lines = now, lines + 1
    if heartbeat is None or lines:
        _line(desc, done, total, unit, time.perf_counter() - start)


def _line(desc: str, done: int, total: int | None, unit: str, elapsed: float) -> None:
    of = f"/{total:,}" if total else ""
    units = unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")
    print(f"{desc}: {done:,}{of} {units}, {elapsed:.1f} s", file=sys.stderr, flush=True)
