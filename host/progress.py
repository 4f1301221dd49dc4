"""Progress on long work: a live bar on a terminal, a few plain lines in a file or a pipe.

A bar redrawn ten times a second turns a log file into thousands of carriage returns; when
stderr is not a terminal, the same loop prints one line per tenth of the work instead, and
one when it ends.
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
) -> Iterator[T]:
    """``iterable`` with progress on stderr: a tqdm bar on a terminal, else a line at every
    tenth of ``total`` (``len(iterable)`` when it has one) and at the end."""
    if not enabled:
        yield from iterable
        return
    if sys.stderr.isatty():
        yield from tqdm(iterable, desc=desc, unit=unit, total=total, leave=False)
        return
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    start = time.perf_counter()
    every = max(1, (total or 0) // STEPS)
    done = 0
    for item in iterable:
        yield item
        done += 1
        if total and done % every == 0 and done < total:
            _line(desc, done, total, unit, start)
    _line(desc, done, total, unit, start)


def _line(desc: str, done: int, total: int | None, unit: str, start: float) -> None:
    of = f"/{total:,}" if total else ""
    elapsed = time.perf_counter() - start
    print(f"{desc}: {done:,}{of} {unit}s, {elapsed:.1f} s", file=sys.stderr, flush=True)
