"""Board builds: resources, Fmax and build time per synapse count, and the largest that fits.

For each board, real builds (``metaplast.boards.build``, the same code as ``metaplast build``)
at the given synapse counts, one at a time. Then the largest count that fits: a straight line
through the block RAM of those builds predicts it (to the board's block granularity), and real
builds settle it: the answer is a count that builds (fits, meets the target clock) with the
next step up failing. Writes one JSON line per build and prints a markdown table.

``--memory spram`` (the iCEBreaker) keeps the hidden weights and counters in SPRAM: the
prediction is then the largest count whose memories the SPRAM holds (``memory_for``), and a
count past it is refused before any tool runs, which counts as a step that fails.

    .venv/bin/python bench/board_builds.py [--boards icebreaker,ulx3s-85f] \
        [--memory block|spram] [--out build/bench-boards]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from metaplast.boards.build import BuildError, build, memory_for
from metaplast.boards.platforms import BOARDS
from metaplast.contract import Contract
from metaplast.protocol import Layout

SIZES = {
    ("icebreaker", "block"): (64, 512, 1024, 2048),
    ("ulx3s-85f", "block"): (1024, 16384, 65536),
    ("icebreaker", "spram"): (4096, 16384),
}
STEP = {"icebreaker": 256, "ulx3s-85f": 1024}
"""Synapses per block RAM of one memory (256 x 16 bit EBR; 1024 x 18 bit DP16KD)."""


def one(board: str, synapses: int, out: Path, log: Path, memory: str) -> dict[str, Any]:
    """Build ``synapses`` on ``board``; the report, or the error as ``{"error": ...}``."""
    t0 = time.perf_counter()
    layout = Layout(Contract(), synapses)
    try:
        report = build(BOARDS[board], layout, out / f"{board}-{memory}-{synapses}", memory=memory)
        row = {k: v for k, v in report.items() if k not in ("info", "synth_cells", "toolchain")}
    except (BuildError, ValueError) as exc:
        row = {"board": board, "synapses": synapses, "memory": memory}
        row["error"] = str(exc).split("; logs")[0]
    row["wall_seconds"] = round(time.perf_counter() - t0, 1)
    with log.open("a") as f:
        f.write(json.dumps(row) + "\n")
    status = row.get("error") or f"Fmax {row['fmax_mhz']} MHz, {row['bram']} BRAM"
    print(f"{board} {synapses}: {status} ({row['wall_seconds']} s)", flush=True)
    return row


def predict(board: str, rows: list[dict[str, Any]], memory: str) -> int:
    """The count the memories' resource predicts: a line through the block RAM of ``rows``,
    or the most the SPRAM holds."""
    step = STEP[board]
    if memory == "spram":
        n = BOARDS[board].spram * 16384
        while n > step:
            try:
                memory_for(BOARDS[board], Layout(Contract(), n), "spram")
                break
            except ValueError:
                n -= step
        print(f"{board}: the SPRAM holds {n} synapses' weights and counters")
        return n
    fitted = [r for r in rows if "error" not in r]
    (n0, b0), (n1, b1) = [(r["synapses"], r["bram"]) for r in (fitted[0], fitted[-1])]
    per_synapse = (b1 - b0) / (n1 - n0)
    available = fitted[-1]["bram_available"]
    guess = int((n1 + (available - b1) / per_synapse) // step * step)
    print(f"{board}: {per_synapse * step:.2f} BRAM per {step} synapses, predicts {guess}")
    return guess


def largest_fit(board: str, rows: list[dict[str, Any]], out: Path, log: Path, memory: str) -> int:
    """The largest multiple of the board's step that builds, the next step up failing."""
    step = STEP[board]
    known = {r["synapses"]: "error" not in r for r in rows}
    n = predict(board, rows, memory)

    def fits(n: int) -> bool:
        return known.setdefault(n, "error" not in one(board, n, out, log, memory))

    if not fits(n):
        while n > step and not known.get(n, False):
            n -= step
            fits(n)
        return n
    while fits(n + step):
        n += step
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boards", default="icebreaker,ulx3s-85f")
    p.add_argument("--memory", choices=("block", "spram"), default="block")
    p.add_argument("--out", type=Path, default=Path("build/bench-boards"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "builds.jsonl"
    fits: dict[str, int] = {}
    for board in args.boards.split(","):
        rows = [one(board, n, args.out, log, args.memory) for n in SIZES[board, args.memory]]
        fits[board] = largest_fit(board, rows, args.out, log, args.memory)
        print(f"{board}: the largest synapse count that fits is {fits[board]}", flush=True)
    (args.out / f"largest_fit-{args.memory}.json").write_text(json.dumps(fits, indent=2) + "\n")

    rows = [json.loads(line) for line in log.read_text().splitlines()]
    print(
        "\n| board | memory | synapses | LUTs | FFs | BRAM | SPRAM | DSP "
        "| Fmax / target (MHz) | build (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["board"], r.get("memory", "block"), r["synapses"])):
        head = f"| {r['board']} | {r.get('memory', 'block')} | {r['synapses']:,} |"
        if "error" in r:
            print(f"{head} {r['error']} | | | | | | {r['wall_seconds']} |")
            continue
        print(
            f"{head} {r['luts']:,} | {r['ffs']:,} | {r['bram']}/{r['bram_available']} | "
            f"{r.get('spram') or 0} | {r['dsp']} | {r['fmax_mhz']} / {r['target_mhz']:g} | "
            f"{r['build_seconds']} |"
        )


if __name__ == "__main__":
    main()
