"""The whole unit through its UART pins under the Amaranth simulator, against the model.

The same byte stream goes into the RTL (bit by bit on ``uart_rx``) and into
:class:`~metaplast.firmware_sim.unit.command_model.CommandModel`; what comes out of ``uart_tx``
must be the model's reply, byte for byte.
"""

from __future__ import annotations

import random
import struct

import pytest
from core_check import CONTRACTS
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplast.contract import Contract
from metaplast.firmware_sim.board.crossbar_bench import PortBench
from metaplast.firmware_sim.board.uart_pins import UartPins
from metaplast.firmware_sim.crossbar.devices import load_device
from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.crossbar.port_commands import PortCommands
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.gateware.top import DigitalUnitTop
from metaplast.protocol import (
    END,
    ESC,
    Capability,
    FrameDecoder,
    Info,
    Layout,
    Op,
    Status,
    encode_frame,
    xbar_layer,
    xbar_map,
    xbar_mvm,
    xbar_span,
    xbar_verify,
)

from .sim import simulate

DIVISOR = 4
TINY = Layout(Contract(), 48, max_block=16)
UNEVEN = Layout(CONTRACTS["uneven-12bit"], 20, max_block=8, counter_width=4)


def exchange(
    layout: Layout,
    steps: list[bytes],
    name: str,
    *,
    prog_busy_cycles: int = 0,
    prog_depth: int = 16,
    array: str | None = None,
    xbar_delay: int = 0,
    benches: list[PortBench] | None = None,
    single_port: bool = False,
) -> bytes:
    """Send each step's bytes, wait until the model's replies to it are out; return the RTL's.

    Asserts that the RTL's reply stream equals the model's, and that the programming port
    strobed the model's device operations in the model's order. ``array``: a device model
    behind both units' crossbar ports (the RTL's served by a :class:`PortBench` that takes
    ``xbar_delay`` idle cycles before each byte). ``single_port``: the unit's memories in
    single-port stores (SPRAM), the same replies at one update per two cycles.
    """
    bench, model_array, tile = None, None, None
    if array is not None:
        device = load_device(array)
        tile = max(device.array.tile_rows, device.array.tile_cols)
        model_array = ArrayDriver(device, layout.contract)
        commands = PortCommands(
            ArrayDriver(device, layout.contract),
            synapses=layout.synapses,
            max_block=layout.max_block,
        )
    dut = DigitalUnitTop(
        layout, baud_divisor=DIVISOR, prog_depth=prog_depth, crossbar=tile, single_port=single_port
    )
    if array is not None:
        bench = PortBench(dut, commands, delay=xbar_delay)
        if benches is not None:
            benches.append(bench)
    pins = UartPins(dut.uart_rx, dut.uart_tx, DIVISOR)
    expected_ops: list[tuple[int, int, int]] = []
    model = CommandModel(
        layout,
        baud_divisor=DIVISOR,
        program=lambda *op: expected_ops.append(op),
        array=model_array,
    )
    expected = bytearray()
    ops: list[tuple[int, int, int]] = []

    async def host(ctx) -> None:
        await pins.idle(ctx, 2)
        for step in steps:
            expected.extend(model.feed(step))
            await pins.send(ctx, step)
            waited = 0
            while len(pins.received) < len(expected):
                await ctx.tick().repeat(10 * DIVISOR)
                waited += 1
                assert waited < 2000, f"no reply: got {bytes(pins.received).hex()}"
        await pins.idle(ctx, 40)  # nothing more may come

    async def programmer(ctx) -> None:
        # a programming circuit that takes prog_busy_cycles per operation
        while True:
            _, _, strobe, *op = await ctx.tick().sample(
                dut.prog_strobe, dut.prog_addr, dut.prog_device, dut.prog_level
            )
            if strobe:
                ops.append(tuple(op))
                if bench is not None:
                    bench.operation(*op)
            if strobe and prog_busy_cycles:
                ctx.set(dut.prog_busy, 1)
                await ctx.tick().repeat(prog_busy_cycles)
                ctx.set(dut.prog_busy, 0)

    def check() -> None:
        # frame by frame first, for a readable difference; then every byte
        assert replies(bytes(pins.received)) == replies(bytes(expected))
        assert bytes(pins.received) == bytes(expected)
        assert ops == expected_ops

    background = [pins.receive, programmer] + ([bench.serve] if bench is not None else [])
    simulate(dut, [host], background=background, name=name, check=check)
    return bytes(pins.received)


def replies(stream: bytes) -> list:
    return list(FrameDecoder().feed(stream))


def session(layout: Layout, rng: random.Random, blocks: int) -> list[bytes]:
    """A training-like session: INFO, initial weights, LUT switch, update blocks, reads."""
    c = layout.contract
    steps = [encode_frame(Op.INFO, 0)]
    n = layout.synapses
    seq = 1
    for start in range(0, n, layout.max_block):
        count = min(layout.max_block, n - start)
        w = [rng.randint(c.w_min // 3, c.w_max // 3) for _ in range(count)]
        steps.append(encode_frame(Op.WRITE_HIDDEN, seq, layout.write_hidden(start, w)))
        seq += 1
    steps.append(encode_frame(Op.LOAD_LUT, seq, layout.load_lut(3.0)))
    seq += 1
    big = 1 << (c.update_width - 4)
    for _ in range(blocks):
        count = rng.randint(1, layout.max_block)
        start = rng.randint(0, n - count)
        d = [rng.randint(-big, big) for _ in range(count)]
        if rng.random() < 0.5:  # the dither counting from a layer's first synapse
            origin = rng.randint(0, start)
            payload = layout.update_layer(start, rng.getrandbits(32), origin, d)
            steps.append(encode_frame(Op.UPDATE_LAYER, seq & 0xFF, payload))
        else:
            payload = layout.update(start, rng.getrandbits(32), d)
            steps.append(encode_frame(Op.UPDATE, seq & 0xFF, payload))
        seq += 1
    # an origin after the block's start: RANGE, nothing applied
    steps.append(encode_frame(Op.UPDATE_LAYER, seq & 0xFF, layout.update_layer(1, 7, 2, [big])))
    seq += 1
    steps.append(encode_frame(Op.READ_HIDDEN, seq, layout.span(0, min(n, layout.max_block))))
    steps.append(encode_frame(Op.READ_COUNTERS, seq + 1, layout.span(0, min(n, layout.max_block))))
    steps.append(encode_frame(Op.INFO, seq + 2))
    return steps


PORTS = pytest.mark.parametrize("single_port", [False, True], ids=["dual-port", "single-port"])
"""The memories in dual-port block RAM and in single-port SPRAM: the same protocol."""


@pytest.mark.parametrize(
    ("layout", "single_port"),
    [(TINY, False), (UNEVEN, False), (UNEVEN, True)],
    ids=["tiny", "uneven-12bit", "uneven-12bit-single-port"],
)
def test_session_matches_the_model(layout: Layout, single_port: bool) -> None:
    name = f"top-session-{layout.synapses}-{single_port}"
    out = exchange(layout, session(layout, random.Random(3), 12), name, single_port=single_port)
    frames = replies(out)
    assert [f.status for f in frames if f.status != Status.OK] == [Status.RANGE]
    assert sum(f.op == Op.UPDATE_LAYER | 0x80 for f in frames) > 2
    info = Info.unpack(frames[-1].payload[1:])
    assert info.lut_mstar == 3.0
    assert info.synapses == layout.synapses
    events = sum(
        struct.unpack_from("<H", f.payload, 1)[0]
        for f in frames
        if f.op in (Op.UPDATE | 0x80, Op.UPDATE_LAYER | 0x80) and f.status == Status.OK
    )
    assert events > 0


def test_invalid_frames_are_answered_and_change_nothing() -> None:
    L = TINY  # noqa: N806
    good_update = encode_frame(Op.UPDATE, 9, L.update(0, 1, [1 << 20] * 4))
    steps = [
        encode_frame(Op.WRITE_HIDDEN, 1, L.write_hidden(0, range(100, 116))),
        good_update[:-4] + bytes([good_update[-4] ^ 0x40]) + good_update[-3:],  # bad CRC
        good_update[: len(good_update) // 2],  # truncated, then a good frame
        encode_frame(Op.READ_HIDDEN, 2, L.span(0, 16)),
        encode_frame(0x55, 3),  # unknown op
        encode_frame(Op.READ_HIDDEN, 4, L.span(40, 9)),  # beyond the last synapse
        encode_frame(Op.READ_HIDDEN, 5, L.span(0, 0)),  # zero count
        encode_frame(Op.READ_HIDDEN, 6, L.span(0, 17)),  # above the block size
        encode_frame(Op.READ_HIDDEN, 7, L.span(0, 4) + b"\x00"),  # wrong length
        encode_frame(Op.UPDATE, 8, L.update(40, 1, [5] * 9)),  # range
        encode_frame(Op.UPDATE, 9, L.update(0, 1, [5] * 3) + b"\x01"),  # partial element
        encode_frame(Op.UPDATE, 10, L.update(0, 1, [])),  # empty block
        encode_frame(Op.UPDATE, 11, L.update(0, 1, [5] * 17)),  # above the block size
        encode_frame(Op.WRITE_HIDDEN, 12, L.write_hidden(0, [L.contract.w_max + 1])),  # value
        encode_frame(Op.LOAD_LUT, 13, L.load_lut(1.0, [2000] * L.contract.lut_entries)),
        encode_frame(Op.LOAD_LUT, 14, L.load_lut(1.0)[:-2]),  # short table
        encode_frame(Op.INFO, 15, b"\x00"),
        encode_frame(Op.RESET, 16, b"\x00"),
        bytes([END, 0x01, ESC, 0x31, 0x22, 0x33, END]),  # bad escape
        b"\x13\x37" + encode_frame(Op.READ_HIDDEN, 17, L.span(0, 16)),  # garbage before
        bytes([END] * 3),  # empty frames: no reply
        encode_frame(Op.READ_COUNTERS, 18, L.span(0, 16)),
        encode_frame(Op.INFO, 19),
    ]
    frames = replies(exchange(L, steps, "top-invalid"))
    statuses = [f.status for f in frames]
    assert statuses[0] == Status.OK
    assert Status.CRC in statuses and Status.OPCODE in statuses and Status.FRAMING in statuses
    assert {Status.RANGE, Status.LENGTH, Status.VALUE} <= set(statuses)
    reads = [f for f in frames if f.op == Op.READ_HIDDEN | 0x80 and f.status == Status.OK]
    assert len(reads) == 2 and reads[0].payload == reads[1].payload


@PORTS
def test_retry_is_applied_once_and_answered_again(single_port: bool) -> None:
    L = TINY  # noqa: N806
    update = encode_frame(Op.UPDATE, 42, L.update(0, 7, [-(1 << 21)] * 16))
    steps = [
        update,
        update,  # a retry: same reply, applied once
        encode_frame(Op.READ_HIDDEN, 43, L.span(0, 16)),
        encode_frame(Op.UPDATE, 42, L.update(0, 8, [-(1 << 21)] * 16)),  # new content: applied
        encode_frame(Op.WRITE_HIDDEN, 50, L.write_hidden(20, [7] * 4)),
        encode_frame(Op.UPDATE, 42, L.update(0, 8, [-(1 << 21)] * 16)),  # older of two: a retry
        encode_frame(Op.WRITE_HIDDEN, 51, L.write_hidden(20, [9] * 4)),
        encode_frame(Op.WRITE_HIDDEN, 52, L.write_hidden(20, [9] * 4)),
        encode_frame(Op.UPDATE, 42, L.update(0, 8, [-(1 << 21)] * 16)),  # forgotten: applied
        encode_frame(Op.READ_HIDDEN, 44, L.span(0, 16)),
        encode_frame(Op.RESET, 45),
        encode_frame(Op.READ_HIDDEN, 46, L.span(0, 16)),
        encode_frame(Op.INFO, 47),
    ]
    frames = replies(exchange(L, steps, f"top-retry-{single_port}", single_port=single_port))
    assert frames[0] == frames[1]
    assert frames[3] == frames[5]  # the older of the last two: answered again
    assert frames[2].payload != frames[9].payload
    assert frames[11].payload == bytes(1 + 2 * 16)
    assert Info.unpack(frames[12].payload[1:]).lut_mstar == 0.0


@PORTS
def test_back_to_back_frames_and_a_slow_programming_circuit(single_port: bool) -> None:
    L = TINY  # noqa: N806
    lo = L.contract.level_ints[6] - L.contract.level_ints[9]
    burst = b"".join(
        [
            encode_frame(Op.UPDATE, 1, L.update(0, 3, [lo << L.contract.guard_bits] * 16)),
            encode_frame(Op.READ_HIDDEN, 2, L.span(0, 16)),
        ]
    )
    steps = [burst, encode_frame(Op.READ_COUNTERS, 3, L.span(0, 16))]
    # a 2-deep programming FIFO behind a 7-cycle circuit: the pipeline has to stall
    frames = replies(
        exchange(
            L,
            steps,
            f"top-burst-{single_port}",
            prog_busy_cycles=7,
            prog_depth=2,
            single_port=single_port,
        )
    )
    assert len(frames) == 3
    assert struct.unpack_from("<H", frames[0].payload, 1)[0] == 16  # every synapse changed


@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=12), max_size=6), st.randoms(use_true_random=False))
def test_random_garbage_and_frames(garbage: list[bytes], rng: random.Random) -> None:
    """Garbage between valid frames: every reply (errors included) matches the model."""
    L = TINY  # noqa: N806
    steps = []
    for i, junk in enumerate(garbage):
        payload = L.update(rng.randrange(32), i, [rng.getrandbits(16)] * 4)
        steps.append(junk + encode_frame(Op.UPDATE, i, payload))
    steps.append(encode_frame(Op.READ_HIDDEN, 99, L.span(0, 16)))
    exchange(L, steps, "top-garbage")


def crossbar_steps(layout: Layout, rng: random.Random) -> list[bytes]:
    """A crossbar session on a 3 x 10 and a 1 x 8 layer of an 8 x 8-tile array: maps (with
    their sweeps), latches, MVMs both ways, reads, updates that program, counters, verify,
    retries of MAP, LATCH and VERIFY, and every status the driver answers."""
    c = layout.contract
    w = [rng.randint(c.w_min, c.w_max) if rng.random() < 0.8 else 0 for _ in range(38)]
    codes = [rng.randint(-32767, 32767) for _ in range(8)]
    big = 1 << (c.update_width - 3)
    frames = [
        (Op.INFO, b""),
        (Op.XBAR_INFO, b""),
        (Op.WRITE_HIDDEN, layout.write_hidden(0, w[:16])),
        (Op.WRITE_HIDDEN, layout.write_hidden(16, w[16:32])),
        (Op.WRITE_HIDDEN, layout.write_hidden(32, w[32:])),
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), codes)),  # RANGE: no layer yet
        (Op.XBAR_MAP, xbar_map(0, 0, (3, 10), 7)),
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), codes)),  # STALE: not latched
        (Op.XBAR_LATCH, xbar_layer(0)),
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), codes)),
        (Op.XBAR_MVM, xbar_mvm(0, True, (0, 0), codes[:6])),
        (Op.XBAR_MVM, xbar_mvm(0, False, (1, 0), codes[:2])),
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), codes[:7])),  # LENGTH
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), [-32768, *codes[1:]])),  # VALUE
        (Op.XBAR_MVM, xbar_mvm(0, False, (2, 0), codes)),  # RANGE
        (Op.XBAR_READ, xbar_span(0, 0, 16)),
        (Op.XBAR_READ, xbar_span(0, 55, 6)),  # RANGE
        (Op.XBAR_MAP, xbar_map(1, 30, (1, 8), 9)),
        (Op.XBAR_MAP, xbar_map(2, 40, (3, 10), 7)),  # RANGE: past the synapses
        (Op.XBAR_MAP, xbar_map(2, 20, (1, 4), 7)),  # RANGE: overlaps layer 0
        (Op.XBAR_MAP, xbar_map(2, 40, (0, 4), 7)),  # VALUE
        (Op.UPDATE, layout.update(4, 5, [rng.randint(-big, big) for _ in range(16)])),
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), codes)),  # STALE
        (Op.XBAR_COUNTERS, xbar_span(0, 0, 16)),
        (Op.XBAR_COUNTERS, xbar_span(0, 0, 17)),  # LENGTH
        (Op.XBAR_LATCH, xbar_layer(0)),
        (Op.XBAR_LATCH, b""),  # LENGTH
        (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), codes)),
        (Op.XBAR_VERIFY, xbar_verify(1, 200, 2)),
        (Op.XBAR_VERIFY, xbar_verify(1, 0, 2)),  # VALUE
        (Op.XBAR_LATCH, xbar_layer(1)),
        (Op.XBAR_READ, xbar_span(1, 0, 16)),
        (Op.INFO, b""),
    ]
    steps = [encode_frame(op, seq, payload) for seq, (op, payload) in enumerate(frames)]
    by_op = {}
    for step, (op, _) in zip(steps, frames, strict=True):
        by_op.setdefault(op, []).append(step)
    # retries: of the map (the newest remembered command), of a latch and of a verify, and
    # the failed verify again (not remembered: executed again)
    retries = {
        steps.index(by_op[Op.XBAR_MAP][0]) + 1: by_op[Op.XBAR_MAP][0],
        steps.index(by_op[Op.XBAR_LATCH][0]) + 1: by_op[Op.XBAR_LATCH][0],
        len(steps) - 4: steps[-5],
        len(steps) - 3: steps[-4],
    }
    out = []
    for i, step in enumerate(steps):
        if i in retries:
            out.append(retries[i])
        out.append(step)
    return out


def test_crossbar_port_matches_the_model() -> None:
    steps, benches = crossbar_steps(TINY, random.Random(5)), []
    out = exchange(TINY, steps, "top-crossbar", array="tio2-passive", benches=benches)
    frames = replies(out)
    # the retries of MAP, LATCH and VERIFY never reached the driver; the failed VERIFY did
    sent = [op for op, _ in benches[0].requests]
    assert sent.count(Op.XBAR_MAP) == 5 and sent.count(Op.XBAR_LATCH) == 4
    assert sent.count(Op.XBAR_VERIFY) == 3
    assert len(frames) == len(steps)
    assert Info.unpack(frames[0].payload[1:]).capabilities == Capability.CROSSBAR
    statuses = {f.status for f in frames}
    assert {Status.OK, Status.RANGE, Status.LENGTH, Status.VALUE, Status.STALE} <= statuses


def test_crossbar_port_with_a_slow_driver_and_programming_circuit() -> None:
    steps = crossbar_steps(TINY, random.Random(6))
    exchange(TINY, steps[:14], "top-crossbar-slow", array="tio2-passive", xbar_delay=7,
             prog_busy_cycles=9)  # fmt: skip


def test_a_unit_without_the_port_refuses_the_crossbar_ops() -> None:
    frames = replies(exchange(TINY, [encode_frame(Op.XBAR_INFO, 1)], "top-no-crossbar"))
    assert frames[0].status == Status.OPCODE


def test_crossbar_reply_longer_than_a_receive_bank() -> None:
    """A 1T1R tile of 128 columns answers one input with 1,024 bytes of currents: relayed as
    they come, although a receive bank holds 512."""
    layout = Layout(Contract(), 64, max_block=16)
    w = [(-1) ** i * 1000 * (i % 5) for i in range(64)]
    steps = [
        encode_frame(Op.WRITE_HIDDEN, 1, layout.write_hidden(0, w[:16])),
        encode_frame(Op.WRITE_HIDDEN, 2, layout.write_hidden(16, w[16:32])),
        encode_frame(Op.WRITE_HIDDEN, 3, layout.write_hidden(32, w[32:48])),
        encode_frame(Op.WRITE_HIDDEN, 4, layout.write_hidden(48, w[48:])),
        encode_frame(Op.XBAR_MAP, 5, xbar_map(0, 0, (64, 1), 11)),
        encode_frame(Op.XBAR_LATCH, 6, xbar_layer(0)),
        encode_frame(Op.XBAR_MVM, 7, xbar_mvm(0, False, (0, 0), [12345])),
    ]
    frames = replies(exchange(layout, steps, "top-crossbar-long", array="hfox-1t1r"))
    assert frames[-1].status == Status.OK and len(frames[-1].payload) == 1 + 8 * 128


def test_frames_wait_while_a_single_port_unit_clears_its_memories() -> None:
    """An SPRAM starts undefined: a single-port unit writes zeros into every synapse after
    reset (here 4,096 cycles), and the frames that arrive meanwhile wait in the receiver's two
    banks."""
    layout = Layout(Contract(), 4096, max_block=16)
    steps = [
        encode_frame(Op.WRITE_HIDDEN, 1, layout.write_hidden(4090, [-5, 6]))
        + encode_frame(Op.READ_HIDDEN, 2, layout.span(4080, 16)),
        encode_frame(Op.READ_COUNTERS, 3, layout.span(4080, 16)),
        encode_frame(Op.INFO, 4),
    ]
    frames = replies(exchange(layout, steps, "top-single-port-clear", single_port=True))
    assert [f.status for f in frames] == [Status.OK] * 4
    assert struct.unpack_from("<16h", frames[1].payload, 1)[10:12] == (-5, 6)
