"""Fmax of the unit without the update pipeline's arithmetic: what the rest of it allows.

While the pipeline's arithmetic is the critical path of a build, the router reports nothing
about the paths behind it. This probe copies the source tree to a temporary directory,
replaces that arithmetic in the copy's ``gateware/update_pipeline.py`` by stand-ins (the top
bits in place of the level comparators of stages 3 and 14, XOR in place of the multipliers'
pieces, the dither hash left out, one bit for the
hazard's address comparators, no saturation in stage 13; the stall is already gone, the
core's event FIFO keeps the pipeline's sink ready), and builds it with
``metaplast build``. The bitstream computes nonsense; its Fmax and critical path are those
of everything else: the link, the command engine, the memories' ports, the handshakes. The
repository's files are not changed. With ``--clock-mhz`` the build uses the board's PLL and
the router aims at that clock; a build that fails timing is reported all the same (nextpnr's
own report). The path is printed a net a line, with the gateware line that made it where
the netlist says (the cells' names are often a neighbour's).

    .venv/bin/python experiments/timing_probe.py --board icebreaker --synapses 1024
        [--clock-mhz 48] [--out build/probe-icebreaker]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from metaplast.boards.build import NAME, parse_nextpnr_report

ROOT = Path(__file__).resolve().parent.parent

# (what the pipeline says, what the probe puts instead): each must match exactly once
STAND_INS = [
    # the level comparators (stages 3 and 14): the top bits
    (
        "s4.reached.eq(boundaries_reached(c, s3.w)),",
        "s4.reached.eq(s3.w[-len(c.boundary_ints) :]),",
    ),
    (
        "s15.reached.eq(boundaries_reached(c, s14.w)),",
        "s15.reached.eq(s14.w[-len(c.boundary_ints) :]),",
    ),
    # the multipliers' pieces (stages 6 and 9)
    ("product.eq(piece * b)", "product.eq(piece ^ b)"),
    # the dither hash (stages 0 to 3): its input as it is
    (
        "        x = (x + (x << add_shift))[:32]\n        x = x ^ (x >> xor_shift)\n",
        "        x = x[:32]\n",
    ),
    # the read-after-write hazard's address comparators (stage 0): one bit each
    (
        "new_hits = Cat(st.valid & (st.addr[:wait] == new_addr[:wait]) for st in ahead)",
        "new_hits = Cat(st.valid & (st.addr[0] == new_addr[0]) for st in ahead)",
    ),
    # stage 13: the saturation
    (
        "s14.w.eq(Mux(moved < c.w_min, c.w_min, Mux(moved > c.w_max, c.w_max, moved))),",
        "s14.w.eq(moved),",
    ),
]


def probe_tree(dest: Path) -> None:
    """The package sources under ``dest`` as ``metaplast.*``, the pipeline with stand-ins."""
    package = dest / "metaplast"
    shutil.copytree(ROOT / "metaplast", package, ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("gateware", "boards", "host", "firmware_sim"):
        shutil.copytree(ROOT / sub, package / sub, ignore=shutil.ignore_patterns("__pycache__"))
    path = package / "gateware" / "update_pipeline.py"
    text = path.read_text()
    for old, new in STAND_INS:
        if text.count(old) != 1:
            raise SystemExit(f"the pipeline no longer has {old.strip()!r}: update the probe")
        text = text.replace(old, new)
    path.write_text(text)


def critical_path(tim: Path) -> list[str]:
    """The unit clock's last critical path, one line per net: the time it is reached, its name
    (shortened) and the gateware line that made it (the cells' names are often a neighbour's)."""
    report = tim.read_text().split("Critical path report for clock")[-1]
    report = report.split("Critical path report for cross-domain")[0]
    lines: list[str] = []
    total, net, where = "", "", ""
    for line in report.splitlines():
        step = re.search(r"(clk-to-q|logic|setup|routing)\s+[\d.]+\s+([\d.]+)", line)
        if step:
            if net:
                lines.append(f"  {total:>7} ns  {net}  {where}")
            total, net, where = step.group(2), "", ""
            if step.group(1) == "routing":
                found = re.search(r"Net (\S+)", line)
                net = found.group(1).split("_SB_")[0].split("_TRELLIS")[0] if found else ""
            continue
        source = re.search(r"(gateware|boards)/(\w+\.py:\d+)", line)
        if source and net and not where:
            where = source.group(2)
    if net:
        lines.append(f"  {total:>7} ns  {net}  {where}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", default="icebreaker")
    p.add_argument("--synapses", type=int, default=1024)
    p.add_argument("--clock-mhz", type=float, help="the PLL's clock (default: the oscillator)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    out = (args.out or Path(f"build/probe-{args.board}")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        probe_tree(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [sys.executable, "-m", "metaplast.cli", "build", "--board", args.board]
        command += ["--synapses", str(args.synapses), "--out", str(out)]
        if args.clock_mhz is not None:
            command += ["--clock-mhz", f"{args.clock_mhz:g}"]
        # exit 2 is a failed timing: the router's report is there all the same
        if subprocess.run(command, env=env, cwd=tmp).returncode not in (0, 2):
            raise SystemExit("the probe's build failed")
    workdir = out / "build"
    pnr = json.loads((workdir / f"{NAME}.pnr.json").read_text())
    pr = parse_nextpnr_report(pnr)
    logic = pr.utilization.get("ICESTORM_LC", (0, 0))[0]
    clock = "" if args.clock_mhz is None else f", {args.clock_mhz:g} MHz PLL"
    print(
        f"probe, {args.board}, {args.synapses} synapses{clock}: Fmax {pr.fmax_mhz:.2f} MHz"
        + (f", {logic} logic cells" if args.board == "icebreaker" else "")
    )
    print("\n".join(critical_path(workdir / f"{NAME}.tim")))


if __name__ == "__main__":
    main()
