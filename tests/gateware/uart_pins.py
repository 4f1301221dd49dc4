"""A host at the far end of the unit's UART pins, for Amaranth simulator testbenches."""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Value


class UartPins:
    """Drives ``rx`` bit by bit and decodes ``tx`` (8N1, ``divisor`` clocks per bit)."""

    def __init__(self, rx: Value, tx: Value, divisor: int) -> None:
        self.rx, self.tx, self.divisor = rx, tx, divisor
        self.received = bytearray()

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
        """Background testbench: append every byte seen on ``tx`` to :attr:`received`."""
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
            assert ctx.get(self.tx) == 1, "stop bit missing on uart_tx"
            self.received.append(byte)
