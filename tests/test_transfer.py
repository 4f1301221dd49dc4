"""Simulated transfers onto passive crossbars and hardware-aware training (paper 004)."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from metaplast.cli import main
from metaplast.firmware_sim.devices import load_device
from metaplast.firmware_sim.transfer import TransferSampler
from metaplast.host.hardware_aware import HardwareAware, TransferStats


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_an_ideal_transfer_gives_the_weights_back() -> None:
    exact = load_device("tio2-passive").with_overrides(stuck_hrs=0, stuck_lrs=0)
    from dataclasses import replace

    exact = replace(exact, std_slope=0, std_base=0, offset_mean=0, offset_std=0,
                    disturb_samples=None, disturb_start=None, disturb_count=None)  # fmt: skip
    w = torch.randn(5, 7)
    t = TransferSampler(exact, (5, 7)).sample(w, 3, gen())
    assert torch.allclose(t.weights, w.expand(3, 5, 7), atol=1e-5)
    assert not t.stuck.any()


def test_transfers_carry_the_devices_statistics() -> None:
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.1, stuck_lrs=0.1)
    sampler = TransferSampler(dev, (8, 8))
    # the last device of a full tile is tuned last: nothing disturbs it; the first sees all
    assert int(sampler.after.min()) == 0 and int(sampler.after.max()) == 63
    w = torch.linspace(-1, 1, 64).reshape(8, 8)
    t = sampler.sample(w, 4000, gen(1))
    share = float(t.stuck.double().mean())
    assert share == pytest.approx(1 - 0.8**2, abs=0.01)  # either device of the pair
    err = (t.weights - w)[~t.stuck]
    assert 0.005 < float(err.abs().mean()) < 0.2
    assert float(err.mean()) < 0  # tuning offset and V/3 disturbance are both negative


def test_hardware_aware_forward_is_differentiable_and_spares_stuck_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1))
    dev = load_device("tio2-passive").with_overrides(stuck_hrs=0.3, stuck_lrs=0.3)
    hw = HardwareAware(model, dev, seed=0)
    out = hw.forward(torch.randn(6, 3))
    out.sum().backward()
    grad = model[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert (grad == 0).any() and (grad != 0).any()  # stuck weights get no gradient
    with pytest.raises(ValueError, match="no torch.nn.Linear"):
        HardwareAware(nn.Sigmoid(), dev, seed=0)


def test_transfer_statistics() -> None:
    correct = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    s = TransferStats(correct).summary()
    assert s["share_ge_95"] == pytest.approx(1 / 3)
    assert s["share_ge_90"] == pytest.approx(1 / 3)
    assert s["accuracy_mean"] == pytest.approx(8 / 12)


def test_cli_writes_the_transfer_contract(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["transfer", "--dataset", "moons", "--training", "hardware-aware"]
    assert (
        main([*args, "--transfers", "500", "--seed", "1", "--epochs", "20", "--out", str(out)]) == 0
    )
    rec = json.loads((out / "transfer.json").read_text())
    assert 0 <= rec["share_ge_95"] <= rec["share_ge_90"] <= 1
    assert 0.5 < rec["accuracy_mean"] <= 1
    assert len(rec["per_point"]) == 200
    for name in ("model.pt", "accuracy.png", "variability.png"):
        assert (out / name).is_file()
    assert main(["transfer", "--training", "magic", "--out", str(tmp_path / "x")]) == 2
