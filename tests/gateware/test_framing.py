"""Frame receiver and sender against the protocol's reference codec (metaplast.protocol)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, unsigned
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from metaplast.gateware.framing import FrameReceiver, FrameSender
from metaplast.protocol import (
    CRC,
    END,
    ESC,
    RESPONSE,
    Frame,
    FrameDecoder,
    Status,
    crc16,
    encode_frame,
    stuff,
)

from .sim import simulate
from .test_uart import rejects, wait_for

SIMULATION = {
    "deadline": None,
    "derandomize": True,
    # no shrinking: every example is a simulation (and a failing one is rerun with a trace)
    "phases": (Phase.explicit, Phase.reuse, Phase.generate),
}

# receiver harness ---------------------------------------------------------------------------------


@dataclass
class Received:
    bank: int
    length: int
    status: Status
    op: int
    seq: int
    crc: int
    stored: bytes
    """The bank's bytes 0 .. length + 2 (op, seq, payload, CRC) as read through read_addr."""


@dataclass
class Consumer:
    """An executor stand-in: accepts descriptors, reads their banks back, releases them."""

    dut: FrameReceiver
    seed: int = 0
    max_accept_delay: int = 0
    max_release_delay: int = 0
    received: list[Received] = field(default_factory=list)
    released: int = 0

    def reset(self) -> None:
        """Start afresh: each simulation (and its rerun for a waveform) draws the same delays."""
        self.rng = random.Random(self.seed)
        self.received.clear()
        self.released = 0

    async def take(self, ctx: Any, *, limit: int | None = 2_000) -> Received:
        """Accept the next descriptor (after a random delay, checking it holds) and read it;
        fail if none comes within ``limit`` cycles (``None``: wait for ever)."""
        dut = self.dut
        ctx.set(dut.frame.ready, 0)
        # (a plain loop: a background testbench left inside `until` when the simulation ends
        # raises when it is garbage-collected)
        valid, waited = False, 0
        while not valid:
            assert limit is None or waited < limit, f"no descriptor within {limit} cycles"
            _, _, valid, desc = await ctx.tick().sample(dut.frame.valid, dut.frame.payload)
            waited += 1
        for _ in range(self.rng.randint(0, self.max_accept_delay)):
            await ctx.tick()
            assert ctx.get(dut.frame.valid), "descriptor withdrawn before it was taken"
            assert ctx.get(dut.frame.payload) == desc, "descriptor changed before it was taken"
        ctx.set(dut.frame.ready, 1)
        await ctx.tick()
        ctx.set(dut.frame.ready, 0)
        return await self.read(ctx, desc)

    async def read(self, ctx: Any, desc: Any) -> Received:
        dut = self.dut
        stored = bytearray()
        for i in range(min(desc.length + 2, dut.bank_size)):
            ctx.set(dut.read_addr, desc.bank * dut.bank_size + i)
            await ctx.tick()
            stored.append(ctx.get(dut.read_data))
        item = Received(
            desc.bank, desc.length, Status(desc.status), desc.op, desc.seq, desc.crc, bytes(stored)
        )
        self.received.append(item)
        return item

    async def release(self, ctx: Any) -> None:
        ctx.set(self.dut.release, 1)
        await ctx.tick()
        ctx.set(self.dut.release, 0)
        self.released += 1

    async def run(self, ctx: Any) -> None:
        """Background testbench: take, read and release every frame."""
        self.reset()
        while True:
            await self.take(ctx, limit=None)
            delay = self.rng.randint(0, self.max_release_delay)
            if delay:
                await ctx.tick().repeat(delay)
            await self.release(ctx)


@dataclass
class Feeder:
    """Drives bytes into ``rx`` one at a time, ``gaps`` idle cycles apart (drawn at random)."""

    dut: FrameReceiver
    seed: int = 0
    gaps: tuple[int, ...] = (0, 1, 2, 3)

    def reset(self) -> None:
        self.rng = random.Random(self.seed)

    async def send(self, ctx: Any, data: bytes, *, error_at: int | None = None) -> None:
        for i, byte in enumerate(data):
            ctx.set(self.dut.rx.payload, byte)
            ctx.set(self.dut.rx.valid, 1)
            assert ctx.get(self.dut.rx.ready), "the receiver must always be ready"
            ctx.set(self.dut.rx_error, i == error_at)
            await ctx.tick()
            ctx.set(self.dut.rx.valid, 0)
            ctx.set(self.dut.rx_error, 0)
            gap = self.rng.choice(self.gaps)
            if gap:
                await ctx.tick().repeat(gap)


def dropped_monitor(dut: FrameReceiver, pulses: list[int]) -> Any:
    """Background testbench: the cycle numbers at which ``dropped`` pulsed."""

    async def monitor(ctx: Any) -> None:
        pulses.clear()
        cycle = 0
        async for _, _, dropped in ctx.tick().sample(dut.dropped):
            if dropped:
                pulses.append(cycle)
            cycle += 1

    return monitor


def reference(wire: bytes, bank_size: int) -> list[Frame]:
    return list(FrameDecoder(max_frame=bank_size).feed(wire))


def split_frames(wire: bytes) -> list[bytes]:
    """Cut a byte stream after every END, so a feeder can pace it frame by frame."""
    chunks, start = [], 0
    for i, byte in enumerate(wire):
        if byte == END:
            chunks.append(wire[start : i + 1])
            start = i + 1
    if start < len(wire):
        chunks.append(wire[start:])
    return chunks


def receive(
    wire: bytes,
    check: Callable[[list[Received]], None],
    *,
    max_frame: int = 16,
    seed: int = 0,
    gaps: tuple[int, ...] = (0, 1, 2, 3),
    max_accept_delay: int = 3,
    max_release_delay: int = 8,
    name: str = "frame_receiver",
) -> None:
    """Feed ``wire`` into a FrameReceiver, then ``check`` what a consumer read. Paced: before
    each frame starts, the consumer has released all but one earlier frame: nothing is dropped."""
    dut = FrameReceiver(max_frame)
    consumer = Consumer(dut, seed, max_accept_delay, max_release_delay)
    feeder = Feeder(dut, seed + 1, gaps)
    pulses: list[int] = []

    async def driver(ctx: Any) -> None:
        feeder.reset()
        counter = FrameDecoder(max_frame=dut.bank_size)
        await ctx.tick()
        expected = 0
        for chunk in split_frames(wire):
            for _ in range(2_000):
                if expected - consumer.released <= 1:
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"frame {expected} not released: {consumer.received}")
            await feeder.send(ctx, chunk)
            expected += len(list(counter.feed(chunk)))
        for _ in range(2_000):
            if consumer.released == expected:
                break
            await ctx.tick()
        await ctx.tick().repeat(4)

    def check_all() -> None:
        assert pulses == [], "a paced stream must not lose frames"
        check(consumer.received)

    background = [consumer.run, dropped_monitor(dut, pulses)]
    simulate(dut, [driver], name=name, background=background, check=check_all)


def check_against_reference(received: list[Received], wire: bytes, bank_size: int) -> None:
    frames = reference(wire, bank_size)
    assert [(r.status, r.op, r.seq) for r in received] == [
        (f.error or Status.OK, f.op, f.seq) for f in frames
    ]
    for r, f in zip(received, frames, strict=True):
        if f.error is None:
            body = bytes((f.op, f.seq)) + f.payload
            assert r.length == len(body)
            assert r.stored == body + struct.pack("<H", crc16(body))
            assert r.crc == crc16(body)


def good_frame(rng: random.Random, max_payload: int) -> bytes:
    payload = bytes(
        rng.choice([END, ESC, rng.randrange(256)]) for _ in range(rng.randint(0, max_payload))
    )
    return encode_frame(rng.randrange(256), rng.randrange(256), payload)


def unstuff(wire: bytes) -> bytes:
    """The body of a good frame, CRC included."""
    (frame,) = FrameDecoder().feed(bytes((END,)) + wire + bytes((END,)))
    body = bytes((frame.op, frame.seq)) + frame.payload
    return body + struct.pack("<H", crc16(body))


def mixed_stream(rng: random.Random, bank_size: int, frames: int) -> bytes:
    """Good frames with every kind of damage and garbage in between."""
    max_payload = bank_size - 4
    wire = bytearray()
    for _ in range(frames):
        kind = rng.choice(["good", "good", "garbage", "crc", "truncated", "escape", "long", "end"])
        frame = good_frame(rng, max_payload)
        if kind == "garbage":
            wire += bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif kind == "crc":  # one bit flipped in the unstuffed body: always a CRC error
            body = bytearray(unstuff(frame[1:-1]))
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            wire += bytes((END,)) + stuff(bytes(body)) + bytes((END,))
            continue
        elif kind == "truncated":
            wire += frame[: rng.randint(2, len(frame) - 1)]  # the next frame's END ends it
        elif kind == "escape":
            body = bytearray(frame[1:-1])
            at = rng.randrange(len(body) + 1)
            body[at:at] = bytes((ESC, rng.choice([0x00, 0x41, ESC])))
            wire += bytes((END,)) + bytes(body) + bytes((END,))
            continue
        elif kind == "long":
            payload = bytes(
                rng.randrange(256) for _ in range(rng.randint(bank_size - 3, 2 * bank_size))
            )
            wire += encode_frame(rng.randrange(256), rng.randrange(256), payload)
            continue
        elif kind == "end":
            wire += bytes((END,)) * rng.randint(1, 3)
        wire += frame
    return bytes(wire)


# receiver tests -----------------------------------------------------------------------------------


def test_bank_size_and_parameters() -> None:
    for max_frame, bank_size in [(4, 4), (16, 16), (17, 32)]:
        dut = FrameReceiver(max_frame)
        Fragment.get(dut, None)  # elaborates (and is used)
        assert dut.bank_size == bank_size
        assert dut.read_addr.shape() == unsigned((2 * bank_size - 1).bit_length())
    rejects(ValueError, "at least 4", lambda: FrameReceiver(3))
    rejects(TypeError, "integer", lambda: FrameReceiver(16.0))


@settings(max_examples=8, **SIMULATION)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 255),
            st.integers(0, 255),
            st.binary(max_size=12).map(lambda b: b.replace(b"\x01", bytes((END,)))),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_good_frames(frames: list[tuple[int, int, bytes]]) -> None:
    wire = b"".join(encode_frame(op, seq, payload) for op, seq, payload in frames)

    def check(received: list[Received]) -> None:
        check_against_reference(received, wire, 16)
        assert all(r.status == Status.OK for r in received)

    receive(wire, check, name="frame_receiver_good")


@pytest.mark.parametrize("seed", range(3))
def test_mixed_stream(seed: int) -> None:
    wire = mixed_stream(random.Random(seed), 16, 24)

    def check(received: list[Received]) -> None:
        check_against_reference(received, wire, 16)
        statuses = {r.status for r in received}
        assert {Status.OK, Status.CRC, Status.FRAMING, Status.OVERFLOW} <= statuses

    receive(wire, check, seed=seed, name=f"frame_receiver_mixed_{seed}")


def test_back_to_back_bytes() -> None:
    # a byte every cycle, frames only separated by their END delimiters
    rng = random.Random(7)
    wire = b"".join(good_frame(rng, 12) for _ in range(6)) + mixed_stream(rng, 16, 8)
    receive(
        wire,
        lambda received: check_against_reference(received, wire, 16),
        gaps=(0,),
        max_accept_delay=0,
        max_release_delay=0,
        name="frame_receiver_back_to_back",
    )


def test_statuses_and_fields() -> None:
    good = encode_frame(0x05, 0x11, b"\xc0\xdb\x00")
    body = bytes((0x05, 0x11, 0xC0, 0xDB, 0x00))
    long = bytes((0x02, 0x45)) + bytes(13)  # with its CRC, one byte more than a bank
    wire = (
        b"\x00\x01garbage"  # before the first END: one bad frame
        + good
        + bytes((END, 0x07, 0x22, 0x33, END))  # 3 bytes
        + bytes((END, 0x07, END))  # just an op
        + encode_frame(0x06, 0x33, b"abc")[:-3]  # truncated, ended by the next frame's END
        + encode_frame(0x06, 0x34, b"abc")
        + bytes((END, 0x01, 0x02, ESC, 0x41, 0x03, 0x04, END))  # bad escape
        + bytes((END, 0x01, 0x02, 0x03, 0x04, ESC, END))  # escape cut by END
        + encode_frame(0x02, 0x44, bytes(12))  # 16 bytes: just fits
        + encode_frame(long[0], long[1], long[2:])
        + good
    )

    def check(received: list[Received]) -> None:
        check_against_reference(received, wire, 16)
        assert [r.status for r in received] == [
            Status.CRC,
            Status.OK,
            Status.LENGTH,
            Status.LENGTH,
            Status.CRC,
            Status.OK,
            Status.FRAMING,
            Status.FRAMING,
            Status.OK,
            Status.OVERFLOW,
            Status.OK,
        ]
        first_good = received[1]
        assert first_good.length == len(body)
        assert first_good.crc == crc16(body)
        assert received[2].length == 1 and received[2].seq == 0x22
        assert received[3].length == 0 and (received[3].op, received[3].seq) == (0x07, 0)
        assert received[8].length == 14
        # the overflowed frame filled its bank and wrote nothing past it (nor wrapped around)
        assert received[9].stored == (long + struct.pack("<H", crc16(long)))[:16]
        assert received[10].stored == received[1].stored

    receive(wire, check, name="frame_receiver_statuses")


def test_framing_wins_over_overflow() -> None:
    # the gateware's priority is FRAMING > OVERFLOW whatever came first; FrameDecoder reports
    # the first error it met, so this case is spelled out instead of compared with it
    long = encode_frame(0x03, 0x09, bytes(range(1, 30)))
    late_escape = long[:-1] + bytes((ESC, 0x41, END))

    def check(received: list[Received]) -> None:
        assert [r.status for r in received] == [Status.FRAMING, Status.OVERFLOW]
        assert [(r.op, r.seq) for r in received] == [(0x03, 0x09)] * 2

    receive(late_escape + long, check, name="frame_receiver_priority")


def test_uart_error_marks_frame() -> None:
    dut = FrameReceiver(16)
    consumer = Consumer(dut, seed=1)
    feeder = Feeder(dut, seed=2)
    frame = encode_frame(0x04, 0x10, b"xyz")

    async def driver(ctx: Any) -> None:
        consumer.reset()
        feeder.reset()
        await feeder.send(ctx, frame, error_at=4)
        assert (await consumer.take(ctx)).status == Status.FRAMING
        await consumer.release(ctx)
        # an error between two frames (here: between END END) belongs to no frame
        await feeder.send(ctx, frame + frame, error_at=len(frame))
        assert (await consumer.take(ctx)).status == Status.OK
        await consumer.release(ctx)
        assert (await consumer.take(ctx)).status == Status.OK
        await consumer.release(ctx)
        # a UART error on the closing END still counts for the frame it closes
        await feeder.send(ctx, frame, error_at=len(frame) - 1)
        assert (await consumer.take(ctx)).status == Status.FRAMING
        await consumer.release(ctx)
        await feeder.send(ctx, frame)
        item = await consumer.take(ctx)
        assert (item.status, item.op, item.seq) == (Status.OK, 0x04, 0x10)

    simulate(dut, [driver], name="frame_receiver_uart_error")


def test_ping_pong_and_drop() -> None:
    dut = FrameReceiver(16)
    consumer = Consumer(dut, seed=3)
    feeder = Feeder(dut, seed=4)
    pulses: list[int] = []
    a, b, c, d, e, f = (encode_frame(0x06, seq, bytes([seq]) * seq) for seq in range(1, 7))

    def is_frame(item: Received, seq: int) -> bool:
        body = bytes((0x06, seq)) + bytes([seq]) * seq
        return item.status == Status.OK and item.stored == body + struct.pack("<H", crc16(body))

    async def driver(ctx: Any) -> None:
        consumer.reset()
        feeder.reset()
        await feeder.send(ctx, a + b)  # both arrive before anything is taken
        await ctx.tick().repeat(3)
        assert ctx.get(dut.frame.valid) and ctx.get(dut.frame.payload.seq) == 1
        first = await consumer.take(ctx)
        assert first.bank == 0 and is_frame(first, 1)
        assert ctx.get(dut.frame.valid) and ctx.get(dut.frame.payload.seq) == 2
        waiting = ctx.get(dut.frame.payload)

        await feeder.send(ctx, c)  # both banks busy: dropped
        await ctx.tick().repeat(2)  # the received byte and the unstuffed one are registers
        assert len(pulses) == 1
        assert ctx.get(dut.frame.payload) == waiting  # b still waits, unchanged

        await feeder.send(ctx, e[:5])  # starts while both are busy ...
        await consumer.release(ctx)  # ... a bank frees up in the middle of it ...
        await feeder.send(ctx, e[5:])  # ... still dropped whole
        await ctx.tick().repeat(2)
        assert len(pulses) == 2
        assert ctx.get(dut.frame.payload) == waiting

        await feeder.send(ctx, d)  # into the bank a was in, while b waits
        second = await consumer.take(ctx)
        assert second.bank == 1 and is_frame(second, 2)
        third = await consumer.take(ctx)  # taken before b is released
        assert third.bank == 0 and is_frame(third, 4)
        assert not ctx.get(dut.frame.valid)
        await consumer.release(ctx)  # frees b's bank (the oldest taken)
        await feeder.send(ctx, f)
        fourth = await consumer.take(ctx)
        assert fourth.bank == 1 and is_frame(fourth, 6)
        await consumer.release(ctx)
        await consumer.release(ctx)
        await consumer.release(ctx)  # nothing left to release: ignored
        await feeder.send(ctx, a)
        again = await consumer.take(ctx)
        assert is_frame(again, 1)
        await ctx.tick()
        assert len(pulses) == 2

    monitor = dropped_monitor(dut, pulses)
    simulate(dut, [driver], name="frame_receiver_ping_pong", background=[monitor])


def test_receiver_converts_to_verilog() -> None:
    text = verilog.convert(FrameReceiver(40), name="FrameReceiver")
    assert "module FrameReceiver" in text


# sender -------------------------------------------------------------------------------------------


def send_bodies(bodies: list[bytes], seed: int, *, name: str = "frame_sender") -> None:
    """Send response bodies through a FrameSender with random valid gaps and back-pressure,
    then check the wire bytes."""
    dut = FrameSender()
    wire = bytearray()

    async def producer(ctx: Any) -> None:
        rng = random.Random(seed)
        for body in bodies:
            for i, byte in enumerate(body):
                ctx.set(dut.body.payload, {"byte": byte, "last": i == len(body) - 1})
                ctx.set(dut.body.valid, 1)
                await wait_for(ctx, dut.body.ready, limit=200)
                if rng.random() < 0.3:
                    ctx.set(dut.body.valid, 0)
                    await ctx.tick().repeat(rng.randint(1, 3))
            ctx.set(dut.body.valid, 0)
        expected = sum(len(encode_frame(b[0], b[1], b[2:])) for b in bodies)
        for _ in range(20 * expected):  # a generous bound: the sink is ready half the time
            if len(wire) >= expected:
                break
            await ctx.tick()
        await ctx.tick().repeat(8)

    async def sink(ctx: Any) -> None:
        rng = random.Random(seed + 1)
        wire.clear()
        held = None  # a beat offered but not taken must stay offered, unchanged
        while True:
            ready = rng.random() < 0.5
            ctx.set(dut.tx.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
            if held is not None:
                assert valid and payload == held, "tx beat withdrawn or changed"
            if valid and ready:
                wire.append(payload)
            held = payload if valid and not ready else None

    simulate(
        dut, [producer], name=name, background=[sink], check=lambda: check_sent(bytes(wire), bodies)
    )


def check_sent(wire: bytes, bodies: list[bytes]) -> None:
    assert wire == b"".join(encode_frame(b[0], b[1], b[2:]) for b in bodies)
    frames = list(FrameDecoder().feed(wire))
    assert [(f.op, f.seq, f.payload, f.error) for f in frames] == [
        (b[0], b[1], b[2:], None) for b in bodies
    ]
    for body, chunk in zip(bodies, split_frames(wire)[1::2], strict=True):
        crc = crc16(body)
        assert chunk.endswith(stuff(struct.pack("<H", crc)) + bytes((END,)))
        assert crc == CRC(8).compute(body)


def test_sender_stuffs_specials() -> None:
    bodies = [
        bytes((0x81, 0x01, 0x00)),
        bytes((0x85, END, 0x00, ESC, END, ESC, ESC, END)),
        bytes((0x82, ESC, Status.OK, END)),
    ]
    send_bodies(bodies, seed=0, name="frame_sender_specials")


def test_sender_crc_bytes_stuffed() -> None:
    # bodies whose CRC contains END or ESC, so the CRC itself needs stuffing
    rng = random.Random(5)
    bodies: list[bytes] = []
    while len(bodies) < 3:
        body = bytes((0x86, rng.randrange(256), 0, rng.randrange(256)))
        if {END, ESC} & set(struct.pack("<H", crc16(body))):
            bodies.append(body)
    send_bodies(bodies, seed=5, name="frame_sender_crc_stuffed")


@settings(max_examples=10, **SIMULATION)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0x7F),
            st.integers(0, 255),
            st.sampled_from(list(Status)),
            st.lists(
                st.sampled_from([END, ESC, 0x00, 0xFF, 0x55]) | st.integers(0, 255), max_size=10
            ),
        ),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 1000),
)
def test_sender_random_bodies(frames: list[tuple[int, int, Status, list[int]]], seed: int) -> None:
    bodies = [bytes((op | RESPONSE, seq, status, *payload)) for op, seq, status, payload in frames]
    send_bodies(bodies, seed)


def test_sender_converts_to_verilog() -> None:
    text = verilog.convert(FrameSender(), name="FrameSender")
    assert "module FrameSender" in text
