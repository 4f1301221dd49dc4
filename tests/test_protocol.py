"""The protocol definition and the model that answers it (the RTL is compared with this model)."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplast.contract import Contract
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.protocol import (
    CRC,
    END,
    ESC,
    PROTOCOL_VERSION,
    Capability,
    Frame,
    FrameDecoder,
    Info,
    Layout,
    Op,
    ProtocolError,
    Status,
    crc16,
    decode_events,
    encode_frame,
    lut_crc,
)

LAYOUT = Layout(Contract(), 64, max_block=16)


def reply(model: CommandModel, op: int, seq: int, payload: bytes = b"") -> Frame:
    (frame,) = FrameDecoder().feed(model.feed(encode_frame(op, seq, payload)))
    assert frame.error is None and frame.op == op | 0x80 and frame.seq == seq
    return frame


@settings(max_examples=50, derandomize=True)
@given(st.binary(max_size=64))
def test_table_crc_equals_amaranths_crc(data: bytes) -> None:
    assert crc16(data) == CRC(8).compute(data)


def test_crc_check_value() -> None:
    assert crc16(b"123456789") == 0x906E


@settings(max_examples=100, derandomize=True)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40), st.binary(max_size=20))
def test_frames_round_trip_after_any_garbage(
    op: int, seq: int, payload: bytes, junk: bytes
) -> None:
    frames = list(FrameDecoder().feed(junk + encode_frame(op, seq, payload)))
    assert frames[-1] == Frame(op, seq, payload, None, crc16(bytes((op, seq)) + payload))
    assert all(f.error is not None for f in frames[:-1])  # garbage never passes as a frame


def test_stuffing_escapes_both_special_bytes() -> None:
    wire = encode_frame(Op.WRITE_HIDDEN, END, bytes([END, ESC]))
    assert END not in wire[1:-1]
    (frame,) = FrameDecoder().feed(wire)
    assert frame.seq == END and frame.payload == bytes([END, ESC])


def test_decoder_reports_each_kind_of_bad_frame() -> None:
    good = encode_frame(Op.INFO, 1)
    corrupted = good[:2] + bytes([good[2] ^ 1]) + good[3:]
    stream = corrupted + bytes([END, 1, ESC, 5, 6, 7, END]) + bytes([END, 1, 2, END])
    assert [f.error for f in FrameDecoder().feed(stream)] == [
        Status.CRC,
        Status.FRAMING,
        Status.LENGTH,
    ]
    long = encode_frame(Op.WRITE_HIDDEN, 1, bytes(40))
    assert [f.error for f in FrameDecoder(max_frame=16).feed(long)] == [Status.OVERFLOW]


def test_info_round_trips_and_reports_the_loaded_lut() -> None:
    model = CommandModel(LAYOUT, clock_hz=12_000_000, baud_divisor=4)
    info = Info.unpack(reply(model, Op.INFO, 1).payload[1:])
    assert info == Info.from_layout(LAYOUT, clock_hz=12_000_000, baud_divisor=4)
    assert info.level_ints == LAYOUT.contract.level_ints
    reply(model, Op.LOAD_LUT, 2, LAYOUT.load_lut(3.0))
    info = Info.unpack(reply(model, Op.INFO, 3).payload[1:])
    assert info.lut_mstar == 3.0
    assert info.lut_crc == lut_crc(LAYOUT.contract.meta_lut(3.0))


def test_info_carries_every_integer_the_arithmetic_depends_on() -> None:
    """Version 2: the reciprocal shift and the clip range from the float levels. On this level
    set the rounded integer levels would give a lower clip of -1332 where the unit clips at
    -1331: a host cannot derive it from ``level_ints``."""
    contract = Contract(levels=(-0.9, -0.1, 0.35, 0.77), hidden_width=12)
    model = CommandModel(Layout(contract, 16), clock_hz=12_000_000, baud_divisor=4)
    info = Info.unpack(reply(model, Op.INFO, 1).payload[1:])
    assert info.version == PROTOCOL_VERSION == 2
    assert (info.recip_shift, info.w_min, info.w_max) == (18, -1331, 1003)
    assert (contract.recip_shift, contract.w_min, contract.w_max) == (18, -1331, 1003)
    assert info.capabilities == Capability(0)
    # a version-1 unit's INFO (no tail) still reads, its derived integers unknown
    old = Info.unpack(dataclasses.replace(info, version=1).pack())
    assert old.level_ints == info.level_ints and old.recip_shift is None
    assert len(info.pack()) == len(dataclasses.replace(info, version=1).pack()) + 13
    with pytest.raises(ProtocolError, match="version 2"):
        Info.unpack(info.pack()[:-1])


def test_update_layer_rounds_a_layer_alike_wherever_it_sits() -> None:
    """UPDATE_LAYER at address 40 with origin 40 equals UPDATE at address 0 (in process, a
    layer's synapses are numbered from 0); UPDATE at 40 hashes other addresses."""
    d = list(range(-3000, 3000, 500))
    seed = 0x1234
    at_zero, moved, plain = CommandModel(LAYOUT), CommandModel(LAYOUT), CommandModel(LAYOUT)
    reply(at_zero, Op.UPDATE, 1, LAYOUT.update(0, seed, d))
    reply(moved, Op.UPDATE_LAYER, 1, LAYOUT.update_layer(40, seed, 40, d))
    reply(plain, Op.UPDATE, 1, LAYOUT.update(40, seed, d))
    n = len(d)
    assert moved.unit.read(40, n).equal(at_zero.unit.read(0, n))
    assert not plain.unit.read(40, n).equal(at_zero.unit.read(0, n))
    # an origin after the block's start: RANGE, nothing applied
    before = moved.unit.read().clone()
    frame = reply(moved, Op.UPDATE_LAYER, 2, LAYOUT.update_layer(40, seed, 41, d))
    assert frame.status == Status.RANGE and moved.unit.read().equal(before)


def test_update_events_and_counters_come_from_the_digital_unit() -> None:
    model = CommandModel(LAYOUT)
    c = LAYOUT.contract
    step = (c.level_ints[8] - c.level_ints[10]) << c.guard_bits  # two levels up
    events = decode_events(reply(model, Op.UPDATE, 1, LAYOUT.update(10, 0, [step, 0])).payload[1:])
    assert events == [(0, 8, 10)]
    counts = reply(model, Op.READ_COUNTERS, 2, LAYOUT.span(10, 2)).payload[1:]
    assert struct.unpack("<HH", counts) == (1, 0)


def test_retry_is_answered_again_without_applying() -> None:
    model = CommandModel(LAYOUT)
    frame = encode_frame(Op.UPDATE, 5, LAYOUT.update(0, 0, [-(1 << 20)] * 16))
    first, again = model.feed(frame), model.feed(frame)
    assert first == again
    (read,) = FrameDecoder().feed(model.feed(encode_frame(Op.READ_HIDDEN, 6, LAYOUT.span(0, 1))))
    assert struct.unpack("<h", read.payload[1:]) == (1 << 20 >> LAYOUT.contract.guard_bits,)


def test_the_older_of_two_commands_in_flight_is_still_a_retry() -> None:
    model = CommandModel(LAYOUT)
    step = (1 << 20) >> LAYOUT.contract.guard_bits  # what one update moves a weight
    frames = [
        encode_frame(Op.UPDATE, seq, LAYOUT.update(start, 0, [-(1 << 20)] * 8))
        for seq, start in ((1, 0), (2, 8), (3, 16))
    ]
    first = [model.feed(f) for f in frames[:2]]
    assert [model.feed(f) for f in frames[:2]] == first  # both answered again, not applied
    assert model.unit.read(0, 16).tolist() == [step] * 16
    model.feed(frames[2])  # now the last two are frames 1 and 2: frame 0 is forgotten
    model.feed(frames[0])
    assert model.unit.read(0, 16).tolist() == [2 * step] * 8 + [step] * 8


@pytest.mark.parametrize(
    ("op", "payload", "status"),
    [
        (Op.READ_HIDDEN, LAYOUT.span(60, 5), Status.RANGE),
        (Op.READ_HIDDEN, LAYOUT.span(0, 17), Status.LENGTH),
        (Op.UPDATE, LAYOUT.update(0, 0, []), Status.LENGTH),
        (Op.UPDATE, LAYOUT.update(0, 0, [1]) + b"\x00", Status.LENGTH),
        (Op.UPDATE, LAYOUT.update(63, 0, [1, 1]), Status.RANGE),
        (Op.WRITE_HIDDEN, LAYOUT.write_hidden(0, [LAYOUT.contract.w_min - 1]), Status.VALUE),
        (Op.LOAD_LUT, LAYOUT.load_lut(0.0, [1025] * 64), Status.VALUE),
        (Op.RESET, b"\x00", Status.LENGTH),
        (0x7F, b"", Status.OPCODE),
    ],
)
def test_invalid_commands_change_nothing(op: int, payload: bytes, status: Status) -> None:
    model = CommandModel(LAYOUT)
    reply(model, Op.WRITE_HIDDEN, 1, LAYOUT.write_hidden(0, range(16)))
    before = model.unit.read().clone(), model.unit.lut, list(model._last)
    (frame,) = FrameDecoder().feed(model.feed(encode_frame(op, 2, payload)))
    assert frame.status == status
    assert model.unit.read().equal(before[0]) and (model.unit.lut, model._last) == before[1:]


def test_documented_example_bytes() -> None:
    """The examples of docs/protocol.md."""
    layout = Layout(Contract(), 8192)
    model = CommandModel(layout)
    assert encode_frame(Op.INFO, 1).hex(" ") == "c0 01 01 16 07 c0"
    update = encode_frame(Op.UPDATE, 2, layout.update(16, 0xDEADBEEF, [-256, -838861]))
    assert update.hex(" ") == "c0 05 02 10 00 00 00 ef be ad de 00 ff ff 33 33 f3 b3 1f c0"
    assert model.feed(update).hex(" ") == "c0 85 02 00 01 00 01 00 08 09 d6 47 c0"
    read = encode_frame(Op.READ_HIDDEN, 3, layout.span(16, 2))
    assert read.hex(" ") == "c0 02 03 10 00 00 00 02 00 72 51 c0"
    assert model.feed(read).hex(" ") == "c0 82 03 00 01 00 cd 0c ae 9d c0"


def test_gateware_command_writes_verilog_with_the_contract_ports(tmp_path) -> None:
    from metaplast.cli import main

    out = tmp_path / "unit.v"
    assert main(["gateware", "--synapses", "100", "--baud-divisor", "8", "--out", str(out)]) == 0
    text = out.read_text()
    header = text[text.index("module metaplast_unit(") : text.index(");")]
    for port in ("clk", "rst", "uart_rx", "uart_tx", "prog_addr", "prog_device", "prog_level"):
        assert port in header
    params = json.loads(out.with_suffix(".json").read_text())
    assert params["info"]["synapses"] == 100 and params["info"]["baud_divisor"] == 8


def test_gateware_command_rejects_a_bad_configuration(tmp_path, capsys) -> None:
    from metaplast.cli import main

    out = tmp_path / "unit.v"
    assert main(["gateware", "--synapses", "10", "--lut-entries", "3", "--out", str(out)]) == 2
    assert "power of two" in capsys.readouterr().err
    assert not out.exists()
