"""``gateware`` and ``build``: the digital unit as Verilog, and as a board's bitstream."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from metaplast.cli.options import (
    add_crossbar_tile,
    add_memory_option,
    add_prog_depth,
    add_unit_options,
    layout_from,
)
from metaplast.vocabulary import BUILD_MARGIN, BUILD_SEED, BUILD_SEEDS, UNIT_BAUD, UNIT_MEMORIES


def add_gateware(sub: Any) -> None:
    p = sub.add_parser(
        "gateware",
        help="write the digital unit's Verilog",
        description="Write the Verilog of the digital unit's top level (ports clk, rst, uart_rx, "
        "uart_tx, prog_addr, prog_device, prog_level, prog_strobe, prog_busy, and with "
        "--crossbar-tile the command channel xbar__*) for any simulator or synthesis flow, with "
        "a JSON of its parameters beside it.",
    )
    p.add_argument("--out", required=True, help="Verilog file to write (FILE.v)")
    add_unit_options(p)
    add_crossbar_tile(p, "as the ports xbar__* (docs/gateware.md)")
    baud = p.add_mutually_exclusive_group()
    baud.add_argument("--baud-divisor", type=int, default=None, help="clocks per UART bit")
    baud.add_argument(
        "--baud", type=int, default=None, help=f"UART baud rate (default {UNIT_BAUD})"
    )
    add_prog_depth(p)
    p.add_argument("--name", default="metaplast_unit", help="Verilog module name")
    add_memory_option(p, "behavioural here, a board build maps them to the iCE40 UP's SPRAM")


def run_gateware(args: argparse.Namespace) -> int:
    import json

    from metaplast.errors import ConfigError
    from metaplast.gateware.top import DigitalUnitTop, verilog
    from metaplast.gateware.uart import divisor_for

    try:
        layout = layout_from(args)
        divisor = args.baud_divisor or divisor_for(args.clock_hz, args.baud or UNIT_BAUD)
        top = DigitalUnitTop(
            layout,
            clock_hz=args.clock_hz,
            baud_divisor=divisor,
            prog_depth=args.prog_depth,
            crossbar=args.crossbar_tile,
            single_port=args.memory == "spram",
        )
        text = verilog(top, name=args.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    params = {
        "module": args.name,
        "ports": ["clk", "rst", *top.signature.members],
        "prog_addr_bits": top.addr_bits,
        "receive_buffer": top.receiver.bank_size,
        "crossbar_tile": args.crossbar_tile,
        "memory": args.memory,
        "info": top.engine.info.to_dict(),
        "contract": layout.contract.describe(),
    }
    out.with_suffix(".json").write_text(json.dumps(params, indent=2) + "\n")
    port = (
        "" if args.crossbar_tile is None else f", crossbar port for tiles of {args.crossbar_tile}"
    )
    print(
        f"{out}: {args.synapses} synapses{port}, UART divisor {divisor} "
        f"({args.clock_hz / divisor:.0f} baud at {args.clock_hz / 1e6:g} MHz)"
    )
    return 0


def add_build(sub: Any) -> None:
    from metaplast.boards.platforms import BOARDS

    p = sub.add_parser(
        "build",
        help="build the digital unit's bitstream for a lab board",
        description="Build the unit for a board with the open toolchain (Yosys and nextpnr "
        "from the YoWASP packages, or $YOSYS, $NEXTPNR_ICE40, $ICEPACK, $NEXTPNR_ECP5, "
        "$ECPPACK): the bitstream and report.json (resources, Fmax against the target clock) "
        "in --out. A design that does not fit or misses the target is an error and leaves no "
        "bitstream. arty-a7 writes the Vivado project only. docs/bench.md has the pin-outs.",
    )
    p.add_argument("--board", required=True, choices=tuple(BOARDS), help="the board")
    p.add_argument("--out", default=None, help="output folder (default build/<board>)")
    add_unit_options(p, clock=False)
    add_crossbar_tile(p, "on the board's crossbar link pins (docs/bench.md, 5b)")
    p.add_argument(
        "--target-mhz",
        type=float,
        default=None,
        help="the clock the router must meet (default the board's oscillator; ask for more "
        "to keep a margin)",
    )
    p.add_argument(
        "--clock-mhz",
        type=float,
        default=None,
        help="run the unit from the FPGA's PLL at this clock (default: the oscillator, no PLL); "
        "refused before any tool runs if the PLL cannot make it to within 0.1 %%",
    )
    p.add_argument(
        "--baud",
        type=int,
        default=None,
        help="UART rate (default: the fastest the board's USB-serial chip makes that the "
        "clock divides exactly: 12 Mbaud on the iCEBreaker at 48 MHz)",
    )
    add_prog_depth(p)
    p.add_argument(
        "--memory",
        choices=UNIT_MEMORIES,
        default="auto",
        help="hidden weights and counters in block RAM (one update per clock) or in the "
        "iCE40 UP's SPRAM (one update per two cycles); auto: SPRAM on the iCEBreaker above "
        "the 2,304 synapses its block RAM holds",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=BUILD_SEED,
        help=f"nextpnr's first placer seed (default {BUILD_SEED})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=BUILD_SEEDS,
        help="place with seeds SEED, SEED+1, ... at most this many times until one is --margin "
        f"above the target (default {BUILD_SEEDS}; synthesis runs once); report.json names the "
        "seed kept and every placement's Fmax",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=BUILD_MARGIN,
        metavar="PERCENT",
        help="how far above the target the seed sweep looks for a placement; if none is, the "
        f"fastest that meets the target is kept (default {BUILD_MARGIN:g})",
    )


def run_build(args: argparse.Namespace) -> int:
    from metaplast.boards.build import BuildError, build
    from metaplast.boards.platforms import BOARDS
    from metaplast.errors import ConfigError

    board = BOARDS[args.board]
    out = Path(args.out or Path("build") / args.board)
    try:
        layout = layout_from(args)
        report = build(
            board,
            layout,
            out,
            target_mhz=args.target_mhz,
            clock_mhz=args.clock_mhz,
            baud=args.baud,
            prog_depth=args.prog_depth,
            crossbar_tile=args.crossbar_tile,
            memory=args.memory,
            seed=args.seed,
            seeds=args.seeds,
            margin=args.margin,
        )
    except (ValueError, BuildError) as exc:
        raise ConfigError(str(exc)) from exc
    if report["bitstream"] is None:
        print(
            f"{board.name}: Vivado project for {layout.synapses} synapses in {report['project']}; "
            f"Vivado is needed to finish it: {report['finish']}"
        )
        return 0
    link = report["xbar_link"]
    port = "" if link is None else f", crossbar link on {', '.join(link['pins'].values())}"
    spram = f", {report['spram']} SPRAM" if report["spram"] else ""
    print(
        f"{report['bitstream']}: {layout.synapses} synapses{port}, {report['luts']} LUTs, "
        f"{report['ffs']} FFs, {report['bram']}/{report['bram_available']} BRAM{spram}, "
        f"Fmax {report['fmax_mhz']:.1f} MHz (target {report['target_mhz']:g}, seed "
        f"{report['seed']}), "
        f"{report['baud']} baud, {report['build_seconds']:.0f} s\nload it: {report['program']}"
    )
    return 0
