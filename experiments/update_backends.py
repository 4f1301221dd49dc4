"""The update of one layer on each candidate backend: what chose numba for the fused update.

One consolidating update (m* = 3, Adam's step) of the paper network's first layer (401,408
synapses) with the fixed-point contract, on: the torch operations (the reference and the
fallback), ``torch.compile`` of those same operations (inductor; its compile time too), and
the numba kernels of :mod:`metaplast.kernels`. Every candidate's result is checked against
the reference, bit for bit.

    .venv/bin/python experiments/update_backends.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from metaplast import fused_update
from metaplast.contract import Contract, address_hash
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.fused_update import AdamStep


def reference(
    c: Contract,
    hidden: torch.Tensor,
    level: torch.Tensor,
    step: AdamStep,
    lut: torch.Tensor,
    dither: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch path of a session's update: the step, its quantization, Algorithm 1."""
    d = c.update_to_int(step.tensor())
    new, _, after = c.apply(hidden, d, lut, dither=dither, level=level)
    return new, after


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    c = Contract()
    n = 784 * 512
    g = torch.Generator().manual_seed(0)
    w0 = c.hidden_to_int(torch.randn(n, generator=g) * 0.5)
    m = torch.randn(n, generator=g) * 1e-3
    v = torch.rand(n, generator=g) * 1e-6
    step = AdamStep(m, (v / 0.002).sqrt() + 1e-8, 0.19, 0.005)
    lut = torch.tensor(c.meta_lut(3.0))
    dither = c.dither(7, address_hash(torch.arange(n)))
    level = c.level_of(w0)
    expected, expected_level = reference(c, w0, level, step, lut, dither)
    rows = []

    def ref() -> object:
        return reference(c, w0, level, step, lut, dither)

    rows.append(("torch operations", 0.0, timed(ref, args.repeats), True))
    if not args.no_compile:
        compiled = torch.compile(reference, dynamic=False)
        t0 = time.perf_counter()
        out = compiled(c, w0, level, step, lut, dither)
        first = time.perf_counter() - t0
        same = torch.equal(out[0], expected) and torch.equal(out[1], expected_level)
        rows.append(
            (
                "torch.compile (inductor)",
                first,
                timed(lambda: compiled(c, w0, level, step, lut, dither), args.repeats),
                same,
            )
        )
    unit = DigitalUnit(c, n)
    unit.write(0, w0)
    unit.load_lut(3.0)
    t0 = time.perf_counter()
    unit.update_step(step, seed=7)
    first = time.perf_counter() - t0
    same = torch.equal(unit.hidden, expected) and torch.equal(unit.levels(), expected_level)

    def kernel() -> object:
        unit.write(0, w0)
        t = time.perf_counter()
        unit.update_step(step, seed=7)
        return time.perf_counter() - t

    per_call = statistics.median(kernel() for _ in range(args.repeats))
    rows.append((f"numba kernel ({fused_update.describe()['detail']})", first, per_call, same))
    print(f"one update of {n:,} synapses (m* = 3, Adam's step), {args.threads} threads")
    print("| backend | first call (s) | per update (ms) | bit-identical |")
    print("|---|---|---|---|")
    for name, first, per, ok in rows:
        print(f"| {name} | {first:.2f} | {1000 * per:.2f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
