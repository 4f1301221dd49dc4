"""The far end of a simulated UART: drives ``rx`` bit by bit and decodes ``tx``.

Used by the Amaranth testbenches of the gateware and by the RTL-backed simulated board, where
it stands for the USB serial adapter between the host and the FPGA.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amaranth.hdl import Value


class UartPins:
    """8N1 at ``divisor`` clocks per bit on the unit's ``rx`` and ``tx`` pins."""

    def __init__(
        self,
        rx: Value,
        tx: Value,
        divisor: int,
        on_byte: Callable[[int], None] | None = None,
    ) -> None:
        self.rx, self.tx, self.divisor = rx, tx, divisor
        self.received = bytearray()
        self.on_byte = on_byte or self.received.append

    async def send(self, ctx: Any, data: bytes) -> None:
        for byte in data:
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
            for bit in bits:
                ctx.set(self.rx, bit)
                await ctx.tick().repeat(self.divisor)

    async def idle(self, ctx: Any, bits: int) -> None:
        ctx.set(self.rx, 1)
        await ctx.tick().repeat(bits * self.divisor)

    async def receive(self, ctx: Any) -> None:
        """Background testbench: every byte seen on ``tx`` goes to ``on_byte``."""
        # plain ticks, not ``until``: a background testbench is closed mid-wait at the end
        while True:
            await ctx.tick()
            if ctx.get(self.tx):
                continue
            await ctx.tick().repeat(self.divisor // 2)  # middle of the start bit
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(self.divisor)
                byte |= ctx.get(self.tx) << i
            await ctx.tick().repeat(self.divisor)
            if not ctx.get(self.tx):
                raise AssertionError("stop bit missing on uart_tx")
            self.on_byte(byte)
