"""Bit-exactness campaign: many random and adversarial updates, RTL against the model.

For each configuration, the learning core runs under the Amaranth simulator with adversarial
initial weights (on levels, boundaries, midpoints, clip ends) and a mix of adversarial and
random updates (zero, extreme, exact landings on boundaries and levels, the same synapse back
to back), with random back-pressure on the events. Every event, final weight and counter is
compared with the bit-exact model; mismatches are counted, not asserted, and printed.

``--simulator verilator`` plays the same scenarios into the core's generated Verilog compiled
by Verilator (``tests/core_verilator.py``; compiled once per configuration and cached), cycle
for cycle as the Amaranth testbenches do, fast enough for millions of updates per
configuration; the model's expected results are then most of the run's time.

    .venv/bin/python experiments/bit_exactness.py [--updates 20000] [--seed 0]
    .venv/bin/python experiments/bit_exactness.py --simulator verilator --updates 1000000 \
        [--memory spram]

``--memory spram`` checks the single-port configuration (both memories in SPRAM-like stores,
one update per two cycles) instead of the dual-port one.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from amaranth.sim import Simulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the verification kit
from core_check import (  # noqa: E402
    CONTRACTS,
    Scenario,
    adversarial_hidden,
    adversarial_updates,
    core_testbenches,
    expected,
)

CONFIGS = {
    "tiny (64 synapses, 16-bit, stochastic)": (CONTRACTS["default"], 64),
    "uneven levels (40 synapses, 12-bit, nearest)": (CONTRACTS["uneven-12bit"], 40),
    "crossbar tile (8192 synapses, 16-bit, stochastic)": (CONTRACTS["default"], 8192),
}


def mismatches(got: list, want: list) -> int:
    return sum(a != b for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))


def run_amaranth(s: Scenario) -> None:
    """Play ``s`` into the core under the Amaranth simulator (fills its observations)."""
    core, play, watch = core_testbenches(s)
    sim = Simulator(core)
    sim.add_clock(1 / 48e6)
    for tb in play:
        sim.add_testbench(tb)
    for tb in watch:
        sim.add_testbench(tb, background=True)
    sim.run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=20000, help="updates per configuration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simulator", choices=("amaranth", "verilator"), default="amaranth")
    ap.add_argument(
        "--memory",
        choices=("block", "spram"),
        default="block",
        help="the memories in dual-port block RAM (one update per clock) or in single-port "
        "SPRAM (one per two cycles)",
    )
    args = ap.parse_args()
    run = run_amaranth
    if args.simulator == "verilator":
        from core_verilator import core_executable, run_scenario

        run = run_scenario
    print(
        "| configuration | updates | events | weights and counters | mismatches | sim s | model s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for i, (name, (contract, synapses)) in enumerate(CONFIGS.items()):
        rng = random.Random(args.seed * 1000 + i)
        hidden = adversarial_hidden(contract, synapses, rng)
        updates = adversarial_updates(contract, hidden, args.updates, rng)
        s = Scenario(
            contract,
            synapses,
            hidden,
            updates,
            ready_prob=0.7,
            seed=args.seed + i,
            single_port=args.memory == "spram",
        )
        if args.simulator == "verilator":
            core_executable(s)  # Verilator's build (once, then cached) is not timed
        t = time.perf_counter()
        run(s)
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        events, final, counts = expected(s)
        model_seconds = time.perf_counter() - t
        bad = (
            mismatches(s.events, events) + mismatches(s.final, final) + mismatches(s.counts, counts)
        )
        print(
            f"| {name} | {len(updates):,} | {len(events):,} | {2 * synapses:,} | {bad} "
            f"| {seconds:.0f} | {model_seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
