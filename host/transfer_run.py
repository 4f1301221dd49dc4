"""Simulated ex-situ transfers (paper 004) and the run directory that records them.

Two experiments share the statistics and the record:

- ``moons``: the paper's half-moons experiment. A 2-8-1 sigmoid network is trained (regular,
  or regular and then hardware-aware), then transferred ``N`` times onto fresh passive TiO2
  crossbars by the linear weight mapping;
- ``mnist``: the quantized network of a finished metaplastic session (``metaplast train``,
  with or without ``--hardware-aware``) is transferred ``N`` times onto fresh crossbars of a
  device model, its levels programmed as the digital unit programs them, and every task of
  the session is tested on every transfer.

``transfer.json`` holds the contract (``share_ge_95``, ``share_ge_90``: shares of test points
classified correctly by at least 95 % / 90 % of the transfers; ``accuracy_mean``) with the
configuration, the paper's Table 1 brackets, the software accuracy and the timings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metaplast.errors import ConfigError
from metaplast.firmware_sim.crossbar.devices import (
    MODELS,
    US,
    DeviceFileError,
    DeviceModel,
    load_device,
)
from metaplast.firmware_sim.crossbar.transfer import (
    SAMPLERS,
    TransferSampler,
    WriteCost,
    side_by_side,
)
from metaplast.firmware_sim.crossbar.write_plan import (
    STUCK_MAPS,
    ReadVerify,
    WritePlan,
    WritePlanError,
    tile_block,
    tile_order,
)
from metaplast.host.hardware_aware import BIASES, HardwareAware, TransferStats, predictions
from metaplast.host.progress import progress
from metaplast.host.rundir import write_json

TRAININGS: tuple[str, ...] = ("regular", "hardware-aware")
DATASETS: tuple[str, ...] = ("moons", "mnist")
DEFAULT_TRANSFERS = {"moons": 10_000, "mnist": 100}


RECIPES: dict[str, dict[str, Any]] = {
    "project": {
        "sampler": "project",
        "bias": "row",
        "init": "torch",
        "lr": 0.01,
        "batch_size": 0,
        "epochs": 4000,
        "ha_epochs": 4000,
        "ha_start": "regular",
        "weight_decay": 0.0,
        "stuck_gradient": False,
    },
    "paper-code": {
        "sampler": "paper-code",
        "bias": "paper",
        "init": "xavier",
        "lr": 0.1,
        "batch_size": 256,
        "epochs": 10000,
        "ha_epochs": 10000,
        "ha_start": "scratch",
        "weight_decay": 1e-4,
        "stuck_gradient": True,
    },
}
"""Moons recipes: this project's, and every choice as the code published with paper 004 makes
it (``docs/transfer.md`` has the audit behind each entry). ``batch_size`` 0 is the whole
training split at once."""

INITS: tuple[str, ...] = ("torch", "xavier")
HA_STARTS: tuple[str, ...] = ("regular", "scratch")
DEFAULT_VERIFY_ITERATIONS = 5


@dataclass(frozen=True)
class TransferConfig:
    """A transfer experiment. For ``moons``, ``recipe`` fills every training and mapping
    choice left ``None`` (:data:`RECIPES`); ``from_run`` names the session run whose network
    ``mnist`` transfers (its own config says how it was trained). ``tile_order``,
    ``verify_tolerance`` (uS), ``verify_iterations`` and ``stuck_map`` make the write plan
    (:mod:`~metaplast.firmware_sim.crossbar.write_plan`), which hardware-aware training
    samples too."""

    dataset: str = "moons"
    training: str | None = None
    transfers: int | None = None
    seed: int = 0
    recipe: str = "project"
    epochs: int | None = None
    ha_epochs: int | None = None
    hidden: int = 8
    lr: float | None = None
    batch_size: int | None = None
    sampler: str | None = None
    init: str | None = None
    ha_start: str | None = None
    weight_decay: float | None = None
    stuck_gradient: bool | None = None
    crossbar: str = "tio2-passive"
    bias: str | None = None
    device_file: str | None = None
    stuck_hrs: float | None = None
    stuck_lrs: float | None = None
    tile_order: str = "device-file"
    tile_block: str | None = None
    verify_tolerance: float | None = None
    verify_iterations: int | None = None
    stuck_map: str = "unknown"
    from_run: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"`dataset` must be one of {DATASETS}, got {self.dataset!r}")
        if self.recipe not in RECIPES:
            raise ConfigError(f"`recipe` must be one of {tuple(RECIPES)}, got {self.recipe!r}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"`sampler` must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.init not in INITS:
            raise ConfigError(f"`init` must be one of {INITS}, got {self.init!r}")
        if self.ha_start not in HA_STARTS:
            raise ConfigError(f"`ha_start` must be one of {HA_STARTS}, got {self.ha_start!r}")
        assert self.weight_decay is not None
        if not self.weight_decay >= 0:
            raise ConfigError(f"`weight_decay` must be >= 0, got {self.weight_decay}")
        if self.dataset == "mnist" and self.training is not None:
            raise ConfigError(
                "`training`: a session run says how it was trained (metaplast train "
                "--hardware-aware MODEL); leave `training` out with `dataset` mnist"
            )
        if self.dataset == "moons" and self.training is None:
            object.__setattr__(self, "training", "hardware-aware")
        if self.dataset == "moons" and self.training not in TRAININGS:
            raise ConfigError(f"`training` must be one of {TRAININGS}, got {self.training!r}")
        if self.bias not in BIASES:
            raise ConfigError(f"`bias` must be one of {BIASES}, got {self.bias!r}")
        if self.crossbar not in MODELS:
            raise ConfigError(f"`crossbar` must be one of {tuple(MODELS)}, got {self.crossbar!r}")
        if self.transfers is None:
            object.__setattr__(self, "transfers", DEFAULT_TRANSFERS[self.dataset])
        for name in ("transfers", "epochs", "hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be >= 1")
        assert self.ha_epochs is not None and self.batch_size is not None and self.lr is not None
        if self.ha_epochs < 0:
            raise ConfigError("`ha_epochs` must be >= 0")
        if self.batch_size < 0:
            raise ConfigError("`batch_size` must be >= 1, or 0 for the whole training split")
        if not self.lr > 0:
            raise ConfigError(f"`lr` must be > 0, got {self.lr}")
        for name in ("stuck_hrs", "stuck_lrs"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 0.5:
                raise ConfigError(f"`{name}` must be in [0, 0.5], got {v}")
        if self.dataset == "moons" and self.crossbar != "tio2-passive":
            raise ConfigError(
                "`dataset` moons maps float weights linearly onto a tunable device: "
                "`crossbar` tio2-passive (a multi-level device takes a quantized network: "
                "`dataset` mnist `from_run` RUN)"
            )
        if self.stuck_map not in STUCK_MAPS:
            raise ConfigError(f"`stuck_map` must be one of {STUCK_MAPS}, got {self.stuck_map!r}")
        if self.stuck_map == "measured" and self.crossbar != "tio2-passive":
            raise ConfigError("`stuck_map` measured: the measured arrays are tio2-passive")
        if self.verify_tolerance is None and self.verify_iterations is not None:
            raise ConfigError("`verify_iterations` needs `verify_tolerance` (in uS)")
        if self.verify_tolerance is not None and self.verify_iterations is None:
            object.__setattr__(self, "verify_iterations", DEFAULT_VERIFY_ITERATIONS)
        self._verify()  # a bad read-verify is refused before any device file is read
        if not self.plain_write and self.sampler != "project":
            raise ConfigError(
                f"`tile_order`, `tile_block`, `verify_tolerance` and `stuck_map` write this "
                f"project's crossbar: use them with `sampler` project, not {self.sampler!r}"
            )
        if self.dataset == "mnist" and self.from_run is None:
            raise ConfigError("`dataset` mnist transfers a finished session: give `from_run` RUN")
        if self.dataset == "moons" and self.from_run is not None:
            raise ConfigError("`from_run` RUN takes a session run: use it with `dataset` mnist")

    @property
    def plain_write(self) -> bool:
        return (
            self.tile_order == "device-file"
            and self.tile_block is None
            and self.verify_tolerance is None
            and self.stuck_map == "unknown"
        )

    def _verify(self) -> ReadVerify | None:
        if self.verify_tolerance is None:
            return None
        assert self.verify_iterations is not None
        try:
            return ReadVerify(self.verify_tolerance * US, self.verify_iterations)
        except WritePlanError as exc:
            raise ConfigError(f"`verify_tolerance`/`verify_iterations`: {exc}") from None

    def plan(self, device: DeviceModel) -> WritePlan:
        """The write plan, its block and order checked against ``device``'s tile."""
        try:
            block = tile_block(self.tile_block, device.array)
        except WritePlanError as exc:
            raise ConfigError(f"`tile_block`: {exc}") from None
        try:
            order = tile_order(self.tile_order, device.array, block)
        except WritePlanError as exc:
            raise ConfigError(f"`tile_order`: {exc}") from None
        return WritePlan(order, self._verify(), self.stuck_map, block)

    def device(self) -> DeviceModel:
        try:
            return load_device(self.crossbar, self.device_file).with_overrides(
                stuck_hrs=self.stuck_hrs, stuck_lrs=self.stuck_lrs
            )
        except DeviceFileError as exc:
            raise ConfigError(str(exc)) from exc


# moons ---------------------------------------------------------------------------------------


def load_moons(split: str) -> tuple[Tensor, Tensor]:
    """The paper's exact split (``host/data/moons_*.csv``): inputs ``n x 2``, labels 0/1."""
    path = Path(str(resources.files("metaplast.host") / "data" / f"moons_{split}.csv"))
    a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    return torch.from_numpy(a[:, :2]), torch.from_numpy(a[:, 2])


def _fit(
    model: nn.Module,
    forward: Callable[[Tensor], Tensor],
    cfg: TransferConfig,
    epochs: int,
    phase: int,
    desc: str,
    hw: HardwareAware | None = None,
    show: bool = True,
) -> None:
    """Adam on binary cross-entropy over the moons training split. With ``hw`` and
    ``stuck_gradient`` (the paper's code), a weight whose device was stuck in the batch's
    transfer keeps its value through the step."""
    x, y = load_moons("train")
    decay = cfg.weight_decay if hw is not None else 0.0
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=decay)
    order = torch.Generator().manual_seed(cfg.seed * 16 + phase)
    batch = cfg.batch_size or len(y)
    params = dict(model.named_parameters())
    restore = hw is not None and cfg.stuck_gradient
    for _ in progress(range(epochs), desc=desc, unit="epoch", enabled=show):
        for idx in torch.randperm(len(y), generator=order).split(batch):
            loss = nn.functional.binary_cross_entropy_with_logits(forward(x[idx])[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            if restore:
                assert hw is not None
                held = {n: (m, params[n].detach()[m].clone()) for n, m in hw.last_stuck.items()}
            opt.step()
            if restore:
                with torch.no_grad():
                    for n, (mask, values) in held.items():
                        params[n][mask] = values


def train_moons(
    cfg: TransferConfig, device: DeviceModel, plan: WritePlan | None = None, show: bool = True
) -> tuple[nn.Module, HardwareAware]:
    """The paper's 2-``hidden``-1 sigmoid network: ``epochs`` of regular training, then (for
    ``hardware-aware``) ``ha_epochs`` through sampled transfers onto ``device``, continuing
    from the regular network (this project) or from a fresh initialization (the paper's)."""
    torch.manual_seed(cfg.seed)
    model = nn.Sequential(nn.Linear(2, cfg.hidden), nn.Sigmoid(), nn.Linear(cfg.hidden, 1))
    if cfg.init == "xavier":
        for layer in (model[0], model[2]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.01)
    assert cfg.bias is not None and cfg.sampler is not None
    hw = HardwareAware(
        model,
        device,
        cfg.seed,
        cfg.bias,
        cfg.sampler,
        stuck_gradient=bool(cfg.stuck_gradient),
        plan=plan,
    )
    assert cfg.epochs is not None and cfg.ha_epochs is not None
    if cfg.training == "regular" or cfg.ha_start == "regular":
        _fit(model, model, cfg, cfg.epochs, 0, "regular training", show=show)
    if cfg.training == "hardware-aware":
        _fit(model, hw.forward, cfg, cfg.ha_epochs, 1, "hardware-aware training", hw, show)
    return model, hw


def _accuracy(model: nn.Module, split: str) -> float:
    x, y = load_moons(split)
    with torch.no_grad():
        return float((predictions(model(x)) == y.long()).double().mean())


def plane_votes(hw: HardwareAware, transfers: int, points: int = 100) -> Tensor:
    """Over a ``points x points`` grid of the unit input plane, the share of ``transfers``
    that say class 1 (Fig. 6)."""
    axis = torch.linspace(0, 1, points)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    votes = predictions(hw.transfer_outputs(grid, transfers)).double().mean(0)
    return votes.reshape(points, points)


def run_moons(
    cfg: TransferConfig, device: DeviceModel, plan: WritePlan, out: Path, show: bool = True
) -> dict[str, Any]:
    """A network this small runs ten times faster on one thread than on two that compete
    with each other; the results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_moons(cfg, device, plan, out, show)
    finally:
        torch.set_num_threads(threads)


def _run_moons(
    cfg: TransferConfig, device: DeviceModel, plan: WritePlan, out: Path, show: bool
) -> dict[str, Any]:
    from metaplast.host import plots

    t0 = time.perf_counter()
    model, hw = train_moons(cfg, device, plan, show)
    train_s = time.perf_counter() - t0
    x_te, y_te = load_moons("test")
    software = {split: _accuracy(model, split) for split in ("train", "validation", "test")}
    hw.gen.manual_seed(cfg.seed + 1)  # transfers independent of the training's draws
    assert cfg.transfers is not None
    t0 = time.perf_counter()
    outputs = hw.transfer_outputs(x_te, cfg.transfers)
    transfer_s = time.perf_counter() - t0
    cost = hw.write_cost
    stats = TransferStats(predictions(outputs) == y_te.long())
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    plots.transfer_accuracy(stats.correct.double().mean(1), out / "accuracy.png")
    votes = plane_votes(hw, min(cfg.transfers, 1000))
    plots.transfer_variability(votes, x_te, y_te, out / "variability.png")
    return {
        **stats.summary(),
        "table": stats.table(),
        "software_accuracy": software,
        "per_point": [round(v, 6) for v in stats.per_point.tolist()],
        "write_cost": cost.describe(),
        **_placement(
            plan,
            {"+".join(g.names): g.sampler for g in hw.mapped},  # type: ignore[misc]
        ),
        "seconds": {"training": round(train_s, 3), "transfers": round(transfer_s, 3)},
        "seconds_per_transfer": transfer_s / cfg.transfers,
    }


def _placement(plan: WritePlan, samplers: dict[str, TransferSampler]) -> dict[str, Any]:
    """On the measured chip, where each matrix's tiles sit (``placement`` in the record)."""
    if plan.stuck_map != "measured":
        return {}
    return {"placement": {name: s.placement() for name, s in samplers.items()}}


# a session's network ------------------------------------------------------------------------


def run_session(
    cfg: TransferConfig, device: DeviceModel, plan: WritePlan, out: Path, show: bool = True
) -> dict[str, Any]:
    """Transfer the quantized network of session run ``cfg.from_run`` ``cfg.transfers`` times
    and test every task of the session on every transfer."""
    from metaplast.host.session import finished_session, load_tasks

    assert cfg.from_run is not None and cfg.transfers is not None
    src = Path(cfg.from_run)
    session = finished_session(src, "--from")
    session_cfg = session.config
    try:
        device.level_targets(session_cfg.contract.device_magnitudes())
    except DeviceFileError as exc:
        raise ConfigError(f"`crossbar` {cfg.crossbar}: {exc}") from exc
    data = load_tasks(session_cfg, cfg.data_dir, train=False)
    for i in range(len(session.synapses)):  # the transferred weights multiply, in torch
        session.model.multiply_with(i, None)
    last = session_cfg.tasks[-1]
    software = {t: session.evaluate(d, last) for t, d in data.items()}
    levels = [s.levels() for s in session.synapses]
    samplers = side_by_side(device, [tuple(lv.shape) for lv in levels], plan)  # type: ignore[misc]
    cost = WriteCost.of(samplers)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    correct: dict[str, list[Tensor]] = {t: [] for t in data}
    t0 = time.perf_counter()
    chunk = 4
    steps = range(0, cfg.transfers, chunk)
    for start in progress(steps, desc=f"transfers, {chunk} a step", unit="step", enabled=show):
        k = min(chunk, cfg.transfers - start)
        draws = [
            s.sample_levels(lv, session_cfg.contract, k, gen)
            for s, lv in zip(samplers, levels, strict=True)
        ]
        cost.add(draws)
        for n in range(k):
            session.model.set_weights([d.weights[n] for d in draws])
            for t, d in data.items():
                correct[t].append(session.predict(d, last) == d.y_test)
    transfer_s = time.perf_counter() - t0
    per_task = {t: TransferStats(torch.stack(c)) for t, c in correct.items()}
    pooled = TransferStats(torch.cat([s.correct for s in per_task.values()], 1))
    out.mkdir(parents=True, exist_ok=True)
    return {
        **pooled.summary(),
        "table": pooled.table(),
        "run": str(src),
        "training": "regular" if session_cfg.device.hardware_aware is None else "hardware-aware",
        "session": session_cfg.to_dict(),
        "tasks": {t: {**s.summary(), "table": s.table()} for t, s in per_task.items()},
        "software_accuracy": software,
        "write_cost": cost.describe(),
        **_placement(plan, {f"layer{i}": smp for i, smp in enumerate(samplers)}),
        "seconds": {"transfers": round(transfer_s, 3)},
        "seconds_per_transfer": transfer_s / cfg.transfers,
    }


def run(cfg: TransferConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the experiment, write ``out/transfer.json`` (and the figures), return the record.
    A configuration or input error raises before ``out`` is created, and an earlier transfer
    in ``out`` is never overwritten."""
    out = Path(out)
    if (out / "transfer.json").exists():
        raise ConfigError(
            f"--out {out} already holds a transfer (transfer.json): choose another directory"
        )
    device = cfg.device()
    plan = cfg.plan(device)
    run_dataset = run_moons if cfg.dataset == "moons" else run_session
    body = run_dataset(cfg, device, plan, out, progress)
    record = {
        "config": dataclasses.asdict(cfg),
        "training": cfg.training,
        "device": device.describe(),
        "write_plan": plan.describe(),
        **body,
    }
    write_json(out / "transfer.json", record)
    return record
