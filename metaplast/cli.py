"""The ``metaplast`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaplast.rule import uniform_levels

if TYPE_CHECKING:
    from metaplast.host.config import SessionConfig


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None


def _levels(text: str) -> tuple[float, ...] | str:
    """``uniform:N:LOW:HIGH``, an explicit comma-separated list of levels, or ``device``."""
    if text == "device":
        return text
    try:
        if text.startswith("uniform:"):
            _, n, low, high = text.split(":")
            return uniform_levels(int(n), float(low), float(high))
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--levels: expected uniform:N:LOW:HIGH or a comma-separated list ({exc})"
        ) from None


def _tasks(text: str) -> tuple[str, ...]:
    """Comma-separated task names; ``permuted-mnist:N`` stands for ``pmnist-0 .. pmnist-N-1``."""
    from metaplast.host.datasets import PermutedTask

    if text.startswith("permuted-mnist:"):
        count = text.split(":", 1)[1]
        try:
            return PermutedTask.sequence(int(count))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--tasks {text}: permuted-mnist:N needs a task count N >= 1"
            ) from None
    return tuple(text.split(","))


# option name -> (config field, argparse kwargs); every default is None so that only the
# options given on the command line override a preset or a resumed run's stored config
_SESSION_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--tasks": (
        "tasks",
        {
            "type": _tasks,
            "help": "mnist,fashion-mnist, or permuted-mnist:N (N permutations of MNIST)",
        },
    ),
    "--epochs": ("epochs", {"type": _ints, "help": "epochs per task, e.g. 50,50"}),
    "--pretrain-epochs": ("pretrain_epochs", {"type": int, "help": "first epochs with m* = 0"}),
    "--mstar": ("mstar", {"type": float, "help": "m* after pre-training"}),
    "--hidden": ("hidden", {"type": _ints, "help": "hidden layer sizes, e.g. 512,512"}),
    "--seed": ("seed", {"type": int}),
    "--arithmetic": (
        "arithmetic",
        {"choices": ("float", "fixed"), "help": "float rule or the gateware's fixed point"},
    ),
    "--lr": ("lr", {"type": float}),
    "--batch-size": ("batch_size", {"type": int}),
    "--activation": (
        "activation",
        {
            "help": "sign (default), hardtanh:K or relu:K (K levels in [-1, 1] or [0, 1]), "
            "hardtanh or relu (full precision)"
        },
    ),
    "--init-std": ("init_std", {"type": float, "help": "std of the initial hidden weights"}),
    "--init-mean": ("init_mean", {"type": float, "help": "mean of the initial hidden weights"}),
    "--bn": ("bn", {"help": "per-task (each task tested with its batch norm) or shared"}),
    "--bn-stats": (
        "bn_stats",
        {
            "choices": ("batch", "running"),
            "help": "batch (default: every batch, test batches too, normalized with its own "
            "statistics, as the reference code) or running (the running averages)",
        },
    ),
    "--inputs": (
        "inputs",
        {"choices": ("signed", "unsigned"), "help": "pixels as read voltages in [-1, 1] or [0, 1]"},
    ),
    "--test-batch-size": (
        "test_batch_size",
        {"type": int, "help": "test images per batch (batch statistics are a test batch's)"},
    ),
    "--permutation-seed": (
        "permutation_seed",
        {"type": int, "help": "seed of the permuted-MNIST tasks' permutations"},
    ),
    "--levels": (
        "levels",
        {
            "type": _levels,
            "help": "uniform:17:-1.5:1.5, a list, or device (the mean conductances of a "
            "multi-level --crossbar, scaled to the same largest level)",
        },
    ),
    "--hidden-width": ("hidden_width", {"type": int, "help": "hidden-weight bits (fixed)"}),
    "--guard-bits": ("guard_bits", {"type": int, "help": "update bits below the hidden LSB"}),
    "--lut-entries": ("lut_entries", {"type": int, "help": "meta LUT entries (power of two)"}),
    "--meta-bits": ("meta_bits", {"type": int, "help": "fraction bits of M"}),
    "--rounding": ("rounding", {"help": "nearest or stochastic"}),
    "--train-limit": ("train_limit", {"type": int, "help": "use the first N training images"}),
    "--crossbar": (
        "crossbar",
        {
            "choices": ("ideal", "hfox-1t1r", "tio2-passive"),
            "help": "where the quantized weights live: exact (ideal) or a device model",
        },
    ),
    "--hardware-aware": (
        "hardware_aware",
        {
            "choices": ("hfox-1t1r", "tio2-passive"),
            "help": "train for an ex-situ transfer onto this device model: every batch runs "
            "through the weights one simulated transfer leaves (metaplast transfer --from)",
        },
    ),
    "--device-file": (
        "device_file",
        {"help": "a device file (JSON) that replaces the device model's shipped one"},
    ),
    "--stuck-hrs": ("stuck_hrs", {"type": float, "help": "fraction of devices stuck in HRS"}),
    "--stuck-lrs": ("stuck_lrs", {"type": float, "help": "fraction of devices stuck in LRS"}),
    "--endurance": (
        "endurance",
        {"type": int, "help": "programming operations a device survives (then stuck)"},
    ),
    "--read-noise": (
        "read_noise",
        {"type": float, "help": "relative std of every conductance read"},
    ),
}


def _add_session_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains: a preset, its overrides, the data."""
    p.add_argument(
        "--preset",
        choices=("quick", "paper"),
        default=None,
        help="quick (default, a few minutes) or paper (50+50 epochs, 784-512-512-10)",
    )
    for flag, (_, kwargs) in _SESSION_OPTIONS.items():
        p.add_argument(flag, default=None, **kwargs)
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with mnist/ and fashion-mnist/ "
        "IDX files (default: $METAPLAST_DATA, else download)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per session; results depend on it (float summation order), so "
        "give it to reproduce a run exactly (default: torch's choice; sweep: cores / jobs)",
    )


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="run a metaplastic training session",
        description="Train a metaplastic QNN on a sequence of tasks.",
    )
    _add_session_options(p)
    p.add_argument("--out", default=None, help="run directory (default runs/<preset>-seed<S>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--port",
        default=None,
        help="train on a board (or board-sim) behind this serial port, pty or socket:// URL",
    )
    p.add_argument(
        "--link-layers",
        type=_ints,
        default=None,
        help="with --port: the layers whose synapses live on the board, e.g. 0 or 0,2 "
        "(default all; the others stay in the in-process model, same arithmetic)",
    )
    p.add_argument("--baudrate", type=int, default=3_000_000, help="with --port: the UART rate")
    p.add_argument("--link-timeout", type=float, default=2.0, help="seconds per attempt")


def _session_config(args: argparse.Namespace, out: Path | None) -> SessionConfig:
    """Preset (or, on resume, the stored config) overridden by the options given."""
    from metaplast.host.config import PRESETS, SessionConfig
    from metaplast.host.rundir import RunDir

    given = {
        field: getattr(args, flag[2:].replace("-", "_"))
        for flag, (field, _) in _SESSION_OPTIONS.items()
    }
    given = {k: v for k, v in given.items() if v is not None}
    if (
        getattr(args, "resume", False)
        and out
        and (out / "config.json").exists()
        and args.preset is None
    ):
        base = RunDir.stored_config(out).to_dict()
    else:
        base = SessionConfig(**PRESETS[args.preset or "quick"]).to_dict()
    merged = {**base, **given}
    if merged["levels"] == "device":
        merged["levels"] = _device_levels(merged, base["levels"])
    return SessionConfig.from_dict(merged)


def _device_levels(config: dict[str, Any], default: Sequence[float]) -> tuple[float, ...]:
    """The weight levels of a multi-level device's mean conductances (``--levels device``)."""
    from metaplast.firmware_sim.crossbar.devices import DeviceFileError, HfOx1T1R, load_device
    from metaplast.host.config import ConfigError

    try:
        device = load_device(config["crossbar"], config.get("device_file"))
    except DeviceFileError as exc:
        raise ConfigError(f"--levels device: {exc}") from exc
    if not isinstance(device, HfOx1T1R):
        name = config["crossbar"]
        raise ConfigError(f"--levels device needs a multi-level --crossbar, not {name!r}")
    return device.weight_levels(max(abs(v) for v in default))


def _report(rec: dict[str, Any]) -> None:
    accs = "  ".join(f"{t} {100 * a:.2f} %" for t, a in rec["test_acc"].items())
    worn = f", {rec['worn_out_devices']} devices worn out" if rec.get("worn_out_devices") else ""
    print(
        f"epoch {rec['epoch']:3d} [{rec['task']}, m*={rec['mstar']:g}] {accs}  "
        f"({rec['level_changes']} level changes{worn}, {rec['seconds']:.1f} s)",
        flush=True,
    )


def _train(args: argparse.Namespace) -> int:
    import torch

    from metaplast.host.session import train

    if args.threads:
        torch.set_num_threads(args.threads)

    seed = args.seed if args.seed is not None else 0
    out = Path(args.out) if args.out else Path("runs") / f"{args.preset or 'quick'}-seed{seed}"
    config = _session_config(args, out)
    link = None
    if args.port:
        from metaplast.host.link import Link

        link = Link.open(args.port, baudrate=args.baudrate, timeout=args.link_timeout)
    try:
        metrics = train(
            config,
            out,
            args.data_dir,
            resume=args.resume,
            progress=not args.no_progress,
            on_epoch=_report,
            link=link,
            link_layers=args.link_layers,
        )
    finally:
        if link is not None:
            link.close()
            s = link.stats
            print(
                f"link {args.port}: {s.commands} commands, {s.retries} retries "
                f"{s.retry_reasons or ''}, {s.bytes_sent:,} bytes sent, "
                f"{s.bytes_received:,} received"
            )
    final = metrics["epochs"][-1]["test_acc"]
    print("final test accuracy: " + ", ".join(f"{t} {100 * a:.2f} %" for t, a in final.items()))
    prog = metrics["programming"]
    print(
        f"programming operations per device: mean {prog['mean']:.1f}, max {prog['max']}, "
        f"{100 * prog['frac_under_25']:.2f} % under 25, {100 * prog['frac_over_50']:.2f} % over 50"
    )
    print(f"run directory: {out}")
    return 0


def _add_sweep(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="train one session per point of a parameter grid",
        description="Vary session options over a grid; e.g. the m* sweep of "
        "Fig. 2a: metaplast sweep --vary mstar=0,1,2,3,4,5 --out DIR",
    )
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="FIELD=V1,V2,...",
        help="a config field and its values; tuple values are separated by '/', "
        "e.g. hidden=256,256/512,512 (repeatable: the grid is the product)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        help="repetitions: the seeds of every grid point, e.g. 0-14 or 0,3,7 "
        "(metaplast summary --over-seeds gives mean and std per point)",
    )
    _add_session_options(p)
    p.add_argument("--out", required=True, help="sweep directory (one run directory per point)")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: --jobs sessions at a time on this machine; ray: every session a task "
        "of a Ray cluster (pip install 'metaplast[cluster]'; docs/cluster.md)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --executor ray: the cluster's HOST:PORT, or auto for the one running "
        "here (default: start a local one)",
    )
    p.add_argument("--jobs", type=int, default=1, help="local: sessions trained in parallel")


def _parse_vary(specs: list[str]) -> dict[str, list[Any]]:
    from metaplast.host.config import ConfigError

    converters = {field: kw.get("type", str) for field, kw in _SESSION_OPTIONS.values()}
    vary: dict[str, list[Any]] = {}
    for spec in specs:
        field, sep, values = spec.partition("=")
        field = field.strip().replace("-", "_")
        if not sep or not values:
            raise ConfigError(f"--vary {spec!r}: expected FIELD=V1,V2,...")
        if field not in converters:
            raise ConfigError(f"--vary: unknown field {field!r}; known: {sorted(converters)}")
        parts = values.split("/") if "/" in values or field in TUPLE_FIELDS else values.split(",")
        try:
            vary[field] = [converters[field](v) for v in parts]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"--vary {field}: {exc}") from exc
    return vary


TUPLE_FIELDS = ("tasks", "epochs", "hidden", "levels")


def _sweep(args: argparse.Namespace) -> int:
    from metaplast.host.config import ConfigError
    from metaplast.host.sweep import exit_status, markdown_table, parse_seeds, run_sweep

    config = _session_config(args, None)
    vary = _parse_vary(args.vary)
    if args.seeds is not None:
        if "seed" in vary or args.seed is not None:
            raise ConfigError("--seeds: give the seeds once (not also --seed or --vary seed=)")
        vary["seed"] = parse_seeds(args.seeds)
    if not vary:
        raise ConfigError("give at least one --vary FIELD=V1,V2,... or --seeds")
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address is for --executor ray")
    rows = run_sweep(
        config,
        vary,
        args.out,
        args.data_dir,
        jobs=args.jobs,
        threads=args.threads,
        executor=args.executor,
        address=args.address,
    )
    print(markdown_table([r for r in rows if "error" not in r], config.tasks), end="")
    print(f"sweep directory: {args.out}")
    return exit_status(rows)


def _summary(args: argparse.Namespace) -> int:
    from metaplast.host.config import ConfigError
    from metaplast.host.summary import seed_plot, seed_table, summary_table

    paths = [Path(p) for p in args.runs]
    if args.plot and not args.over_seeds:
        raise ConfigError("--plot draws the --over-seeds table: give both")
    print((seed_table if args.over_seeds else summary_table)(paths), end="")
    if args.plot:
        seed_plot(paths, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


_CONTRACT_OPTIONS = ("--levels", "--hidden-width", "--guard-bits", "--lut-entries", "--meta-bits")


def _add_unit_options(p: argparse.ArgumentParser, *, clock: bool = True) -> None:
    """The digital unit's parameters: the same for its Verilog, a simulated and a real board.

    A board build takes its clock from the board's oscillator (``clock=False``).
    """
    p.add_argument("--synapses", type=int, default=8192, help="hidden-weight memory depth")
    p.add_argument("--max-block", type=int, default=256, help="synapses per block command")
    p.add_argument("--counter-width", type=int, default=16, help="bits of each change counter")
    if clock:
        p.add_argument("--clock-hz", type=int, default=48_000_000, help="clock (reported by INFO)")
    for flag in _CONTRACT_OPTIONS:
        _, kwargs = _SESSION_OPTIONS[flag]
        p.add_argument(flag, default=None, **kwargs)
    p.add_argument("--rounding", choices=("nearest", "stochastic"), default=None)


def _add_gateware(sub: Any) -> None:
    p = sub.add_parser(
        "gateware",
        help="write the digital unit's Verilog",
        description="Write the Verilog of the digital unit's top level (ports clk, rst, uart_rx, "
        "uart_tx, prog_addr, prog_device, prog_level, prog_strobe, prog_busy) for any simulator "
        "or synthesis flow, with a JSON of its parameters beside it.",
    )
    p.add_argument("--out", required=True, help="Verilog file to write (FILE.v)")
    _add_unit_options(p)
    baud = p.add_mutually_exclusive_group()
    baud.add_argument("--baud-divisor", type=int, default=None, help="clocks per UART bit")
    baud.add_argument("--baud", type=int, default=None, help="UART baud rate (default 3000000)")
    p.add_argument("--prog-depth", type=int, default=16, help="programming FIFO depth")
    p.add_argument("--name", default="metaplast_unit", help="Verilog module name")


def _gateware(args: argparse.Namespace) -> int:
    import json

    from metaplast.gateware.top import DigitalUnitTop, verilog
    from metaplast.gateware.uart import divisor_for
    from metaplast.host.config import ConfigError

    try:
        layout = _layout_from(args)
        divisor = args.baud_divisor or divisor_for(args.clock_hz, args.baud or 3_000_000)
        top = DigitalUnitTop(
            layout, clock_hz=args.clock_hz, baud_divisor=divisor, prog_depth=args.prog_depth
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
        "receive_buffer": layout.receive_buffer,
        "info": top.engine.info.to_dict(),
        "contract": layout.contract.describe(),
    }
    out.with_suffix(".json").write_text(json.dumps(params, indent=2) + "\n")
    print(
        f"{out}: {args.synapses} synapses, UART divisor {divisor} "
        f"({args.clock_hz / divisor:.0f} baud at {args.clock_hz / 1e6:g} MHz)"
    )
    return 0


def _add_build(sub: Any) -> None:
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
    _add_unit_options(p, clock=False)
    p.add_argument(
        "--target-mhz",
        type=float,
        default=None,
        help="the clock the router must meet (default the board's oscillator; ask for more "
        "to keep a margin)",
    )
    p.add_argument("--baud", type=int, default=None, help="UART rate (default the board's)")
    p.add_argument("--prog-depth", type=int, default=16, help="programming FIFO depth")


def _build(args: argparse.Namespace) -> int:
    from metaplast.boards.build import BuildError, build
    from metaplast.boards.platforms import BOARDS
    from metaplast.host.config import ConfigError

    board = BOARDS[args.board]
    out = Path(args.out or Path("build") / args.board)
    try:
        layout = _layout_from(args)
        report = build(
            board,
            layout,
            out,
            target_mhz=args.target_mhz,
            baud=args.baud,
            prog_depth=args.prog_depth,
        )
    except (ValueError, BuildError) as exc:
        raise ConfigError(str(exc)) from exc
    if report["bitstream"] is None:
        print(
            f"{board.name}: Vivado project for {layout.synapses} synapses in {report['project']}; "
            f"Vivado is needed to finish it: {report['finish']}"
        )
        return 0
    print(
        f"{report['bitstream']}: {layout.synapses} synapses, {report['luts']} LUTs, "
        f"{report['ffs']} FFs, {report['bram']}/{report['bram_available']} BRAM, "
        f"Fmax {report['fmax_mhz']:.1f} MHz (target {report['target_mhz']:g}), "
        f"{report['baud']} baud, {report['build_seconds']:.0f} s\nload it: {report['program']}"
    )
    return 0


def _add_board(sub: Any) -> None:
    p = sub.add_parser(
        "board-sim",
        help="a simulated board on a virtual serial port",
        description="Serve the digital unit's protocol on a pty (or a TCP port for pyserial's "
        "socket://). Prints the port as the first line on stdout and serves until stopped.",
    )
    p.add_argument(
        "--backend",
        choices=("model", "rtl"),
        default="model",
        help="model: the bit-exact model (fast); rtl: the gateware under the Amaranth "
        "simulator, UART pins included (a few hundred bytes per second)",
    )
    p.add_argument("--baud", type=int, default=3_000_000, help="simulated baud rate (0: no limit)")
    p.add_argument("--listen", metavar="HOST:PORT", default=None, help="TCP instead of a pty")
    _add_unit_options(p)

    p = sub.add_parser("info", help="ask a board (or simulated board) for its parameters")
    p.add_argument("--port", required=True, help="serial port, pty or socket://host:port")
    p.add_argument("--baudrate", type=int, default=3_000_000)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per attempt")


def _add_link_faults(sub: Any) -> None:
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baudrate", type=int, default=3_000_000)


def _link_faults(args: argparse.Namespace) -> int:
    import signal

    from metaplast.firmware_sim.board.faults import FaultInjector, Faults, serve_proxy
    from metaplast.host.config import ConfigError

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


def _layout_from(args: argparse.Namespace) -> Any:
    """The unit options as a :class:`~metaplast.protocol.Layout` (ValueError when invalid)."""
    from metaplast.protocol import Layout

    return Layout(
        _contract_from(args),
        args.synapses,
        max_block=args.max_block,
        counter_width=args.counter_width,
    )


def _contract_from(args: argparse.Namespace) -> Any:
    from metaplast.contract import Contract

    fields = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
        for flag in (*_CONTRACT_OPTIONS, "--rounding")
    }
    return Contract(**{k: v for k, v in fields.items() if v is not None})


def _board_sim(args: argparse.Namespace) -> int:
    import signal

    from metaplast.firmware_sim.board.serial_port import serve_pty, serve_tcp
    from metaplast.firmware_sim.unit.command_model import CommandModel
    from metaplast.gateware.uart import divisor_for
    from metaplast.host.config import ConfigError

    try:
        layout = _layout_from(args)
        divisor = divisor_for(args.clock_hz, args.baud) if args.baud else 0
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    model = CommandModel(layout, clock_hz=args.clock_hz, baud_divisor=divisor)
    if args.backend == "model":
        from metaplast import fused_update

        fused_update.warm_up(layout.contract)

    def announce(port: str) -> None:
        print(port, flush=True)
        print(
            f"simulated board ({args.backend}): {args.synapses} synapses, "
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
            serve_rtl_pty(layout, announce, baud=args.baud)
        elif args.listen:
            host, _, port = args.listen.rpartition(":")
            serve_tcp(model, args.baud, host or "127.0.0.1", int(port), announce)
        else:
            serve_pty(model, args.baud, announce)
    except KeyboardInterrupt:
        pass
    return 0


def _info(args: argparse.Namespace) -> int:
    import json

    from metaplast.host.link import Link, LinkError

    try:
        with Link.open(args.port, baudrate=args.baudrate, timeout=args.timeout) as link:
            info = link.read_info()
    except LinkError as exc:
        print(f"metaplast info: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"port": args.port, **info.to_dict()}))
    return 0


def _add_transfer(sub: Any) -> None:
    p = sub.add_parser(
        "transfer",
        help="simulate ex-situ transfers of a trained network onto fresh crossbars",
        description="Paper 004. --dataset moons: train the half-moons network (regular, or "
        "regular then hardware-aware), transfer it N times onto fresh passive TiO2 crossbars. "
        "--dataset mnist --from RUN: transfer the quantized network of a finished session N "
        "times onto a device model and test each of its tasks. RUN/transfer.json holds "
        "share_ge_95, share_ge_90 (shares of test points right in at least 95 % / 90 % of "
        "the transfers) and accuracy_mean.",
    )
    p.add_argument("--dataset", default="moons", help="moons (the paper's split) or mnist")
    p.add_argument(
        "--training",
        default=None,
        help="moons: regular or hardware-aware (default); a session run says its own",
    )
    p.add_argument(
        "--transfers", type=int, default=None, help="simulated transfers (10000 moons, 100 mnist)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--recipe",
        default="project",
        help="moons: every training and mapping choice below at once: project (default) or "
        "paper-code (as the code published with paper 004 makes them; docs/transfer.md)",
    )
    p.add_argument("--epochs", type=int, default=None, help="moons: regular training epochs")
    p.add_argument("--ha-epochs", type=int, default=None, help="moons: hardware-aware epochs")
    p.add_argument(
        "--ha-start",
        default=None,
        help="moons: hardware-aware training from the regular network (project) or from "
        "scratch (paper-code)",
    )
    p.add_argument("--hidden", type=int, default=8, help="moons: sigmoid neurons, hidden layer")
    p.add_argument("--lr", type=float, default=None, help="moons: Adam's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="moons: batch (0: the whole split)")
    p.add_argument("--init", default=None, help="moons: torch (nn.Linear's) or xavier (+0.01)")
    p.add_argument(
        "--weight-decay", type=float, default=None, help="moons: Adam's, hardware-aware phase"
    )
    p.add_argument(
        "--stuck-gradient",
        choices=("yes", "no"),
        default=None,
        help="moons: yes: a weight on a stuck device keeps its gradient and is restored after "
        "the step (paper-code); no: it gets none (project)",
    )
    p.add_argument(
        "--sampler",
        default=None,
        help="moons: how weights become conductances: project (tiled crossbar, physical "
        "range), paper-code, or paper-code-physical (the code's order on the physical range)",
    )
    p.add_argument(
        "--crossbar",
        default="tio2-passive",
        help="device model: tio2-passive (moons, mnist) or hfox-1t1r (mnist)",
    )
    p.add_argument(
        "--bias",
        default=None,
        help="moons: where biases live: row (a crossbar row, the weights' scale), separate "
        "(own devices and scale), digital (exact, in the periphery) or paper (separate, a "
        "single output bias exact, as the paper's code)",
    )
    p.add_argument("--device-file", default=None, help="a device file replacing the shipped one")
    p.add_argument("--stuck-hrs", type=float, default=None, help="share of HRS-stuck devices")
    p.add_argument("--stuck-lrs", type=float, default=None, help="share of LRS-stuck devices")
    w = p.add_argument_group(
        "write plan", "how the lab writes its chip (docs/transfer.md); training samples it too"
    )
    w.add_argument(
        "--tile-order",
        default="device-file",
        help="the order a tile's devices are programmed in: device-file (default), row-major, "
        "column-major, reverse, or a permutation of the tile's (or block's) slots, numbered "
        "row-major, comma-separated or in a file",
    )
    w.add_argument(
        "--tile-block",
        default=None,
        help="ROWSxCOLS: the part of each tile that holds the network (default: all of it); "
        "smaller blocks disturb less and take more tiles; with --stuck-map known, placed on "
        "the tile's rows and columns with the fewest stuck devices",
    )
    w.add_argument(
        "--verify-tolerance",
        type=float,
        default=None,
        help="read-verify: after the writes, re-program every device farther than this (uS) "
        "from its target",
    )
    w.add_argument(
        "--verify-iterations",
        type=int,
        default=None,
        help="read-verify: read-and-rewrite passes at most (default 5)",
    )
    w.add_argument(
        "--stuck-map",
        default="unknown",
        help="unknown (default); known: the array's stuck devices are read before the "
        "write, avoided where the block leaves room, otherwise left unpulsed with the pair "
        "partner retargeted to keep the weight; measured: the same on a chip made of paper "
        "004's five measured 8x8 arrays",
    )
    p.add_argument("--from", dest="from_run", default=None, help="mnist: a finished session run")
    p.add_argument("--data-dir", default=None, help="mnist: folder with the IDX files")
    p.add_argument("--out", required=True, help="run directory")


def _transfer(args: argparse.Namespace) -> int:
    from metaplast.host.transfer_run import TransferConfig, run

    names = [f.name for f in dataclasses.fields(TransferConfig)]
    given = {n: getattr(args, n) for n in names}
    if given["stuck_gradient"] is not None:
        given["stuck_gradient"] = given["stuck_gradient"] == "yes"
    cfg = TransferConfig(**given)
    rec = run(cfg, args.out)
    soft = ", ".join(f"{k} {100 * v:.1f} %" for k, v in rec["software_accuracy"].items())
    print(
        f"{rec['training']} network on {cfg.dataset} ({soft} in software); "
        f"over {cfg.transfers:,} transfers onto {cfg.crossbar}: {100 * rec['accuracy_mean']:.2f} %"
        f" mean accuracy, {100 * rec['share_ge_95']:.1f} % of test points right in >= 95 % of "
        f"them, {100 * rec['share_ge_90']:.1f} % in >= 90 % "
        f"({1e3 * rec['seconds_per_transfer']:.3f} ms per transfer)"
    )
    cost = rec["write_cost"]
    if not cfg.plain_write:
        print(
            f"writing took {cost['operations_per_device']:.2f} programming operations per "
            f"device and {cost['read_passes_per_array']:.2f} read passes per array"
        )
    print(f"run directory: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaplast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sweep(sub)
    _add_gateware(sub)
    _add_build(sub)
    _add_board(sub)
    _add_link_faults(sub)
    _add_transfer(sub)
    _add_evaluate(sub)
    p = sub.add_parser(
        "summary",
        help="a markdown table of runs (one row each, or mean ± std over seeds)",
        description="A markdown table of run directories (a sweep directory stands for its "
        "runs): one row per run, or with --over-seeds one row per grid cell, the runs that "
        "differ only by their seed, with mean ± std over the seeds.",
    )
    p.add_argument("runs", nargs="+", help="run or sweep directories")
    p.add_argument(
        "--over-seeds",
        action="store_true",
        help="one row per cell: final and best accuracy, mean ± std over the seeds",
    )
    p.add_argument("--plot", default=None, help="with --over-seeds: error-bar plot to this PNG")
    return parser


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test a finished run one input at a time, as a chip classifies",
        description="Per task of a finished run: accuracy with batch statistics (as the "
        "session tested), with batch-norm statistics re-estimated from N unlabeled training "
        "inputs of the task (then every input classified alone), and with each neuron's "
        "batch norm and activation folded into comparator thresholds. Writes evaluate.json "
        "in the run directory, and periphery.npz: per task and layer, the comparator "
        "thresholds and polarities (few-level activations) or gains and offsets (full "
        "precision) of the network calibrated on the most inputs.",
    )
    p.add_argument("run", help="a finished run directory")
    p.add_argument(
        "--calibrate",
        type=_ints,
        default=(10, 30, 100, 300, 1000),
        help="numbers of calibration inputs to try, e.g. 100,300 (default 10,30,100,300,1000)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="test batch of the batch-statistics column (default: the session's); the "
        "calibrated and folded columns classify one input at a time whatever it is",
    )
    p.add_argument("--seed", type=int, default=0, help="which calibration inputs are drawn")
    p.add_argument("--data-dir", default=None, help="as for train")
    p.add_argument("--threads", type=int, default=None, help="torch threads")


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from metaplast.host.evaluate import evaluate_run
    from metaplast.host.rundir import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    record = evaluate_run(
        args.run,
        args.calibrate,
        data_dir=args.data_dir,
        test_batch_size=args.batch_size,
        seed=args.seed,
    )
    import numpy as np

    np.savez_compressed(Path(args.run) / "periphery.npz", **record.pop("arrays"))
    write_json(Path(args.run) / "evaluate.json", record)
    counts = [str(n) for n in args.calibrate]
    print(
        f"| task | batch statistics (batch {record['test_batch_size']}) | "
        + " | ".join(f"calibrated on {n}" for n in counts)
        + " | "
        + " | ".join(f"folded, {n}" for n in counts)
        + " |"
    )
    print("|---|---|" + "---|" * (2 * len(counts)))
    for task, row in record["tasks"].items():
        cells = [f"{100 * row['batch_statistics']:.2f}"]
        cells += [f"{100 * row['calibrated'][n]:.2f}" for n in counts]
        cells += [f"{100 * row['folded'][n]:.2f}" if n in row["folded"] else "-" for n in counts]
        print(f"| {task} | " + " | ".join(cells) + " |")
    print(f"written: {Path(args.run) / 'evaluate.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from metaplast.host.config import ConfigError
    from metaplast.host.datasets import DatasetError
    from metaplast.host.link import LinkError

    args = build_parser().parse_args(argv)
    try:
        commands = {
            "train": _train,
            "sweep": _sweep,
            "summary": _summary,
            "gateware": _gateware,
            "build": _build,
            "board-sim": _board_sim,
            "info": _info,
            "link-faults": _link_faults,
            "transfer": _transfer,
            "evaluate": _evaluate,
        }
        return commands[args.command](args)
    except (ConfigError, DatasetError, LinkError) as exc:
        print(f"metaplast {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the last finished epoch is in the checkpoint (use --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
