"""Training with a crossbar model in the loop: MVMs on the devices, programming, resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from test_session import epochs_without_time, interrupted_and_resumed, tiny_args

from metaplast.cli import main
from metaplast.errors import ConfigError
from metaplast.host.config import SessionConfig
from metaplast.host.crossbar_synapses import CrossbarSynapses
from metaplast.host.session import Session, train


def train_steps(session: Session, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(50, 784, generator=g), torch.randint(0, 10, (50,), generator=g)
        loss = torch.nn.functional.cross_entropy(session.model(x), y)
        session.model.zero_weight_grads()
        loss.backward()
        for i, (w, s, adam) in enumerate(
            zip(session.model.weights, session.synapses, session.adams, strict=True)
        ):
            changed = s.apply(0.05 * adam.direction(w.grad))
            session.programming.record(i, s.levels(), changed)  # fmt: skip


@pytest.mark.parametrize("crossbar", ["hfox-1t1r", "tio2-passive"])
def test_devices_receive_exactly_the_operations_the_unit_asks_for(crossbar: str) -> None:
    session = Session(SessionConfig.of(**{**TINY, "crossbar": crossbar}))
    train_steps(session, 15)
    total = 0
    for s, counts in zip(session.synapses, session.programming.counts, strict=True):
        assert isinstance(s, CrossbarSynapses)
        n_out, n_in = s.shape
        pulses = s.crossbar.counts.reshape(n_in, n_out, 2).permute(2, 1, 0)
        assert torch.equal(pulses, counts)
        # one device of each pair at level 0, the other at the weight's level
        p, n = session.config.contract.device_levels_of(s.levels())
        assert torch.all((p == 0) | (n == 0))
        total += int(counts.sum())
    assert total > 1000


def test_the_layer_mvms_run_on_the_conductances() -> None:
    session = Session(SessionConfig.of(**{**TINY, "crossbar": "hfox-1t1r"}))
    layer = session.synapses[0]
    w_eff = layer.quantized()  # (G+ - G-) / g_unit, one read
    q = session.config.contract.level_values()[layer.levels()]
    err = w_eff - q
    assert 0.005 < float(err.std()) < 0.1  # device spread, well under one level (0.1875)
    x = torch.randn(8, 784, requires_grad=True)
    w = session.model.weights[0]
    y = layer.mvm(x, w)
    assert torch.allclose(y, x @ w_eff.t(), atol=1e-4)
    delta = torch.randn_like(y)
    y.backward(delta)
    assert torch.allclose(w.grad, delta.t() @ x.detach(), atol=1e-4)
    assert torch.allclose(x.grad, delta @ w_eff, atol=1e-4)


def test_crossbar_session_resumes_bit_identically(data_dir: Path, tmp_path: Path) -> None:
    cfg = SessionConfig.of(
        **{**TINY, "crossbar": "tio2-passive", "stuck_hrs": 0.01, "endurance": 4}
    )
    whole = train(cfg, tmp_path / "whole", data_dir, progress=False)
    resumed = interrupted_and_resumed(cfg, tmp_path / "part", data_dir)
    assert epochs_without_time(resumed) == epochs_without_time(whole)
    assert resumed["programming"] == whole["programming"]
    assert resumed["crossbar"] == whole["crossbar"]
    assert whole["crossbar"]["worn_out_devices"] > 0


def test_cli_crossbar_writes_the_programming_contract(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out, "--crossbar", "hfox-1t1r", "--stuck-lrs", "0.01")) == 0
    assert "programming operations per device" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    prog = metrics["programming"]
    assert prog["devices"] == 2 * metrics["synapses"]
    assert 0 <= prog["frac_over_50"] <= 1 - prog["frac_under_25"] <= 1
    assert 0 < prog["mean"] <= prog["max"]
    assert metrics["crossbar"]["model"] == "hfox-1t1r"
    assert metrics["crossbar"]["stuck_lrs_devices"] > 0
    assert metrics["epochs"][1]["test_acc"]["mnist"] > 0.5
    assert (out / "programming.png").is_file()
    with np.load(out / "level_changes.npz") as npz:
        assert npz["programming0"].shape == (2, 32, 784)
    with np.load(out / "conductances.npz") as npz:
        assert npz["layer0_g"].shape == npz["layer0_level"].shape == (784, 64)
        assert npz["layer1_stuck"].shape == (32, 20)
        # the final conductances sit around their level's mean; the spread is the device's
        level, g = npz["layer0_level"], npz["layer0_g"]
        working = npz["layer0_stuck"] == 0
        for k in (1, 2):
            mean = g[(level == k) & working].mean() * 1e6
            assert abs(mean - (5 + 15 * k)) < 1.5
    assert (out / "conductances.png").is_file()


def test_ideal_crossbar_counts_programming_too(data_dir: Path, tmp_path: Path) -> None:
    metrics = train(SessionConfig.of(**TINY), tmp_path / "ideal", data_dir, progress=False)
    assert metrics["crossbar"] == {"model": "ideal"}
    changes = metrics["level_changes"]["total"]
    # every level change reprograms one or two devices, plus the initial programming
    assert changes <= metrics["programming"]["total"]


def write_device(tmp_path: Path, name: str, **changes) -> str:
    from metaplast.firmware_sim.crossbar.devices import data_path

    data = json.loads(data_path(f"{name}.json").read_text())
    if "disturbance" in data:
        data["disturbance"] = str(data_path(data["disturbance"]))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        (data[section] if field else data)[field or section] = value
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device-file", "x.json"], "the ideal crossbar has no devices"),
        (["--stuck-hrs", "0.1"], "the ideal crossbar has no devices"),
        (["--crossbar", "hfox-1t1r", "--stuck-hrs", "1.5"], "--stuck-hrs"),
        (["--crossbar", "hfox-1t1r", "--endurance", "0"], "--endurance"),
        (["--crossbar", "tio2-passive", "--levels", "device"], "multi-level"),
        (["--crossbar", "hfox-1t1r", "--device-file", "/nonexistent.json"], "cannot read"),
    ],
)
def test_bad_crossbar_options_give_one_error_and_no_run_dir(
    data_dir: Path, tmp_path: Path, extra: list[str], message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_device_file_errors_reach_the_config(tmp_path: Path) -> None:
    small = write_device(tmp_path, "tio2-passive", array__tiles=10)
    with pytest.raises(ConfigError, match=r"'array.tiles'.*needs 796"):
        SessionConfig.of(**{**TINY, "crossbar": "tio2-passive", "device_file": small})
    few = write_device(tmp_path, "hfox-1t1r", levels_uS={"mean": [1, 2, 3], "std": [1, 1, 1]})
    with pytest.raises(ConfigError, match=r"'levels_uS.mean' has 3 device levels.*need 9"):
        SessionConfig.of(**{**TINY, "crossbar": "hfox-1t1r", "device_file": few})


def test_levels_from_the_device(data_dir: Path, tmp_path: Path) -> None:
    uneven = write_device(
        tmp_path, "hfox-1t1r", levels_uS={"mean": [2, 10, 30, 60, 100], "std": [1] * 5}
    )
    out = tmp_path / "run"
    args = tiny_args(data_dir, out, "--crossbar", "hfox-1t1r", "--device-file", uneven)
    assert main([*args, "--levels", "device", "--epochs", "1,1"]) == 0
    levels = json.loads((out / "config.json").read_text())["levels"]
    half = [1.5 * (m - 2) / 98 for m in (10, 30, 60, 100)]  # (G - G_LCS), top at 1.5
    assert levels == pytest.approx([-h for h in reversed(half)] + [0] + half)
