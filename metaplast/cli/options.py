"""Options that several commands share, each declared once: a session's (train, sweep),
the digital unit's (gateware, build, board-sim), and how they become configurations."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaplast.vocabulary import (
    ARITHMETICS,
    BN_MODES,
    BN_STATS,
    CROSSBARS,
    DEVICE_MODELS,
    INPUTS,
    PERIPHERIES,
    PROBE_BAUDS,
    ROUNDINGS,
    UNIT_CLOCK_HZ,
    UNIT_COUNTER_WIDTH,
    UNIT_MAX_BLOCK,
    UNIT_MAX_TILE,
    UNIT_MEMORIES,
    UNIT_PROG_DEPTH,
    UNIT_SYNAPSES,
)

if TYPE_CHECKING:
    from metaplast.host.config import SessionConfig


def flag(field: str) -> str:
    """The command-line option of a configuration field: ``stuck_hrs`` is ``--stuck-hrs``."""
    return "--" + field.replace("_", "-")


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None


def positive_int(text: str) -> int:
    """An integer of at least 1 (thread counts and the like)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_baudrate_option(p: argparse.ArgumentParser, purpose: str = "the UART rate") -> None:
    """A host's ``--baudrate``: a rate, or ``auto`` (the default) to find the board's."""
    p.add_argument(
        "--baudrate",
        type=_baudrate,
        default=None,
        metavar="auto|N",
        help=f"{purpose}; auto (default) tries {', '.join(map(str, PROBE_BAUDS))} until the "
        "board answers, then keeps the rate it reports",
    )


def _baudrate(text: str) -> int | None:
    if text == "auto":
        return None
    return positive_int(text)


def add_memory_option(p: argparse.ArgumentParser, where: str) -> None:
    """``--memory block|spram`` of a unit that is not built for a board (``gateware``,
    ``board-sim``): dual-port or single-port memories; ``where`` says what runs them."""
    p.add_argument(
        "--memory",
        choices=UNIT_MEMORIES[1:],
        default="block",
        help="hidden weights and counters in dual-port memories (one update per clock) or in "
        f"single-port ones (one update per two cycles; {where})",
    )


def crossbar_tile(text: str) -> int:
    """``--crossbar-tile``: the largest tile dimension of the array behind the port."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= UNIT_MAX_TILE:
        raise argparse.ArgumentTypeError(
            f"the largest tile dimension of the array (rows or columns), an integer "
            f"1 .. {UNIT_MAX_TILE}, not {text!r}"
        )
    return value


def _levels(text: str) -> tuple[float, ...] | str:
    """``uniform:N:LOW:HIGH``, an explicit comma-separated list of levels, or ``device``."""
    if text == "device":
        return text
    from metaplast.rule import uniform_levels

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


# a session's field -> its option's argparse arguments; the option is the field's flag
# (:func:`flag`), and every default is None: a default lives in the configuration alone, and only
# the options given on the command line override a preset or a resumed run's stored config
SESSION_OPTIONS: dict[str, dict[str, Any]] = {
    "tasks": {
        "type": _tasks,
        "help": "mnist,fashion-mnist, or permuted-mnist:N (N permutations of MNIST)",
    },
    "epochs": {"type": int_list, "help": "epochs per task, e.g. 50,50"},
    "pretrain_epochs": {"type": int, "help": "first epochs with m* = 0"},
    "mstar": {"type": float, "help": "m* after pre-training"},
    "hidden": {"type": int_list, "help": "hidden layer sizes, e.g. 512,512"},
    "seed": {"type": int, "help": "seed of the initialization, data order and draws"},
    "arithmetic": {"choices": ARITHMETICS, "help": "float rule or the gateware's fixed point"},
    "lr": {"type": float, "help": "Adam's learning rate"},
    "batch_size": {"type": int, "help": "training batch size"},
    "activation": {
        "help": "relu (default), sign, hardtanh:K or relu:K (K levels in [-1, 1] or [0, 1]), "
        "hardtanh or relu (full precision)"
    },
    "init_std": {"type": float, "help": "std of the initial hidden weights"},
    "init_mean": {"type": float, "help": "mean of the initial hidden weights"},
    "bn": {
        "choices": BN_MODES,
        "help": "per-task (each task tested with its batch norm) or shared",
    },
    "bn_stats": {
        "choices": BN_STATS,
        "help": "batch (default: every batch, test batches too, normalized with its own "
        "statistics, as the reference code) or running (the running averages)",
    },
    "inputs": {"choices": INPUTS, "help": "pixels as read voltages in [-1, 1] or [0, 1]"},
    "test_batch_size": {
        "type": int,
        "help": "test images per batch (batch statistics are a test batch's)",
    },
    "permutation_seed": {"type": int, "help": "seed of the permuted-MNIST tasks' permutations"},
    "levels": {
        "type": _levels,
        "help": "uniform:17:-1.5:1.5, a list, or device (the mean conductances of a "
        "multi-level --crossbar, scaled to the same largest level)",
    },
    "hidden_width": {"type": int, "help": "hidden-weight bits (fixed)"},
    "guard_bits": {"type": int, "help": "update bits below the hidden LSB"},
    "lut_entries": {"type": int, "help": "meta LUT entries (power of two)"},
    "meta_bits": {"type": int, "help": "fraction bits of M"},
    "rounding": {"choices": ROUNDINGS, "help": "how an update is rounded to the hidden LSB"},
    "train_limit": {"type": int, "help": "use the first N training images"},
    "crossbar": {
        "choices": CROSSBARS,
        "help": "where the quantized weights live: exact (ideal) or a device model",
    },
    "hardware_aware": {
        "choices": DEVICE_MODELS,
        "help": "train for an ex-situ transfer onto this device model: every batch runs "
        "through the weights one simulated transfer leaves (metaplast transfer --from)",
    },
    "device_file": {"help": "a device file (JSON) that replaces the device model's shipped one"},
    "stuck_hrs": {"type": float, "help": "fraction of devices stuck in HRS"},
    "stuck_lrs": {"type": float, "help": "fraction of devices stuck in LRS"},
    "endurance": {"type": int, "help": "programming operations a device survives (then stuck)"},
    "read_noise": {"type": float, "help": "relative std of every conductance read"},
    "periphery": {
        "choices": PERIPHERIES,
        "help": "the crossbar's converters: ideal (float, default) or board (the board's "
        "crossbar port: 16-bit input codes, conductance codes, exact integer MVMs)",
    },
}


def add_session_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains: a preset, its overrides, the data."""
    p.add_argument(
        "--preset",
        choices=("quick", "paper"),
        default=None,
        help="quick (default, a few minutes) or paper (50+50 epochs, 784-512-512-10)",
    )
    for field, kwargs in SESSION_OPTIONS.items():
        p.add_argument(flag(field), default=None, **kwargs)
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with mnist/ and fashion-mnist/ "
        "IDX files (default: $METAPLAST_DATA, else download)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads per session; results depend on it (float summation order), so "
        "give it to reproduce a run exactly (default: torch's choice; sweep: cores / jobs)",
    )


def session_config(args: argparse.Namespace, out: Path | None) -> SessionConfig:
    """Preset (or, on resume, the stored config) overridden by the options given."""
    from metaplast.host.config import PRESETS, SessionConfig
    from metaplast.host.rundir import RunDir

    given = {f: getattr(args, f) for f in SESSION_OPTIONS if getattr(args, f) is not None}
    if (
        getattr(args, "resume", False)
        and out
        and (out / "config.json").exists()
        and args.preset is None
    ):
        base = RunDir.stored_config(out).to_dict()
    else:
        base = SessionConfig.of(**PRESETS[args.preset or "quick"]).to_dict()
    merged = {**base, **given}
    if merged["levels"] == "device":
        merged["levels"] = _device_levels(merged, base["levels"])
    return SessionConfig.from_dict(merged)


def _device_levels(config: dict[str, Any], default: Sequence[float]) -> tuple[float, ...]:
    """The weight levels of a multi-level device's mean conductances (``--levels device``)."""
    from metaplast.errors import ConfigError
    from metaplast.firmware_sim.crossbar.devices import DeviceFileError, HfOx1T1R, load_device

    try:
        device = load_device(config["crossbar"], config.get("device_file"))
    except DeviceFileError as exc:
        raise ConfigError(f"--levels device: {exc}") from exc
    if not isinstance(device, HfOx1T1R):
        name = config["crossbar"]
        raise ConfigError(f"--levels device needs a multi-level --crossbar, not {name!r}")
    return device.weight_levels(max(abs(v) for v in default))


_CONTRACT_OPTIONS = ("levels", "hidden_width", "guard_bits", "lut_entries", "meta_bits", "rounding")


def add_unit_options(p: argparse.ArgumentParser, *, clock: bool = True) -> None:
    """The digital unit's parameters: the same for its Verilog, a simulated and a real board.

    A board build takes its clock from the board's oscillator (``clock=False``).
    """
    p.add_argument("--synapses", type=int, default=UNIT_SYNAPSES, help="hidden-weight memory depth")
    p.add_argument(
        "--max-block", type=int, default=UNIT_MAX_BLOCK, help="synapses per block command"
    )
    p.add_argument(
        "--counter-width", type=int, default=UNIT_COUNTER_WIDTH, help="bits of each change counter"
    )
    if clock:
        p.add_argument(
            "--clock-hz", type=int, default=UNIT_CLOCK_HZ, help="clock (reported by INFO)"
        )
    for field in _CONTRACT_OPTIONS:
        p.add_argument(flag(field), default=None, **SESSION_OPTIONS[field])


def add_crossbar_tile(p: argparse.ArgumentParser, where: str) -> None:
    """``--crossbar-tile`` of the unit's Verilog and of a board build (``where``: what the
    port's command channel becomes)."""
    p.add_argument(
        "--crossbar-tile",
        type=crossbar_tile,
        default=None,
        metavar="T",
        help="give the unit the crossbar port, for an array whose tiles have at most T rows "
        f"and T columns, its command channel {where} (default: no port)",
    )


def add_prog_depth(p: argparse.ArgumentParser) -> None:
    """``--prog-depth`` of the unit's Verilog and of a board build."""
    p.add_argument(
        "--prog-depth",
        type=int,
        default=UNIT_PROG_DEPTH,
        help="programming FIFO depth (operations, after the core's event FIFO)",
    )


def layout_from(args: argparse.Namespace) -> Any:
    """The unit options as a :class:`~metaplast.protocol.Layout` (ValueError when invalid)."""
    from metaplast.contract import Contract
    from metaplast.protocol import Layout

    given = {f: getattr(args, f) for f in _CONTRACT_OPTIONS if getattr(args, f) is not None}
    return Layout(
        Contract(**given),
        args.synapses,
        max_block=args.max_block,
        counter_width=args.counter_width,
    )


_ARRAY_OPTIONS = ("device_file", "stuck_hrs", "stuck_lrs", "endurance", "read_noise")


def add_array_options(p: argparse.ArgumentParser) -> None:
    """The array behind a simulated board's crossbar port: a device model and the same
    device options as a session's ``--crossbar``."""
    p.add_argument(
        "--crossbar",
        choices=("none", *DEVICE_MODELS),
        default=DEVICE_MODELS[0],
        help=f"the array behind the crossbar port (default {DEVICE_MODELS[0]}, on every "
        "backend; none: a unit without the port, whose INFO lacks the crossbar capability)",
    )
    for field in _ARRAY_OPTIONS:
        p.add_argument(flag(field), default=None, **SESSION_OPTIONS[field])


def array_from(args: argparse.Namespace, contract: Any) -> Any:
    """The options as an :class:`~metaplast.firmware_sim.crossbar.driver.ArrayDriver` for a
    unit of ``contract``, or None (``--crossbar none``); ConfigError when invalid."""
    from metaplast.errors import ConfigError
    from metaplast.firmware_sim.crossbar.devices import DeviceFileError, load_device
    from metaplast.firmware_sim.crossbar.driver import ArrayDriver
    from metaplast.host.config import DeviceSpec

    model = args.crossbar
    overrides = {f: getattr(args, f) for f in _ARRAY_OPTIONS if getattr(args, f) is not None}
    if model == "none":
        if overrides:
            raise ConfigError(f"{', '.join(map(flag, overrides))}: --crossbar none has no devices")
        return None
    spec = DeviceSpec(crossbar=model, **overrides)
    try:
        device = load_device(model, spec.device_file).with_overrides(
            **{k: v for k, v in overrides.items() if k != "device_file"}
        )
        device.level_targets(contract.device_magnitudes())
    except DeviceFileError as exc:
        raise ConfigError(f"--crossbar {model}: {exc}") from exc
    return ArrayDriver(device, contract)
