"""Batch-norm statistics, few-level activations, permuted MNIST, and one-input evaluation."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from test_session import epochs_without_time, interrupted_and_resumed, tiny_args

from metaplast.cli import main
from metaplast.errors import ConfigError
from metaplast.host.config import SessionConfig
from metaplast.host.datasets import PermutedTask
from metaplast.host.evaluate import Affine, calibrate, classify, classify_folded, fold
from metaplast.host.qnn import Activation, QuantizedMLP
from metaplast.host.session import Session, load_task, train


def test_batch_statistics_are_the_default_and_hold_no_running_state() -> None:
    session = Session(SessionConfig.of(**TINY))
    assert session.config.bn_stats == "batch"
    keys = set(session.model.norms.state_dict())
    assert keys == {f"{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    running = Session(SessionConfig.of(**{**TINY, "bn_stats": "running"}))
    assert any("running_mean" in k for k in running.model.norms.state_dict())


def test_batch_statistics_test_each_batch_with_its_own() -> None:
    """In evaluation, a batch-statistics network normalizes a test batch with that batch's
    statistics: shifting every input of the batch by the same pre-activation moves nothing."""
    model = QuantizedMLP((6, 5, 3), "sign", "batch").eval()
    model.set_weights([torch.randn(5, 6), torch.randn(3, 5)])
    x = torch.randn(40, 6)
    a = x @ model.weights[0].t()
    with torch.no_grad():
        assert torch.allclose(model.norms[0](a + 7.0), model.norms[0](a), atol=1e-4)
        assert not torch.equal(model(x[:20]), model(x)[:20])  # another batch, other statistics


def test_a_run_from_before_the_option_resumes_with_running_statistics(
    data_dir: Path, tmp_path: Path
) -> None:
    cfg = SessionConfig.of(**{**TINY, "bn_stats": "running"})
    whole = train(cfg, tmp_path / "whole", data_dir, progress=False)
    old = tmp_path / "old"
    part = interrupted_and_resumed(cfg, tmp_path / "part", data_dir)
    assert epochs_without_time(part) == epochs_without_time(whole)
    # the same run as one made before --bn-stats: no key in its config and checkpoint
    shutil.copytree(tmp_path / "part", old)
    stored = json.loads((old / "config.json").read_text())
    del stored["bn_stats"]
    (old / "config.json").write_text(json.dumps(stored))
    checkpoint = torch.load(old / "checkpoint.pt", weights_only=False)
    del checkpoint["config"]["bn_stats"]
    torch.save(checkpoint, old / "checkpoint.pt")
    args = ["train", "--out", str(old), "--resume", "--data-dir", str(data_dir), "--no-progress"]
    assert main(args) == 0
    resumed = json.loads((old / "metrics.json").read_text())
    assert resumed["config"]["bn_stats"] == "running"
    assert epochs_without_time(resumed) == epochs_without_time(whole)


def test_bn_stats_is_recorded_and_checked(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out, "--bn-stats", "running")) == 0
    assert json.loads((out / "config.json").read_text())["bn_stats"] == "running"
    again = tiny_args(data_dir, out, "--bn-stats", "batch", "--resume")
    assert main(again) == 2  # a resumed run keeps the statistics it was trained with
    with pytest.raises(ConfigError, match="`bn_stats`"):
        SessionConfig.of(**{**TINY, "bn_stats": "both"})


@pytest.mark.parametrize("name, values", [
    ("sign", [-1.0, 1.0]),
    ("relu:4", [0.0, 1 / 3, 2 / 3, 1.0]),
    ("hardtanh:3", [-1.0, 0.0, 1.0]),
    ("relu:3:2", [0.0, 1.0, 2.0]),
])  # fmt: skip
def test_few_level_activations(name: str, values: list[float]) -> None:
    act = Activation.parse(name)
    x = torch.linspace(-3, 3, 601, requires_grad=True)
    y = act(x)
    assert torch.allclose(torch.unique(y.detach()), torch.tensor(values))
    y.sum().backward()
    inside = (x.detach() >= act.low) & (x.detach() <= act.high)
    assert torch.equal(x.grad != 0, inside)


@pytest.mark.parametrize(
    "name", ["relu:1", "relu:999", "tanh", "sign:3", "relu:x", "relu:4:0", "relu:4:1.2.3"]
)
def test_bad_activations_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="`activation`"):
        SessionConfig.of(**{**TINY, "activation": name})


def test_permuted_tasks(data_dir: Path) -> None:
    plain = load_task("mnist", data_dir, 100)
    one = load_task("pmnist-1", data_dir, 100)
    again = load_task("pmnist-1", data_dir, 100)
    other = load_task("pmnist-1", data_dir, 100, permutation_seed=5)
    assert torch.equal(one.x_train, again.x_train) and torch.equal(one.y_test, plain.y_test)
    assert not torch.equal(one.x_train, other.x_train)
    perm = torch.from_numpy(PermutedTask(1).permutation(0))
    assert torch.equal(one.x_train, plain.x_train[:, perm])
    assert PermutedTask.sequence(3) == ("pmnist-0", "pmnist-1", "pmnist-2")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "permuted-mnist:0", "--epochs", "1"], "permuted-mnist:N"),
        (["--tasks", "permuted-mnist:two", "--epochs", "1"], "permuted-mnist:N"),
        (["--tasks", "pmnist-x", "--epochs", "1"], "unknown task"),
        (["--tasks", "permuted-mnist:2", "--epochs", "1,1", "--permutation-seed", "-1"], "seed"),
    ],
)
def test_bad_permuted_tasks_give_one_error_and_no_run(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list, message: str
) -> None:
    out = tmp_path / "run"
    assert exit_code(tiny_args(data_dir, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def exit_code(args: list[str]) -> int | str | None:
    """``main``'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def test_permuted_mnist_session(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = tiny_args(data_dir, out)
    args[args.index("--tasks") + 1] = "permuted-mnist:3"
    args[args.index("--epochs") + 1] = "1,1,1"
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["task"] for e in metrics["epochs"]] == ["pmnist-0", "pmnist-1", "pmnist-2"]
    assert set(metrics["epochs"][-1]["test_acc"]) == {"pmnist-0", "pmnist-1", "pmnist-2"}
    assert metrics["epochs"][0]["test_acc"]["pmnist-0"] > 0.5


@pytest.mark.parametrize("name", ["sign", "relu:4", "hardtanh:3", "relu:8:3"])
def test_folded_comparators_give_the_activation_of_the_batch_norm(name: str) -> None:
    act = Activation.parse(name)
    g = torch.Generator().manual_seed(1)
    gain = torch.randn(50, generator=g)
    gain[:3] = torch.tensor([0.0, -2.0, 1e-3])
    affine = Affine(gain, torch.randn(50, generator=g))
    comp = fold(affine, act)
    a = torch.randn(2000, 50, generator=g) * 3
    expected = act(affine.gain * a + affine.offset)
    diff = comp.polarity[None, :, None] * (a[:, :, None] - comp.thresholds[None])
    folded = comp.values[(diff >= 0).sum(2)]
    assert (folded == expected).double().mean() > 0.9995  # but for float ties at a threshold


def test_calibration_on_the_whole_batch_is_the_batch_norm() -> None:
    torch.manual_seed(0)
    model = QuantizedMLP((20, 16, 4), "sign", "batch")
    model.set_weights([torch.randn(16, 20), torch.randn(4, 16)])
    with torch.no_grad():
        for bn in model.norms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
    x = torch.randn(300, 20)
    affines = calibrate(model, x)
    assert torch.equal(classify(model, affines, x), model.eval()(x).argmax(1))
    folded, layers = classify_folded(model, affines, x)
    assert (folded == classify(model, affines, x)).double().mean() > 0.99
    assert layers[0].thresholds.shape == (16, 1)


def test_evaluate_a_run_one_input_at_a_time(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for act in ("sign", "relu"):
        out = tmp_path / act
        assert main(tiny_args(data_dir, out, "--activation", act)) == 0
        calibrate = ["--calibrate", "20,500", "--data-dir", str(data_dir)]
        assert main(["evaluate", str(out), *calibrate]) == 0
        record = json.loads((out / "evaluate.json").read_text())
        for task in ("mnist", "fashion-mnist"):
            row = record["tasks"][task]
            assert abs(row["calibrated"]["500"] - row["batch_statistics"]) < 0.05
            if act == "sign":
                assert abs(row["folded"]["500"] - row["calibrated"]["500"]) < 0.005
            else:
                assert row["folded"] == {}  # an analog activation folds into gain and offset
        assert "| mnist |" in capsys.readouterr().out
        arrays = np.load(out / "periphery.npz")
        assert arrays["mnist/output/gain"].shape == (10,)
        if act == "sign":
            assert arrays["mnist/layer0/thresholds"].shape == (32, 1)
            assert set(np.unique(arrays["fashion-mnist/layer0/polarity"])) <= {-1.0, 1.0}
        else:
            assert arrays["mnist/layer0/gain"].shape == (32,)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--calibrate", "0"], ">= 2"),
        (["--calibrate", "5000"], "more than the 1000 training inputs"),
        (["--batch-size", "1"], "--batch-size"),
    ],
)
def test_evaluate_refuses_bad_options_and_writes_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list, message: str
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out)) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data-dir", str(data_dir), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "evaluate.json").exists()


def test_evaluate_refuses_unfinished_and_missing_runs(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part = tmp_path / "part"

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        raise Stop

    with pytest.raises(Stop):
        train(SessionConfig.of(**TINY), part, data_dir, progress=False, on_epoch=stop)
    assert main(["evaluate", str(part), "--data-dir", str(data_dir)]) == 2
    assert "stopped after epoch 1" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (part / "evaluate.json").exists()
