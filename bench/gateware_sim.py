"""How fast the gateware simulates, and how many clock cycles one synapse update costs.

In one process: the bit-exact model applies a block of updates (the baseline), the learning
core (update pipeline and meta LUT) runs the same updates under the Amaranth simulator, and the
whole unit receives an UPDATE frame bit by bit on its UART pin. Reported: simulated cycles per
second (to budget tests), the model's speed-up over the RTL simulation, cycles per update in
the pipeline (target 1.0) and in the command engine.

    .venv/bin/python bench/gateware_sim.py [--updates 4000] [--block 256]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from amaranth.sim import Simulator

from metaplast.contract import Contract
from metaplast.firmware_sim.command_model import CommandModel
from metaplast.firmware_sim.digital_unit import DigitalUnit
from metaplast.gateware.synapse_core import SynapseCore
from metaplast.gateware.top import DigitalUnitTop
from metaplast.protocol import Layout, Op, encode_frame


def model_rate(contract: Contract, synapses: int, d: list[int], repeats: int = 20) -> float:
    unit = DigitalUnit(contract, synapses)
    unit.load_lut(3.0)
    block = torch.tensor(d)
    t = time.perf_counter()
    for i in range(repeats):
        unit.update(block, seed=i)
    return repeats * len(d) / (time.perf_counter() - t)


def core_run(contract: Contract, synapses: int, d: list[int]) -> dict[str, float]:
    """Stream ``d`` into the core one update per offered cycle; count cycles and wall time."""
    dut = SynapseCore(contract, synapses)
    stats = {"cycles": 0, "update_cycles": 0}

    async def drive(ctx) -> None:
        ctx.set(dut.events.ready, 1)
        for addr, v in enumerate(d):
            ctx.set(dut.update.valid, 1)
            ctx.set(dut.update.payload, {"addr": addr, "d": v, "seed": 1})
            await ctx.tick().until(dut.update.ready)
        ctx.set(dut.update.valid, 0)
        await ctx.tick()
        while ctx.get(dut.busy):
            await ctx.tick()

    async def count(ctx) -> None:
        while True:
            _, _, valid, busy = await ctx.tick().sample(dut.update.valid, dut.busy)
            stats["cycles"] += 1
            stats["update_cycles"] += bool(valid or busy)

    sim = Simulator(dut)
    sim.add_clock(1 / 48e6)
    sim.add_testbench(drive)
    sim.add_testbench(count, background=True)
    t = time.perf_counter()
    sim.run()
    stats["seconds"] = time.perf_counter() - t
    return stats


def top_run(layout: Layout, d: list[int], divisor: int) -> dict[str, float]:
    """One UPDATE frame through the UART pin; the engine's cycles from frame to reply."""
    dut = DigitalUnitTop(layout, baud_divisor=divisor)
    frame = encode_frame(Op.UPDATE, 1, layout.update(0, 1, d))
    reply = CommandModel(layout, baud_divisor=divisor).feed(frame)
    stats = {"cycles": 0, "exec_cycles": 0, "bytes": len(frame) + len(reply)}
    engine = dut.engine

    async def host(ctx) -> None:
        for byte in frame:
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(dut.uart_rx, bit)
                await ctx.tick().repeat(divisor)
        # wait until the reply has been framed (its last byte accepted by the sender)
        while not (ctx.get(engine.body.valid) and ctx.get(engine.body.payload.last)):
            await ctx.tick()

    async def count(ctx) -> None:
        executing = False
        while True:
            _, _, accepted, first_byte = await ctx.tick().sample(
                engine.frame.valid & engine.frame.ready, engine.body.valid
            )
            stats["cycles"] += 1
            executing = (executing or accepted) and not first_byte
            stats["exec_cycles"] += executing

    sim = Simulator(dut)
    sim.add_clock(1 / 48e6)
    sim.add_testbench(host)
    sim.add_testbench(count, background=True)
    t = time.perf_counter()
    sim.run()
    stats["seconds"] = time.perf_counter() - t
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=4000)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--divisor", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    contract = Contract()
    rng = random.Random(args.seed)
    big = 1 << (contract.update_width - 3)
    d = [rng.randint(-big, big) for _ in range(args.updates)]

    model = model_rate(contract, args.updates, d)
    core = core_run(contract, args.updates, d)
    core_rate = args.updates / core["seconds"]
    print(f"learning core, {args.updates} updates of distinct synapses (Amaranth simulator):")
    print(
        f"  {core['update_cycles'] / args.updates:.4f} cycles per update (4-cycle drain included)"
    )
    print(
        f"  {core['cycles'] / core['seconds']:,.0f} simulated cycles/s, {core_rate:,.0f} updates/s"
    )
    print(
        f"  bit-exact model: {model:,.0f} updates/s, {model / core_rate:,.0f}x the RTL simulation"
    )

    layout = Layout(contract, 8192, max_block=args.block)
    top = top_run(layout, d[: args.block], args.divisor)
    print(f"whole unit, one UPDATE of {args.block} through the UART (divisor {args.divisor}):")
    print(f"  {top['cycles'] / top['seconds']:,.0f} simulated cycles/s ({top['cycles']:,} cycles)")
    print(
        f"  command engine: {top['exec_cycles']:,} cycles from frame to reply, "
        f"{top['exec_cycles'] / args.block:.2f} per update"
    )
    per_byte = 10 * 16  # 3 Mbaud at 48 MHz
    print(
        f"  for scale: the UART delivers one 3-byte update per {3 * per_byte} cycles at 3 Mbaud "
        f"and 48 MHz"
    )


if __name__ == "__main__":
    main()
