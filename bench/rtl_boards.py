"""Bytes per second through the gateware-backed simulated boards: Verilator against Amaranth.

Starts ``metaplast board-sim`` with each backend (``rtl``: the unit under the Amaranth
simulator; ``verilog``: its generated Verilog under Verilator) on a pty, and streams UPDATE
blocks through the host's serial client as a session does (two frames in flight), for a fixed
wall time after a warm-up exchange. Both boards move every byte bit by bit through the
unit's UART pins at divisor 4, so bytes per second (to the board and back, as the client
counts them) measure the simulators. Every block's level-change events are checked against
the bit-exact model, so a fast board that answers wrongly fails here. The ratio is to the
Amaranth backend in the same run. Board start-up (Verilog generation, and Verilator's compile
on a cold cache) is not timed; it is reported.

    .venv/bin/python bench/rtl_boards.py [--seconds 20] [--synapses 256] [--block 64]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

from metaplast.contract import Contract
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.host.link import Link

CLI = str(Path(sys.executable).with_name("metaplast"))
BACKENDS = ("rtl", "verilog")


def measure(backend: str, synapses: int, block: int, seconds: float, seed: int) -> dict:
    t0 = time.perf_counter()
    board = subprocess.Popen(
        [CLI, "board-sim", "--backend", backend, "--synapses", str(synapses),
         "--max-block", str(block)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert board.stdout is not None and board.stderr is not None
        port = board.stdout.readline().strip()
        if not port:
            raise SystemExit(f"board-sim --backend {backend}: {board.stderr.read().strip()}")
        startup = time.perf_counter() - t0
        contract = Contract()
        model = DigitalUnit(contract, synapses)
        model.load_lut(3.0)
        rng = random.Random(seed)
        with Link.open(port, timeout=30.0) as link:
            link.attach(contract)
            link.load_lut(3.0)
            sent0, recv0 = link.stats.bytes_sent, link.stats.bytes_received
            updates, rounds, t = 0, 0, time.perf_counter()
            while time.perf_counter() - t < seconds:
                blocks = []
                for start in range(0, synapses, block):
                    d = [rng.randint(-(1 << 14), 1 << 14) for _ in range(block)]
                    blocks.append((start, rounds, d))
                events = link.update_blocks(blocks)
                want = []
                for start, s, d in blocks:
                    ch = model.update(torch.tensor(d), start=start, seed=s)
                    want += zip(*(x.tolist() for x in ch), strict=True)
                if events != want:
                    raise SystemExit(f"{backend}: level changes differ from the model")
                updates += synapses
                rounds += 1
            elapsed = time.perf_counter() - t
            moved = link.stats.bytes_sent - sent0 + link.stats.bytes_received - recv0
            retries = link.stats.retries
    finally:
        board.terminate()
        board.wait()
    return {
        "startup": startup,
        "bytes_per_s": moved / elapsed,
        "updates_per_s": updates / elapsed,
        "seconds": elapsed,
        "retries": retries,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="wall time streamed per backend")
    ap.add_argument("--synapses", type=int, default=256)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| backend | bytes/s | synapse updates/s | ratio to rtl | start-up s | retries |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for backend in BACKENDS:
        m = measure(backend, args.synapses, args.block, args.seconds, args.seed)
        base = base or m["bytes_per_s"]
        print(
            f"| {backend} | {m['bytes_per_s']:,.0f} | {m['updates_per_s']:,.0f} "
            f"| {m['bytes_per_s'] / base:,.0f}x | {m['startup']:.1f} | {m['retries']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
