"""The RTL-backed board (the gateware under the Amaranth simulator, UART pins included)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_link import CLI, Board
from test_session import epochs_without_time

from metaplast.host.config import SessionConfig
from metaplast.host.link import Link
from metaplast.host.session import train
from metaplast.protocol import Capability

# small enough for a board that moves about a hundred bytes per second
TINY_RTL = {
    "tasks": ("mnist", "fashion-mnist"),
    "epochs": (2, 1),
    "pretrain_epochs": 1,
    "hidden": (4,),
    "train_limit": 100,
    "batch_size": 50,
    "seed": 2,
}
LAST_LAYER = 4 * 10


def board_info(backend: str, *args: str) -> dict:
    """``metaplast info`` of a ``backend`` board of 64 synapses in blocks of 16 (and ``args``),
    checked: its parameters, and a capability word that says whether it has an array (the
    default ``--crossbar hfox-1t1r``, or ``--crossbar none``)."""
    board = Board("--backend", backend, "--synapses", "64", "--max-block", "16", *args)
    try:
        out = subprocess.run(
            [CLI, "info", "--port", board.port, "--timeout", "5"], capture_output=True, text=True
        )
    finally:
        board.stop()
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["synapses"], info["max_block"], info["baud_divisor"]) == (64, 16, 4)
    plain = args[-2:] == ("--crossbar", "none")
    assert info["capabilities"] == ([] if plain else ["crossbar"])
    return info


def test_rtl_board_answers_info() -> None:
    board_info("rtl")
    board_info("rtl", "--crossbar", "none")


def assert_boards_train_alike(
    backend: str, config: dict, layer: int, board_args: list[str], data_dir: Path, tmp: Path
) -> None:
    """Layer ``layer`` on the ``backend`` board, on the model board, and in process: one
    session, bit for bit (accuracies, level changes, the layer's hidden weights and counts)."""
    torch.set_num_threads(1)
    runs = {}
    for b in (backend, "model"):
        board = Board("--backend", b, *board_args)
        try:
            with Link.open(board.port, timeout=10.0) as link:
                metrics = train(SessionConfig.of(**config), tmp / b, data_dir, progress=False,
                                link=link, link_layers=[layer])  # fmt: skip
        finally:
            board.stop()
        state = torch.load(tmp / b / "checkpoint.pt", weights_only=False)
        runs[b] = metrics, state["synapses"][layer]
    in_process = train(SessionConfig.of(**config), tmp / "local", data_dir, progress=False)
    local = torch.load(tmp / "local" / "checkpoint.pt", weights_only=False)["synapses"][layer]
    (rtl, rtl_layer), (model, model_layer) = runs[backend], runs["model"]
    assert rtl["link"]["retries"] == 0
    assert rtl["level_changes"]["total"] > 0
    for other, state in ((model, model_layer), (in_process, local)):
        assert epochs_without_time(rtl) == epochs_without_time(other)
        assert rtl["level_changes"] == other["level_changes"]
        assert torch.equal(rtl_layer["hidden_int"], state["hidden_int"])
        assert torch.equal(rtl_layer["change_count"], state["change_count"])


def test_rtl_and_model_boards_train_bit_identically(data_dir: Path, tmp_path: Path) -> None:
    """The last layer on the RTL board, on the model board, and in process: one session."""
    board_args = ["--synapses", str(LAST_LAYER), "--max-block", "64", "--crossbar", "none"]
    assert_boards_train_alike("rtl", TINY_RTL, 1, board_args, data_dir, tmp_path)


# the smallest session that exercises the crossbar ops of a training run: the RTL board moves
# about 150 bytes per second, one input vector on the 784 x 2 layer is seven XBAR_MVM frames
# of a 128-row tile (about 2 kB with their replies), and each evaluation batch reads the
# array (12.5 kB): one test batch of all 10,000 images
TINY_ARRAY = {
    "test_batch_size": 10_000,
    "tasks": ("mnist",),
    "epochs": (1,),
    "pretrain_epochs": 0,
    "hidden": (2,),
    "train_limit": 10,
    "batch_size": 10,
    "seed": 3,
}


ARRAY_UNIT = ["--synapses", "1600", "--max-block", "256", "--crossbar", "hfox-1t1r"]


def assert_array_sessions_alike(backend: str, data_dir: Path, tmp: Path) -> float:
    """``--crossbar board`` (:data:`TINY_ARRAY`) on the ``backend`` board's 1T1R array (the
    gateware's crossbar port, the device models behind it), on the model board's, and
    ``--crossbar hfox-1t1r --periphery board`` in process: every accuracy, level change and
    hidden weight alike. Returns the ``backend`` session's wall time (s)."""
    torch.set_num_threads(1)
    runs, seconds = {}, {}
    config = SessionConfig.of(**TINY_ARRAY, crossbar="board")
    for b, extra in ((backend, []), ("model", ["--baud", "0"])):
        board = Board("--backend", b, *ARRAY_UNIT, *extra)
        try:
            with Link.open(board.port, timeout=30.0) as link:
                t = time.perf_counter()
                runs[b] = train(config, tmp / b, data_dir, progress=False, link=link)
                seconds[b] = time.perf_counter() - t
        finally:
            board.stop()
    local = train(SessionConfig.of(**TINY_ARRAY, crossbar="hfox-1t1r", periphery="board"),
                  tmp / "local", data_dir, progress=False)  # fmt: skip
    expected = epochs_without_time(local)
    for epoch in expected:
        assert epoch.pop("worn_out_devices") == 0
    assert runs[backend]["level_changes"]["total"] > 0
    for b in (backend, "model"):
        assert epochs_without_time(runs[b]) == expected, b
        assert runs[b]["level_changes"] == local["level_changes"], b
    want = torch.load(tmp / "local" / "checkpoint.pt", weights_only=False)["synapses"]
    got = torch.load(tmp / backend / "checkpoint.pt", weights_only=False)["synapses"]
    for x, y in zip(got, want, strict=True):
        assert torch.equal(x["inner"]["hidden_int"], y["inner"]["hidden_int"])
    return seconds[backend]


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("METAPLAST_RTL_ARRAY") != "1",
    reason="opt-in (METAPLAST_RTL_ARRAY=1): about 460 s on the Amaranth simulator; the same "
    "session on the Verilog board, the same gateware, runs by default (test_verilog_board.py)",
)
def test_a_session_on_the_rtl_boards_array_ends_as_on_the_model_board_and_in_process(
    data_dir: Path, tmp_path: Path
) -> None:
    assert_array_sessions_alike("rtl", data_dir, tmp_path)


def test_rtl_board_reports_its_array(tmp_path: Path) -> None:
    board = Board("--backend", "rtl", "--synapses", "64", "--max-block", "16",
                  "--crossbar", "tio2-passive")  # fmt: skip
    try:
        with Link.open(board.port, timeout=10.0) as link:
            link.require(Capability.CROSSBAR, "--crossbar board")
            array = link.xbar_info()
    finally:
        board.stop()
    assert (array.tile_rows, array.tile_cols, array.model) == (8, 8, "tio2-passive")
