"""``transfer``: simulated ex-situ transfers of a trained network (paper 004)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def add_transfer(sub: Any) -> None:
    p = sub.add_parser(
        "transfer",
        help="simulate ex-situ transfers of a trained network onto fresh crossbars",
        description="Paper 004. --dataset moons: train the half-moons network (regular, or "
        "regular then hardware-aware), transfer it N times onto fresh passive TiO2 crossbars. "
        "--dataset mnist --from RUN: transfer the quantized network of a finished session N "
        "times onto a device model and test each of its tasks. RUN/transfer.json holds "
        "share_ge_95, share_ge_90 (shares of test points right in at least 95 % / 90 % of "
        "the transfers) and accuracy_mean.",
    )
    p.add_argument("--dataset", default=None, help="moons (the paper's split) or mnist")
    p.add_argument(
        "--training",
        default=None,
        help="moons: regular or hardware-aware (default); a session run says its own",
    )
    p.add_argument(
        "--transfers", type=int, default=None, help="simulated transfers (10000 moons, 100 mnist)"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the training and of the transfers' draws"
    )
    p.add_argument(
        "--recipe",
        default=None,
        help="moons: every training and mapping choice below at once: project (default) or "
        "paper-code (as the code published with paper 004 makes them; docs/transfer.md)",
    )
    p.add_argument("--epochs", type=int, default=None, help="moons: regular training epochs")
    p.add_argument("--ha-epochs", type=int, default=None, help="moons: hardware-aware epochs")
    p.add_argument(
        "--ha-start",
        default=None,
        help="moons: hardware-aware training from the regular network (project) or from "
        "scratch (paper-code)",
    )
    p.add_argument("--hidden", type=int, default=None, help="moons: sigmoid neurons, hidden layer")
    p.add_argument("--lr", type=float, default=None, help="moons: Adam's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="moons: batch (0: the whole split)")
    p.add_argument("--init", default=None, help="moons: torch (nn.Linear's) or xavier (+0.01)")
    p.add_argument(
        "--weight-decay", type=float, default=None, help="moons: Adam's, hardware-aware phase"
    )
    p.add_argument(
        "--stuck-gradient",
        choices=("yes", "no"),
        default=None,
        help="moons: yes: a weight on a stuck device keeps its gradient and is restored after "
        "the step (paper-code); no: it gets none (project)",
    )
    p.add_argument(
        "--sampler",
        default=None,
        help="moons: how weights become conductances: project (tiled crossbar, physical "
        "range), paper-code, or paper-code-physical (the code's order on the physical range)",
    )
    p.add_argument(
        "--crossbar",
        default=None,
        help="device model: tio2-passive (moons, mnist) or hfox-1t1r (mnist)",
    )
    p.add_argument(
        "--bias",
        default=None,
        help="moons: where biases live: row (a crossbar row, the weights' scale), separate "
        "(own devices and scale), digital (exact, in the periphery) or paper (separate, a "
        "single output bias exact, as the paper's code)",
    )
    p.add_argument("--device-file", default=None, help="a device file replacing the shipped one")
    p.add_argument("--stuck-hrs", type=float, default=None, help="share of HRS-stuck devices")
    p.add_argument("--stuck-lrs", type=float, default=None, help="share of LRS-stuck devices")
    w = p.add_argument_group(
        "write plan", "how the lab writes its chip (docs/transfer.md); training samples it too"
    )
    w.add_argument(
        "--tile-order",
        default=None,
        help="the order a tile's devices are programmed in: device-file (default), row-major, "
        "column-major, reverse, or a permutation of the tile's (or block's) slots, numbered "
        "row-major, comma-separated or in a file",
    )
    w.add_argument(
        "--tile-block",
        default=None,
        help="ROWSxCOLS: the part of each tile that holds the network (default: all of it); "
        "smaller blocks disturb less and take more tiles; with --stuck-map known, placed on "
        "the tile's rows and columns with the fewest stuck devices",
    )
    w.add_argument(
        "--verify-tolerance",
        type=float,
        default=None,
        help="read-verify: after the writes, re-program every device farther than this (uS) "
        "from its target",
    )
    w.add_argument(
        "--verify-iterations",
        type=int,
        default=None,
        help="read-verify: read-and-rewrite passes at most (default 5)",
    )
    w.add_argument(
        "--stuck-map",
        default=None,
        help="unknown (default); known: the array's stuck devices are read before the "
        "write, avoided where the block leaves room, otherwise left unpulsed with the pair "
        "partner retargeted to keep the weight; measured: the same on a chip made of paper "
        "004's five measured 8x8 arrays",
    )
    p.add_argument("--from", dest="from_run", default=None, help="mnist: a finished session run")
    p.add_argument("--data-dir", default=None, help="mnist: folder with the IDX files")
    p.add_argument("--out", required=True, help="run directory (a new one: never overwritten)")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (a bar on a terminal, a few lines in a file or pipe)",
    )


def run_transfer(args: argparse.Namespace) -> int:
    from metaplast.host.transfer_run import TransferConfig, run

    # an option left out takes TransferConfig's default (or its recipe's): defaults live there
    names = [f.name for f in dataclasses.fields(TransferConfig)]
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if "stuck_gradient" in given:
        given["stuck_gradient"] = given["stuck_gradient"] == "yes"
    cfg = TransferConfig(**given)
    rec = run(cfg, args.out, progress=not args.no_progress)
    soft = ", ".join(f"{k} {100 * v:.1f} %" for k, v in rec["software_accuracy"].items())
    print(
        f"{rec['training']} network on {cfg.dataset} ({soft} in software); "
        f"over {cfg.transfers:,} transfers onto {cfg.crossbar}: {100 * rec['accuracy_mean']:.2f} %"
        f" mean accuracy, {100 * rec['share_ge_95']:.1f} % of test points right in >= 95 % of "
        f"them, {100 * rec['share_ge_90']:.1f} % in >= 90 % "
        f"({1e3 * rec['seconds_per_transfer']:.3f} ms per transfer)"
    )
    cost = rec["write_cost"]
    if not cfg.plain_write:
        print(
            f"writing took {cost['operations_per_device']:.2f} programming operations per "
            f"device and {cost['read_passes_per_array']:.2f} read passes per array"
        )
    print(f"run directory: {args.out}")
    return 0
