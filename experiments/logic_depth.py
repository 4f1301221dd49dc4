"""Every register-to-register path of an iCE40 build, by estimated delay: all of them at once.

nextpnr reports one critical path per clock; behind it may be a dozen more that fail, each
found by another build. This reads the synthesized netlist of a build (``metaplast build``
leaves it as ``build/metaplast.json``) and estimates every path from a flip-flop, block RAM,
DSP or input to a flip-flop, block RAM or DSP with a placement-free model of the UP5K (a LUT
and its route 2.6 ns, a carry 0.3 ns, clock-to-out and setup as nextpnr's), then prints the
endpoints over the budget with the chain of cells that reaches each. The estimate ranks paths
and tells how many LUT levels are left to cut; the routed Fmax stays nextpnr's. A DSP block
counts as registered at its ports, as nextpnr counts it: the multiply inside an unregistered
one is in neither (``boards/build.py``'s ``dsp_path_ns`` bounds it).

    .venv/bin/python experiments/logic_depth.py build/ice48/build/metaplast.json
        [--budget-ns 17] [--show 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path

LUT_NS = 0.87 + 1.76  # a LUT and the local route into the next
CARRY_NS = 0.28
SOURCE_NS = {"SB_RAM40_4K": 1.18 + 3.0, "SB_MAC16": 0.1 + 3.0}  # clock-to-out and route
FF_SOURCE_NS = 1.39 + 1.76
SETUP_NS = {"D": 1.23, "E": 0.1, "R": 0.1, "S": 0.1}


def _is_output(cell: dict, port: str) -> bool:
    direction = cell.get("port_directions", {}).get(port)
    return direction == "output"


def analyse(netlist: dict) -> tuple[list[tuple[float, str, list[str]]], dict[str, str]]:
    """(estimated ns, endpoint, the cells on its worst path) for every sequential endpoint,
    worst first, and each cell's type."""
    (top,) = (m for m in netlist["modules"].values() if m.get("attributes", {}).get("top"))
    cells = top["cells"]
    driver: dict[int, tuple[str, str]] = {}
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if _is_output(cell, port):
                for b in bits:
                    if isinstance(b, int):
                        driver[b] = (name, port)

    def sequential(cell: dict) -> bool:
        t = cell["type"]
        return t.startswith("SB_DFF") or t in ("SB_RAM40_4K", "SB_SPRAM256KA", "SB_MAC16")

    @cache
    def arrival(bit: int) -> tuple[float, tuple[str, ...]]:
        if bit not in driver:
            return 0.0, ()  # a constant or an input pin
        name, port = driver[bit]
        cell = cells[name]
        t = cell["type"]
        if t.startswith("SB_DFF"):
            return FF_SOURCE_NS, (name,)
        if t in SOURCE_NS or t == "SB_SPRAM256KA":
            return SOURCE_NS.get(t, 4.0), (name,)
        if t == "SB_LUT4":
            step, inputs = LUT_NS, ("I0", "I1", "I2", "I3")
        elif t == "SB_CARRY":
            step, inputs = CARRY_NS, ("I0", "I1", "CI")
        else:
            return 0.0, ()  # IO, PLL, global buffers: outside the clock's paths
        worst, path = 0.0, ()
        for p in inputs:
            for b in cell["connections"].get(p, []):
                if isinstance(b, int):
                    a, chain = arrival(b)
                    if a > worst:
                        worst, path = a, chain
        return worst + step, (*path, name)

    sys.setrecursionlimit(100_000)
    endpoints = []
    for name, cell in cells.items():
        if not sequential(cell):
            continue
        worst, path, pin = 0.0, (), ""
        for port, bits in cell["connections"].items():
            if _is_output(cell, port) or port in ("C", "CLK", "CLKA", "CLKB", "RCLK", "WCLK"):
                continue
            for b in bits:
                if isinstance(b, int):
                    a, chain = arrival(b)
                    a += SETUP_NS.get(port, 0.5)
                    if a > worst:
                        worst, path, pin = a, chain, port
        endpoints.append((worst, f"{name}.{pin}", list(path)))
    endpoints.sort(key=lambda e: -e[0])
    return endpoints, {name: cell["type"] for name, cell in cells.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist", type=Path, help="the build's metaplast.json (Yosys)")
    parser.add_argument("--budget-ns", type=float, default=17.0, help="print paths above this")
    parser.add_argument("--show", type=int, default=20, help="print at most this many paths")
    parser.add_argument("--verbose", action="store_true", help="print every cell of a path")
    args = parser.parse_args()
    try:
        netlist = json.loads(args.netlist.read_text())
    except (OSError, ValueError) as error:
        print(f"logic_depth: cannot read {args.netlist}: {error}", file=sys.stderr)
        return 2
    endpoints, types = analyse(netlist)
    over = [e for e in endpoints if e[0] > args.budget_ns]
    print(f"{len(endpoints)} endpoints, {len(over)} over {args.budget_ns} ns")
    # one line for the endpoints a path of the same source and length reaches (a register's
    # bits, a memory's ports)
    shown = {}
    for worst, endpoint, path in over:
        key = (round(worst, 2), path[0] if path else "")
        shown.setdefault(key, (worst, endpoint, path, []))[3].append(endpoint)
    for worst, endpoint, path, same in list(shown.values())[: args.show]:
        luts = sum(1 for c in path[1:] if types[c] == "SB_LUT4")
        more = f" (and {len(same) - 1} more)" if len(same) > 1 else ""
        print(f"{worst:6.2f} ns  {luts} LUTs, {len(path) - 1 - luts} carries  {endpoint}{more}")
        if args.verbose:
            for c in path:
                print(f"           {c[:150]}")
        else:
            print(f"           from {path[0] if path else '?'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
