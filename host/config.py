"""A training session's configuration, composed the way aihwkit composes its configs: the
training fields, the unit's numeric :class:`~metaplast.contract.Contract`, and a
:class:`DeviceSpec` that names the devices the session meets. Stored flat (``config.json``,
``metrics.json``), so every run directory ever written keeps resuming."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from metaplast.contract import Contract
from metaplast.errors import ConfigError
from metaplast.firmware_sim.crossbar.devices import DeviceFileError, DeviceModel, load_device
from metaplast.firmware_sim.crossbar.pair import PairLayout
from metaplast.host.datasets import TASKS, PermutedTask
from metaplast.host.qnn import Activation
from metaplast.rule import check_levels
from metaplast.vocabulary import (
    ARITHMETICS,
    BN_MODES,
    BN_STATS,
    CROSSBARS,
    DEVICE_MODELS,
    INPUTS,
    PERIPHERIES,
    ROUNDINGS,
)


@dataclass(frozen=True)
class DeviceSpec:
    """The device model a session meets, and how: the crossbar its weights live on
    (``crossbar``), or the chip that hardware-aware training expects a transfer onto
    (``hardware_aware``); with the overrides of the model's device file. Data only:
    :meth:`load` makes the model."""

    crossbar: str = "ideal"
    hardware_aware: str | None = None
    device_file: str | None = None
    stuck_hrs: float | None = None
    stuck_lrs: float | None = None
    endurance: int | None = None
    read_noise: float | None = None
    periphery: str = "ideal"

    OVERRIDES = ("device_file", "stuck_hrs", "stuck_lrs", "endurance", "read_noise")
    """The fields that change the named model's device file."""

    def __post_init__(self) -> None:
        if self.crossbar not in CROSSBARS:
            raise ConfigError(f"`crossbar` must be one of {CROSSBARS}, got {self.crossbar!r}")
        if self.hardware_aware is not None:
            if self.hardware_aware not in DEVICE_MODELS:
                raise ConfigError(
                    f"`hardware_aware` must be one of {DEVICE_MODELS}, got {self.hardware_aware!r}"
                )
            if self.crossbar != "ideal":
                raise ConfigError(
                    "`hardware_aware` trains for an ex-situ transfer, `crossbar` trains on the "
                    "crossbar in the loop: give one of them"
                )
            for name in ("endurance", "read_noise"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"`{name}`: a transfer programs every device once and is evaluated by "
                        "its MVMs alone; it applies to `crossbar`"
                    )
        given = [f"`{k}`" for k in self.OVERRIDES if getattr(self, k) is not None]
        if given and self.crossbar == "board":
            raise ConfigError(
                f"{', '.join(given)}: the board's array is set up where it runs "
                "(metaplast board-sim --crossbar MODEL and its device options)"
            )
        if given and self.named is None:
            raise ConfigError(f"{', '.join(given)}: the ideal crossbar has no devices to vary")
        if self.crossbar == "board":  # its converters are the board's
            object.__setattr__(self, "periphery", "board")
        if self.periphery not in PERIPHERIES:
            raise ConfigError(f"`periphery` must be one of {PERIPHERIES}, got {self.periphery!r}")
        if self.periphery != "ideal" and self.crossbar == "ideal":
            raise ConfigError(
                "`periphery`: converters belong to a crossbar in the loop (`crossbar`)"
            )
        for name in ("stuck_hrs", "stuck_lrs"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise ConfigError(f"`{name}` must be a fraction in [0, 1], got {v}")
        if self.endurance is not None and self.endurance < 1:
            raise ConfigError(
                f"`endurance` must be >= 1 programming operations, got {self.endurance}"
            )
        if self.read_noise is not None and not 0 <= self.read_noise < 1:
            raise ConfigError(f"`read_noise` must be in [0, 1), got {self.read_noise}")

    @property
    def named(self) -> tuple[str, str] | None:
        """The field that names the device model, and the model: the crossbar in the loop or
        the one hardware-aware training expects; ``None`` for an ideal session, and for one
        on a board's array (whose model is the board's)."""
        if self.crossbar not in ("ideal", "board"):
            return "crossbar", self.crossbar
        if self.hardware_aware is not None:
            return "hardware_aware", self.hardware_aware
        return None

    def load(self, contract: Contract, sizes: tuple[int, ...]) -> DeviceModel | None:
        """The device model with the overrides, checked against the network: enough device
        levels for the contract's weight levels, enough tiles for the layers of ``sizes``."""
        if self.named is None:
            return None
        name, model = self.named
        try:
            device = load_device(model, self.device_file).with_overrides(
                stuck_hrs=self.stuck_hrs,
                stuck_lrs=self.stuck_lrs,
                endurance=self.endurance,
                read_noise=self.read_noise,
            )
            device.level_targets(contract.device_magnitudes())
        except DeviceFileError as exc:
            raise ConfigError(f"`{name}` {model}: {exc}") from exc
        if device.stuck.hrs_rate + device.stuck.lrs_rate > 1:
            raise ConfigError("`stuck_hrs` plus `stuck_lrs` must not exceed 1")
        geo = device.array
        needed = sum(
            geo.tiles_for(pairs.rows, pairs.cols)
            for pairs in (
                PairLayout((n_out, n_in)) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
            )
        )
        if geo.tiles is not None and needed > geo.tiles:
            raise ConfigError(
                f"`{name}` {model}: {device.path}: field 'array.tiles' gives "
                f"{geo.tiles} tiles of {geo.tile_rows}x{geo.tile_cols}, but the network "
                f"{list(sizes)} needs {needed} (two devices per weight)"
            )
        return device


@dataclass(frozen=True)
class SessionConfig:
    """Everything that decides a session's result. Two runs with equal configs end equal.

    Build it from its parts, or from the flat dictionary a run stores with :meth:`of` and
    :meth:`from_dict`; every field's name in the flat form is its command-line flag's.
    """

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
    contract: Contract = field(default_factory=Contract)
    train_limit: int | None = None
    device: DeviceSpec = field(default_factory=DeviceSpec)
    device_model: DeviceModel | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tasks", "epochs", "hidden"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()
        object.__setattr__(self, "device_model", self.device.load(self.contract, self.sizes))

    def _validate(self) -> None:
        if not self.tasks:
            raise ConfigError("`tasks`: give at least one task")
        unknown = [t for t in self.tasks if t not in TASKS and PermutedTask.parse(t) is None]
        if unknown:
            raise ConfigError(
                f"`tasks`: unknown task(s) {unknown}; known tasks are {list(TASKS)} and "
                "permuted MNIST tasks pmnist-0, pmnist-1, ..."
            )
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"`tasks`: a task appears twice in {list(self.tasks)}")
        if len(self.epochs) != len(self.tasks):
            raise ConfigError(
                f"`epochs`: {len(self.epochs)} value(s) {list(self.epochs)} for "
                f"{len(self.tasks)} task(s) {list(self.tasks)}; give one per task"
            )
        if any(e < 1 for e in self.epochs):
            raise ConfigError(f"`epochs`: every task needs >= 1 epoch, got {list(self.epochs)}")
        if not 0 <= self.pretrain_epochs <= sum(self.epochs):
            raise ConfigError(
                f"`pretrain_epochs` must be in 0..{sum(self.epochs)}, got {self.pretrain_epochs}"
            )
        if not (math.isfinite(self.mstar) and self.mstar >= 0):
            raise ConfigError(f"`mstar` must be a finite number >= 0, got {self.mstar}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"`hidden`: layer sizes must be >= 1, got {list(self.hidden)}")
        for name, choices in (
            ("arithmetic", ARITHMETICS),
            ("bn", BN_MODES),
            ("bn_stats", BN_STATS),
            ("inputs", INPUTS),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(f"`{name}` must be one of {choices}, got {getattr(self, name)!r}")
        try:
            Activation.parse(self.activation)
        except ValueError as exc:
            raise ConfigError(f"`activation`: {exc}") from exc
        if self.test_batch_size < 2:
            raise ConfigError(
                "`test_batch_size` must be >= 2 (batch statistics need a batch), got "
                f"{self.test_batch_size}"
            )
        if self.permutation_seed < 0:
            raise ConfigError(f"`permutation_seed` must be >= 0, got {self.permutation_seed}")
        if not math.isfinite(self.init_mean):
            raise ConfigError(f"`init_mean` must be a finite number, got {self.init_mean}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"`lr` must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be >= 1, got {self.batch_size}")
        if not self.init_std > 0:
            raise ConfigError(f"`init_std` must be > 0, got {self.init_std}")
        if self.train_limit is not None and self.train_limit < self.batch_size:
            raise ConfigError(
                f"`train_limit` {self.train_limit} is smaller than one batch ({self.batch_size})"
            )

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

    # the flat form -----------------------------------------------------------------------

    _PARTS = {"contract": Contract, "device": DeviceSpec}

    @classmethod
    def _flat_fields(cls) -> list[tuple[str, str | None]]:
        """``(key, part)`` of every field of the flat form, in the order a run stores them;
        ``part`` is ``None`` for a training field."""
        out: list[tuple[str, str | None]] = []
        for f in dataclasses.fields(cls):
            if f.name in cls._PARTS:
                out += [(g.name, f.name) for g in dataclasses.fields(cls._PARTS[f.name])]
            elif f.init:
                out.append((f.name, None))
        return out

    @classmethod
    def flat_keys(cls) -> tuple[str, ...]:
        return tuple(key for key, _ in cls._flat_fields())

    def to_dict(self) -> dict[str, Any]:
        """The flat form: the parts' fields beside the training fields."""
        out: dict[str, Any] = {}
        for key, part in self._flat_fields():
            v = getattr(self if part is None else getattr(self, part), key)
            out[key] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def of(cls, **flat: Any) -> SessionConfig:
        """A config from flat fields (``SessionConfig.of(hidden=(64,), crossbar="hfox-1t1r")``):
        each goes to its part, every other field keeps its default."""
        unknown = sorted(set(flat) - set(cls.flat_keys()))
        if unknown:
            raise ConfigError(f"unknown configuration key(s) {unknown}")
        parts: dict[str, Any] = {}
        for name, part in cls._PARTS.items():
            names = {f.name for f in dataclasses.fields(part)}
            given = {k: flat.pop(k) for k in list(flat) if k in names}
            parts[name] = _part(part, given)
        return cls(**flat, **parts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionConfig:
        """A config from its stored flat form. A run made before ``bn_stats`` existed tested
        with running statistics: its dictionary, without the key, keeps meaning that."""
        return cls.of(**{"bn_stats": "running", **data})

    def differences(self, other: SessionConfig) -> list[str]:
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {theirs[k]!r} != {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


def _part(part: type, given: dict[str, Any]) -> Any:
    """One part from its fields; the contract's own checks become configuration errors."""
    if part is not Contract:
        return part(**given)
    if "levels" in given:
        try:
            check_levels(given["levels"])
        except ValueError as exc:
            raise ConfigError(f"`levels`: {exc}") from exc
    if given.get("rounding", ROUNDINGS[0]) not in ROUNDINGS:
        raise ConfigError(f"`rounding` must be one of {ROUNDINGS}, got {given['rounding']!r}")
    try:
        return Contract(**given)
    except ValueError as exc:
        raise ConfigError(f"numeric contract: {exc}") from exc


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "paper": {
        "epochs": (50, 50),
        "pretrain_epochs": 10,
        "hidden": (512, 512),
    },
}
