"""The iCEBreaker bitstream's netlist under Icarus at the board's clock and baud, with the
host's baud rate off by a few percent: where the UART stops working.

Builds the unit (``metaplast build``'s code) unless ``--out`` already holds that build, then
runs :func:`metaplast.boards.netlist_sim.session` (INFO, WRITE_HIDDEN, LOAD_LUT, three UPDATE
blocks, READ_HIDDEN, READ_COUNTERS, INFO) through the synthesized netlist once per baud error,
comparing every reply byte and programming strobe with the model.

    .venv/bin/python experiments/board_netlist.py [--synapses 64] [--max-block 64]
        [--errors=-0.03,-0.02,0,0.02,0.03] [--out build/netlist-icebreaker]
        [--memory auto|block|spram] [--starts 0,16376,32736]
        [--clock-mhz 48 [--target-mhz F]]

``--clock-mhz`` builds the unit on the PLL (12 Mbaud at 48 MHz, the build's default rate) and
runs it with an ideal clock in the PLL's place (:mod:`metaplast.boards.netlist_sim`).
``--target-mhz`` is the build's timing target (default: the clock): the netlist Yosys writes
does not depend on it, so a lower one simulates a unit whose routing misses the clock.

``--starts`` runs the session once from each of these synapses, one after the other (with
``--memory spram`` and more than 16,384 synapses: both SPRAM banks and the boundary between
them, through Yosys' model of ``SB_SPRAM256KA``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaplast.boards.build import build, memory_for
from metaplast.boards.netlist_sim import session, simulate_netlist
from metaplast.boards.platforms import BOARDS
from metaplast.contract import Contract
from metaplast.protocol import Layout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synapses", type=int, default=64)
    p.add_argument("--max-block", type=int, default=64)
    p.add_argument("--errors", default="-0.03,-0.02,0,0.02,0.03")
    p.add_argument("--out", type=Path, default=Path("build/netlist-icebreaker"))
    p.add_argument("--memory", choices=("auto", "block", "spram"), default="auto")
    p.add_argument("--starts", default="0", help="first synapse of each session")
    p.add_argument("--clock-mhz", type=float, help="the unit's clock from the PLL")
    p.add_argument("--target-mhz", type=float, help="the build's timing target")
    args = p.parse_args()
    board = BOARDS["icebreaker"]
    layout = Layout(Contract(), args.synapses, max_block=args.max_block)
    path = args.out / "report.json"
    report = json.loads(path.read_text()) if path.exists() else None
    memory = memory_for(board, layout, args.memory)
    clock_mhz = args.clock_mhz or board.clock_hz / 1e6
    if report is None or (
        report["synapses"],
        report.get("memory", "block"),
        report.get("clock_mhz"),
    ) != (args.synapses, memory, clock_mhz):
        report = build(
            board,
            layout,
            args.out,
            memory=memory,
            clock_mhz=args.clock_mhz,
            target_mhz=args.target_mhz,
        )
    frames = [f for start in args.starts.split(",") for f in session(layout, 0, int(start))]
    print(
        f"netlist {report['netlist']}: {report['luts']} LUTs, clock {report['clock_mhz']:g} MHz "
        f"(Fmax {report['fmax_mhz']} MHz), {report['baud']} baud (divisor {report['baud_divisor']})"
    )
    print(
        "| host baud error | reply bytes (netlist / model) | strobes (netlist / model) | "
        "match | simulated | wall |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for error in (float(e) for e in args.errors.split(",")):
        r = simulate_netlist(
            board,
            layout,
            report,
            args.out / f"netsim{error:+.3f}",
            frames=frames,
            baud_error=error,
        )
        print(
            f"| {error:+.1%} | {len(r.replies)} / {len(r.expected)} | {len(r.strobes)} / "
            f"{len(r.expected_strobes)} | {'yes' if r.ok else 'NO'} | {r.sim_us / 1000:.2f} ms "
            f"| {r.wall_seconds:.0f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
