"""A :class:`~core_check.Scenario` played into the learning core's Verilog under Verilator.

The same scenario, testbench order and observations as :func:`core_check.core_testbenches`
under the Amaranth simulator, at compiled speed: millions of updates a minute instead of
about a thousand a second, for the bit-exactness campaign at scale
(``experiments/bit_exactness.py --simulator verilator``). The harness
(``core_verilator.cpp``) is compiled once per configuration and cached like the Verilog
board (``metaplast.firmware_sim.board.verilator``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.lib import data
from core_check import Scenario

from metaplast.firmware_sim.board.verilator import compile_harness
from metaplast.gateware.synapse_core import SynapseCore

__all__ = ["core_executable", "run_scenario"]

HARNESS = Path(__file__).with_name("core_verilator.cpp")
TOP = "core"


def _fields(layout: data.StructLayout, names: tuple[str, ...]) -> list[int]:
    """Offset and width of each named field of a ``data.StructLayout``."""
    out = []
    for name in names:
        field = layout[name]
        out += [field.offset, field.width]
    return out


def core_executable(s: Scenario) -> tuple[Path, list[int]]:
    """The compiled core for ``s``'s contract and size, and its payload field positions."""
    core = SynapseCore(
        s.contract, s.synapses, counter_width=s.counter_width, single_port=s.single_port
    )
    fields = _fields(core.update.payload.shape(), ("addr", "d", "seed"))
    fields += _fields(core.events.payload.shape(), ("addr", "old", "new"))
    exe = compile_harness(verilog.convert(core, name=TOP), HARNESS.read_text(), top=TOP)
    return exe, fields


def run_scenario(s: Scenario) -> None:
    """Play ``s`` into the Verilated core; fill ``s.events``, ``s.final``, ``s.counts`` and
    ``s.cycles`` as the Amaranth testbenches do."""
    exe, fields = core_executable(s)
    table = s.contract.meta_lut(s.mstar)
    header = [
        s.synapses,
        len(table),
        len(s.updates),
        round(s.ready_prob * 1_000_000),
        s.seed,
        s.contract.hidden_width,
        *fields,
    ]
    stream = np.asarray(s.updates, dtype=np.int64).reshape(-1)
    data = np.concatenate([np.asarray(header + list(table) + list(s.hidden)), stream])
    with tempfile.TemporaryDirectory(prefix="core-verilator-") as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        data.astype("<i8").tofile(src)
        subprocess.run([str(exe), str(src), str(dst)], check=True)
        out = np.fromfile(dst, dtype="<i8")
    n_events, s.cycles = int(out[0]), int(out[1])
    events = out[2 : 2 + 3 * n_events].reshape(-1, 3)
    rest = out[2 + 3 * n_events :]
    s.events = [tuple(e) for e in events.tolist()]
    s.final = rest[: s.synapses].tolist()
    s.counts = rest[s.synapses : 2 * s.synapses].tolist()
