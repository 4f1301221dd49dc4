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

``--xbar``: the crossbar port's traffic instead, on boards with the 1T1R array: a 2 x 128
layer (one 128-row tile) mapped and latched, then XBAR_MVM of input vectors forward (128
codes in, 4 currents out) and transposed (4 in, 128 out) in turn, two frames in flight as a
session streams them, every reply checked against the model board's array.

    .venv/bin/python bench/rtl_boards.py [--seconds 20] [--synapses 256] [--block 64] [--xbar]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.devices import load_device
from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.host.link import Link
from metaplast.protocol import (
    FrameDecoder,
    Layout,
    Op,
    encode_frame,
    xbar_layer,
    xbar_map,
    xbar_mvm,
)

CLI = str(Path(sys.executable).with_name("metaplast"))
BACKENDS = ("rtl", "verilog")


XBAR_ARRAY = "hfox-1t1r"
XBAR_SHAPE = (2, 128)  # out x in: one 128-row tile of the 1T1R array, 4 columns
XBAR_VECTORS = 8  # distinct input vectors, cycled


def measure(
    backend: str, synapses: int, block: int, seconds: float, seed: int, xbar: bool = False
) -> dict:
    array = XBAR_ARRAY if xbar else "none"
    t0 = time.perf_counter()
    board = subprocess.Popen(
        [CLI, "board-sim", "--backend", backend, "--synapses", str(synapses),
         "--max-block", str(block), "--crossbar", array],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert board.stdout is not None and board.stderr is not None
        port = board.stdout.readline().strip()
        if not port:
            raise SystemExit(f"board-sim --backend {backend}: {board.stderr.read().strip()}")
        startup = time.perf_counter() - t0
        if xbar:
            return {"startup": startup, **stream_mvms(port, synapses, block, seconds, seed)}
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


def stream_mvms(port: str, synapses: int, block: int, seconds: float, seed: int) -> dict:
    """XBAR_MVM traffic on the board at ``port`` (see the module's ``--xbar``)."""
    layout = Layout(Contract(), synapses, max_block=block)
    c = layout.contract
    model = CommandModel(layout, array=ArrayDriver(load_device(XBAR_ARRAY), c))
    rng = random.Random(seed)
    n = XBAR_SHAPE[0] * XBAR_SHAPE[1]
    w = [rng.randint(c.w_min, c.w_max) for _ in range(n)]
    setup = [
        (Op.WRITE_HIDDEN, layout.write_hidden(s, w[s : s + block])) for s in range(0, n, block)
    ]
    setup += [(Op.XBAR_MAP, xbar_map(0, 0, XBAR_SHAPE, seed)), (Op.XBAR_LATCH, xbar_layer(0))]
    vectors = {
        transposed: [[rng.randint(-32767, 32767) for _ in range(k)] for _ in range(XBAR_VECTORS)]
        for transposed, k in ((False, XBAR_SHAPE[1]), (True, 2 * XBAR_SHAPE[0]))
    }
    seq = 0

    def on_model(op: Op, payload: bytes) -> bytes:
        nonlocal seq
        seq += 1
        (frame,) = FrameDecoder().feed(model.feed(encode_frame(op, seq, payload)))
        return frame.payload[1:]

    for op, payload in setup:
        on_model(op, payload)
    want = {
        t: [np.frombuffer(on_model(Op.XBAR_MVM, xbar_mvm(0, t, (0, 0), v)), "<i8") for v in vs]
        for t, vs in vectors.items()
    }
    with Link.open(port, timeout=30.0) as link:
        link.attach(c)
        for op, payload in setup:
            link.command(op, payload)
        sent0, recv0 = link.stats.bytes_sent, link.stats.bytes_received
        # two vectors a call (the two frames in flight), forward and transposed in turn
        pairs = [(tr, i) for i in range(0, XBAR_VECTORS, 2) for tr in (False, True)]
        mvms, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            transposed, i = pairs[(mvms // 2) % len(pairs)]
            vs = vectors[transposed][i : i + 2]
            got = link.xbar_mvm(0, transposed, [((0, 0), v) for v in vs])
            expected = want[transposed][i : i + 2]
            if any(not np.array_equal(g, e) for g, e in zip(got, expected, strict=True)):
                raise SystemExit("XBAR_MVM currents differ from the model board's")
            mvms += len(vs)
        elapsed = time.perf_counter() - t
        moved = link.stats.bytes_sent - sent0 + link.stats.bytes_received - recv0
        retries = link.stats.retries
    return {
        "bytes_per_s": moved / elapsed,
        "mvms_per_s": mvms / elapsed,
        "seconds": elapsed,
        "retries": retries,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="wall time streamed per backend")
    ap.add_argument("--synapses", type=int, default=256)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--xbar", action="store_true", help="XBAR_MVM traffic on the 1T1R array")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rate = "XBAR_MVMs/s" if args.xbar else "synapse updates/s"
    print(f"| backend | bytes/s | {rate} | ratio to rtl | start-up s | retries |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for backend in BACKENDS:
        m = measure(backend, args.synapses, args.block, args.seconds, args.seed, args.xbar)
        base = base or m["bytes_per_s"]
        per_s = f"{m['mvms_per_s']:,.1f}" if args.xbar else f"{m['updates_per_s']:,.0f}"
        print(
            f"| {backend} | {m['bytes_per_s']:,.0f} | {per_s} "
            f"| {m['bytes_per_s'] / base:,.0f}x | {m['startup']:.1f} | {m['retries']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
