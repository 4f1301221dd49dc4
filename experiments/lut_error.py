"""How far the fixed-point meta LUT is from Eq. 2, for LUT sizes and meta-factor widths.

    .venv/bin/python experiments/lut_error.py

Prints, per (entries, meta bits) and m*, the largest absolute error of M over the whole
hidden range and the largest error relative to M (which matters most on a level, where M is
smallest and decides how strongly a weight is consolidated).
"""

from __future__ import annotations

import torch

from metaplast import rule
from metaplast.contract import Contract

MSTARS = (2.0, 3.0, 5.0)


def lut_error(contract: Contract, mstar: float, w: torch.Tensor) -> tuple[float, float]:
    lut = torch.tensor(contract.meta_lut(mstar), dtype=torch.float64) / contract.meta_one
    _, _, j = contract.locate(contract.hidden_to_int(w))
    ref = rule.meta_function(w, contract.levels, mstar)
    err = (lut[j] - ref).abs()
    return err.max().item(), (err / ref).max().item()


def main() -> None:
    low, high = rule.hidden_range()
    w = torch.linspace(low, high, 200_001, dtype=torch.float64)
    print("| entries | meta bits | " + " | ".join(f"m* = {m:g}" for m in MSTARS) + " |")
    print("|---|---|" + "---|" * len(MSTARS))
    for entries in (16, 64, 256):
        for bits in (6, 10, 14):
            c = Contract(lut_entries=entries, meta_bits=bits, hidden_width=20)
            cells = [f"{a:.3f} / {100 * r:.0f} %" for a, r in (lut_error(c, m, w) for m in MSTARS)]
            print(f"| {entries} | {bits} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
