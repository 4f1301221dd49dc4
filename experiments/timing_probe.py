"""Fmax of the unit without the update pipeline's arithmetic: what the rest of it allows.

While the pipeline's stage 1 and stage 4 arithmetic are the critical path of a build, the
router reports nothing about the paths behind them. This probe copies the source tree to a
temporary directory, replaces that arithmetic in the copy's ``gateware/update_pipeline.py`` by
stand-ins (registers after the memory read and before the level detection, the top bits in
place of the level comparators, XOR in place of the two multipliers, no read-after-write hazard
check), and builds it with ``metaplast build``. The bitstream computes nonsense; its Fmax and
critical path are those of everything else: the link, the command engine, the memories'
ports, the handshakes. The repository's files are not changed.

    .venv/bin/python experiments/timing_probe.py --board icebreaker --synapses 1024
        [--out build/probe-icebreaker]
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

from metaplast.boards.build import NAME

ROOT = Path(__file__).resolve().parent.parent

# (what the pipeline says, what the probe puts instead): each must match exactly once
STAND_INS = [
    # stage 1: the memory's data into a register before the level comparators
    (
        "        w1 = h_rd.data\n",
        "        w1 = Signal(hid_t)\n        m.d.sync += w1.eq(h_rd.data)\n",
    ),
    # the level comparators (stages 1 and 4): the top bits
    ("    return sum((w >= b for b in contract.boundary_ints), Const(0, 8))", "    return w[-4:]"),
    # the two multipliers (stages 2 and 3)
    ("scaled.eq((abs(s2.off) * s2.recip) >> c.recip_shift)", "scaled.eq(s2.off ^ s2.recip)"),
    ("s4.prod.eq(s3.d * meta + s3.round)", "s4.prod.eq(s3.d ^ meta ^ s3.round)"),
    # stage 4: the saturated weight and the event into registers
    (
        "            w4.eq(Mux(moved < c.w_min, c.w_min, Mux(moved > c.w_max, c.w_max, moved))),\n",
        "",
    ),
    (
        "            s4_event.eq(lvl4 != s4.lvl),\n",
        "",
    ),
    (
        "        count = c_rd.data\n",
        "        m.d.sync += w4.eq(\n"
        "            Mux(moved < c.w_min, c.w_min, Mux(moved > c.w_max, c.w_max, moved))\n"
        "        )\n"
        "        probe_event = Signal()\n"
        "        m.d.sync += probe_event.eq(lvl4 != s4.lvl)\n"
        "        m.d.comb += s4_event.eq(probe_event)\n"
        "        count = c_rd.data\n",
    ),
    # the read-after-write hazard check
    (
        "        m.d.comb += hazard.eq(\n",
        "        m.d.comb += hazard.eq(0)\n        m.d.comb += Signal().eq(\n",
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
    """The unit clock's last critical path, one line per cell (net names shortened)."""
    report = tim.read_text().split("Critical path report for clock")[-1]
    report = report.split("Critical path report for cross-domain")[0]
    lines, last = [], None
    for m in re.finditer(r"(clk-to-q|logic|setup)\s+[\d.]+\s+([\d.]+)\s+\w+\s+(\S+)", report):
        name = m.group(3).split("_SB_")[0].split("_TRELLIS")[0].split("$")[0]
        if name != last:
            lines.append(f"  {m.group(2):>7} ns  {name}")
            last = name
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", default="icebreaker")
    p.add_argument("--synapses", type=int, default=1024)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    out = (args.out or Path(f"build/probe-{args.board}")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        probe_tree(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [sys.executable, "-m", "metaplast.cli", "build", "--board", args.board]
        command += ["--synapses", str(args.synapses), "--out", str(out)]
        subprocess.run(command, env=env, cwd=tmp, check=True)
    report = json.loads((out / "report.json").read_text())
    print(f"probe, {args.board}, {args.synapses} synapses: Fmax {report['fmax_mhz']} MHz")
    print("\n".join(critical_path(out / "build" / f"{NAME}.tim")))


if __name__ == "__main__":
    main()
