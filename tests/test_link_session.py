"""Training sessions whose hidden weights live on a (simulated) board behind a real pty."""

from __future__ import annotations

import json
import re
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
    """The in-process session: metrics and final hidden weights that a board must reproduce."""
    from conftest import find_datasets

    root = find_datasets()
    if root is None:
        pytest.skip("real data sets not found (see the data_dir fixture)")
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    metrics = train(SessionConfig.of(**TINY_LINK), out, root, progress=False)
    return metrics, torch.load(out / "checkpoint.pt", weights_only=False)


def on_board(data_dir: Path, out: Path, port: str, layers: list[int], **kw: object) -> dict:
    with Link.open(port, **kw) as link:  # type: ignore[arg-type]
        return train(
            SessionConfig.of(**TINY_LINK),
            out,
            data_dir,
            progress=False,
            link=link,
            link_layers=layers,
        )


def assert_same_session(metrics: dict, out: Path, reference: tuple[dict, dict]) -> None:
    """Accuracies, level changes and every final hidden weight, bit for bit."""
    ref_metrics, ref_state = reference
    assert epochs_without_time(metrics) == epochs_without_time(ref_metrics)
    assert metrics["level_changes"] == ref_metrics["level_changes"]
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    for a, b in zip(state["synapses"], ref_state["synapses"], strict=True):
        assert torch.equal(a["hidden_int"], b["hidden_int"])
        assert torch.equal(a["change_count"], b["change_count"])


@pytest.mark.parametrize(
    "layers", [[0], [1], [0, 1]], ids=["first-layer", "last-layer", "both-layers"]
)
def test_a_layer_on_the_board_ends_as_in_process(
    data_dir: Path, tmp_path: Path, reference, layers: list[int]
) -> None:
    """Any placement: one layer on the board (at address 0), the other in the in-process
    model, or both on the board (the second at address 12,544: UPDATE_LAYER's dither hashes
    its synapses' indices in the layer, as in process)."""
    board = Board("--synapses", str(SYNAPSES), "--baud", "0")
    try:
        metrics = on_board(data_dir, tmp_path / "run", board.port, layers, timeout=0.5)
    finally:
        board.stop()
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert metrics["link"]["layers_on_link"] == layers
    assert metrics["link"]["retries"] == 0 and metrics["link"]["commands"] > 30
    assert_same_session(metrics, tmp_path / "run", reference)


def test_a_board_lost_mid_session_then_resume(
    data_dir: Path, tmp_path: Path, reference, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    board = Board("--synapses", str(SYNAPSES), "--baud", "0")
    proc = subprocess.Popen(
        [CLI, *args_for(data_dir, out, board.port, "--link-layers", "0"), "--threads", "1"],
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
    first = torch.load(out / "checkpoint.pt", weights_only=False)
    assert first["epochs_done"] == len(done)
    before = first["link_stats"]["commands"]  # what the first invocation sent, to its checkpoint

    again = Board("--synapses", str(SYNAPSES), "--baud", "0")  # the port is back
    try:
        torch.set_num_threads(1)
        resume = [*args_for(data_dir, out, again.port, "--link-layers", "0"), "--resume"]
        assert main([*resume, "--threads", "1"]) == 0
    finally:
        again.stop()
    metrics = json.loads((out / "metrics.json").read_text())
    assert_same_session(metrics, out, reference)
    # the link record covers the whole run: the first invocation to its checkpoint, then all
    # of the second (which prints its own count)
    printed = re.search(r"link \S+: (\d+) commands", capsys.readouterr().out)
    assert printed is not None and before > 0
    assert metrics["link"]["commands"] == before + int(printed.group(1))


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
    board = Board("--synapses", str(SYNAPSES), "--baud", "0")
    line = Proxy(
        board.port,
        *("--byte-error-rate", "1e-3", "--drop-rate", "1e-4", "--duplicate-rate", "1e-4"),
    )
    try:
        metrics = on_board(data_dir, tmp_path / "run", line.port, [0], timeout=0.3, retries=30)
    finally:
        line.stop()
        board.stop()
    assert metrics["link"]["retries"] > 100
    assert_same_session(metrics, tmp_path / "run", reference)  # nothing lost or applied twice
