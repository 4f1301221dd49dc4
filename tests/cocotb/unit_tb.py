"""cocotb testbench: the generated Verilog of the whole unit, through its pins, against the model.

The same byte stream goes into the RTL (bit by bit on ``uart_rx``) and into
:class:`~metaplast.firmware_sim.unit.command_model.CommandModel`; what comes out of ``uart_tx``
must be the model's reply, byte for byte. The programming pins are checked too: every strobe
must be the device operation that the model's level-change events call for.

This is the same check as ``tests/gateware/test_top.py`` but on the Verilog that a board build
uses, in another simulator, so a difference between Amaranth's simulator and the exported RTL
(or a Verilog-only construct) cannot hide. The runner (``test_icarus.py``) passes the
configuration in ``METAPLAST_*`` environment variables (:class:`tb_config.TbConfig`).
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import (
    ClockCycles,
    Event,
    FallingEdge,
    ReadOnly,
    RisingEdge,
    SimTimeoutError,
    Timer,
    with_timeout,
)
from tb_config import TbConfig

from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.protocol import (
    END,
    ESC,
    ESC_END,
    FrameDecoder,
    Info,
    Layout,
    Op,
    Status,
    encode_frame,
)

CLOCK_NS = 10
"""Clock period; only the cycle counts matter (the UART divisor is in cycles)."""

CFG = TbConfig.from_env()


def hexdump(data: bytes | bytearray, limit: int = 96) -> str:
    """Bytes as hex, shortened for long blocks so a failure message stays readable."""
    data = bytes(data)
    if len(data) <= limit:
        return data.hex(" ") or "(none)"
    return f"{data[: limit // 2].hex(' ')} ... {data[-limit // 2 :].hex(' ')} ({len(data)} bytes)"


def unsigned(value: Any) -> int | str:
    """A pin's value, or its text when it holds X or Z (so that a comparison shows it)."""
    return int(value) if value.is_resolvable else str(value)


class RecordingModel(CommandModel):
    """The bit-exact model, also noting what each executed UPDATE did.

    A retry is answered from the stored reply without calling ``_update``, so what is recorded
    here is exactly what the unit must apply (once) and send to the programming pins.
    """

    def __init__(self, layout: Layout, **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)
        self.updates = 0
        """Synapse updates executed (the elements of every applied UPDATE block)."""
        self.events: list[tuple[int, int, int]] = []
        """``(address, old level, new level)`` of every level change, in order."""

    def _update(self, payload: bytes) -> bytes:
        reply = super()._update(payload)
        start = struct.unpack_from("<I", payload)[0]
        self.updates += (len(payload) - 8) // self.layout.update_bytes
        count = struct.unpack_from("<H", reply)[0]
        for i in range(count):
            offset, old, new = struct.unpack_from("<HBB", reply, 2 + 4 * i)
            self.events.append((start + offset, old, new))
        return reply

    def device_ops(self) -> list[tuple[int, int, int]]:
        """``(address, device, level)`` strobes the programming port must produce, in order."""
        c = self.layout.contract
        return [
            (addr, device, level)
            for addr, old, new in self.events
            for device, level in c.device_operations(old, new)
        ]


class UnitBench:
    """The unit's pins driven and watched like a host and a programming circuit would.

    ``uart_rx`` is driven bit by bit (8N1, ``divisor`` cycles per bit, timed with
    :class:`ClockCycles`); a monitor decodes ``uart_tx`` into :attr:`received`; another one
    records every ``prog_strobe`` and, with ``prog_busy`` cycles, holds ``prog_busy`` high
    after each, like a slow programming circuit.
    """

    def __init__(self, dut: Any, cfg: TbConfig, *, name: str, prog_busy: int = 0) -> None:
        self.dut = dut
        self.cfg = cfg
        self.name = name
        self.layout = cfg.layout
        self.divisor = cfg.divisor
        self.prog_busy = prog_busy
        self.model = RecordingModel(self.layout, baud_divisor=cfg.divisor)
        self.received = bytearray()
        self.expected = bytearray()
        self.ops: list[tuple[int | str, int | str, int | str]] = []
        self.sent_bytes = 0
        self.steps = 0
        self._byte_seen = Event()
        # the longest silence before a due reply byte: RESET clears every synapse, an UPDATE
        # block may wait on a slow programming circuit for two operations per synapse
        self.gap_cycles = 20_000 + 4 * cfg.synapses + 4 * cfg.max_block * (prog_busy + 4)
        self._wall0 = 0.0
        self._sim0 = 0.0

    # set-up ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Clock, a synchronous reset held for a few cycles, the monitors, then a RESET frame.

        Memories keep their contents through ``rst`` (and earlier tests of this simulation
        ran on the same RTL), so a RESET command brings the RTL to the fresh model's state.
        """
        dut = self.dut
        dut.uart_rx.value = 1
        dut.prog_busy.value = 0
        dut.rst.value = 1
        # the clock toggled by the GPI layer, not a Python task: twice as fast under Icarus
        Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start()
        await ClockCycles(dut.clk, 5)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 3)
        pins = {"uart_tx": dut.uart_tx.value, "prog_strobe": dut.prog_strobe.value}
        assert pins == {"uart_tx": 1, "prog_strobe": 0}, f"outputs after reset: {pins}"
        cocotb.start_soon(self._monitor_tx())
        cocotb.start_soon(self._programmer())
        self._wall0 = time.perf_counter()
        self._sim0 = get_sim_time("ns")
        await self.step(encode_frame(Op.RESET, 0xFF), label="initial RESET")

    # UART host ---------------------------------------------------------------------------------

    async def send(self, data: bytes, *, bad_stop: frozenset[int] = frozenset()) -> None:
        """Drive ``data`` on ``uart_rx``; the bytes at ``bad_stop`` get a 0 stop bit."""
        rx, clk, d = self.dut.uart_rx, self.dut.clk, self.divisor
        for index, byte in enumerate(data):
            stop = 0 if index in bad_stop else 1
            for bit in (0, *((byte >> i) & 1 for i in range(8)), stop):
                rx.value = bit
                await ClockCycles(clk, d)
            if not stop:
                rx.value = 1  # the receiver re-arms only on a high line
                await ClockCycles(clk, 2 * d)
        rx.value = 1
        self.sent_bytes += len(data)

    async def idle(self, bits: int) -> None:
        """Keep the line idle for ``bits`` bit times (one timer, not a callback per cycle)."""
        self.dut.uart_rx.value = 1
        await Timer(bits * self.divisor * CLOCK_NS, unit="ns")
        await RisingEdge(self.dut.clk)

    async def _monitor_tx(self) -> None:
        """Decode ``uart_tx``: each byte sampled in the middle of its bits."""
        tx, clk, d = self.dut.uart_tx, self.dut.clk, self.divisor
        while True:
            await FallingEdge(tx)
            await ClockCycles(clk, d // 2)
            assert self._tx_bit() == 0, f"{self.name}: uart_tx glitch (start bit not held)"
            byte = 0
            for i in range(8):
                await ClockCycles(clk, d)
                byte |= self._tx_bit() << i
            await ClockCycles(clk, d)
            assert self._tx_bit() == 1, (
                f"{self.name}: stop bit missing after byte {len(self.received)} ({byte:#04x}); "
                f"received so far: {hexdump(self.received)}"
            )
            self.received.append(byte)
            self._byte_seen.set()

    def _tx_bit(self) -> int:
        value = self.dut.uart_tx.value
        if not value.is_resolvable:
            raise AssertionError(
                f"{self.name}: uart_tx is {value} at step {self.steps}, after "
                f"{len(self.received)} bytes; received so far: {hexdump(self.received)}"
            )
        return int(value)

    async def _programmer(self) -> None:
        """Record each ``prog_strobe``; with ``prog_busy``, be busy for that many cycles after.

        ``prog_strobe`` is combinational, so a rising edge is confirmed in the read-only phase
        (a glitch within one time step is not an operation).
        """
        dut = self.dut
        strobe = dut.prog_strobe
        while True:
            await RisingEdge(strobe)
            await ReadOnly()
            if strobe.value != 1:
                continue
            op = (
                unsigned(dut.prog_addr.value),
                unsigned(dut.prog_device.value),
                unsigned(dut.prog_level.value),
            )
            self.ops.append(op)
            if self.prog_busy:
                await RisingEdge(dut.clk)  # the edge that takes the strobe
                dut.prog_busy.value = 1
                for _ in range(self.prog_busy - 1):
                    await RisingEdge(dut.clk)
                    await ReadOnly()
                    assert strobe.value == 0, f"{self.name}: prog_strobe while busy, after {op}"
                await RisingEdge(dut.clk)
                dut.prog_busy.value = 0

    # exchanges ---------------------------------------------------------------------------------

    async def step(
        self,
        data: bytes,
        *,
        label: str,
        model_input: bytes | None = None,
        bad_stop: frozenset[int] = frozenset(),
    ) -> bytes:
        """Send one step's bytes, wait for as many reply bytes as the model gives, compare.

        ``model_input`` replaces ``data`` for the model when the wire carries something the
        model cannot be fed (a byte with a bad stop bit). Returns the model's reply.
        """
        reply = self.model.feed(data if model_input is None else model_input)
        begin = len(self.expected)
        self.expected += reply
        await self.send(data, bad_stop=bad_stop)
        await self._wait_for(len(self.expected), label, data)
        got = bytes(self.received[begin : len(self.expected)])
        if got != reply:
            at = next(i for i, (a, b) in enumerate(zip(got, reply, strict=True)) if a != b)
            raise AssertionError(
                f"{self.name}: reply to step {self.steps} ({label}) differs from the model at "
                f"byte {at}\n  sent:     {hexdump(data)}\n  expected: {hexdump(reply)}\n"
                f"  got:      {hexdump(got)}\n  decoded expected: {describe(reply)}\n"
                f"  decoded got:      {describe(got)}\n  both streams: {self.dump()}"
            )
        self.steps += 1
        return reply

    def dump(self) -> str:
        """Write both whole byte streams next to the simulation, for a failure's report."""
        path = os.path.abspath(f"{self.cfg.name}-{self.name}.streams.txt")
        with open(path, "w") as f:
            f.write(f"expected ({len(self.expected)} bytes):\n{bytes(self.expected).hex(' ')}\n")
            f.write(f"received ({len(self.received)} bytes):\n{bytes(self.received).hex(' ')}\n")
        return path

    async def _wait_for(self, total: int, label: str, sent: bytes) -> None:
        """Wait until ``total`` reply bytes have arrived; fail clearly if the RTL falls silent."""
        while len(self.received) < total:
            self._byte_seen.clear()
            try:
                await with_timeout(self._byte_seen.wait(), self.gap_cycles * CLOCK_NS, "ns")
            except SimTimeoutError:
                raise AssertionError(
                    f"{self.name}: no reply byte for {self.gap_cycles} cycles at step "
                    f"{self.steps} ({label}): {len(self.received)} of {total} bytes arrived\n"
                    f"  sent:        {hexdump(sent)}\n"
                    f"  still due:   {hexdump(self.expected[len(self.received) :])}\n"
                    f"  last got:    {hexdump(self.received[-64:])}\n"
                    f"  both streams: {self.dump()}"
                ) from None

    async def finish(self) -> dict[str, object]:
        """Nothing more may come; the programming pins saw exactly the model's operations."""
        await self.idle(60)
        extra = bytes(self.received[len(self.expected) :])
        assert not extra, f"{self.name}: unexpected bytes after the last reply: {hexdump(extra)}"
        want = self.model.device_ops()
        waited = 0
        while len(self.ops) < len(want) and waited < self.gap_cycles:
            await self.idle(8)
            waited += 8 * self.divisor
        if self.ops != want:
            at = next(
                (i for i, (a, b) in enumerate(zip(self.ops, want, strict=False)) if a != b),
                min(len(self.ops), len(want)),
            )
            raise AssertionError(
                f"{self.name}: programming strobes differ from the model's events at operation "
                f"{at} (addr, device, level): got {self.ops[at : at + 4]}, expected "
                f"{want[at : at + 4]}; {len(self.ops)} strobes, {len(want)} expected"
            )
        wall = time.perf_counter() - self._wall0
        cycles = (get_sim_time("ns") - self._sim0) / CLOCK_NS
        stats: dict[str, object] = {
            "config": self.cfg.name,
            "test": self.name,
            "compared_updates": self.model.updates,
            "compared_events": len(self.model.events),
            "prog_ops": len(self.ops),
            "steps": self.steps,
            "sent_bytes": self.sent_bytes,
            "reply_bytes": len(self.expected),
            "sim_cycles": int(cycles),
            "wall_s": round(wall, 3),
            "cycles_per_s": round(cycles / wall) if wall else 0,
        }
        cocotb.log.info(" ".join(f"{k}={v}" for k, v in stats.items()))
        path = os.environ.get("METAPLAST_STATS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(stats) + "\n")
        return stats


def describe(stream: bytes) -> str:
    """Reply frames as ``op/seq/status+payload length``, to read a mismatch at a glance."""
    try:
        frames = list(FrameDecoder().feed(stream))
    except Exception as e:  # a garbled stream is what a mismatch may look like
        return f"(undecodable: {e})"
    parts = []
    for f in frames:
        status = f.payload[0] if f.payload else None
        parts.append(f"op={f.op:#04x} seq={f.seq} status={status} len={len(f.payload)}")
    return "; ".join(parts) or "(no frame)"


# scenarios -------------------------------------------------------------------------------------


def random_block(layout: Layout, rng: random.Random, count: int) -> list[int]:
    """Update values of every size: small steps, level crossings, saturating extremes."""
    width = layout.contract.update_width
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    style = rng.choice(("small", "medium", "large", "extreme", "mixed"))
    out = []
    for _ in range(count):
        kind = rng.choice(("small", "medium", "large", "extreme")) if style == "mixed" else style
        if kind == "small":
            v = rng.randint(-(1 << (width - 7)), 1 << (width - 7))
        elif kind == "medium":
            v = rng.randint(-(1 << (width - 4)), 1 << (width - 4))
        elif kind == "large":
            v = rng.randint(-(1 << (width - 2)), 1 << (width - 2))
        else:
            v = rng.choice((lo, hi, lo + 1, hi - 1, rng.randint(lo, hi)))
        out.append(v)
    return out


def write_starts(cfg: TbConfig) -> list[int]:
    """Block starts the session writes and reads back: all, or the first and the last ones."""
    starts = list(range(0, cfg.synapses, cfg.max_block))
    if cfg.write_blocks and cfg.write_blocks < len(starts):
        head = cfg.write_blocks // 2
        starts = starts[:head] + starts[len(starts) - (cfg.write_blocks - head) :]
    return starts


def corrupt(frame: bytes, index: int) -> bytes:
    """``frame`` with one bit of byte ``index`` flipped, without making or breaking an escape."""
    out = bytearray(frame)
    for bit in (0x01, 0x02, 0x04, 0x40):
        if out[index] not in (END, ESC) and out[index] ^ bit not in (END, ESC):
            out[index] ^= bit
            return bytes(out)
    raise ValueError(f"byte {index} of {frame.hex()} cannot be flipped safely")


@cocotb.test()
async def session_matches_the_model(dut: Any) -> None:
    """(a) A training-like session: weights, LUT switch, many update blocks, read-backs."""
    cfg = CFG
    bench = UnitBench(dut, cfg, name="session")
    await bench.start()
    layout, c, n = cfg.layout, cfg.layout.contract, cfg.synapses
    rng = random.Random(cfg.seed)
    seq = 0

    def frame(op: Op, payload: bytes = b"") -> bytes:
        nonlocal seq
        seq = (seq + 1) & 0xFF
        return encode_frame(op, seq, payload)

    reply = await bench.step(frame(Op.INFO), label="INFO")
    info = Info.unpack(FrameDecoder().feed(reply)[0].payload[1:])
    assert (info.synapses, info.max_block) == (n, cfg.max_block)

    starts = write_starts(cfg)
    for start in starts:
        count = min(cfg.max_block, n - start)
        w = [rng.randint(c.w_min, c.w_max) for _ in range(count)]
        w[rng.randrange(count)] = rng.choice((c.w_min, c.w_max))
        await bench.step(
            frame(Op.WRITE_HIDDEN, layout.write_hidden(start, w)), label=f"WRITE_HIDDEN {start}"
        )
    await bench.step(frame(Op.LOAD_LUT, layout.load_lut(3.0)), label="LOAD_LUT m*=3")

    for i in range(cfg.update_blocks):
        count = cfg.max_block if i % 5 == 4 else rng.randint(1, cfg.max_block)
        where = rng.random()
        if where < 0.2:
            start = n - count  # the very end of the memory
        elif where < 0.7:
            # inside a written block, where the weights are spread over the levels
            start = min(rng.choice(starts) + rng.randrange(cfg.max_block), n - count)
        else:
            start = rng.randint(0, n - count)
        d = random_block(layout, rng, count)
        await bench.step(
            frame(Op.UPDATE, layout.update(start, rng.getrandbits(32), d)),
            label=f"UPDATE {start}+{count}",
        )

    for start in starts:
        count = min(cfg.max_block, n - start)
        await bench.step(frame(Op.READ_HIDDEN, layout.span(start, count)), label=f"READ {start}")
        await bench.step(
            frame(Op.READ_COUNTERS, layout.span(start, count)), label=f"COUNTERS {start}"
        )
    await bench.step(frame(Op.READ_HIDDEN, layout.span(n - 1, 1)), label="READ last synapse")
    reply = await bench.step(frame(Op.INFO), label="INFO")
    info = Info.unpack(FrameDecoder().feed(reply)[0].payload[1:])
    assert info.lut_mstar == 3.0
    stats = await bench.finish()
    assert stats["compared_events"], "no update crossed a level: the session tests too little"


@cocotb.test()
async def invalid_frames_are_answered_like_the_model(dut: Any) -> None:
    """(b) Errors of every kind between good frames, back-to-back frames, random garbage."""
    cfg = CFG
    bench = UnitBench(dut, cfg, name="invalid", prog_busy=cfg.prog_busy)
    await bench.start()
    L, n, b, blk = cfg.layout, cfg.synapses, cfg.max_block, cfg.test_block  # noqa: N806
    c = L.contract
    rng = random.Random(cfg.seed + 100)
    lo, hi = -(1 << (c.update_width - 1)), (1 << (c.update_width - 1)) - 1
    big = 1 << (c.update_width - 2)

    def upd(seq: int, start: int, d: list[int], seed: int = 1) -> bytes:
        return encode_frame(Op.UPDATE, seq, L.update(start, seed, d))

    def read(seq: int, start: int, count: int, op: Op = Op.READ_HIDDEN) -> bytes:
        return encode_frame(op, seq, L.span(start, count))

    good_update = upd(9, 0, [big] * blk)
    lut = L.load_lut(1.0)
    steps: list[tuple[str, bytes]] = [
        ("WRITE_HIDDEN", encode_frame(Op.WRITE_HIDDEN, 1, L.write_hidden(0, range(blk)))),
        ("bad CRC", corrupt(good_update, len(good_update) - 3)),
        ("bad payload byte", corrupt(good_update, 8)),
        ("truncated, then a good frame", good_update[: len(good_update) // 2]),
        ("READ_HIDDEN", read(2, 0, blk)),
        ("truncated to its op", good_update[:2] + read(3, 0, 4)),
        ("unknown op", encode_frame(0x55, 3)),
        ("unknown op 0x00", encode_frame(0x00, 4, b"\x01\x02")),
        ("a response's op", encode_frame(Op.INFO | 0x80, 4)),
        ("range: past the end", read(4, n - 1, 2)),
        ("range: the last synapse", read(5, n - 1, 1)),
        ("range: start = synapses", read(5, n, 1, Op.READ_COUNTERS)),
        ("range: start 2**24", read(5, 1 << 24, 1)),
        ("range: start + count wraps 32 bits", read(5, 0xFFFFFFFF, 2)),
        ("range: start 2**31", read(5, 1 << 31, 1)),
        ("zero count", read(5, 0, 0)),
        ("count max_block at the end", read(6, n - b, b)),
        ("count above max_block", read(6, 0, b + 1)),
        ("count 0xFFFF", read(6, 0, 0xFFFF, Op.READ_COUNTERS)),
        ("span one byte long", encode_frame(Op.READ_HIDDEN, 7, L.span(0, 4) + b"\x00")),
        ("span one byte short", encode_frame(Op.READ_HIDDEN, 7, L.span(0, 4)[:-1])),
        ("update range", upd(8, n - 1, [5, 5])),
        ("update range wraps 32 bits", upd(8, 0xFFFFFFFF, [5, 5])),
        ("update partial element", encode_frame(Op.UPDATE, 9, L.update(0, 1, [5] * 3) + b"\x01")),
        ("update empty block", upd(10, 0, [])),
        ("update header short", encode_frame(Op.UPDATE, 10, struct.pack("<I", 0) + b"\x01")),
        ("update above max_block", upd(11, 0, [5] * (b + 1))),
        ("update max_block at the end", upd(11, n - b, [hi, lo] * (b // 2) + [hi] * (b % 2))),
        ("write value max+1", encode_frame(Op.WRITE_HIDDEN, 12, L.write_hidden(0, [c.w_max + 1]))),
        ("write value min-1", encode_frame(Op.WRITE_HIDDEN, 12, L.write_hidden(1, [c.w_min - 1]))),
        ("write range", encode_frame(Op.WRITE_HIDDEN, 12, L.write_hidden(n - 1, [1, 2]))),
        ("write header short", encode_frame(Op.WRITE_HIDDEN, 12, b"\x00\x00")),
        (
            "write partial element",
            encode_frame(Op.WRITE_HIDDEN, 12, L.write_hidden(0, [1]) + b"\x01"),
        ),
        (
            "LUT value",
            encode_frame(Op.LOAD_LUT, 13, L.load_lut(1.0, [c.meta_one + 1] * c.lut_entries)),
        ),
        ("LUT short", encode_frame(Op.LOAD_LUT, 14, lut[:-2])),
        ("LUT long", encode_frame(Op.LOAD_LUT, 14, lut + b"\x00\x00")),
        ("INFO with payload", encode_frame(Op.INFO, 15, b"\x00")),
        ("RESET with payload", encode_frame(Op.RESET, 16, b"\x00")),
        ("bad escape", bytes([END, 0x01, ESC, 0x31, 0x22, 0x33, END])),
        ("ESC before END", bytes([END, 0x02, 0x07, 0x00, 0x00, ESC, END])),
        ("escaped END as the op", bytes([END, ESC, ESC_END, 0x07, 0x00, 0x00, END])),
        ("garbage before a frame", b"\x13\x37" + read(17, 0, blk)),
        ("a one-byte frame", bytes([END, 0x01, END])),
        ("a two-byte frame", bytes([0x01, 0x02, END])),
        ("a three-byte frame", bytes([0x01, 0x02, 0x03, END])),
        ("garbage with an END inside", bytes([0x44, END, 0x45, 0x46, END])),
        ("empty frames: no reply", bytes([END] * 3)),
        (
            "overflow",
            bytes([END, Op.WRITE_HIDDEN, 18]) + bytes(L.receive_buffer + 5) + bytes([END]),
        ),
        ("READ_COUNTERS", read(18, 0, blk, Op.READ_COUNTERS)),
        ("good UPDATE", good_update),
        ("READ_HIDDEN", read(19, 0, blk)),
        ("READ_HIDDEN at the end", read(19, n - b, b)),
    ]
    for label, data in steps:
        await bench.step(data, label=label)

    # a UART framing error (0 stop bit) inside a frame, after its op and seq: the model is fed
    # an invalid escape at that place instead, which it answers the same way (FRAMING)
    frame = read(20, 0, 4)
    await bench.step(
        frame,
        label="UART framing error",
        model_input=frame[:3] + bytes([ESC, 0x00]) + frame[4:],
        bad_stop=frozenset({3}),
    )
    await bench.step(read(21, 0, 4), label="a good frame after the framing error")

    # back-to-back frames with a slow programming circuit: the second frame arrives while the
    # first one executes (only two: a third could find both receive banks busy and be dropped,
    # which is timing the model does not describe)
    for k in range(4):
        start = n - blk if k == 3 else rng.randint(0, n - blk)
        burst = upd(30 + k, start, [(lo, hi)[k % 2]] * blk, seed=k) + read(40 + k, start, blk)
        await bench.step(burst, label=f"back-to-back UPDATE + READ #{k}")
    burst = read(50, 0, blk, Op.READ_COUNTERS) + encode_frame(Op.INFO, 51)
    await bench.step(burst, label="back-to-back READ_COUNTERS + INFO")
    lut3 = encode_frame(Op.LOAD_LUT, 52, L.load_lut(3.0))
    await bench.step(
        lut3 + upd(53, 0, random_block(L, rng, blk)), label="back-to-back LUT + UPDATE"
    )

    # random garbage before good frames; no END in it (one garbage frame, then the good one)
    no_end = [x for x in range(256) if x != END]
    for i in range(12):
        junk = bytes(rng.choice(no_end) for _ in range(rng.randint(0, 12)))
        count = rng.randint(1, min(8, blk))
        frame = upd(60 + i, rng.randint(0, n - count), random_block(L, rng, count), seed=i)
        await bench.step(junk + frame, label=f"garbage {junk.hex()} + UPDATE")
    await bench.step(read(99, n - blk, blk), label="READ the end")
    await bench.step(read(100, 0, blk, Op.READ_COUNTERS), label="COUNTERS")
    await bench.finish()


@cocotb.test()
async def retry_is_applied_once_and_answered_again(dut: Any) -> None:
    """(c) A byte-identical UPDATE is answered from the stored reply and not applied again."""
    cfg = CFG
    bench = UnitBench(dut, cfg, name="retry")
    await bench.start()
    L, n, blk = cfg.layout, cfg.synapses, cfg.test_block  # noqa: N806
    c = L.contract
    start = n - blk  # the highest addresses
    step = -(1 << (c.update_width - 3))
    update = encode_frame(Op.UPDATE, 42, L.update(start, 7, [step] * blk))
    read = encode_frame(Op.READ_HIDDEN, 43, L.span(start, blk))
    counters = encode_frame(Op.READ_COUNTERS, 44, L.span(start, blk))

    first = await bench.step(update, label="UPDATE")
    applied = bench.model.updates
    assert await bench.step(update, label="UPDATE retry") == first
    after_one = await bench.step(read, label="READ after the retry")
    await bench.step(counters, label="COUNTERS after the retry")
    assert await bench.step(update, label="UPDATE retry after a read") == first
    await bench.step(corrupt(update, 8), label="a corrupted copy (bad CRC) between")
    assert await bench.step(update, label="UPDATE retry after an error") == first
    assert await bench.step(read, label="READ again") == after_one
    assert bench.model.updates == applied, "the model applied a retry"
    changed = encode_frame(Op.UPDATE, 42, L.update(start, 8, [step] * blk))
    await bench.step(changed, label="same seq, new content: applied")
    await bench.step(encode_frame(Op.READ_HIDDEN, 45, L.span(start, blk)), label="READ")
    lut = encode_frame(Op.LOAD_LUT, 46, L.load_lut(2.0))
    await bench.step(lut, label="LOAD_LUT")
    await bench.step(lut, label="LOAD_LUT retry")
    await bench.step(update, label="the first UPDATE again: applied (not the last command)")
    write = encode_frame(Op.WRITE_HIDDEN, 47, L.write_hidden(start, [c.w_max] * blk))
    await bench.step(write, label="WRITE_HIDDEN")
    await bench.step(write, label="WRITE_HIDDEN retry")
    await bench.step(encode_frame(Op.READ_HIDDEN, 48, L.span(start, blk)), label="READ")
    reset = encode_frame(Op.RESET, 49)
    await bench.step(reset, label="RESET")
    await bench.step(reset, label="RESET retry")
    reply = await bench.step(encode_frame(Op.READ_HIDDEN, 50, L.span(start, blk)), label="READ")
    assert FrameDecoder().feed(reply)[0].status == Status.OK
    await bench.step(encode_frame(Op.INFO, 51), label="INFO")
    await bench.finish()
