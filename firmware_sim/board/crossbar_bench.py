"""The array's driver behind an RTL unit's crossbar port, under the Amaranth simulator.

A testbench process collects each request from the port's command channel, answers it with
:class:`~metaplast.firmware_sim.crossbar.port_commands.PortCommands` (the code the model board
answers with) and streams the reply back; the programming port's strobes go to the same
:class:`~metaplast.firmware_sim.crossbar.driver.ArrayDriver`. So the RTL board and the model
board drive one kind of array the same way, and the tests can compare them byte for byte.
"""

from __future__ import annotations

from typing import Any

from metaplast.firmware_sim.crossbar.port_commands import PortCommands
from metaplast.gateware.crossbar_port import XBAR_OPS
from metaplast.protocol import FrameDecoder, Op, Status, encode_response

__all__ = ["PortBench", "SerialDriver"]


class PortBench:
    """Serves ``unit``'s crossbar port (a :class:`~metaplast.gateware.top.DigitalUnitTop` built
    with ``crossbar``) with ``commands``.

    ``delay``: idle cycles before each byte the driver takes or gives (a slow driver).
    """

    def __init__(self, unit: Any, commands: PortCommands, *, delay: int = 0) -> None:
        self.unit = unit
        self.port = unit.xbar
        self.commands = commands
        self.delay = delay
        self.requests: list[tuple[Op, bytes]] = []

    def operation(self, address: int, device: int, level: int) -> None:
        """One strobe of the programming port: to the array."""
        self.commands.driver.device_operation(address, device, level)

    async def strobes(self, ctx: Any) -> None:
        """A programming circuit that is never busy: each strobe of the unit's programming
        port is one operation on the array (a background testbench that sleeps between
        strobes, which are never in consecutive cycles)."""
        u = self.unit
        while True:
            await ctx.posedge(u.prog_strobe)
            self.operation(ctx.get(u.prog_addr), ctx.get(u.prog_device), ctx.get(u.prog_level))

    async def serve(self, ctx: Any) -> None:
        """The driver's side of the command channel (a background testbench). It sleeps until
        a request starts, so that the simulation pays for it only while it works."""
        request, reply = self.port.request, self.port.reply
        while True:
            if not ctx.get(request.valid):
                await ctx.posedge(request.valid)
            received = bytearray()
            last = False
            while not last:
                if self.delay:
                    ctx.set(request.ready, 0)
                    await ctx.tick().repeat(self.delay)
                ctx.set(request.ready, 1)
                while True:
                    _, _, valid, payload = await ctx.tick().sample(request.valid, request.payload)
                    if valid:
                        break
                received.append(payload.byte)
                last = bool(payload.last)
            ctx.set(request.ready, 0)
            op = Op(received[0])
            self.requests.append((op, bytes(received[1:])))
            status, answer = self.commands.answer(op, bytes(received[1:]))
            out = bytes((status,)) + answer
            for i, byte in enumerate(out):
                if self.delay:
                    ctx.set(reply.valid, 0)
                    await ctx.tick().repeat(self.delay)
                ctx.set(reply.valid, 1)
                ctx.set(reply.payload.byte, byte)
                ctx.set(reply.payload.last, i == len(out) - 1)
                while True:
                    _, _, ready = await ctx.tick().sample(reply.ready)
                    if ready:
                        break
            ctx.set(reply.valid, 0)


class SerialDriver:
    """A driver off the FPGA, behind the board's crossbar link (``xbar_tx``/``xbar_rx``,
    :class:`~metaplast.gateware.crossbar_link.CrossbarLink`): wire bytes in, wire bytes out.

    Each request frame (``op, seq, payload``) is answered with ``commands`` as one response
    frame (``op | 0x80, seq, status, payload``); a damaged request is dropped (the unit's
    timeout answers it). What a lab's microcontroller firmware does around its own hardware.
    """

    def __init__(self, commands: PortCommands) -> None:
        self.commands = commands
        self.decoder = FrameDecoder()
        self.requests: list[tuple[Op, bytes]] = []

    def feed(self, data: bytes) -> bytes:
        """The reply frames to the request frames that ``data`` completes."""
        out = bytearray()
        for frame in self.decoder.feed(data):
            if frame.error is not None or frame.is_response:
                continue
            if frame.op not in XBAR_OPS:
                out += encode_response(frame.op, frame.seq, Status.OPCODE)
                continue
            op = Op(frame.op)
            self.requests.append((op, frame.payload))
            status, answer = self.commands.answer(op, frame.payload)
            out += encode_response(op, frame.seq, status, answer)
        return bytes(out)
