"""Training sessions whose hidden weights live on a (simulated) board behind a real pty."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_link import CLI, Board
from test_session import epochs_without_time

from metaplast.cli import main
from metaplast.host.config import SessionConfig
from metaplast.host.link import Link
from metaplast.host.session import train

TINY_LINK = {
    "tasks": ("mnist", "fashion-mnist"),
    "epochs": (2, 1),
    "pretrain_epochs": 1,
    "hidden": (16,),
    "train_limit": 500,
    "batch_size": 50,
    "seed": 5,
}
SYNAPSES = 784 * 16 + 16 * 10


def args_for(data_dir: Path, out: Path, port: str, *extra: str) -> list[str]:
    return [
        "train", "--tasks", "mnist,fashion-mnist", "--epochs", "2,1", "--pretrain-epochs", "1",
        "--hidden", "16", "--train-limit", "500", "--batch-size", "50", "--seed", "5",
        "--data-dir", str(data_dir), "--out", str(out), "--port", port, "--no-progress",
        "--link-timeout", "0.5", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """The whole session with every layer on a board: metrics and final hidden weights."""
    from conftest import SHARED_DATASETS

    if not (SHARED_DATASETS / "mnist").is_dir():
        pytest.skip("real data sets not found")
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    board = Board("--synapses", str(SYNAPSES), "--baud", "0")
    try:
        with Link.open(board.port, timeout=0.5) as link:
            metrics = train(
                SessionConfig(**TINY_LINK), out, SHARED_DATASETS, progress=False, link=link
            )
    finally:
        board.stop()
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    return metrics, state


def test_the_board_session_writes_the_metrics_contract(reference: tuple[dict, dict]) -> None:
    metrics, _ = reference
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert [e["mstar"] for e in metrics["epochs"]] == [0.0, 3.0, 3.0]
    assert metrics["link"]["layers_on_link"] == [0, 1]
    assert metrics["link"]["retries"] == 0
    assert metrics["level_changes"]["total"] > 0


def test_hybrid_session_ends_bit_identical(data_dir: Path, tmp_path: Path, reference) -> None:
    """Layer 0 in the in-process model, layer 1 on the board: the same session, bit for bit."""
    metrics, state = reference
    board = Board("--synapses", str(SYNAPSES), "--baud", "0")
    try:
        with Link.open(board.port, timeout=0.5) as link:
            hybrid = train(
                SessionConfig(**TINY_LINK),
                tmp_path / "run",
                data_dir,
                progress=False,
                link=link,
                link_layers=[1],
            )
    finally:
        board.stop()
    assert hybrid["link"]["layers_on_link"] == [1]
    assert epochs_without_time(hybrid) == epochs_without_time(metrics)
    assert hybrid["level_changes"] == metrics["level_changes"]
    mine = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    for a, b in zip(mine["synapses"], state["synapses"], strict=True):
        assert torch.equal(a["hidden_int"], b["hidden_int"])
        assert torch.equal(a["change_count"], b["change_count"])


def test_a_board_lost_mid_session_then_resume(data_dir: Path, tmp_path: Path, reference) -> None:
    metrics, _ = reference
    out = tmp_path / "run"
    board = Board("--synapses", str(SYNAPSES), "--baud", "0")
    proc = subprocess.Popen(
        [CLI, *args_for(data_dir, out, board.port), "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "metrics.json").exists():
            break
        time.sleep(0.05)
    board.proc.send_signal(signal.SIGKILL)  # the board disappears mid-session
    board.proc.wait()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "error" in err and board.port in err
    done = json.loads((out / "metrics.json").read_text())["epochs"]
    assert 1 <= len(done) < 3
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epochs_done"] == len(done)

    again = Board("--synapses", str(SYNAPSES), "--baud", "0")  # the port is back
    try:
        torch.set_num_threads(1)
        assert main([*args_for(data_dir, out, again.port), "--resume", "--threads", "1"]) == 0
    finally:
        again.stop()
    resumed = json.loads((out / "metrics.json").read_text())
    assert epochs_without_time(resumed) == epochs_without_time(metrics)
    assert resumed["level_changes"] == metrics["level_changes"]


class Proxy:
    """``metaplast link-faults`` in front of a board."""

    def __init__(self, port: str, *rates: str) -> None:
        self.proc = subprocess.Popen(
            [CLI, "link-faults", "--port", port, *rates],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_a_noisy_line_ends_bit_identical(data_dir: Path, tmp_path: Path, reference) -> None:
    """Byte errors 1e-3, drops and duplicates 1e-4 each way: more retries, the same session."""
    metrics, state = reference
    board = Board("--synapses", str(SYNAPSES), "--baud", "0")
    line = Proxy(
        board.port,
        *("--byte-error-rate", "1e-3", "--drop-rate", "1e-4", "--duplicate-rate", "1e-4"),
    )
    try:
        with Link.open(line.port, timeout=0.3, retries=30) as link:
            noisy = train(
                SessionConfig(**TINY_LINK), tmp_path / "run", data_dir, progress=False, link=link
            )
    finally:
        line.stop()
        board.stop()
    assert noisy["link"]["retries"] > 100
    assert epochs_without_time(noisy) == epochs_without_time(metrics)
    assert noisy["level_changes"] == metrics["level_changes"]
    mine = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    for a, b in zip(mine["synapses"], state["synapses"], strict=True):
        assert torch.equal(a["hidden_int"], b["hidden_int"])  # nothing lost or applied twice
