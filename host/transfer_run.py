"""The half-moons transfer experiment of paper 004: train (regular or hardware-aware), then
simulate transfers onto fresh passive crossbars and record per-test-point correctness.

A run directory holds ``transfer.json`` (the contract: ``share_ge_95``, ``share_ge_90``,
``accuracy_mean``, with the configuration and timings), ``model.pt``, ``accuracy.png`` (the
accuracy of every transfer) and ``variability.png`` (Fig. 6: how much the transfers disagree
over the input plane).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metaplast.firmware_sim.devices import DeviceFileError, TiO2Passive, load_device
from metaplast.host.config import ConfigError
from metaplast.host.hardware_aware import HardwareAware, TransferStats, predictions
from metaplast.host.rundir import write_json

TRAININGS: tuple[str, ...] = ("regular", "hardware-aware")
DATASETS: tuple[str, ...] = ("moons",)


@dataclass(frozen=True)
class TransferConfig:
    dataset: str = "moons"
    training: str = "hardware-aware"
    transfers: int = 10_000
    seed: int = 0
    epochs: int = 100
    hidden: int = 8
    lr: float = 0.01
    batch_size: int = 256
    device_file: str | None = None
    stuck_hrs: float | None = None
    stuck_lrs: float | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.training not in TRAININGS:
            raise ConfigError(f"--training must be one of {TRAININGS}, got {self.training!r}")
        for name in ("transfers", "epochs", "hidden", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")

    def device(self) -> TiO2Passive:
        try:
            dev = load_device("tio2-passive", self.device_file).with_overrides(
                stuck_hrs=self.stuck_hrs, stuck_lrs=self.stuck_lrs
            )
        except DeviceFileError as exc:
            raise ConfigError(str(exc)) from exc
        assert isinstance(dev, TiO2Passive)
        return dev


def load_moons(split: str) -> tuple[Tensor, Tensor]:
    """The paper's exact split (``host/data/moons_*.csv``): inputs ``n x 2``, labels 0/1."""
    path = Path(str(resources.files("metaplast.host") / "data" / f"moons_{split}.csv"))
    a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
    return torch.from_numpy(a[:, :2]), torch.from_numpy(a[:, 2])


def train_moons(cfg: TransferConfig, device: TiO2Passive) -> tuple[nn.Module, HardwareAware]:
    torch.manual_seed(cfg.seed)
    model = nn.Sequential(nn.Linear(2, cfg.hidden), nn.Sigmoid(), nn.Linear(cfg.hidden, 1))
    hw = HardwareAware(model, device, cfg.seed)
    x, y = load_moons("train")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    order = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(y), generator=order).split(cfg.batch_size):
            out = hw.forward(x[idx]) if cfg.training == "hardware-aware" else model(x[idx])
            loss = nn.functional.binary_cross_entropy_with_logits(out[:, 0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, hw


def run(cfg: TransferConfig, out: str | Path) -> dict[str, Any]:
    """Train, transfer ``cfg.transfers`` times, write the run directory, return the record."""
    from metaplast.host import plots

    device = cfg.device()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, hw = train_moons(cfg, device)
    train_s = time.perf_counter() - t0
    x_te, y_te = load_moons("test")
    x_va, y_va = load_moons("validation")
    with torch.no_grad():
        software = {
            "test": float((predictions(model(x_te)) == y_te.long()).double().mean()),
            "validation": float((predictions(model(x_va)) == y_va.long()).double().mean()),
        }
    hw.gen.manual_seed(cfg.seed + 1)  # transfers independent of the training's draws
    t0 = time.perf_counter()
    outputs = hw.transfer_outputs(x_te, cfg.transfers)
    transfer_s = time.perf_counter() - t0
    stats = TransferStats(predictions(outputs) == y_te.long())
    record = {
        "config": dataclasses.asdict(cfg),
        "device": device.describe(),
        **stats.summary(),
        "software_accuracy": software,
        "per_point": [round(v, 6) for v in stats.per_point.tolist()],
        "seconds": {"training": round(train_s, 3), "transfers": round(transfer_s, 3)},
        "seconds_per_transfer": transfer_s / cfg.transfers,
    }
    write_json(out / "transfer.json", record)
    torch.save(model.state_dict(), out / "model.pt")
    plots.transfer_accuracy(stats.correct.double().mean(1), out / "accuracy.png")
    grid = torch.stack(
        torch.meshgrid(torch.linspace(0, 1, 100), torch.linspace(0, 1, 100), indexing="xy"), -1
    ).reshape(-1, 2)
    votes = predictions(hw.transfer_outputs(grid, min(cfg.transfers, 1000))).double().mean(0)
    plots.transfer_variability(votes.reshape(100, 100), x_te, y_te, out / "variability.png")
    return record
