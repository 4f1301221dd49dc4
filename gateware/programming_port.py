"""The programming port: level-change events turned into device operations for the crossbar.

A weight level ``L`` is stored as the pair ``(G+, G-) = contract.device_levels(L)``: the
device levels above and below the zero level, one of them always 0. A change of level
reprograms only the devices whose level differs; when both do (the weight crossed zero), the
device that returns to 0 goes first, so the pair never holds a larger weight than either end.

Pins toward the programming circuit (documented in ``docs/protocol.md``)::

    prog_addr     synapse address
    prog_device   0: G+, 1: G-
    prog_level    target level of that device (0 .. device_level_count - 1)
    prog_strobe   one-cycle pulse: the three fields above are valid
    prog_busy     the circuit holds it high from the cycle after a strobe until it is done

``idle`` tells the command engine that every operation so far has been carried out (it
forwards a crossbar request to the array's driver only then).

Operations wait in a FIFO; when it is full, the events wait in the core's event FIFO, and
when that is, the updates wait (no event is dropped). With ``prog_busy`` tied low, one
operation leaves every two cycles.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from metaplast.contract import Contract
from metaplast.vocabulary import UNIT_PROG_DEPTH

from .skid_buffer import SkidBuffer
from .update_pipeline import EventLayout

__all__ = ["ProgrammingPort"]


class ProgrammingPort(wiring.Component):
    def __init__(self, contract: Contract, addr_bits: int, *, depth: int = UNIT_PROG_DEPTH) -> None:
        if depth < 2:
            raise ValueError(f"programming FIFO depth must be >= 2, got {depth}")
        self.contract = contract
        self.addr_bits = addr_bits
        self.depth = depth
        self.event_layout = EventLayout(contract, addr_bits)
        super().__init__(
            {
                "events": In(stream.Signature(self.event_layout)),
                "prog_addr": Out(addr_bits),
                "prog_device": Out(1),
                "prog_level": Out(range(contract.device_level_count)),
                "prog_strobe": Out(1),
                "prog_busy": In(1),
                "idle": Out(1),
            }
        )

    def _pair(self, level: object) -> tuple[object, object]:
        """``(G+, G-)`` device levels of a weight level index, as hardware expressions."""
        z = self.contract.zero_level
        return Mux(level > z, level - z, 0), Mux(level < z, z - level, 0)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        level = range(self.contract.device_level_count)
        # each event is decoded into its device operations before it enters the FIFO: decoded
        # at the FIFO's output, the level arithmetic and the FIFO's read enable were one path
        op_layout = data.StructLayout(
            {
                "addr": self.addr_bits,
                "both": 1,  # two operations: the weight crossed zero
                "first_minus": 1,  # G- goes first (or alone)
                "new_p": level,
                "new_n": level,
            }
        )
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=op_layout.size, depth=self.depth)
        # the events' device levels (G+, G- before and after) reach the FIFO through a skid
        # buffer, the operations decoded from them after it: decoded at once, the level
        # arithmetic and the comparisons were in series with the FIFO's write data and Yosys'
        # read-first logic for its memory
        pairs = data.StructLayout(
            {"addr": self.addr_bits, "old_p": level, "old_n": level, "new_p": level, "new_n": level}
        )
        m.submodules.levels = levels = SkidBuffer(pairs)
        event = self.events.payload
        old_p, old_n = self._pair(event.old)
        new_p, new_n = self._pair(event.new)
        m.d.comb += [
            levels.i.payload.addr.eq(event.addr),
            levels.i.payload.old_p.eq(old_p),
            levels.i.payload.old_n.eq(old_n),
            levels.i.payload.new_p.eq(new_p),
            levels.i.payload.new_n.eq(new_n),
            levels.i.valid.eq(self.events.valid),
            self.events.ready.eq(levels.i.ready),
        ]
        pair = levels.o.payload
        change_p = Signal()
        change_n = Signal()
        m.d.comb += [change_p.eq(pair.old_p != pair.new_p), change_n.eq(pair.old_n != pair.new_n)]
        decoded = Signal(op_layout)
        m.d.comb += [
            decoded.addr.eq(pair.addr),
            decoded.both.eq(change_p & change_n),
            # the device going back to 0 first: G+ when the weight was positive
            decoded.first_minus.eq(change_n & (~change_p | (pair.old_n > 0))),
            decoded.new_p.eq(pair.new_p),
            decoded.new_n.eq(pair.new_n),
            fifo.w_data.eq(decoded),
            fifo.w_en.eq(levels.o.valid),
            levels.o.ready.eq(fifo.w_rdy),
        ]
        # and leave it through a skid buffer: the strobe's decision (the circuit's busy, which
        # operation of the event) was in series with the FIFO's read enable and its counters,
        # and its fields came from the block RAM's output (23.6 ns at 48 MHz on the iCE40)
        m.submodules.ops = ops = SkidBuffer(op_layout)
        m.d.comb += [
            ops.i.payload.eq(fifo.r_data),
            ops.i.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(ops.i.ready),
        ]
        head = ops.o.payload

        second = Signal()  # the first of two operations for this event is done
        strobed = Signal()  # the circuit sees busy only from the cycle after a strobe
        go = Signal()
        m.d.comb += go.eq(ops.o.valid & ~self.prog_busy & ~strobed)

        use_minus = Signal()
        m.d.comb += use_minus.eq(Mux(second, ~head.first_minus, head.first_minus))
        m.d.comb += [
            self.prog_addr.eq(head.addr),
            self.prog_device.eq(use_minus),
            self.prog_level.eq(Mux(use_minus, head.new_n, head.new_p)),
            self.prog_strobe.eq(go),
            ops.o.ready.eq(go & (second | ~head.both)),
        ]
        m.d.sync += strobed.eq(go)
        # nothing waiting, nothing strobed and not answered yet, the circuit done
        m.d.comb += self.idle.eq(
            (fifo.level == 0)
            & ~self.events.valid
            & ~levels.busy
            & ~ops.busy
            & ~strobed
            & ~self.prog_busy
        )
        with m.If(go):
            m.d.sync += second.eq(head.both & ~second)
        return m
