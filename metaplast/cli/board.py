"""``board-sim``, ``info`` and ``link-faults``: simulated boards, a board's parameters, and a
faulty line in front of a port."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from metaplast.cli.options import (
    add_array_options,
    add_baudrate_option,
    add_memory_option,
    add_unit_options,
    array_from,
    layout_from,
)
from metaplast.vocabulary import UNIT_BAUD


def add_board(sub: Any) -> None:
    p = sub.add_parser(
        "board-sim",
        help="a simulated board on a virtual serial port",
        description="Serve the digital unit's protocol on a pty (or a TCP port for pyserial's "
        "socket://). Prints the port as the first line on stdout and serves until stopped.",
    )
    p.add_argument(
        "--backend",
        choices=("model", "rtl", "verilog"),
        default="model",
        help="model: the bit-exact model (fast); rtl: the gateware under the Amaranth "
        "simulator, UART pins included (a few hundred bytes per second); verilog: the "
        "generated Verilog under Verilator, UART pins included (compiled once, then cached)",
    )
    p.add_argument("--baud", type=int, default=UNIT_BAUD, help="simulated baud rate (0: no limit)")
    p.add_argument("--listen", metavar="HOST:PORT", default=None, help="TCP instead of a pty")
    add_unit_options(p)
    add_memory_option(p, "the rtl and verilog backends' gateware; the model's replies are the same")
    add_array_options(p)

    p = sub.add_parser("info", help="ask a board (or simulated board) for its parameters")
    p.add_argument("--port", required=True, help="serial port, pty or socket://host:port")
    add_baudrate_option(p)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per attempt")


def add_link_faults(sub: Any) -> None:
    p = sub.add_parser(
        "link-faults",
        help="a faulty line in front of a board: corrupts, drops, duplicates, delays bytes",
        description="Open a new pty that forwards to --port with faults in both directions. "
        "Prints the new port as the first line on stdout and forwards until stopped.",
    )
    p.add_argument("--port", required=True, help="the board's port (or board-sim's)")
    p.add_argument("--byte-error-rate", type=float, default=0.0, help="bytes with a flipped bit")
    p.add_argument("--drop-rate", type=float, default=0.0, help="bytes lost")
    p.add_argument("--duplicate-rate", type=float, default=0.0, help="bytes sent twice")
    p.add_argument("--delay-ms", type=float, default=0.0, help="latency added to every chunk")
    p.add_argument("--seed", type=int, default=0, help="seed of the injected faults")
    p.add_argument("--baudrate", type=int, default=UNIT_BAUD, help="the UART rate to the port")


def run_link_faults(args: argparse.Namespace) -> int:
    import signal

    from metaplast.errors import ConfigError
    from metaplast.firmware_sim.board.faults import FaultInjector, Faults, serve_proxy

    try:
        faults = Faults(
            args.byte_error_rate,
            args.drop_rate,
            args.duplicate_rate,
            args.delay_ms / 1000,
            args.seed,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    def announce(port: str) -> None:
        print(port, flush=True)

    to_board, to_host = FaultInjector(faults, 0), FaultInjector(faults, 1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve_proxy(args.port, to_board, to_host, announce, baudrate=args.baudrate)
    except KeyboardInterrupt:
        pass
    finally:
        for name, f in (("to the board", to_board), ("to the host", to_host)):
            print(
                f"{name}: {f.corrupted} bytes corrupted, {f.dropped} dropped, "
                f"{f.duplicated} duplicated",
                file=sys.stderr,
                flush=True,
            )
    return 0


def run_board_sim(args: argparse.Namespace) -> int:
    import signal

    from metaplast.errors import ConfigError
    from metaplast.firmware_sim.board.serial_port import serve_pty, serve_tcp
    from metaplast.firmware_sim.unit.command_model import CommandModel
    from metaplast.gateware.uart import divisor_for

    try:
        layout = layout_from(args)
        divisor = divisor_for(args.clock_hz, args.baud) if args.baud else 0
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    array = array_from(args, layout.contract)
    model = CommandModel(layout, clock_hz=args.clock_hz, baud_divisor=divisor, array=array)
    if args.backend == "model":
        from metaplast import fused_update

        fused_update.warm_up(layout.contract)

    def announce(port: str) -> None:
        print(port, flush=True)
        print(
            f"simulated board ({args.backend}): {args.synapses} synapses, "
            f"{array.device.kind + ' array' if array else 'no array'}, "
            f"{args.baud or 'unlimited'} baud; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.backend == "rtl":
            from metaplast.firmware_sim.board.rtl_board import serve_rtl_pty

            if args.listen:
                raise ConfigError("--listen serves the model backend only")
            serve_rtl_pty(
                layout, announce, baud=args.baud, array=array, single_port=args.memory == "spram"
            )
        elif args.backend == "verilog":
            from metaplast.firmware_sim.board.verilog_board import serve_verilog_pty

            if args.listen:
                raise ConfigError("--listen serves the model backend only")
            serve_verilog_pty(
                layout, announce, baud=args.baud, array=array, single_port=args.memory == "spram"
            )
        elif args.listen:
            host, _, port = args.listen.rpartition(":")
            serve_tcp(model, args.baud, host or "127.0.0.1", int(port), announce)
        else:
            serve_pty(model, args.baud, announce)
    except KeyboardInterrupt:
        pass
    return 0


def run_info(args: argparse.Namespace) -> int:

    from metaplast.host.link import Link, LinkError

    try:
        with Link.open(args.port, baudrate=args.baudrate, timeout=args.timeout) as link:
            info = link.read_info()
            baudrate = link.port.baudrate
    except LinkError as exc:
        print(f"metaplast info: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"port": args.port, "baudrate": baudrate, **info.to_dict()}))
    return 0
