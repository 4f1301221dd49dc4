"""Training sessions end to end: the CLI contract, resume after a kill, and bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY

from metaplast.cli import main
from metaplast.host.config import SessionConfig
from metaplast.host.session import PHASES, train
from metaplast.host.summary import summary_table


def tiny_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--tasks",
        "mnist,fashion-mnist",
        "--epochs",
        "2,1",
        "--pretrain-epochs",
        "1",
        "--hidden",
        "32",
        "--train-limit",
        "1000",
        "--batch-size",
        "50",
        "--seed",
        "3",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def epochs_without_time(metrics: dict) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in metrics["epochs"]]


def interrupted_and_resumed(cfg: SessionConfig, out: Path, data_dir: Path, after: int = 2) -> dict:
    """A session killed after epoch ``after``, then resumed to its end: its metrics."""

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        if record["epoch"] == after:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, out, data_dir, progress=False, on_epoch=stop)
    return train(cfg, out, data_dir, resume=True, progress=False)


@pytest.mark.parametrize("arithmetic", ["fixed", "float"])
def test_cli_writes_the_metrics_contract(
    data_dir: Path, tmp_path: Path, arithmetic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out, "--arithmetic", arithmetic)) == 0
    printed = capsys.readouterr().out
    assert "final test accuracy: mnist" in printed and "fashion-mnist" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert [e["task"] for e in metrics["epochs"]] == ["mnist", "mnist", "fashion-mnist"]
    assert [e["mstar"] for e in metrics["epochs"]] == [0.0, 2.2, 2.2]
    for e in metrics["epochs"]:
        assert set(e["test_acc"]) == {"mnist", "fashion-mnist"}
        assert all(0.0 <= a <= 1.0 for a in e["test_acc"].values())
    # it learns: well above chance on MNIST after two epochs of 1000 images
    assert metrics["epochs"][1]["test_acc"]["mnist"] > 0.6
    assert metrics["synapses"] == 784 * 32 + 32 * 10
    for name in (
        "config.json",
        "checkpoint.pt",
        "level_changes.npz",
        "accuracy.png",
        "meta.png",
        "level_changes.png",
    ):
        assert (out / name).is_file(), name
    assert (metrics["contract"] is None) == (arithmetic == "float")


def test_metrics_say_where_the_time_went(data_dir: Path, tmp_path: Path) -> None:
    metrics = train(SessionConfig.of(**TINY), tmp_path / "run", data_dir, progress=False)
    time_spent = metrics["time"]
    assert set(time_spent) == set(PHASES)
    assert all(t > 0 for t in time_spent.values())
    # the phases of training are inside the epochs' own clocks
    training = sum(time_spent[p] for p in PHASES if p != "evaluation")
    assert training <= sum(e["seconds"] for e in metrics["epochs"])


def test_fixed_and_float_sessions_agree(data_dir: Path, tmp_path: Path) -> None:
    """The fixed point is a faithful implementation of the float rule, not another rule."""
    runs = {}
    for arithmetic in ("fixed", "float"):
        cfg = SessionConfig.of(**{**TINY, "arithmetic": arithmetic, "hidden_width": 24})
        runs[arithmetic] = train(cfg, tmp_path / arithmetic, data_dir, progress=False)
    for a, b in zip(runs["fixed"]["epochs"], runs["float"]["epochs"], strict=True):
        for task in a["test_acc"]:
            assert abs(a["test_acc"][task] - b["test_acc"][task]) < 0.05


def test_resume_after_kill_ends_like_an_uninterrupted_run(data_dir: Path, tmp_path: Path) -> None:
    args = tiny_args(data_dir, tmp_path / "whole")
    args[args.index("--epochs") + 1] = "3,2"
    args[args.index("--train-limit") + 1] = "3000"
    assert main(args) == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())

    killed = tmp_path / "killed"
    args[args.index("--out") + 1] = str(killed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaplast.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 900
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed / "metrics.json").exists():
            done = len(json.loads((killed / "metrics.json").read_text())["epochs"])
            if done >= 2:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= done < 5, f"the kill must land mid-run (epochs done: {done})"

    assert main([*args, "--resume"]) == 0
    resumed = json.loads((killed / "metrics.json").read_text())
    assert epochs_without_time(resumed) == epochs_without_time(whole)
    assert resumed["level_changes"] == whole["level_changes"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "mnist,cifar10"], "unknown task"),
        (["--epochs", "5"], "--epochs"),
        (["--mstar", "-1"], "--mstar"),
        (["--levels", "0.5,0.1,0.9"], "increasing"),
        (["--levels", "0.5"], "at least 2"),
        (["--hidden-width", "6"], "hidden_width"),
        (["--arithmetic", "fixed", "--lut-entries", "12"], "power of two"),
    ],
)
def test_bad_options_give_one_clear_error_and_no_run_dir(
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_resume_with_another_config_is_refused_and_changes_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(tiny_args(data_dir, out, "--mstar", "2", "--resume")) == 2
    assert "mstar" in capsys.readouterr().err
    assert main(tiny_args(data_dir, out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_of_a_finished_run_keeps_its_results(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(tiny_args(data_dir, out)) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert (
        main(["train", "--out", str(out), "--resume", "--data-dir", str(data_dir), "--no-progress"])
        == 0
    )
    assert json.loads((out / "metrics.json").read_text()) == first


def test_sweep_writes_a_table(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_args(data_dir, tmp_path / "sweep")
    args[0] = "sweep"
    args.remove("--no-progress")
    assert main([*args, "--vary", "mstar=0,5", "--epochs", "1,1"]) == 0
    table = capsys.readouterr().out
    assert "| mstar |" in table
    results = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["results"]
    assert [r["point"]["mstar"] for r in results] == [0.0, 5.0]
    assert (tmp_path / "sweep" / "sweep.png").is_file()
    assert main([*args, "--vary", "bogus=1"]) == 2


def test_summary_lists_the_tasks_of_every_run(tmp_path: Path) -> None:
    def run(name: str, tasks: list[str], hardware_aware: str | None) -> Path:
        path = tmp_path / name
        path.mkdir()
        acc = {t: 0.5 + 0.1 * i for i, t in enumerate(tasks)}
        metrics = {
            "config": {"tasks": tasks, "epochs": [1] * len(tasks), "mstar": 3.0,
                       "arithmetic": "fixed", "crossbar": "ideal",
                       "hardware_aware": hardware_aware, "hidden": [32]},
            "epochs": [{"test_acc": acc}],
            "level_changes": {"mean_per_synapse": 1.0, "max_per_synapse": 2},
        }  # fmt: skip
        (path / "metrics.json").write_text(json.dumps(metrics))
        return path

    one = run("one", ["mnist"], "tio2-passive")
    two = run("two", ["mnist", "fashion-mnist"], None)
    head, _, row_one, row_two = summary_table([one, two]).splitlines()
    assert "fashion-mnist final (%)" in head
    assert row_one.split("|")[5].strip() == "ideal (hardware-aware: tio2-passive)"
    assert [c.strip() for c in row_one.split("|")[9:11]] == ["", ""]  # no Fashion-MNIST
    assert row_two.split("|")[9].strip() == "60.00"
