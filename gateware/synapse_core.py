"""The learning core: the update pipeline with its meta LUT, as one component.

What the link sees of the synapses: an update stream in, level-change events out, the block
port into the memories, the LUT loader and the loaded LUT's identity. The top level puts the
link in front of it; tests and benchmarks drive it directly.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from metaplast.contract import Contract

from .meta_lut import LoadSignature, MetaLUT
from .skid_buffer import SkidBuffer
from .update_pipeline import (
    AccessSignature,
    EventLayout,
    UpdateLayout,
    UpdatePipeline,
    seed_round,
)

__all__ = ["SynapseCore"]


class SynapseCore(wiring.Component):
    """``single_port``: the memories in single-port stores (the iCE40 UP's SPRAM), one update
    per two cycles, cleared after reset while ``initializing`` is high: ``access`` waits for it
    (:class:`.UpdatePipeline`).

    The pipeline never stalls: its level changes go into a FIFO (``events_depth`` entries,
    block RAM), and an update enters it only while the FIFO has room for an event of every
    update the pipeline may still hold. A slow event sink holds the inlet back instead of every
    stage: the stall reached every stage's enable, the memories' and the inlet's handshake in
    one path, 23 ns on the iCE40 against 20.8 at 48 MHz.
    """

    #: entries of the event FIFO: its memory of 32 (block RAM) and its output register
    events_depth = 33

    def __init__(
        self,
        contract: Contract,
        synapses: int,
        *,
        counter_width: int = 16,
        single_port: bool = False,
    ) -> None:
        self.contract = contract
        self.pipeline = UpdatePipeline(
            contract, synapses, counter_width=counter_width, single_port=single_port
        )
        self.lut = MetaLUT(contract)
        addr_bits = self.pipeline.addr_bits
        self.addr_bits = addr_bits
        # the updates enter through registers both ways: the command engine's control and the
        # pipeline's hazard check and stall were one combinational path (70 ns on the iCE40)
        self.inlet = SkidBuffer(UpdateLayout(contract, addr_bits, marked=True))
        self.events_fifo = SyncFIFOBuffered(
            width=EventLayout(contract, addr_bits).size, depth=self.events_depth
        )
        super().__init__(
            {
                "update": In(stream.Signature(UpdateLayout(contract, addr_bits))),
                "events": Out(stream.Signature(EventLayout(contract, addr_bits))),
                "busy": Out(1),
                "initializing": Out(1),
                "access": In(AccessSignature(contract, addr_bits, counter_width)),
                "load": In(LoadSignature(contract)),
                "lut_mstar": Out(16, init=self.lut.init_mstar),
                "lut_crc": Out(16, init=self.lut.init_crc),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.pipeline = p = self.pipeline
        m.submodules.lut = lut = self.lut
        m.submodules.inlet = inlet = self.inlet
        m.submodules.events_fifo = fifo = self.events_fifo
        # room for the events of every update the pipeline may hold (its stages, and one more
        # entering), from the FIFO's level a cycle ago (one more written since), and one for
        # the FIFO's output register, which its inner memory's `w_rdy` does not count
        room = Signal()
        m.d.sync += room.eq(fifo.level <= self.events_depth - p.depth - 3)
        m.d.comb += [
            p.update.valid.eq(inlet.o.valid & room),
            inlet.o.ready.eq(p.update.ready & room),
            p.update.payload.eq(inlet.o.payload),
            fifo.w_data.eq(p.events.payload),
            fifo.w_en.eq(p.events.valid),
            p.events.ready.eq(1),
            # the events leave from the FIFO's block RAM: its sinks register them (the
            # programming port's skid buffer, the retry memory's event buffer)
            self.events.payload.eq(fifo.r_data),
            self.events.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.events.ready),
        ]
        m.d.comb += [
            lut.index.eq(p.lut_index),
            lut.index_en.eq(p.lut_en),
            p.lut_value.eq(lut.value),
            self.busy.eq(p.busy | inlet.busy | (fifo.level != 0)),
            self.initializing.eq(p.initializing),
            self.lut_mstar.eq(lut.mstar),
            self.lut_crc.eq(lut.crc),
        ]
        # each update marked with whether its seed differs from the one's before, so that the
        # pipeline's choice to hash a seed comes from a register (the comparison was in series
        # with the inlet's handshake), counted from its origin (the subtraction was in series
        # with the dither hash's first round), and its seed through that round (the seed
        # changes once a block; its adder was in series with the choice of seed or offset)
        last_seed = Signal(32)
        primed = Signal()
        seed = self.update.payload.seed
        m.d.comb += [
            inlet.i.valid.eq(self.update.valid),
            self.update.ready.eq(inlet.i.ready),
            inlet.i.payload.addr.eq(self.update.payload.addr),
            inlet.i.payload.d.eq(self.update.payload.d),
            inlet.i.payload.seed_round.eq(seed_round(seed)),
            inlet.i.payload.offset.eq(self.update.payload.addr - self.update.payload.origin),
            inlet.i.payload.new_seed.eq(~primed | (seed != last_seed)),
        ]
        with m.If(self.update.valid & self.update.ready):
            m.d.sync += [last_seed.eq(seed), primed.eq(1)]
        wiring.connect(m, wiring.flipped(self.access), p.access)
        wiring.connect(m, wiring.flipped(self.load), lut.load)
        return m
