"""The digital unit's top level: UART, framed protocol, update pipeline, LUT, programming port.

::

    uart_rx -> UARTRx -> FrameReceiver -> CommandEngine -> FrameSender -> UARTTx -> uart_tx
                                              |  ^  access, LUT load
                                              v  |
          SynapseCore (UpdatePipeline + MetaLUT) --events--> ProgrammingPort -> prog_*
                                              (the engine keeps each block's events for its reply)

Its ports are plain signals (``clk`` and ``rst`` come from the ``sync`` domain), so the
Verilog that :func:`verilog` writes can be driven by any simulator or board.
"""

from __future__ import annotations

from amaranth import Module, Mux, Shape
from amaranth.back import verilog as amaranth_verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from metaplast.contract import Contract
from metaplast.protocol import Layout
from metaplast.vocabulary import UNIT_CLOCK_HZ, UNIT_PROG_DEPTH

from .command_engine import CommandEngine
from .crossbar_port import CrossbarPort, request_bytes
from .framing import BodyByte, FrameReceiver, FrameSender
from .programming_port import ProgrammingPort
from .skid_buffer import SkidBuffer
from .synapse_core import SynapseCore
from .uart import UARTRx, UARTTx

__all__ = ["DigitalUnitTop", "verilog"]


class DigitalUnitTop(wiring.Component):
    """The whole unit for ``layout`` (contract, synapse count, block size, counter width).

    ``clock_hz`` is reported by INFO; ``baud_divisor`` is the UART's clock cycles per bit.
    ``crossbar``: the largest tile dimension (rows or columns) of the array behind the unit,
    or None for a unit without an array. With it the unit has the crossbar port's command
    channel ``xbar`` (:class:`~.crossbar_port.CrossbarPort.Signature`), INFO reports the
    ``crossbar`` capability, and the receive banks hold an XBAR_MVM of a whole tile.
    ``single_port``: the hidden weights and counters in single-port memories (the iCE40 UP's
    SPRAM), one update per two cycles (:class:`~.update_pipeline.UpdatePipeline`); the
    protocol and INFO are the same.
    """

    def __init__(
        self,
        layout: Layout,
        *,
        clock_hz: int = UNIT_CLOCK_HZ,
        baud_divisor: int = 16,
        prog_depth: int = UNIT_PROG_DEPTH,
        crossbar: int | None = None,
        single_port: bool = False,
    ) -> None:
        if crossbar is not None and crossbar < 1:
            raise ValueError(f"crossbar must be a tile dimension >= 1 or None, not {crossbar}")
        self.crossbar = crossbar
        self.layout = layout
        self.clock_hz = clock_hz
        self.baud_divisor = baud_divisor
        self.prog_depth = prog_depth
        c = layout.contract
        addr_bits, level_bits = self.prog_widths(layout)
        self.addr_bits = addr_bits
        super().__init__(
            {
                "uart_rx": In(1, init=1),
                "uart_tx": Out(1, init=1),
                "prog_addr": Out(addr_bits),
                "prog_device": Out(1),
                "prog_level": Out(level_bits),
                "prog_strobe": Out(1),
                "prog_busy": In(1),
                **({"xbar": Out(CrossbarPort.Signature())} if crossbar else {}),
            }
        )
        # the parts are built here so that tests and reports can reach their parameters
        self.rx = UARTRx(baud_divisor)
        self.tx = UARTTx(baud_divisor)
        longest = layout.receive_buffer
        if crossbar is not None:
            longest = max(longest, request_bytes(crossbar))
        self.receiver = FrameReceiver(longest)
        self.sender = FrameSender()
        # the reply bytes reach the sender through registers both ways: the sender's ready
        # (CRC and escaping) and the engine's reply control were one combinational path
        self.outlet = SkidBuffer(BodyByte)
        self.engine = CommandEngine(
            layout,
            bank_size=self.receiver.bank_size,
            clock_hz=clock_hz,
            baud_divisor=baud_divisor,
            crossbar=crossbar is not None,
        )
        self.core = SynapseCore(
            c, layout.synapses, counter_width=layout.counter_width, single_port=single_port
        )
        self.programming = ProgrammingPort(c, addr_bits, depth=prog_depth)

    @staticmethod
    def prog_widths(layout: Layout) -> tuple[int, int]:
        """Bits of ``prog_addr`` and ``prog_level``: what a board's header must carry."""
        level_bits = Shape.cast(range(layout.contract.device_level_count)).width
        return layout.addr_bits, level_bits

    @property
    def contract(self) -> Contract:
        return self.layout.contract

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.rx = rx = self.rx
        m.submodules.tx = tx = self.tx
        m.submodules.receiver = receiver = self.receiver
        m.submodules.sender = sender = self.sender
        m.submodules.outlet = outlet = self.outlet
        m.submodules.engine = engine = self.engine
        m.submodules.core = core = self.core
        m.submodules.programming = prog = self.programming

        m.d.comb += [
            rx.rx.eq(self.uart_rx),
            self.uart_tx.eq(tx.tx),
            receiver.rx_error.eq(rx.frame_error | rx.overrun),
            engine.read_data.eq(receiver.read_data),
            receiver.read_addr.eq(engine.read_addr),
            receiver.release.eq(engine.release),
            engine.lut_mstar.eq(core.lut_mstar),
            engine.lut_crc.eq(core.lut_crc),
            engine.pipeline_busy.eq(core.busy),
            # every event goes to the programming FIFO; the engine records those it accepts
            engine.event_valid.eq(core.events.valid & core.events.ready),
            engine.event.eq(core.events.payload),
            self.prog_addr.eq(prog.prog_addr),
            self.prog_device.eq(prog.prog_device),
            self.prog_level.eq(prog.prog_level),
            self.prog_strobe.eq(prog.prog_strobe),
            prog.prog_busy.eq(self.prog_busy),
        ]
        wiring.connect(m, rx.data, receiver.rx)
        # a single-port unit clears its memories after reset: frames wait in the receiver
        m.d.comb += [
            engine.frame.payload.eq(receiver.frame.payload),
            engine.frame.valid.eq(receiver.frame.valid & ~core.initializing),
            receiver.frame.ready.eq(engine.frame.ready & ~core.initializing),
        ]
        wiring.connect(m, engine.body, outlet.i)
        wiring.connect(m, outlet.o, sender.body)
        wiring.connect(m, sender.tx, tx.data)
        wiring.connect(m, engine.update, core.update)
        wiring.connect(m, engine.access, core.access)
        wiring.connect(m, engine.lut, core.load)
        if self.crossbar is None:
            wiring.connect(m, core.events, prog.events)
        else:
            # the map sweep's level changes take the programming port while the pipeline is
            # idle (the engine runs one frame at a time)
            sweep = engine.sweep
            m.d.comb += [
                prog.events.valid.eq(core.events.valid | sweep.valid),
                prog.events.payload.eq(Mux(sweep.valid, sweep.payload, core.events.payload)),
                core.events.ready.eq(prog.events.ready & ~sweep.valid),
                sweep.ready.eq(prog.events.ready),
                engine.prog_idle.eq(prog.idle),
            ]
            wiring.connect(m, engine.xbar, wiring.flipped(self.xbar))
        return m


def verilog(top: DigitalUnitTop, name: str = "metaplast_unit") -> str:
    """Verilog of ``top`` with ports ``clk``, ``rst``, ``uart_rx``, ``uart_tx`` and ``prog_*``."""
    return amaranth_verilog.convert(top, name=name)
