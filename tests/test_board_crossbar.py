"""The array behind the board's crossbar port: the protocol's XBAR ops on the model board, the
``board`` converters, and a session on the board's array against the same session in process."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from test_link import Board
from test_session import epochs_without_time

from metaplast.cli import main
from metaplast.contract import Contract
from metaplast.firmware_sim.crossbar.devices import load_device
from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.crossbar.layer import ArrayLayer
from metaplast.firmware_sim.crossbar.periphery import (
    G_LSB,
    Periphery,
    conductance_codes,
    currents,
    input_codes,
)
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.host.config import SessionConfig
from metaplast.host.session import train
from metaplast.protocol import (
    Capability,
    FrameDecoder,
    Info,
    Layout,
    Op,
    Status,
    XbarInfo,
    encode_frame,
    xbar_layer,
    xbar_map,
    xbar_mvm,
    xbar_span,
    xbar_verify,
)

CONTRACT = Contract()
LAYOUT = Layout(CONTRACT, 64, max_block=16)


def board_with_array(model: str = "tio2-passive") -> CommandModel:
    return CommandModel(LAYOUT, array=ArrayDriver(load_device(model), CONTRACT))


def reply(model: CommandModel, op: Op, seq: int, payload: bytes = b"") -> tuple[Status, bytes]:
    (frame,) = FrameDecoder().feed(model.feed(encode_frame(op, seq, payload)))
    return frame.status, frame.payload[1:]


def test_board_converters_multiply_exactly_tile_by_tile() -> None:
    """Integer currents summed over tiles are the whole product's: the split cannot change a
    bit, which is what lets a board's array and a host agree exactly."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(5, 300, generator=gen) * 3
    g = torch.rand(300, 40, generator=gen) * 1.2e-4
    codes, exponents = input_codes(v)
    assert codes.abs().max() <= 2**15 - 1 and bool((codes == codes.round()).all())
    g_codes = conductance_codes(g)
    tiles = sum(codes[:, r : r + 128] @ g_codes[r : r + 128] for r in range(0, 300, 128))
    assert torch.equal(currents(tiles, exponents), Periphery("board").mvm(v, g))
    # within the converters' resolution of the float product: half an input LSB on every
    # conductance plus half a conductance LSB on every input
    error = (Periphery("board").mvm(v, g).double() - v.double() @ g.double()).abs()
    half_lsb = torch.ldexp(torch.full(exponents.shape, 0.5, dtype=torch.float64), exponents - 15)
    bound = half_lsb[:, None] * g.double().sum(0) + v.double().abs().sum(1, keepdim=True) * G_LSB
    assert bool((error <= bound * 1.01).all())
    assert error.max() > 0  # the converters do round
    assert torch.equal(Periphery("ideal").mvm(v, g), v @ g)


def test_the_board_reports_its_array_and_maps_a_layer() -> None:
    model = board_with_array()
    info = Info.unpack(reply(model, Op.INFO, 1)[1])
    assert info.capabilities == Capability.CROSSBAR
    status, payload = reply(model, Op.XBAR_INFO, 2)
    array = XbarInfo.unpack(payload)
    assert (array.tile_rows, array.tile_cols, array.model) == (8, 8, "tio2-passive")
    # a 3 x 10 layer: 10 rows, 6 columns of devices, two 8 x 8 tiles
    status, payload = reply(model, Op.XBAR_MAP, 3, xbar_map(0, 0, (3, 10), 7))
    assert status == Status.OK and int.from_bytes(payload, "little") == 2
    # the mapped layer is the in-process layer of the same seed, device for device
    layer = ArrayLayer((3, 10), CONTRACT, load_device("tio2-passive"), 7,
                       model.unit.levels()[:30], Periphery("board"))  # fmt: skip
    assert reply(model, Op.XBAR_LATCH, 4, xbar_layer(0))[0] == Status.OK
    status, payload = reply(model, Op.XBAR_READ, 5, xbar_span(0, 0, 16))
    read = struct.unpack("<16I", payload)
    assert list(read) == conductance_codes(layer.crossbar.read()).flatten()[:16].tolist()


def test_bad_crossbar_requests_get_their_status_and_change_nothing() -> None:
    model = board_with_array()
    reply(model, Op.XBAR_MAP, 1, xbar_map(0, 0, (3, 10), 7))
    reply(model, Op.XBAR_LATCH, 2, xbar_layer(0))
    mapped = model.array.layers[0]  # type: ignore[union-attr]
    before = mapped.layer.crossbar.g.clone(), mapped.layer.crossbar.counts.clone()
    cases = [
        (Op.XBAR_MVM, xbar_mvm(0, False, (2, 0), [1] * 8), Status.RANGE),  # tile outside
        (Op.XBAR_MVM, xbar_mvm(1, False, (0, 0), [1] * 8), Status.RANGE),  # layer not mapped
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), [1] * 7), Status.LENGTH),  # 8 rows in tile 0
        (Op.XBAR_MVM, xbar_mvm(0, True, (0, 0), [1] * 8), Status.LENGTH),  # 6 columns
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), [-32768] + [0] * 7), Status.VALUE),
        (Op.XBAR_READ, xbar_span(0, 55, 6), Status.RANGE),  # 60 devices
        (Op.XBAR_COUNTERS, xbar_span(0, 0, 17), Status.LENGTH),  # above the block
        (Op.XBAR_VERIFY, xbar_verify(0, 0, 3), Status.VALUE),  # tolerance 0
        (Op.XBAR_VERIFY, xbar_verify(0, 100, 0), Status.VALUE),  # no iteration
        (Op.XBAR_MAP, xbar_map(1, 40, (3, 10), 7), Status.RANGE),  # past the 64 synapses
        (Op.XBAR_MAP, xbar_map(1, 20, (1, 4), 7), Status.RANGE),  # overlaps layer 0
        (Op.XBAR_MAP, xbar_map(1, 40, (0, 4), 7), Status.VALUE),
        (Op.XBAR_LATCH, b"", Status.LENGTH),
    ]
    for seq, (op, payload, status) in enumerate(cases, start=3):
        assert reply(model, op, seq, payload)[0] == status, (op, payload.hex())
    assert torch.equal(mapped.layer.crossbar.g, before[0])
    assert torch.equal(mapped.layer.crossbar.counts, before[1])
    assert list(model.array.layers) == [0]  # type: ignore[union-attr]
    # a level change of the layer makes its latch stale until the next one
    reply(model, Op.UPDATE, 40, LAYOUT.update(0, 1, [-(2**20)] * 4))
    assert reply(model, Op.XBAR_MVM, 41, xbar_mvm(0, False, (0, 0), [1] * 8))[0] == Status.STALE
    reply(model, Op.XBAR_LATCH, 42, xbar_layer(0))
    assert reply(model, Op.XBAR_MVM, 43, xbar_mvm(0, False, (0, 0), [1] * 8))[0] == Status.OK


def test_a_board_without_an_array_refuses_the_crossbar_ops() -> None:
    model = CommandModel(LAYOUT)
    assert Info.unpack(reply(model, Op.INFO, 1)[1]).capabilities == Capability(0)
    assert reply(model, Op.XBAR_INFO, 2)[0] == Status.OPCODE


def test_verify_brings_devices_within_the_tolerance() -> None:
    """Program-and-verify on the 1T1R model's spread (4 uS): a 2 uS tolerance leaves fewer
    devices outside after each extra iteration, and costs operations."""
    outside = []
    for iterations in (1, 4):
        model = board_with_array("hfox-1t1r")
        reply(model, Op.WRITE_HIDDEN, 1, LAYOUT.write_hidden(0, [-20000, 20000] * 20))
        reply(model, Op.XBAR_MAP, 2, xbar_map(0, 0, (4, 10), 3))
        status, payload = reply(model, Op.XBAR_VERIFY, 3,
                                xbar_verify(0, round(2e-6 / G_LSB), iterations))  # fmt: skip
        assert status == Status.OK
        remaining, operations = struct.unpack("<II", payload)
        assert operations > 0
        outside.append(remaining)
    assert outside[1] < outside[0]


def test_a_session_on_the_boards_array_ends_as_in_process(data_dir: Path, tmp_path: Path) -> None:
    """``--crossbar board`` over the model board's 1T1R array against ``--crossbar
    hfox-1t1r --periphery board`` in process: every accuracy, level change and hidden weight."""
    tiny = {"epochs": (1, 1), "hidden": (8,), "train_limit": 200, "batch_size": 50, "seed": 3}
    torch.set_num_threads(1)
    local = train(SessionConfig.of(**tiny, crossbar="hfox-1t1r", periphery="board"),
                  tmp_path / "local", data_dir, progress=False)  # fmt: skip
    from metaplast.host.link import Link

    board = Board("--synapses", "8000", "--baud", "0")
    try:
        with Link.open(board.port, timeout=5.0) as link:
            remote = train(SessionConfig.of(**tiny, crossbar="board"), tmp_path / "board",
                           data_dir, progress=False, link=link)  # fmt: skip
    finally:
        board.stop()
    # the board's devices wear out where it runs: only the in-process record counts them
    expected = epochs_without_time(local)
    for epoch in expected:
        assert epoch.pop("worn_out_devices") == 0
    assert epochs_without_time(remote) == expected
    assert remote["level_changes"] == local["level_changes"]
    assert remote["crossbar"]["model"] == "board" and remote["crossbar"]["device"] == "hfox-1t1r"
    a = torch.load(tmp_path / "board" / "checkpoint.pt", weights_only=False)["synapses"]
    b = torch.load(tmp_path / "local" / "checkpoint.pt", weights_only=False)["synapses"]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["inner"]["hidden_int"], y["inner"]["hidden_int"])
    # the array's final state as the board reports it: the same devices, levels and operations
    on_board = np.load(tmp_path / "board" / "conductances.npz")
    in_process = np.load(tmp_path / "local" / "conductances.npz")
    assert sorted(on_board) == ["layer0_counts", "layer0_g", "layer0_level",
                                "layer1_counts", "layer1_g", "layer1_level"]  # fmt: skip
    for key in on_board:
        if key.endswith("_g"):  # read through the board's ADC: codes of 2**-30 S
            assert np.abs(on_board[key] - in_process[key]).max() <= G_LSB / 2
        else:
            assert np.array_equal(on_board[key], in_process[key]), key
    assert (tmp_path / "board" / "conductances.png").stat().st_size > 0

    # killed after its first epoch, resumed on a restarted board: the hidden weights are
    # written back and every layer mapped again (the devices programmed to the checkpoint's
    # levels), so the run ends; the devices' programming draws are new, so its second epoch
    # is not bit for bit the uninterrupted one's
    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        if record["epoch"] == 1:
            raise Stop

    config, part = SessionConfig.of(**tiny, crossbar="board"), tmp_path / "part"
    for resume in (False, True):
        board = Board("--synapses", "8000", "--baud", "0")
        try:
            with Link.open(board.port, timeout=5.0) as link:
                if resume:
                    resumed = train(config, part, data_dir, progress=False, link=link,
                                    resume=True)  # fmt: skip
                else:
                    with pytest.raises(Stop):
                        train(config, part, data_dir, progress=False, link=link, on_epoch=stop)
        finally:
            board.stop()
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    assert epochs_without_time(resumed)[0] == epochs_without_time(remote)[0]
    again, whole = resumed["epochs"][1], remote["epochs"][1]
    assert abs(again["level_changes"] - whole["level_changes"]) < 0.1 * whole["level_changes"]
    assert abs(again["test_acc"]["fashion-mnist"] - whole["test_acc"]["fashion-mnist"]) < 0.05


def test_crossbar_board_needs_a_board_with_an_array(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--data-dir", str(data_dir), "--hidden", "8", "--train-limit", "100",
            "--crossbar", "board"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "--crossbar board trains on the array behind a board: give --port" in (
        capsys.readouterr().err
    )
    board = Board("--synapses", "8000", "--crossbar", "none")
    try:
        assert main([*base, "--port", board.port, "--out", str(tmp_path / "b")]) == 2
    finally:
        board.stop()
    err = capsys.readouterr().err
    assert f"{board.port}: --crossbar board needs a board with the crossbar capability" in err
    assert main([*base, "--device-file", "x.json", "--out", str(tmp_path / "c")]) == 2
    assert "--device-file: the board's array is set up where it runs" in capsys.readouterr().err
