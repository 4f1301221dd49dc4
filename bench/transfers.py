"""Simulated transfers: the vectorized sampler against one transfer at a time.

Both evaluate the trained half-moons network (2-8-1) on the paper's 200 test points after each
transfer onto a fresh passive TiO2 crossbar; they alternate in one process and the medians are
compared, so machine noise hits both alike. Also reported: the time of 10,000 vectorized
transfers (the issue's target: well under a minute on 2 cores), of one transfer of the
quick metaplastic network (784-256-256-10) onto each device model, and what a write plan
(known stuck map, small blocks, read-verify) costs the simulation, as ratios to the plain
write measured alternately in the same process.

    .venv/bin/python bench/transfers.py [--repeats 5] [--transfers 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.devices import US, load_device
from metaplast.firmware_sim.crossbar.transfer import TransferSampler
from metaplast.firmware_sim.crossbar.write_plan import ReadVerify, WritePlan
from metaplast.host.hardware_aware import HardwareAware
from metaplast.host.transfer_run import load_moons


def vectorized(hw: HardwareAware, x: torch.Tensor, n: int) -> float:
    t0 = time.perf_counter()
    hw.transfer_outputs(x, n)
    return time.perf_counter() - t0


def one_at_a_time(hw: HardwareAware, x: torch.Tensor, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        hw.transfer_outputs(x, 1)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--transfers", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 1))
    hw = HardwareAware(model, load_device("tio2-passive"), seed=0)
    x, _ = load_moons("test")
    loop_n = 500  # the loop is slow: timed on fewer transfers, compared per transfer
    vec, loop = [], []
    for _ in range(args.repeats):
        vec.append(vectorized(hw, x, args.transfers) / args.transfers)
        loop.append(one_at_a_time(hw, x, loop_n) / loop_n)
    v, lo = statistics.median(vec), statistics.median(loop)
    print(f"half moons, per transfer: vectorized {1e6 * v:.1f} us, one at a time {1e6 * lo:.1f} us")
    print(f"speed-up of the vectorized sampler: {lo / v:.1f}x (medians of {args.repeats})")
    print(f"{args.transfers:,} transfers: {args.transfers * v:.2f} s")
    contract = Contract()
    for name in ("tio2-passive", "hfox-1t1r"):
        dev = load_device(name)
        shapes = [(256, 784), (256, 256), (10, 256)]
        levels = [torch.randint(0, len(contract.levels), s) for s in shapes]
        samplers = [TransferSampler(dev, s) for s in shapes]
        gen = torch.Generator().manual_seed(0)
        t = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for s, lv in zip(samplers, levels, strict=True):
                s.sample_levels(lv, contract, 1, gen)
            t.append(time.perf_counter() - t0)
        print(f"one transfer of 784-256-256-10 onto {name}: {1e3 * statistics.median(t):.1f} ms")
    write_plans(model, x, contract, args.repeats)


PLANS = {
    "known stuck map": WritePlan(stuck_map="known"),
    "known map, 2x2 blocks": WritePlan(stuck_map="known", block=(2, 2)),
    "known map, 2x2 blocks, verify 10 uS": WritePlan(
        stuck_map="known", block=(2, 2), verify=ReadVerify(10 * US, 5)
    ),
}


def write_plans(model: nn.Module, x: torch.Tensor, contract: Contract, repeats: int) -> None:
    """Each write plan against the plain write, alternately: 10,000 half-moons transfers, and
    one transfer of the quick metaplastic network onto TiO2."""
    dev = load_device("tio2-passive")
    plain = HardwareAware(model, dev, seed=0)
    shapes = [(256, 784), (256, 256), (10, 256)]
    levels = [torch.randint(0, len(contract.levels), s) for s in shapes]

    def mnist(plan: WritePlan | None) -> float:
        samplers = [TransferSampler(dev, s, plan) for s in shapes]
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for s, lv in zip(samplers, levels, strict=True):
            s.sample_levels(lv, contract, 1, gen)
        return time.perf_counter() - t0

    for name, plan in PLANS.items():
        hw = HardwareAware(model, dev, seed=0, plan=plan)
        ratios, mnist_ratios = [], []
        for _ in range(repeats):
            ratios.append(vectorized(hw, x, 10_000) / vectorized(plain, x, 10_000))
            mnist_ratios.append(mnist(plan) / mnist(None))
        print(
            f"{name}: x{statistics.median(ratios):.2f} the plain write's time (half moons, "
            f"10,000 transfers), x{statistics.median(mnist_ratios):.2f} (one 784-256-256-10 "
            f"transfer)"
        )


if __name__ == "__main__":
    main()
