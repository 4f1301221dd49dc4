"""Memristive device models as data: what programming a device does, read from a JSON file.

A device model answers four questions for the crossbar that holds it: which conductance each
device level targets, what conductance a programming pulse train actually leaves, how much a
device moves when others of its tile are programmed after it, and what stuck devices look
like. Everything a lab measures lives in the file (``device_data/*.json`` ships the defaults,
with their provenance), never in the code: swap the file to swap the technology.

Conductances are in siemens inside the code and in microsiemens (``_uS``) in the files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from metaplast.vocabulary import DEVICE_MODELS

US = 1e-6
ORDERS: tuple[str, ...] = ("row-major", "column-major")


class DeviceFileError(ValueError):
    """A device file that cannot describe a device; the message names the file and field."""


def data_path(name: str) -> Path:
    """A file shipped in ``device_data``."""
    return Path(str(resources.files("metaplast.firmware_sim.crossbar") / "device_data" / name))


class _Fields:
    """Typed access to a JSON document, with errors that name the file and the field."""

    def __init__(self, data: Any, path: Path, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise DeviceFileError(f"{path}: {prefix or 'the document'} must be a JSON object")
        self.data, self.path, self.prefix = data, path, prefix

    def error(self, key: str | int, problem: str) -> DeviceFileError:
        name = f"{self.prefix}[{key}]" if isinstance(key, int) else f"{self.prefix}{key}"
        return DeviceFileError(f"{self.path}: field '{name}' {problem}")

    def get(self, key: str | int) -> Any:
        if key not in self.data:
            raise self.error(key, "is missing")
        return self.data[key]

    def section(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.path, f"{self.prefix}{key}.")

    def number(self, key: str | int, low: float = -math.inf, high: float = math.inf) -> float:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.error(key, f"must be a finite number, got {v!r}")
        if not low <= v <= high:
            raise self.error(key, f"must be in [{low}, {high}], got {v!r}")
        return float(v)

    def conductance(self, key: str | int) -> float:
        v = self.number(key)
        if v < 0:
            raise self.error(key, f"is a negative conductance ({v} uS)")
        return v * US

    def conductances(self, key: str, length: int | None = None) -> tuple[float, ...]:
        v = self.get(key)
        if not isinstance(v, list) or not v:
            raise self.error(key, f"must be a non-empty list of conductances (uS), got {v!r}")
        if length is not None and len(v) != length:
            raise self.error(key, f"must hold {length} values, got {len(v)}")
        sub = _Fields(dict(enumerate(v)), self.path, f"{self.prefix}{key}")
        return tuple(sub.conductance(i) for i in range(len(v)))

    def optional_int(self, key: str, low: int) -> int | None:
        v = self.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise self.error(key, f"must be null or an integer >= {low}, got {v!r}")
        return v


@dataclass(frozen=True)
class StuckDevices:
    """Devices that never switch: rates at fabrication and where their conductance sits."""

    hrs_rate: float = 0.0
    lrs_rate: float = 0.0
    hrs_range: tuple[float, float] = (1 * US, 10 * US)  # uniform
    lrs_mean: float = 500 * US  # normal
    lrs_std: float = 0.0

    @classmethod
    def parse(cls, f: _Fields) -> StuckDevices:
        low, high = f.conductances("hrs_uS", 2)
        if low > high:
            raise f.error("hrs_uS", f"must be [low, high], got [{low / US}, {high / US}]")
        lrs = f.section("lrs_uS")
        out = cls(
            f.number("hrs_rate", 0, 1),
            f.number("lrs_rate", 0, 1),
            (low, high),
            lrs.conductance("mean"),
            lrs.conductance("std"),
        )
        if out.hrs_rate + out.lrs_rate > 1:
            raise f.error("hrs_rate", "plus lrs_rate must not exceed 1")
        return out

    def sample(
        self, shape: tuple[int, ...], floor: float, gen: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Per device: 0 works, 1 stuck in HRS, 2 stuck in LRS; and the stuck conductances."""
        u = torch.rand(shape, generator=gen, dtype=torch.float64)
        kind = torch.zeros(shape, dtype=torch.int8)
        kind[u < self.hrs_rate] = 1
        kind[(u >= self.hrs_rate) & (u < self.hrs_rate + self.lrs_rate)] = 2
        low, high = self.hrs_range
        hrs = low + (high - low) * torch.rand(shape, generator=gen)
        lrs = (self.lrs_mean + self.lrs_std * torch.randn(shape, generator=gen)).clamp_min(floor)
        g = torch.where(kind == 1, hrs, torch.where(kind == 2, lrs, torch.zeros(shape)))
        return kind, g


@dataclass(frozen=True)
class ArrayGeometry:
    """How a chip's devices are grouped: tiles of ``tile_rows x tile_cols``, each programmed
    device by device in ``order``; ``tiles`` bounds how many the chip has (None: as needed)."""

    tile_rows: int = 128
    tile_cols: int = 128
    tiles: int | None = None
    order: str = "row-major"

    @classmethod
    def parse(cls, f: _Fields) -> ArrayGeometry:
        order = f.get("order")
        if order not in ORDERS:
            raise f.error("order", f"must be one of {ORDERS}, got {order!r}")
        rows, cols = f.optional_int("tile_rows", 1), f.optional_int("tile_cols", 1)
        if rows is None or cols is None:
            raise f.error("tile_rows", "and tile_cols must be integers >= 1")
        return cls(rows, cols, f.optional_int("tiles", 1), order)

    def tiles_for(self, rows: int, cols: int) -> int:
        return math.ceil(rows / self.tile_rows) * math.ceil(cols / self.tile_cols)


@dataclass(frozen=True, eq=False)
class DeviceModel:
    """What every device model shares; subclasses say how programming and disturbance act."""

    kind: ClassVar[str]
    path: Path
    source: str
    floor: float
    read_noise: float
    endurance: int | None
    stuck: StuckDevices
    array: ArrayGeometry

    @classmethod
    def _common(cls, f: _Fields) -> dict[str, Any]:
        return {
            "path": f.path,
            "source": str(f.get("source")),
            "floor": f.conductance("floor_uS"),
            "read_noise": f.number("read_noise", 0, 1),
            "endurance": f.optional_int("endurance", 1),
            "stuck": StuckDevices.parse(f.section("stuck")),
            "array": ArrayGeometry.parse(f.section("array")),
        }

    @property
    def disturbs(self) -> bool:
        """Whether programming one device moves the others of its tile."""
        return False

    def level_targets(self, magnitudes: tuple[float, ...]) -> Tensor:
        """Target conductance of each device level, given the weight magnitude it encodes
        (level 0 encodes 0: the pair's other device, or a zero weight)."""
        raise NotImplementedError

    def level_mapping(self, magnitudes: tuple[float, ...]) -> tuple[Tensor, float]:
        """The target conductance of each device level, and the conductance of one weight
        unit (``(G+ - G-) / g_unit`` reads a pair back as a weight)."""
        targets = self.level_targets(magnitudes)
        return targets, float(targets[-1] - targets[0]) / magnitudes[-1]

    def program(self, targets: Tensor, gen: torch.Generator) -> Tensor:
        """Conductances that programming towards ``targets`` leaves (single shot or tuned)."""
        raise NotImplementedError

    def disturbance(self, after: Tensor, gen: torch.Generator) -> Tensor:
        """Conductance change of devices that saw ``after`` devices programmed after them."""
        return torch.zeros(after.shape)

    def with_overrides(
        self,
        stuck_hrs: float | None = None,
        stuck_lrs: float | None = None,
        endurance: int | None = None,
        read_noise: float | None = None,
    ) -> DeviceModel:
        """A copy with the given values replacing the file's (None keeps the file's)."""
        stuck = self.stuck
        if stuck_hrs is not None:
            stuck = replace(stuck, hrs_rate=float(stuck_hrs))
        if stuck_lrs is not None:
            stuck = replace(stuck, lrs_rate=float(stuck_lrs))
        out = replace(self, stuck=stuck)
        if endurance is not None:
            out = replace(out, endurance=int(endurance))
        if read_noise is not None:
            out = replace(out, read_noise=float(read_noise))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.kind,
            "file": str(self.path),
            "read_noise": self.read_noise,
            "endurance": self.endurance,
            "stuck_hrs": self.stuck.hrs_rate,
            "stuck_lrs": self.stuck.lrs_rate,
            "tile": [self.array.tile_rows, self.array.tile_cols],
            "tiles": self.array.tiles,
            "order": self.array.order,
        }


@dataclass(frozen=True, eq=False)
class HfOx1T1R(DeviceModel):
    """A 1T1R HfOx cell programmed single shot to one of a few levels (paper 003).

    The HCS levels are set by the compliance current of the selector transistor, the lowest
    level is the LCS; every programming draws a fresh conductance from its level's
    distribution (no verify). The transistor isolates the cell, so nothing disturbs it.
    """

    kind: ClassVar[str] = "hfox-1t1r"
    means: tuple[float, ...] = ()
    stds: tuple[float, ...] = ()

    @classmethod
    def parse(cls, f: _Fields) -> HfOx1T1R:
        levels = f.section("levels_uS")
        means = levels.conductances("mean")
        stds = levels.conductances("std", len(means))
        if len(means) < 2:
            raise levels.error("mean", "needs at least two levels (LCS and one HCS)")
        if any(b <= a for a, b in zip(means, means[1:], strict=False)):
            raise levels.error("mean", "must be sorted ascending, LCS first, without repeats")
        return cls(**cls._common(f), means=means, stds=stds)

    def level_targets(self, magnitudes: tuple[float, ...]) -> Tensor:
        if len(magnitudes) != len(self.means):
            raise DeviceFileError(
                f"{self.path}: field 'levels_uS.mean' has {len(self.means)} device levels, but "
                f"the weight levels need {len(magnitudes)} per device of the pair"
            )
        return torch.tensor(self.means, dtype=torch.float32)

    def weight_levels(self, top: float) -> tuple[float, ...]:
        """Weight levels ``(G+ - G-)`` of the mean conductances, the largest scaled to ``top``:
        the quantizer's level set for this device (unequal if the means are)."""
        steps = [m - self.means[0] for m in self.means]
        half = [top * s / steps[-1] for s in steps]
        return tuple([-h for h in reversed(half[1:])] + half)

    def program(self, targets: Tensor, gen: torch.Generator) -> Tensor:
        means = torch.tensor(self.means, dtype=torch.float32)
        stds = torch.tensor(self.stds, dtype=torch.float32)
        level = (targets[:, None] - means[None, :]).abs().argmin(1)
        g = means[level] + stds[level] * torch.randn(targets.shape, generator=gen)
        return g.clamp_min(self.floor)


@dataclass(frozen=True, eq=False)
class TiO2Passive(DeviceModel):
    """A passive (0T1R) TiO2 device tuned to an analog target with write-verify (paper 004).

    Tuning leaves a relative error whose spread shrinks with the conductance and whose mean is
    negative (devices are tuned upwards from RESET). The V/3 biasing scheme of the passive
    array disturbs every device of a tile by each later programming in it: the change after
    ``k`` later programmings is drawn from the measured database, not from a fitted normal.
    """

    kind: ClassVar[str] = "tio2-passive"
    g_min: float = 100 * US
    g_max: float = 500 * US
    std_slope: float = 0.0  # percent per uS
    std_base: float = 0.0  # percent
    offset_mean: float = 0.0  # percent
    offset_std: float = 0.0  # percent
    disturb_samples: Tensor | None = None  # flat, siemens
    disturb_start: Tensor | None = None  # per k: first sample, or of the nearest k below
    disturb_count: Tensor | None = None

    @classmethod
    def parse(cls, f: _Fields) -> TiO2Passive:
        g_min, g_max = f.conductances("conductance_uS", 2)
        if not g_min < g_max:
            raise f.error("conductance_uS", "must be [G_min, G_max] with G_min < G_max")
        tuning = f.section("tuning")
        disturbance = f.get("disturbance")
        samples = start = count = None
        if disturbance is not None:
            samples, start, count = _load_disturbance(f.path.parent / str(disturbance), f)
        return cls(
            **cls._common(f),
            g_min=g_min,
            g_max=g_max,
            std_slope=tuning.number("std_percent_per_uS"),
            std_base=tuning.number("std_percent"),
            offset_mean=tuning.number("offset_percent_mean"),
            offset_std=tuning.number("offset_percent_std", 0),
            disturb_samples=samples,
            disturb_start=start,
            disturb_count=count,
        )

    @property
    def disturbs(self) -> bool:
        return self.disturb_samples is not None

    def level_targets(self, magnitudes: tuple[float, ...]) -> Tensor:
        m = torch.tensor(magnitudes, dtype=torch.float32)
        return self.g_min + (self.g_max - self.g_min) * m / m.max()

    def program(self, targets: Tensor, gen: torch.Generator) -> Tensor:
        std = (self.std_slope * targets / US + self.std_base).clamp_min(0)
        offset = self.offset_mean + self.offset_std * torch.randn(targets.shape, generator=gen)
        rel = (offset + std * torch.randn(targets.shape, generator=gen)) / 100
        return (targets * (1 + rel)).clamp_min(self.floor)

    def disturbance(self, after: Tensor, gen: torch.Generator) -> Tensor:
        if self.disturb_samples is None or self.disturb_start is None:
            return torch.zeros(after.shape)
        assert self.disturb_count is not None
        k = after.clamp(0, len(self.disturb_start) - 1)
        pick = (torch.rand(after.shape, generator=gen) * self.disturb_count[k]).long()
        delta = self.disturb_samples[self.disturb_start[k] + pick]
        return torch.where(after > 0, delta, torch.zeros(()))


MIN_DISTURBANCE_SAMPLES = 20


def _load_disturbance(path: Path, f: _Fields) -> tuple[Tensor, Tensor, Tensor]:
    """The database as one flat tensor and, per k, where its samples start and how many.

    The database thins out at large ``k`` (one sample at k = 54, none above). A ``k`` with
    fewer than :data:`MIN_DISTURBANCE_SAMPLES` samples borrows those of the largest ``k``
    below it that has enough: disturbance grows with ``k``, so this underestimates it a
    little rather than invent data or replay one measurement for every device.
    """
    try:
        doc = json.loads(path.read_text())
        table = doc["disturbance"]
        lists = {int(k): [float(x) for x in v] for k, v in table.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = f"names {path}, which is not a disturbance database: {exc}"
        raise f.error("disturbance", problem) from None
    if not lists or min(lists) < 1 or not lists.get(1):
        raise f.error("disturbance", f"{path}: needs samples for k = 1 and no k < 1")
    samples: list[float] = []
    start, count = [0], [0]  # k = 0: no disturbance
    for k in range(1, max(lists) + 1):
        values = lists.get(k, [])
        if any(not math.isfinite(v) for v in values):
            raise f.error("disturbance", f"{path}: disturbance[{k}] holds a non-finite value")
        if len(values) >= MIN_DISTURBANCE_SAMPLES or (k == 1 and values):
            start.append(len(samples))
            count.append(len(values))
            samples.extend(values)
        else:
            start.append(start[-1])
            count.append(count[-1])
    return (
        torch.tensor(samples, dtype=torch.float32),
        torch.tensor(start, dtype=torch.int64),
        torch.tensor(count, dtype=torch.int64),
    )


MODELS: dict[str, type[DeviceModel]] = dict(
    zip(DEVICE_MODELS, (HfOx1T1R, TiO2Passive), strict=True)
)


def load_device(name: str, path: str | Path | None = None) -> DeviceModel:
    """The device model ``name`` from ``path`` (default: the file shipped for it)."""
    if name not in MODELS:
        raise DeviceFileError(f"unknown device model {name!r}; known: {sorted(MODELS)}")
    file = Path(path) if path is not None else data_path(f"{name}.json")
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise DeviceFileError(f"{file}: cannot read the device file ({exc.strerror})") from None
    except ValueError as exc:
        raise DeviceFileError(f"{file}: not valid JSON ({exc})") from None
    f = _Fields(data, file)
    model = f.get("model")
    if model != name:
        raise f.error("model", f"says {model!r}, but the crossbar asked for {name!r}")
    return MODELS[name].parse(f)  # type: ignore[attr-defined]


def measured_stuck_maps() -> list[tuple[str, Tensor]]:
    """The five measured 8x8 TiO2 crossbars of paper 004: (name, resistances in ohms)."""
    out = []
    for csv in sorted(data_path("tio2-stuck-maps").glob("*.csv")):
        lines = csv.read_text().splitlines()
        values = [float(v) for v in lines[2].replace(";", " ").split()]
        out.append((csv.stem, torch.tensor(values, dtype=torch.float64).reshape(8, 8)))
    return out
