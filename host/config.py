"""A training session's configuration: presets, validation, and its identity for resuming."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from metaplast.contract import ROUNDINGS, Contract
from metaplast.errors import ConfigError
from metaplast.firmware_sim.crossbar.devices import (
    MODELS,
    DeviceFileError,
    DeviceModel,
    load_device,
)
from metaplast.firmware_sim.crossbar.pair import PairLayout
from metaplast.host.datasets import TASKS, PermutedTask
from metaplast.host.qnn import BN_STATS, Activation
from metaplast.rule import DEFAULT_LEVELS, check_levels

ARITHMETICS: tuple[str, ...] = ("float", "fixed")
INPUTS: tuple[str, ...] = ("signed", "unsigned")
BN_MODES: tuple[str, ...] = ("per-task", "shared")
CROSSBARS: tuple[str, ...] = ("ideal", *MODELS)


@dataclass(frozen=True)
class SessionConfig:
    """Everything that decides a session's result. Two runs with equal configs end equal."""

    tasks: tuple[str, ...] = ("mnist", "fashion-mnist")
    epochs: tuple[int, ...] = (3, 3)
    pretrain_epochs: int = 1
    mstar: float = 2.2
    hidden: tuple[int, ...] = (256, 256)
    seed: int = 0
    arithmetic: str = "fixed"
    lr: float = 0.005
    batch_size: int = 100
    activation: str = "relu"
    init_std: float = 0.1
    init_mean: float = 0.0
    bn: str = "per-task"
    bn_stats: str = "batch"
    inputs: str = "signed"
    test_batch_size: int = 1000
    permutation_seed: int = 0
    levels: tuple[float, ...] = DEFAULT_LEVELS
    hidden_width: int = Contract.hidden_width
    guard_bits: int = Contract.guard_bits
    lut_entries: int = Contract.lut_entries
    meta_bits: int = Contract.meta_bits
    rounding: str = Contract.rounding
    train_limit: int | None = None
    crossbar: str = "ideal"
    hardware_aware: str | None = None
    device_file: str | None = None
    stuck_hrs: float | None = None
    stuck_lrs: float | None = None
    endurance: int | None = None
    read_noise: float | None = None
    contract: Contract = field(init=False, repr=False, compare=False)
    device: DeviceModel | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tasks", "epochs", "hidden", "levels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()
        try:
            contract = Contract(
                levels=self.levels,
                hidden_width=self.hidden_width,
                guard_bits=self.guard_bits,
                lut_entries=self.lut_entries,
                meta_bits=self.meta_bits,
                rounding=self.rounding,  # type: ignore[arg-type]
            )
        except ValueError as exc:
            raise ConfigError(f"numeric contract: {exc}") from exc
        object.__setattr__(self, "contract", contract)
        object.__setattr__(self, "device", self._load_device())

    @property
    def device_option(self) -> tuple[str, str] | None:
        """The option that names the session's device model, and the model: the crossbar in
        the loop (``--crossbar``) or the one hardware-aware training expects
        (``--hardware-aware``); ``None`` for an ideal session."""
        if self.crossbar != "ideal":
            return "--crossbar", self.crossbar
        if self.hardware_aware is not None:
            return "--hardware-aware", self.hardware_aware
        return None

    def _load_device(self) -> DeviceModel | None:
        """The device model with the options' overrides, checked against the network: enough
        device levels for the weight levels, enough tiles for the layers."""
        named = self.device_option
        if named is None:
            given = [
                f"--{k.replace('_', '-')}"
                for k in ("device_file", "stuck_hrs", "stuck_lrs", "endurance", "read_noise")
                if getattr(self, k) is not None
            ]
            if given:
                raise ConfigError(f"{', '.join(given)}: the ideal crossbar has no devices to vary")
            return None
        option, model = named
        try:
            device = load_device(model, self.device_file).with_overrides(
                stuck_hrs=self.stuck_hrs,
                stuck_lrs=self.stuck_lrs,
                endurance=self.endurance,
                read_noise=self.read_noise,
            )
            device.level_targets(self.contract.device_magnitudes())
        except DeviceFileError as exc:
            raise ConfigError(f"{option} {model}: {exc}") from exc
        if device.stuck.hrs_rate + device.stuck.lrs_rate > 1:
            raise ConfigError("--stuck-hrs plus --stuck-lrs must not exceed 1")
        geo = device.array
        needed = sum(
            geo.tiles_for(pairs.rows, pairs.cols)
            for pairs in (
                PairLayout((n_out, n_in))
                for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True)
            )
        )
        if geo.tiles is not None and needed > geo.tiles:
            raise ConfigError(
                f"{option} {model}: {device.path}: field 'array.tiles' gives "
                f"{geo.tiles} tiles of {geo.tile_rows}x{geo.tile_cols}, but the network "
                f"{list(self.sizes)} needs {needed} (two devices per weight)"
            )
        return device

    def _validate(self) -> None:
        if not self.tasks:
            raise ConfigError("--tasks: give at least one task")
        unknown = [t for t in self.tasks if t not in TASKS and PermutedTask.parse(t) is None]
        if unknown:
            raise ConfigError(
                f"--tasks: unknown task(s) {unknown}; known tasks are {list(TASKS)} and "
                "permuted MNIST tasks pmnist-0, pmnist-1, ..."
            )
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"--tasks: a task appears twice in {list(self.tasks)}")
        if len(self.epochs) != len(self.tasks):
            raise ConfigError(
                f"--epochs: {len(self.epochs)} value(s) {list(self.epochs)} for "
                f"{len(self.tasks)} task(s) {list(self.tasks)}; give one per task"
            )
        if any(e < 1 for e in self.epochs):
            raise ConfigError(f"--epochs: every task needs >= 1 epoch, got {list(self.epochs)}")
        if not 0 <= self.pretrain_epochs <= sum(self.epochs):
            raise ConfigError(
                f"--pretrain-epochs must be in 0..{sum(self.epochs)}, got {self.pretrain_epochs}"
            )
        if not (math.isfinite(self.mstar) and self.mstar >= 0):
            raise ConfigError(f"--mstar must be a finite number >= 0, got {self.mstar}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"--hidden: layer sizes must be >= 1, got {list(self.hidden)}")
        if self.arithmetic not in ARITHMETICS:
            raise ConfigError(f"--arithmetic must be one of {ARITHMETICS}, got {self.arithmetic!r}")
        try:
            Activation.parse(self.activation)
        except ValueError as exc:
            raise ConfigError(f"--activation: {exc}") from exc
        if self.bn_stats not in BN_STATS:
            raise ConfigError(f"--bn-stats must be one of {BN_STATS}, got {self.bn_stats!r}")
        if self.inputs not in INPUTS:
            raise ConfigError(f"--inputs must be one of {INPUTS}, got {self.inputs!r}")
        if self.test_batch_size < 2:
            raise ConfigError(
                f"--test-batch-size must be >= 2 (batch statistics need a batch), got "
                f"{self.test_batch_size}"
            )
        if self.permutation_seed < 0:
            raise ConfigError(f"--permutation-seed must be >= 0, got {self.permutation_seed}")
        if not math.isfinite(self.init_mean):
            raise ConfigError(f"--init-mean must be a finite number, got {self.init_mean}")
        if self.bn not in BN_MODES:
            raise ConfigError(f"--bn must be one of {BN_MODES}, got {self.bn!r}")
        if self.rounding not in ROUNDINGS:
            raise ConfigError(f"--rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.init_std > 0:
            raise ConfigError(f"--init-std must be > 0, got {self.init_std}")
        if self.train_limit is not None and self.train_limit < self.batch_size:
            raise ConfigError(
                f"--train-limit {self.train_limit} is smaller than one batch ({self.batch_size})"
            )
        if self.crossbar not in CROSSBARS:
            raise ConfigError(f"--crossbar must be one of {CROSSBARS}, got {self.crossbar!r}")
        if self.hardware_aware is not None:
            if self.hardware_aware not in MODELS:
                raise ConfigError(
                    f"--hardware-aware must be one of {tuple(MODELS)}, got {self.hardware_aware!r}"
                )
            if self.crossbar != "ideal":
                raise ConfigError(
                    "--hardware-aware trains for an ex-situ transfer, --crossbar trains on the "
                    "crossbar in the loop: give one of them"
                )
            for name in ("endurance", "read_noise"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"--{name.replace('_', '-')}: a transfer programs every device once "
                        "and is evaluated by its MVMs alone; it applies to --crossbar"
                    )
        for name in ("stuck_hrs", "stuck_lrs"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be a fraction in [0, 1], got {v}"
                )
        if self.endurance is not None and self.endurance < 1:
            raise ConfigError(
                f"--endurance must be >= 1 programming operations, got {self.endurance}"
            )
        if self.read_noise is not None and not 0 <= self.read_noise < 1:
            raise ConfigError(f"--read-noise must be in [0, 1), got {self.read_noise}")
        try:
            check_levels(self.levels)
        except ValueError as exc:
            raise ConfigError(f"--levels: {exc}") from exc

    @property
    def sizes(self) -> tuple[int, ...]:
        return (784, *self.hidden, 10)

    def mstar_at(self, epoch: int) -> float:
        """m* in force during 1-based global ``epoch``: 0 while pre-training."""
        return 0.0 if epoch <= self.pretrain_epochs else self.mstar

    def schedule(self) -> list[tuple[int, str]]:
        """``(global epoch, task)`` for every epoch of the session, 1-based."""
        order = [t for t, n in zip(self.tasks, self.epochs, strict=True) for _ in range(n)]
        return list(enumerate(order, start=1))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionConfig:
        """A config from its dictionary. A run made before ``bn_stats`` existed tested with
        running statistics: its dictionary, without the key, keeps meaning that."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown configuration key(s) {unknown}")
        return cls(**{"bn_stats": "running", **data})

    def differences(self, other: SessionConfig) -> list[str]:
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {theirs[k]!r} != {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "paper": {
        "epochs": (50, 50),
        "pretrain_epochs": 10,
        "hidden": (512, 512),
    },
}
