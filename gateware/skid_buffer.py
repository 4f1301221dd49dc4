"""A stream register that cuts both directions of a handshake: the skid buffer.

A plain register on ``valid`` and ``payload`` still leaves ``ready`` a combinational path from
the sink back to the source. Here ``i.ready`` comes from a flip-flop too, so the source's
logic and the sink's logic no longer add up into one clock period, and a full stream still
passes one transfer per clock: when the sink stalls, the transfer already accepted waits in a
second register (the skid) instead of being refused.
"""

from __future__ import annotations

from amaranth.hdl import Module, Shape, ShapeLike, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """One cycle of latency, full throughput, every output of it a register.

    Parameters
    ----------
    shape : ShapeLike
        The payload's shape (a layout for a structured payload).

    Members
    -------
    i : ``In(stream.Signature(shape))``
        Transfers in; ``i.ready`` is a register.
    o : ``Out(stream.Signature(shape))``
        The same transfers, in order, one cycle later at the earliest.
    busy : ``Out(1)``
        A transfer is held (in either register): what the sink has not taken yet.
    """

    def __init__(self, shape: ShapeLike) -> None:
        Shape.cast(shape)
        self.shape = shape
        super().__init__(
            {
                "i": In(stream.Signature(shape)),
                "o": Out(stream.Signature(shape)),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.i.payload)

        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            self.busy.eq(self.o.valid | skid_valid),
        ]
        with m.If(~self.o.valid | self.o.ready):
            # the output register is free this cycle: fill it from the skid first
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += skid_valid.eq(1)
        # the skid takes the inlet's payload whenever it is empty, whether it is needed or
        # not: its enable is then a flip-flop, not the handshakes' (which reached every bit)
        with m.If(~skid_valid):
            m.d.sync += skid.eq(self.i.payload)
        return m
