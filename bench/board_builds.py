"""Board builds: resources, Fmax and build time per synapse count, and the largest that fits.

For each board, real builds (``metaplast.boards.build``, the same code as ``metaplast build``)
at the given synapse counts, one at a time. Then the largest count that fits: a straight line
through the block RAM of those builds predicts it (to the board's block granularity), and real
builds settle it: the answer is a count that builds (fits, meets the target clock) with the
next step up failing. Writes one JSON line per build and prints a markdown table.

    .venv/bin/python bench/board_builds.py [--boards icebreaker,ulx3s-85f] \
        [--out build/bench-boards]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from metaplast.boards.build import BuildError, build
from metaplast.boards.platforms import BOARDS
from metaplast.contract import Contract
from metaplast.protocol import Layout

SIZES = {"icebreaker": (64, 512, 1024, 2048), "ulx3s-85f": (1024, 16384, 65536)}
STEP = {"icebreaker": 256, "ulx3s-85f": 1024}
"""Synapses per block RAM of one memory (256 x 16 bit EBR; 1024 x 18 bit DP16KD)."""


def one(board: str, synapses: int, out: Path, log: Path) -> dict[str, Any]:
    """Build ``synapses`` on ``board``; the report, or the error as ``{"error": ...}``."""
    t0 = time.perf_counter()
    layout = Layout(Contract(), synapses)
    try:
        report = build(BOARDS[board], layout, out / f"{board}-{synapses}")
        row = {k: v for k, v in report.items() if k not in ("info", "synth_cells", "toolchain")}
    except BuildError as exc:
        row = {"board": board, "synapses": synapses, "error": str(exc).split("; logs")[0]}
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    with log.open("a") as f:
        f.write(json.dumps(row) + "\n")
    status = row.get("error") or f"Fmax {row['fmax_mhz']} MHz, {row['bram']} BRAM"
    print(f"{board} {synapses}: {status} ({row['wall_seconds']} s)", flush=True)
    return row


def largest_fit(board: str, rows: list[dict[str, Any]], out: Path, log: Path) -> int:
    """The largest multiple of the board's step that builds, the next step up failing."""
    fitted = [r for r in rows if "error" not in r]
    step = STEP[board]
    (n0, b0), (n1, b1) = [(r["synapses"], r["bram"]) for r in (fitted[0], fitted[-1])]
    per_synapse = (b1 - b0) / (n1 - n0)
    available = fitted[-1]["bram_available"]
    guess = int((n1 + (available - b1) / per_synapse) // step * step)
    print(f"{board}: {per_synapse * step:.2f} BRAM per {step} synapses, predicts {guess}")
    known = {r["synapses"]: "error" not in r for r in rows}
    n = guess
    if not known.setdefault(n, "error" not in one(board, n, out, log)):
        while n > step and not known.get(n, False):
            n -= step
            known.setdefault(n, "error" not in one(board, n, out, log))
        return n
    while known.setdefault(n + step, "error" not in one(board, n + step, out, log)):
        n += step
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", default="icebreaker,ulx3s-85f")
    p.add_argument("--out", type=Path, default=Path("build/bench-boards"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "builds.jsonl"
    fits: dict[str, int] = {}
    for board in args.boards.split(","):
        rows = [one(board, n, args.out, log) for n in SIZES[board]]
        fits[board] = largest_fit(board, rows, args.out, log)
        print(f"{board}: the largest synapse count that fits is {fits[board]}", flush=True)
    (args.out / "largest_fit.json").write_text(json.dumps(fits, indent=2) + "\n")

    rows = [json.loads(line) for line in log.read_text().splitlines()]
    print("\n| board | synapses | LUTs | FFs | BRAM | DSP | Fmax / target (MHz) | build (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["board"], r["synapses"])):
        if "error" in r:
            print(
                f"| {r['board']} | {r['synapses']:,} | {r['error']} | | | | | {r['wall_seconds']} |"
            )
            continue
        print(
            f"| {r['board']} | {r['synapses']:,} | {r['luts']:,} | {r['ffs']:,} | "
            f"{r['bram']}/{r['bram_available']} | {r['dsp']} | {r['fmax_mhz']} / "
            f"{r['target_mhz']:g} | {r['build_seconds']} |"
        )


if __name__ == "__main__":
    main()
