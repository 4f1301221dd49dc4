"""The crossbar link: the command channel over the board's two serial pins, against the
reference driver (``PortCommands`` over an ``ArrayDriver``) answering the wire's frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amaranth import Module
from amaranth.lib import wiring

from metaplast.contract import Contract
from metaplast.firmware_sim.board.crossbar_bench import SerialDriver
from metaplast.firmware_sim.board.uart_pins import UartPins
from metaplast.firmware_sim.crossbar.devices import load_device
from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.crossbar.port_commands import PortCommands
from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.gateware.crossbar_link import CrossbarLink, longest_reply
from metaplast.gateware.top import DigitalUnitTop
from metaplast.protocol import (
    FrameDecoder,
    Layout,
    Op,
    Status,
    encode_frame,
    encode_response,
    xbar_layer,
    xbar_map,
    xbar_mvm,
    xbar_span,
    xbar_verify,
)

from .sim import simulate
from .test_uart import rejects

DIVISOR = 4
SYNAPSES = 64
MAX_BLOCK = 16
TILE = 8  # tio2-passive's tiles are 8 x 8

REQUESTS: list[tuple[Op, bytes]] = [
    (Op.XBAR_INFO, b""),
    (Op.XBAR_MAP, xbar_map(0, 0, (4, 12), seed=5)),
    (Op.XBAR_LATCH, xbar_layer(0)),
    (Op.XBAR_MVM, xbar_mvm(0, False, (0, 0), [1000, -2000, 0, 32767, -32767, 7, 192, 219])),
    (Op.XBAR_MVM, xbar_mvm(0, True, (1, 0), [-300, 0xC0, 0xDB, 5, 0, 1, -1, 2])),
    (Op.XBAR_READ, xbar_span(0, 3, MAX_BLOCK)),
    (Op.XBAR_COUNTERS, xbar_span(0, 0, 5)),
    (Op.XBAR_VERIFY, xbar_verify(0, 1000, 2)),
    (Op.XBAR_MVM, xbar_mvm(0, False, (3, 0), [1] * 8)),  # outside the layer: RANGE
    (Op.XBAR_READ, xbar_span(0, 0, 0)),  # count 0: LENGTH
    (Op.XBAR_LATCH, b""),  # LENGTH
]


def commands() -> PortCommands:
    driver = ArrayDriver(load_device("tio2-passive"), Contract())
    return PortCommands(driver, synapses=SYNAPSES, max_block=MAX_BLOCK)


def expected_replies(requests: list[tuple[Op, bytes]]) -> list[bytes]:
    """Status and payload of each request as the reference driver answers it directly."""
    twin = commands()
    out = []
    for op, payload in requests:
        status, answer = twin.answer(op, payload)
        out.append(bytes((status,)) + answer)
    return out


Tamper = Callable[[int, bytes], bytes]


def run_link(
    requests: list[tuple[Op, bytes]],
    *,
    tamper: Tamper | None = None,
    timeout: int = 20_000,
    max_reply: int | None = None,
    name: str,
) -> tuple[list[bytes], SerialDriver]:
    """Send ``requests`` into the link's port; a :class:`SerialDriver` answers on the pins.

    ``tamper(i, wire)`` may change the wire bytes of the ``i``-th reply before they are sent.
    """
    dut = CrossbarLink(
        divisor=DIVISOR,
        max_reply=max_reply or longest_reply(TILE, MAX_BLOCK),
        timeout=timeout,
    )
    driver = SerialDriver(commands())
    replies: list[bytes] = []

    wires: list[bytes] = []
    pins = UartPins(
        dut.rx, dut.tx, DIVISOR, on_byte=lambda b: wires.append(driver.feed(bytes((b,))))
    )

    async def far_end(ctx: Any) -> None:
        """The driver's serial output: each reply as it is produced (tampered with)."""
        count = 0
        while True:
            while not wires:
                await ctx.tick()  # plain ticks: a background testbench is closed mid-wait
            wire = wires.pop(0)
            if wire:
                if tamper is not None:
                    wire = tamper(count, wire)
                count += 1
                await pins.send(ctx, wire)

    async def unit(ctx: Any) -> None:
        request, reply = dut.port.request, dut.port.reply
        for op, payload in requests:
            data = bytes((op,)) + payload
            for i, byte in enumerate(data):
                ctx.set(request.valid, 1)
                ctx.set(
                    request.payload, {"byte": byte, "first": i == 0, "last": i == len(data) - 1}
                )
                await ctx.tick().until(request.ready)
            ctx.set(request.valid, 0)
            ctx.set(reply.ready, 1)
            got = bytearray()
            last = False
            while not last:
                _, _, valid, payload_ = await ctx.tick().sample(reply.valid, reply.payload)
                if valid:
                    got.append(payload_.byte)
                    last = bool(payload_.last)
            ctx.set(reply.ready, 0)
            replies.append(bytes(got))

    simulate(dut, [unit], background=[far_end, pins.receive], name=name)
    return replies, driver


def test_every_crossbar_op_gets_the_reference_drivers_reply_over_the_pins() -> None:
    replies, driver = run_link(REQUESTS, name="crossbar_link_ops")
    assert driver.requests == REQUESTS
    assert replies == expected_replies(REQUESTS)
    statuses = [Status(r[0]).name for r in replies]
    assert statuses == ["OK"] * 8 + ["RANGE", "LENGTH", "LENGTH"]
    assert len(replies[3]) == 1 + 8 * TILE and len(replies[5]) == 1 + 4 * MAX_BLOCK


def test_a_damaged_reply_is_answered_crc_and_the_next_request_is_served() -> None:
    """A flipped bit in a reply's payload fails its CRC: the unit gets CRC, not the data."""

    def flip(i: int, wire: bytes) -> bytes:
        return wire[:6] + bytes((wire[6] ^ 0x10,)) + wire[7:] if i == 0 else wire

    requests = REQUESTS[3:4] + REQUESTS[:1]
    replies, _ = run_link([*REQUESTS[1:3], *requests], tamper=lambda i, w: flip(i - 2, w),
                          name="crossbar_link_damaged")  # fmt: skip
    want = expected_replies([*REQUESTS[1:3], *requests])
    assert replies[2] == bytes((Status.CRC,))
    assert replies[:2] == want[:2] and replies[3] == want[3]


def test_a_lost_reply_times_out_and_a_late_one_is_dropped() -> None:
    """No reply within the timeout: CRC. The late reply (same op, the earlier seq) arriving
    ahead of the next request's is not taken for that request's answer."""
    held: list[bytes] = []

    def hold(i: int, wire: bytes) -> bytes:
        if i == 2:
            held.append(wire)
            return b""
        return held.pop() + wire if held else wire

    requests = [*REQUESTS[1:3], (Op.XBAR_READ, xbar_span(0, 0, 4)),
                (Op.XBAR_READ, xbar_span(0, 4, 4)), REQUESTS[0]]  # fmt: skip
    replies, _ = run_link(requests, tamper=hold, timeout=3_000, name="crossbar_link_timeout")
    want = expected_replies(requests)
    assert want[2] != want[3]
    assert replies == [*want[:2], bytes((Status.CRC,)), *want[3:]]


def test_a_reply_longer_than_the_receiver_is_overflow() -> None:
    """A receiver for VERIFY's reply (a 16-byte bank) cannot hold INFO's (29 bytes framed);
    the short replies still pass."""
    requests = [REQUESTS[0], REQUESTS[1], REQUESTS[0]]
    replies, _ = run_link(requests, max_reply=9, name="crossbar_link_overflow")
    overflow = bytes((Status.OVERFLOW,))
    assert replies == [overflow, expected_replies(requests[:2])[1], overflow]


def test_a_frame_that_is_no_reply_is_ignored() -> None:
    """Line noise framed as a reply to another op ahead of the real reply changes nothing."""
    noise = encode_response(Op.XBAR_READ, 0, Status.OK, b"\x01\x02")

    def prepend(i: int, wire: bytes) -> bytes:
        return noise + wire if i == 0 else wire

    replies, _ = run_link(REQUESTS[:2], tamper=prepend, name="crossbar_link_noise")
    assert replies == expected_replies(REQUESTS[:2])


def test_the_link_refuses_nonsense_parameters() -> None:
    rejects(ValueError, "max_reply must be at least 1",
            lambda: CrossbarLink(divisor=DIVISOR, max_reply=0, timeout=10))  # fmt: skip
    rejects(ValueError, "timeout must be at least 1 cycle",
            lambda: CrossbarLink(divisor=DIVISOR, max_reply=8, timeout=0))  # fmt: skip


def test_the_longest_reply_is_the_longest_op() -> None:
    assert longest_reply(128, 256) == 1 + 8 * 128
    assert longest_reply(8, 256) == 1 + 4 * 256
    assert longest_reply(8, 16) == 1 + 13 + 255


def test_a_unit_behind_the_link_answers_the_host_as_the_model_board() -> None:
    """The whole chain in simulation, every wire a UART: host frames into the unit, its
    crossbar requests over the link to a SerialDriver, its programming strobes to the same
    array. The host gets the model board's replies byte for byte (a retry included)."""
    layout = Layout(Contract(), SYNAPSES, max_block=MAX_BLOCK)
    unit = DigitalUnitTop(layout, clock_hz=48_000_000, baud_divisor=DIVISOR, crossbar=TILE)
    link = CrossbarLink(divisor=DIVISOR, max_reply=longest_reply(TILE, MAX_BLOCK), timeout=50_000)
    m = Module()
    m.submodules.unit, m.submodules.link = unit, link
    wiring.connect(m, unit.xbar, link.port)

    driver = SerialDriver(commands())
    model = CommandModel(layout, clock_hz=48_000_000, baud_divisor=DIVISOR,
                         array=ArrayDriver(load_device("tio2-passive"), Contract()))  # fmt: skip
    weights = [(i * 7919) % 49153 - 24576 for i in range(48)]  # levels far off zero
    frames = [
        *(encode_frame(Op.WRITE_HIDDEN, i, layout.write_hidden(a, weights[a : a + MAX_BLOCK]))
          for i, a in enumerate(range(0, 48, MAX_BLOCK))),
        *(encode_frame(op, 3 + i, payload) for i, (op, payload) in enumerate(REQUESTS[1:8])),
    ]  # fmt: skip
    frames.append(frames[-1])  # XBAR_VERIFY again, byte for byte: a retry
    expected = [model.feed(frame) for frame in frames]
    received: list[bytes] = []
    decoder = FrameDecoder()

    def heard(byte: int) -> None:
        received.extend(f.payload for f in decoder.feed(bytes((byte,))))

    host = UartPins(unit.uart_rx, unit.uart_tx, DIVISOR, on_byte=heard)
    wires: list[bytes] = []
    far = UartPins(link.rx, link.tx, DIVISOR,
                   on_byte=lambda b: wires.append(driver.feed(bytes((b,)))))  # fmt: skip

    async def host_side(ctx: Any) -> None:
        for i, frame in enumerate(frames):
            await host.send(ctx, frame)
            while len(received) <= i:
                await ctx.tick()

    async def far_end(ctx: Any) -> None:
        while True:
            while not wires:
                await ctx.tick()
            await far.send(ctx, wires.pop(0))

    async def strobes(ctx: Any) -> None:
        while True:
            await ctx.tick()
            if ctx.get(unit.prog_strobe):
                driver.commands.driver.device_operation(
                    ctx.get(unit.prog_addr), ctx.get(unit.prog_device), ctx.get(unit.prog_level)
                )

    def check() -> None:
        want = [f.payload for e in expected for f in FrameDecoder().feed(e)]
        assert received == want
        statuses = [Status(r[0]).name for r in received]
        assert statuses == ["OK"] * len(frames)
        assert len(driver.requests) == len(frames) - 4  # WRITE_HIDDEN and the retry stay home
        assert driver.commands.driver.counters(0, 0, 48).sum() > 0  # the map's sweep programmed

    simulate(m, [host_side], background=[host.receive, far.receive, far_end, strobes],
             check=check, name="crossbar_link_chain")  # fmt: skip
