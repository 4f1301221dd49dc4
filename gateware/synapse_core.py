"""The learning core: the update pipeline with its meta LUT, as one component.

What the link sees of the synapses: an update stream in, level-change events out, the block
port into the memories, the LUT loader and the loaded LUT's identity. The top level puts the
link in front of it; tests and benchmarks drive it directly.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from metaplast.contract import Contract

from .meta_lut import LoadSignature, MetaLUT
from .skid_buffer import SkidBuffer
from .update_pipeline import AccessSignature, EventLayout, UpdateLayout, UpdatePipeline

__all__ = ["SynapseCore"]


class SynapseCore(wiring.Component):
    """``single_port``: the memories in single-port stores (the iCE40 UP's SPRAM), one update
    per two cycles, cleared after reset while ``initializing`` is high: ``access`` waits for it
    (:class:`.UpdatePipeline`)."""

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
        self.inlet = SkidBuffer(UpdateLayout(contract, addr_bits))
        # and the level-change events leave through registers: the engine's recording and the
        # pipeline's stall are not one path either
        self.outlet = SkidBuffer(EventLayout(contract, addr_bits))
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
        m.submodules.outlet = outlet = self.outlet
        m.d.comb += [
            lut.index.eq(p.lut_index),
            lut.index_en.eq(p.lut_en),
            p.lut_value.eq(lut.value),
            self.busy.eq(p.busy | inlet.busy | outlet.busy),
            self.initializing.eq(p.initializing),
            self.lut_mstar.eq(lut.mstar),
            self.lut_crc.eq(lut.crc),
        ]
        wiring.connect(m, wiring.flipped(self.update), inlet.i)
        wiring.connect(m, inlet.o, p.update)
        wiring.connect(m, p.events, outlet.i)
        wiring.connect(m, outlet.o, wiring.flipped(self.events))
        wiring.connect(m, wiring.flipped(self.access), p.access)
        wiring.connect(m, wiring.flipped(self.load), lut.load)
        return m
