"""A single-port memory: the iCE40 UP's SPRAM, and a behavioural model of it elsewhere.

The iCE40UP5K has 4 ``SB_SPRAM256KA`` of 16,384 x 16 bit (1 Mbit, eight times its 30 EBR),
each with one port: a cycle either reads or writes. :class:`SinglePortStore` tiles as many as
a depth and width need on an iCE40 UP platform; on any other platform (the Amaranth simulator,
the Verilog for Icarus and Verilator, another FPGA) it is an ``amaranth.lib.memory.Memory``
used through one address, so every simulator runs the same single-port behaviour.
"""

from __future__ import annotations

import math

from amaranth import Array, Cat, ClockSignal, Const, Instance, Module, Mux, Shape, ShapeLike, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SPRAM_WIDTH", "SPRAM_WORDS", "SinglePortStore", "has_spram", "spram_blocks"]

SPRAM_WORDS = 16384
"""Words of one ``SB_SPRAM256KA``."""
SPRAM_WIDTH = 16
"""Bits of one ``SB_SPRAM256KA`` word."""
SPRAM_ADDRESS_BITS = (SPRAM_WORDS - 1).bit_length()
ICE40UP_SPRAMS = 4
"""``SB_SPRAM256KA`` blocks of an iCE40UP5K or UP3K."""


def spram_blocks(depth: int, width: int) -> int:
    """``SB_SPRAM256KA`` blocks a ``depth`` x ``width`` memory takes (banks times lanes)."""
    return math.ceil(depth / SPRAM_WORDS) * math.ceil(width / SPRAM_WIDTH)


def has_spram(platform: object) -> bool:
    """Whether ``platform`` is an iCE40 UP (the iCE40 family with SPRAM)."""
    return str(getattr(platform, "device", "")).startswith("iCE40UP")


class SinglePortStore(wiring.Component):
    """``depth`` words of ``shape`` behind one port.

    At a clock edge, ``we`` writes ``wdata`` at ``addr``; otherwise ``en`` reads ``addr`` into
    ``rdata``, which holds while neither is asserted. After a write ``rdata`` is undefined (the
    SPRAM's model makes it ``x``); the behavioural model then shows the last word read with
    every bit inverted, so a design that relies on it fails its simulations. Nor does the
    bitstream initialise an SPRAM: the behavioural model starts with a non-zero pattern.
    """

    def __init__(self, shape: ShapeLike, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.shape = shape
        self.depth = depth
        self.width = Shape.cast(shape).width
        super().__init__(
            {
                "addr": In(range(depth)),
                "wdata": In(shape),
                "we": In(1),
                "en": In(1),
                "rdata": Out(shape),
            }
        )

    @property
    def blocks(self) -> int:
        """``SB_SPRAM256KA`` blocks it takes on an iCE40 UP."""
        return spram_blocks(self.depth, self.width)

    def elaborate(self, platform: object) -> Module:
        if has_spram(platform):
            return self._spram()
        m = Module()
        mask = (1 << self.width) - 1
        garbage = [(0xA5A5A5A5 ^ (i * 0x9E3779B1)) & mask for i in range(self.depth)]
        m.submodules.memory = memory = Memory(shape=self.width, depth=self.depth, init=garbage)
        wr = memory.write_port()
        rd = memory.read_port()
        written = Signal()
        m.d.comb += [
            wr.addr.eq(self.addr),
            wr.data.eq(self.wdata),
            wr.en.eq(self.we),
            rd.addr.eq(self.addr),
            rd.en.eq(self.en & ~self.we),
            self.rdata.eq(Mux(written, ~rd.data, rd.data)),
        ]
        with m.If(self.we):
            m.d.sync += written.eq(1)
        with m.Elif(self.en):
            m.d.sync += written.eq(0)
        return m

    def _spram(self) -> Module:
        if self.blocks > ICE40UP_SPRAMS:
            raise ValueError(
                f"a {self.depth} x {self.width} bit memory needs {self.blocks} SPRAM; "
                f"the iCE40 UP has {ICE40UP_SPRAMS}"
            )
        m = Module()
        banks = math.ceil(self.depth / SPRAM_WORDS)
        lanes = math.ceil(self.width / SPRAM_WIDTH)
        bank = Signal(range(banks))  # the bank the last read came from
        select = self.addr[SPRAM_ADDRESS_BITS:] if banks > 1 else Const(0)
        with m.If(self.en & ~self.we):
            m.d.sync += bank.eq(select)
        address = Signal(SPRAM_ADDRESS_BITS)
        wdata = Signal(lanes * SPRAM_WIDTH)
        m.d.comb += [address.eq(self.addr[:SPRAM_ADDRESS_BITS]), wdata.eq(self.wdata)]
        outputs = []
        for b in range(banks):
            here = select == b
            lane_out = []
            for lane in range(lanes):
                out = Signal(SPRAM_WIDTH, name=f"dataout_{b}_{lane}")
                m.submodules[f"spram_{b}_{lane}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=address,
                    i_DATAIN=wdata[lane * SPRAM_WIDTH : (lane + 1) * SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4),
                    i_WREN=self.we & here,
                    i_CHIPSELECT=(self.we | self.en) & here,
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0),
                    i_SLEEP=Const(0),
                    i_POWEROFF=Const(1),
                    o_DATAOUT=out,
                )
                lane_out.append(out)
            outputs.append(Cat(*lane_out))
        m.d.comb += self.rdata.eq(Array(outputs)[bank])
        return m
