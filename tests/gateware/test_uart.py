"""UART receiver and transmitter: pin-level timing, errors, baud mismatch, loopback."""

from __future__ import annotations

import gc
import random
import warnings
from typing import Any

import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module, UnusedElaboratable

from metaplast.gateware.uart import UARTRx, UARTTx, divisor_for

from .sim import simulate

CLOCK_HZ = 48_000_000


# pin driver and monitors --------------------------------------------------------------------------


def character(byte: int, *, stop: int = 1) -> list[int]:
    """Line levels of one 8N1 character, one per bit time."""
    return [0, *((byte >> i) & 1 for i in range(8)), stop]


async def drive_levels(ctx: Any, pin: Any, levels: list[int], bit_time: float) -> None:
    """Drive ``pin`` to each level for ``bit_time`` cycles (fractional times accumulate)."""
    elapsed = 0
    t = 0.0
    for level in levels:
        t += bit_time
        cycles = round(t) - elapsed
        elapsed += cycles
        ctx.set(pin, level)
        if cycles:
            await ctx.tick().repeat(cycles)
    assert elapsed == round(t)


async def wait_for(ctx: Any, condition: Any, *, limit: int = 20_000) -> None:
    """Tick until ``condition`` was true at a clock edge (a stream transfer, if it is the
    ``ready`` of a stream being driven); fail rather than hang after ``limit`` cycles."""
    for _ in range(limit):
        _, _, value = await ctx.tick().sample(condition)
        if value:
            return
    raise AssertionError(f"{condition!r} still false after {limit} cycles")


def rx_monitor(dut: UARTRx, events: list[tuple[str, int]], *, ready: bool = True) -> Any:
    """Background testbench: record received bytes, frame errors and overruns in order."""

    async def monitor(ctx: Any) -> None:
        events.clear()  # a rerun (for a waveform) starts afresh
        ctx.set(dut.data.ready, ready)
        sampled = ctx.tick().sample(
            dut.data.valid, dut.data.ready, dut.data.payload, dut.frame_error, dut.overrun
        )
        async for _, _, valid, rdy, payload, frame_error, overrun in sampled:
            if valid and rdy:
                events.append(("byte", payload))
            if frame_error:
                events.append(("frame_error", 0))
            if overrun:
                events.append(("overrun", 0))

    return monitor


def receive_levels(
    divisor: int,
    levels: list[int],
    expected: list[tuple[str, int]],
    *,
    bit_time: float | None = None,
    lead: int = 3,
    name: str = "uart_rx",
) -> None:
    """Drive ``levels`` on the pin of a UARTRx; check what it reports."""
    dut = UARTRx(divisor)
    events: list[tuple[str, int]] = []

    async def driver(ctx: Any) -> None:
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(lead)
        await drive_levels(ctx, dut.rx, [*levels, 1, 1], bit_time or divisor)

    def check() -> None:
        assert events == expected

    simulate(dut, [driver], name=name, background=[rx_monitor(dut, events)], check=check)


def rejects(error: type[Exception], match: str, build: Any) -> None:
    """``build()`` raises ``error``; the half-built component is not reported as unused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(error, match=match):
            build()
        gc.collect()


# divisor ------------------------------------------------------------------------------------------


def test_divisor_for() -> None:
    assert divisor_for(CLOCK_HZ, 115_200) == 417
    assert divisor_for(CLOCK_HZ, 3_000_000) == 16
    assert divisor_for(12_000_000, 3_000_000) == 4
    with pytest.raises(ValueError, match="at least 4"):
        divisor_for(12_000_000, 4_000_000)
    with pytest.raises(ValueError, match="off"):
        divisor_for(1_000, 180)  # 5.56 -> 6 cycles per bit: 7 % fast
    assert divisor_for(12_000_000, 1_190_000) == 10  # 1,200,000 baud: 0.8 % off
    with pytest.raises(ValueError, match=r"the UART cannot run 1218000 baud at .* 1\.5% off"):
        divisor_for(12_000_000, 1_218_000)  # 1,200,000 baud: 1.5 % off, more than 1 %
    with pytest.raises(ValueError):
        divisor_for(0, 9600)


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
def test_divisor_checked(cls: type) -> None:
    rejects(ValueError, "at least 4", lambda: cls(3))
    rejects(TypeError, "integer", lambda: cls(8.0))


# receiver -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("divisor", [4, 7, 16])
@pytest.mark.parametrize("mismatch", [-0.02, 0.0, 0.02])
def test_rx_bytes_with_baud_mismatch(divisor: int, mismatch: float) -> None:
    rng = random.Random(f"rx-{divisor}-{mismatch}")
    data = [0x00, 0xFF, 0x55, 0xAA, 0x80, 0x01] + [rng.randrange(256) for _ in range(10)]
    levels: list[int] = []
    for byte in data:
        levels += character(byte)
        levels += [1] * rng.choice([0, 0, 0, 1, 3])  # mostly back to back
    receive_levels(
        divisor,
        levels,
        [("byte", b) for b in data],
        bit_time=divisor * (1 + mismatch),
        lead=rng.randrange(1, 2 * divisor),
        name=f"uart_rx_{divisor}_{mismatch}",
    )


def receive_in_real_time(divisor: int, data: list[int], error: float, *, phase: float) -> None:
    """Send ``data`` back to back from a host whose bit time is ``divisor / (1 + error)`` clock
    periods, with every edge at its exact time (not rounded to a clock edge, unlike
    :func:`drive_levels`), so the start bits fall at every phase of the clock, as a real
    host's do; ``phase`` (in clock periods) places the first edge."""
    dut = UARTRx(divisor)
    events: list[tuple[str, int]] = []
    period = 1 / CLOCK_HZ
    bit = divisor * period / (1 + error)

    async def driver(ctx: Any) -> None:
        ctx.set(dut.rx, 1)
        await ctx.delay((3 + phase) * period)
        for byte in data:
            for level in character(byte):
                ctx.set(dut.rx, level)
                await ctx.delay(bit)
        await ctx.delay(3 * divisor * period)

    def check() -> None:
        assert events == [("byte", b) for b in data], f"host {error:+.1%} off"

    name = f"uart_rx_real_time_{divisor}_{error}"
    simulate(dut, [driver], name=name, background=[rx_monitor(dut, events)], check=check)


@pytest.mark.parametrize("divisor", [4, 5, 6, 8])
@pytest.mark.parametrize("error", [-0.03, 0.03])
def test_rx_samples_mid_bit_with_the_host_3_percent_off(divisor: int, error: float) -> None:
    """The margin the link promises (+-3 %) at the smallest divisors, where one clock cycle is a
    large part of a bit: every byte value, back to back, so the start edges drift through every
    phase of the clock. A receiver sampling even half a cycle late misses a fast host's last
    bits (a host 3 % fast failed at divisor 4 before the sample point moved)."""
    data = list(range(256))
    random.Random(divisor).shuffle(data)
    receive_in_real_time(divisor, data, error, phase=0.37)


def test_rx_115200_at_48mhz() -> None:
    divisor = divisor_for(CLOCK_HZ, 115_200)
    levels = character(0x5A) + character(0xC3)
    # a host's UART runs at its own 115200 baud: 416.67 cycles per bit, not 417
    expected = [("byte", 0x5A), ("byte", 0xC3)]
    receive_levels(divisor, levels, expected, bit_time=CLOCK_HZ / 115_200, name="uart_rx_115200")


def test_rx_frame_error() -> None:
    levels = character(0x3C) + character(0xA5, stop=0) + [1] + character(0x96)
    expected = [("byte", 0x3C), ("frame_error", 0), ("byte", 0x96)]
    receive_levels(8, levels, expected, name="uart_rx_frame_error")


def test_rx_break_is_one_frame_error() -> None:
    # a line held low: one framing error, then nothing until it has been high again
    expected = [("frame_error", 0), ("byte", 0x42)]
    receive_levels(8, [0] * 30 + [1, 1] + character(0x42), expected, name="uart_rx_break")


def test_rx_ignores_glitch() -> None:
    divisor = 16
    dut = UARTRx(divisor)
    events: list[tuple[str, int]] = []

    async def driver(ctx: Any) -> None:
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        ctx.set(dut.rx, 0)  # much shorter than half a bit
        await ctx.tick().repeat(divisor // 4)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await drive_levels(ctx, dut.rx, character(0x81) + [1, 1], divisor)

    def check() -> None:
        assert events == [("byte", 0x81)]

    simulate(
        dut, [driver], name="uart_rx_glitch", background=[rx_monitor(dut, events)], check=check
    )


def test_rx_holds_byte_and_reports_overrun() -> None:
    divisor = 8
    dut = UARTRx(divisor)
    events: list[tuple[str, int]] = []

    async def driver(ctx: Any) -> None:
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        await drive_levels(ctx, dut.rx, character(0x11) + character(0x22) + [1, 1], divisor)
        # the first byte is still offered; the second one was lost
        assert ctx.get(dut.data.valid) and ctx.get(dut.data.payload) == 0x11
        assert events == [("overrun", 0)]
        ctx.set(dut.data.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.data.valid)
        await drive_levels(ctx, dut.rx, character(0x33) + [1, 1], divisor)

    def check() -> None:
        assert events == [("overrun", 0), ("byte", 0x11), ("byte", 0x33)]

    monitor = rx_monitor(dut, events, ready=False)
    simulate(dut, [driver], name="uart_rx_overrun", background=[monitor], check=check)


# transmitter --------------------------------------------------------------------------------------


def parse_tx(wave: list[int], divisor: int) -> list[tuple[int, int]]:
    """``(start cycle, byte)`` of each character on a sampled tx line; checks exact timing."""
    chars = []
    i = 0
    while True:
        while i < len(wave) and wave[i] == 1:
            i += 1
        if i == len(wave):
            return chars
        start = i
        bits = []
        for n in range(10):
            segment = wave[start + n * divisor : start + (n + 1) * divisor]
            assert len(segment) == divisor, f"line sampled too short at cycle {start}"
            assert len(set(segment)) == 1, f"bit {n} of the character at {start}: {segment}"
            bits.append(segment[0])
        assert bits[0] == 0 and bits[9] == 1, f"character at {start}: {bits}"
        chars.append((start, sum(b << k for k, b in enumerate(bits[1:9]))))
        i = start + 10 * divisor


def transmit(
    divisor: int, bursts: list[list[int]], check: Any, *, pause: int = 0, name: str = "uart_tx"
) -> None:
    """Send ``bursts`` of bytes (each back to back, ``pause`` idle cycles between), then
    ``check(wave)``, the tx line sampled every cycle."""
    dut = UARTTx(divisor)
    wave: list[int] = []

    async def sender(ctx: Any) -> None:
        await ctx.tick().repeat(2)
        for burst in bursts:
            for byte in burst:
                ctx.set(dut.data.payload, byte)
                ctx.set(dut.data.valid, 1)
                await wait_for(ctx, dut.data.ready)
            ctx.set(dut.data.valid, 0)
            await ctx.tick().repeat(10 * divisor + pause)
        await ctx.tick().repeat(divisor)

    async def monitor(ctx: Any) -> None:
        wave.clear()
        async for _, _, tx in ctx.tick().sample(dut.tx):
            wave.append(tx)

    simulate(dut, [sender], name=name, background=[monitor], check=lambda: check(wave))


@pytest.mark.parametrize("divisor", [4, 5, 16])
def test_tx_bit_timing_back_to_back(divisor: int) -> None:
    rng = random.Random(divisor)
    bursts = [[0x00, 0xFF, 0x01, 0x80], [rng.randrange(256) for _ in range(6)], [0x55]]

    def check(wave: list[int]) -> None:
        assert wave[0] == 1
        chars = parse_tx(wave, divisor)
        assert [b for _, b in chars] == [b for burst in bursts for b in burst]
        starts = [s for s, _ in chars]
        n = 0
        for burst in bursts:
            for k in range(1, len(burst)):
                assert starts[n + k] - starts[n + k - 1] == 10 * divisor  # no idle gap
            n += len(burst)

    transmit(divisor, bursts, check, pause=3, name=f"uart_tx_{divisor}")


def test_tx_115200_at_48mhz() -> None:
    divisor = divisor_for(CLOCK_HZ, 115_200)

    def check(wave: list[int]) -> None:
        chars = parse_tx(wave, divisor)
        assert chars == [(chars[0][0], 0xA7), (chars[0][0] + 10 * divisor, 0x3E)]

    transmit(divisor, [[0xA7, 0x3E]], check, name="uart_tx_115200")


# loopback -----------------------------------------------------------------------------------------


class Loopback(Elaboratable):
    def __init__(self, divisor: int) -> None:
        self.tx = UARTTx(divisor)
        self.rx = UARTRx(divisor)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.tx = self.tx
        m.submodules.rx = self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


def test_loopback_3mbaud() -> None:
    divisor = divisor_for(CLOCK_HZ, 3_000_000)
    data = bytes(random.Random(3).randrange(256) for _ in range(24)) + b"\x00\xff\xc0\xdb"
    dut = Loopback(divisor)
    events: list[tuple[str, int]] = []

    async def sender(ctx: Any) -> None:
        rng = random.Random(4)
        for byte in data:
            ctx.set(dut.tx.data.payload, byte)
            ctx.set(dut.tx.data.valid, 1)
            await wait_for(ctx, dut.tx.data.ready)
            if rng.random() < 0.2:
                ctx.set(dut.tx.data.valid, 0)
                await ctx.tick().repeat(rng.randrange(1, 3 * divisor))
        ctx.set(dut.tx.data.valid, 0)
        await ctx.tick().repeat(12 * divisor)

    def check() -> None:
        assert events == [("byte", b) for b in data]

    monitor = rx_monitor(dut.rx, events)
    simulate(dut, [sender], name="uart_loopback", background=[monitor], check=check)


# Verilog ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
def test_converts_to_verilog(cls: type) -> None:
    text = verilog.convert(cls(16), name=cls.__name__)
    assert f"module {cls.__name__}" in text
