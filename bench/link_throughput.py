"""Synapse updates per second over the link, against the limit the baud rate sets.

Starts ``metaplast board-sim`` (model backend) on a pty at each baud rate, streams UPDATE
blocks of real-looking updates from the host's serial client (a layer of 8,192 synapses at a
time, two frames in flight, as a session does), and compares the measured rate
with the line's limit: (baud / 10) bytes per second divided by the wire bytes per update
(request and reply frames included, as counted by the client). The unthrottled run (baud 0)
shows what the host and the model can do at all.

    .venv/bin/python bench/link_throughput.py [--bauds 3000000,12000000,0] [--seconds 5]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

from metaplast.contract import Contract
from metaplast.host.link import Link

CLI = str(Path(sys.executable).with_name("metaplast"))


def measure(baud: int, block: int, seconds: float, seed: int) -> dict[str, float]:
    board = subprocess.Popen(
        [CLI, "board-sim", "--synapses", "8192", "--max-block", str(block), "--baud", str(baud)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert board.stdout is not None
        port = board.stdout.readline().strip()
        contract = Contract()
        rng = random.Random(seed)
        with Link.open(port, baudrate=baud or 3_000_000, timeout=2.0) as link:
            link.attach(contract)
            link.load_lut(3.0)
            # updates of the size a session sends: a few hidden LSBs, both signs
            d = [rng.randint(-(1 << 12), 1 << 12) for _ in range(block)]
            # as a session applies a layer: the blocks of all 8,192 synapses in one call
            layer = [(start, 0, d) for start in range(0, 8192, block)]
            sent0, recv0 = link.stats.bytes_sent, link.stats.bytes_received
            updates, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                link.update_blocks(layer)
                updates += 8192
            elapsed = time.perf_counter() - t0
            sent = link.stats.bytes_sent - sent0
            received = link.stats.bytes_received - recv0
    finally:
        board.terminate()
        board.wait()
    return {
        "rate": updates / elapsed,
        "sent_per_update": sent / updates,
        "received_per_update": received / updates,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bauds", default="3000000,12000000,0")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| baud | updates/s | bytes per update (to board / back) | line limit | share of limit |")
    print("| --- | --- | --- | --- | --- |")
    for baud in (int(b) for b in args.bauds.split(",")):
        m = measure(baud, args.block, args.seconds, args.seed)
        per = f"{m['sent_per_update']:.3f} / {m['received_per_update']:.3f}"
        if baud:
            # the limit: the host-to-board direction saturated with UPDATE frames
            limit = baud / 10 / m["sent_per_update"]
            print(
                f"| {baud:,} | {m['rate']:,.0f} | {per} | {limit:,.0f} | {m['rate'] / limit:.1%} |",
                flush=True,
            )
        else:
            print(f"| unlimited | {m['rate']:,.0f} | {per} | | |", flush=True)


if __name__ == "__main__":
    main()
