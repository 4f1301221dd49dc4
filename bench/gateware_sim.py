"""How fast the gateware simulates, and how many clock cycles one synapse update costs.

In one run: the bit-exact model applies a block of updates (the baseline), the learning core
(update pipeline and meta LUT) runs the same updates under the Amaranth simulator, and the
whole unit receives one UPDATE frame bit by bit on its UART pin, under the Amaranth simulator
and, as generated Verilog with a plain Verilog testbench, under Icarus Verilog (whose reply is
checked against the model). Reported: simulated cycles per second (to budget tests), the
speed ratios, cycles per update in the pipeline (target 1.0) and in the command engine.

    .venv/bin/python bench/gateware_sim.py [--updates 4000] [--block 256] [--memory spram]

``--memory spram`` measures the single-port configuration (the iCE40 UP's SPRAM; target 2.0
cycles per update) instead of the dual-port one.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from amaranth.sim import Simulator

from metaplast.contract import Contract
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.gateware.synapse_core import SynapseCore
from metaplast.gateware.top import DigitalUnitTop, verilog
from metaplast.protocol import Layout, Op, encode_frame

TESTBENCH = """
`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1, uart_rx = 1;
  wire uart_tx;
  metaplast_unit dut(.clk(clk), .rst(rst), .uart_rx(uart_rx), .uart_tx(uart_tx),
                     .prog_busy(1'b0), .prog_addr(), .prog_device(), .prog_level(),
                     .prog_strobe());
  always #10 clk = ~clk;
  reg [7:0] frame [0:{n}-1];
  integer i, b, got, fd;
  reg [7:0] byte_in;
  initial begin
    $readmemh("frame.hex", frame);
    fd = $fopen("reply.hex", "w");
    repeat (5) @(posedge clk);
    rst = 0;
    for (i = 0; i < {n}; i = i + 1) begin
      uart_rx = 0; repeat ({div}) @(posedge clk);
      for (b = 0; b < 8; b = b + 1) begin uart_rx = frame[i][b]; repeat ({div}) @(posedge clk); end
      uart_rx = 1; repeat ({div}) @(posedge clk);
    end
  end
  initial begin  // decode uart_tx until the reply's closing END
    got = 0;
    forever begin
      @(negedge uart_tx); repeat ({div} / 2) @(posedge clk);
      for (b = 0; b < 8; b = b + 1) begin repeat ({div}) @(posedge clk); byte_in[b] = uart_tx; end
      repeat ({div}) @(posedge clk);
      $fwrite(fd, "%02x\\n", byte_in);
      got = got + 1;
      if (got > 1 && byte_in == 8'hc0) begin
        $fclose(fd); $display("finished at %0d ns", $time); $finish;
      end
    end
  end
endmodule
"""


def model_rate(contract: Contract, synapses: int, d: list[int], repeats: int = 20) -> float:
    unit = DigitalUnit(contract, synapses)
    unit.load_lut(3.0)
    block = torch.tensor(d)
    t = time.perf_counter()
    for i in range(repeats):
        unit.update(block, seed=i)
    return repeats * len(d) / (time.perf_counter() - t)


def timed_run(dut: object, main: object, watch: object) -> float:
    """Wall seconds of a simulation of ``dut`` (48 MHz clock) with a watching testbench."""
    sim = Simulator(dut)
    sim.add_clock(1 / 48e6)
    sim.add_testbench(main)
    sim.add_testbench(watch, background=True)
    t = time.perf_counter()
    sim.run()
    return time.perf_counter() - t


def core_run(
    contract: Contract,
    synapses: int,
    d: list[int],
    *,
    same_synapse: bool = False,
    single_port: bool = False,
) -> dict[str, float]:
    """Stream ``d`` into the core one update per offered cycle; count cycles and wall time.

    The updates go to synapses 0, 1, 2, ... or, with ``same_synapse``, all to synapse 0
    (the read-after-write hazard).
    """
    dut = SynapseCore(contract, synapses, single_port=single_port)
    stats = {"cycles": 0, "update_cycles": 0}

    async def drive(ctx) -> None:
        ctx.set(dut.events.ready, 1)
        while ctx.get(dut.initializing):  # a single-port core clears its memories first
            await ctx.tick()
        for addr, v in enumerate(d):
            ctx.set(dut.update.valid, 1)
            target = 0 if same_synapse else addr
            ctx.set(dut.update.payload, {"addr": target, "d": v, "seed": 1})
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

    stats["seconds"] = timed_run(dut, drive, count)
    return stats


def top_run(
    layout: Layout, d: list[int], divisor: int, *, single_port: bool = False
) -> dict[str, float]:
    """One UPDATE frame through the UART pin; the engine's cycles from frame to reply."""
    dut = DigitalUnitTop(layout, baud_divisor=divisor, single_port=single_port)
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

    stats["seconds"] = timed_run(dut, host, count)
    return stats


def icarus_run(
    layout: Layout, d: list[int], divisor: int, *, single_port: bool = False
) -> dict[str, float] | None:
    """The same frame into the generated Verilog under Icarus; ``None`` without iverilog."""
    if shutil.which("iverilog") is None:
        return None
    frame = encode_frame(Op.UPDATE, 1, layout.update(0, 1, d))
    expected = CommandModel(layout, baud_divisor=divisor).feed(frame)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        top = DigitalUnitTop(layout, baud_divisor=divisor, single_port=single_port)
        (work / "unit.v").write_text(verilog(top))
        (work / "tb.v").write_text(TESTBENCH.format(n=len(frame), div=divisor))
        (work / "frame.hex").write_text("".join(f"{b:02x}\n" for b in frame))
        # -g2005: under -g2012 Yosys' always @* blocks do not run at time 0 (stay X)
        subprocess.run(
            ["iverilog", "-g2005", "-o", "sim.vvp", "unit.v", "tb.v"], cwd=work, check=True
        )
        t = time.perf_counter()
        run = subprocess.run(
            ["vvp", "-n", "sim.vvp"], cwd=work, check=True, capture_output=True, text=True
        )
        seconds = time.perf_counter() - t
        reply = bytes(int(line, 16) for line in (work / "reply.hex").read_text().split())
    if reply != expected:
        raise AssertionError(f"Icarus replied {reply.hex()}, the model {expected.hex()}")
    finished = re.search(r"finished at (\d+) ns", run.stdout)  # the clock period is 20 ns
    if finished is None:
        raise AssertionError(f"no $finish time in the simulator's output: {run.stdout!r}")
    return {"seconds": seconds, "cycles": int(finished.group(1)) / 20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=4000)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--divisor", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", choices=("block", "spram"), default="block")
    args = ap.parse_args()
    single = args.memory == "spram"
    torch.set_num_threads(1)
    contract = Contract()
    rng = random.Random(args.seed)
    big = 1 << (contract.update_width - 3)
    d = [rng.randint(-big, big) for _ in range(args.updates)]

    model = model_rate(contract, args.updates, d)
    core = core_run(contract, args.updates, d, single_port=single)
    core_rate = args.updates / core["seconds"]
    print(
        f"learning core ({args.memory}), {args.updates} updates of distinct synapses "
        "(Amaranth simulator):"
    )
    print(
        f"  {core['update_cycles']:,} cycles, {core['update_cycles'] / args.updates:.4f} per "
        "update (the drain included)"
    )
    print(
        f"  {core['cycles'] / core['seconds']:,.0f} simulated cycles/s, {core_rate:,.0f} updates/s"
    )
    same = core_run(contract, 8, d[:200], same_synapse=True, single_port=single)
    print(f"  {same['update_cycles'] / 200:.2f} cycles per update, all to one synapse")
    print(
        f"  bit-exact model: {model:,.0f} updates/s, {model / core_rate:,.0f}x the RTL simulation"
    )

    layout = Layout(contract, 8192, max_block=args.block)
    top = top_run(layout, d[: args.block], args.divisor, single_port=single)
    print(f"whole unit, one UPDATE of {args.block} through the UART (divisor {args.divisor}):")
    print(f"  {top['cycles'] / top['seconds']:,.0f} simulated cycles/s ({top['cycles']:,} cycles)")
    print(
        f"  command engine: {top['exec_cycles']:,} cycles from frame to reply, "
        f"{top['exec_cycles'] / args.block:.2f} per update"
    )
    icarus = icarus_run(layout, d[: args.block], args.divisor, single_port=single)
    if icarus is None:
        print("  Icarus Verilog: iverilog not found")
    else:
        rate = icarus["cycles"] / icarus["seconds"]
        print(
            f"  the same under Icarus Verilog: {rate:,.0f} simulated cycles/s "
            f"({icarus['cycles']:,.0f} cycles) "
            f"({rate / (top['cycles'] / top['seconds']):.1f}x the Amaranth simulator; "
            "reply identical to the model's)"
        )
    per_byte = 10 * 16  # 3 Mbaud at 48 MHz
    print(
        f"  for scale: the UART delivers one 3-byte update per {3 * per_byte} cycles at 3 Mbaud "
        f"and 48 MHz"
    )


if __name__ == "__main__":
    main()
