"""Running Amaranth simulations in tests: fast without a trace, and a VCD when one fails."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from metaplast.gateware.command_checker import element_bytes
from metaplast.gateware.payload_reader import PayloadReader
from metaplast.protocol import Layout

VCD_DIR = Path(__file__).resolve().parents[2] / "build" / "vcd"

Testbench = Callable[[Any], Coroutine[Any, Any, None]]


def simulate(
    dut: Any,
    testbenches: Iterable[Testbench],
    *,
    name: str,
    clock_hz: float = 48e6,
    background: Iterable[Testbench] = (),
    check: Callable[[], None] | None = None,
) -> None:
    """Run ``testbenches`` against ``dut``, then ``check``; on failure rerun with a trace.

    The testbenches are deterministic (seeded), so the rerun reproduces the failure, and the
    VCD (``build/vcd/<name>.vcd``) shows it without slowing every passing test down.
    ``check`` compares what the testbenches collected with the model; a mismatch it finds
    counts as a failure of the simulation.
    """
    testbenches, background = list(testbenches), list(background)

    def build() -> Simulator:
        sim = Simulator(dut)
        sim.add_clock(1 / clock_hz)
        for tb in testbenches:
            sim.add_testbench(tb)
        for tb in background:
            sim.add_testbench(tb, background=True)
        return sim

    try:
        build().run()
        if check is not None:
            check()
    except Exception as failure:
        VCD_DIR.mkdir(parents=True, exist_ok=True)
        vcd = VCD_DIR / f"{safe_name(name)}.vcd"
        sim = build()
        try:
            with sim.write_vcd(str(vcd)):
                sim.run()
        except Exception:
            pass
        failure.add_note(f"waveform of the failing run: {vcd}")
        raise


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


class FrameBufferBench(wiring.Component):
    """``user`` (a command checker or applier) reading requests through a
    :class:`~metaplast.gateware.payload_reader.PayloadReader` from a two-bank frame buffer that
    the bench fills through ``write_*``, as the receiver fills it in the unit."""

    def __init__(self, layout: Layout, user: Any) -> None:
        self.layout = layout
        self.bank_size = layout.receive_buffer  # a power of two, as the receiver's banks
        self.user = user
        self.reader = PayloadReader(bank_size=self.bank_size, max_bytes=element_bytes(layout))
        super().__init__(
            {
                "write_addr": wiring.In(range(2 * self.bank_size)),
                "write_data": wiring.In(8),
                "write_en": wiring.In(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.user = user = self.user
        m.submodules.reader = reader = self.reader
        m.submodules.buffer = buffer = Memory(shape=8, depth=2 * self.bank_size, init=[])
        wr, rd = buffer.write_port(), buffer.read_port()
        m.d.comb += [
            wr.addr.eq(self.write_addr),
            wr.data.eq(self.write_data),
            wr.en.eq(self.write_en),
            rd.addr.eq(reader.read_addr),
            reader.read_data.eq(rd.data),
            reader.bank.eq(user.frame.bank),
        ]
        wiring.connect(m, reader.payload, user.payload)
        return m
