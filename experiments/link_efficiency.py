"""Payload efficiency of UPDATE frames on real training updates.

Records every update block (``d = eta * U_W`` in the update format) of a short MNIST session,
cuts them into UPDATE frames of ``--block`` synapses as a host would stream them, and counts
payload bytes against wire bytes (SLIP delimiters, escapes, op, seq, start, seed, CRC). The
escapes depend on the data, which is why real updates are used; random bytes and the worst
case are printed beside them.

    .venv/bin/python experiments/link_efficiency.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile

import torch

from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.host.config import SessionConfig
from metaplast.host.session import train
from metaplast.protocol import END, Layout, Op, encode_frame


def record_updates(data_dir: str, train_limit: int, seed: int) -> list[torch.Tensor]:
    blocks: list[torch.Tensor] = []
    original = DigitalUnit.update

    def recording(self: DigitalUnit, d: torch.Tensor, **kwargs: object) -> object:
        blocks.append(torch.as_tensor(d).flatten().clone())
        return original(self, d, **kwargs)  # type: ignore[arg-type]

    DigitalUnit.update = recording  # type: ignore[method-assign]
    try:
        config = SessionConfig.of(
            epochs=(1, 1), pretrain_epochs=1, train_limit=train_limit, seed=seed
        )
        with tempfile.TemporaryDirectory() as out:
            train(config, out, data_dir, progress=False)
    finally:
        DigitalUnit.update = original  # type: ignore[method-assign]
    return blocks


def efficiency(layout: Layout, d: list[int]) -> tuple[int, int]:
    payload = len(d) * layout.update_bytes
    wire = len(encode_frame(Op.UPDATE, 0, layout.update(0, 0, d)))
    return payload, wire


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    layout = Layout(SessionConfig().contract, 1 << 20, max_block=args.block)
    blocks = record_updates(args.data_dir, args.train_limit, args.seed)
    frames = []
    for d in blocks:
        values = d.tolist()
        for i in range(0, len(values) - args.block + 1, args.block):
            frames.append(efficiency(layout, values[i : i + args.block]))
    ratios = [p / w for p, w in frames]
    print(f"{len(frames)} UPDATE frames of {args.block} synapses from {len(blocks)} blocks")
    print(
        f"real updates: payload/wire median {statistics.median(ratios):.4f}, "
        f"min {min(ratios):.4f}, mean {statistics.fmean(ratios):.4f}"
    )
    per_update = layout.update_bytes / statistics.median(ratios)
    print(f"wire bytes per synapse update (median): {per_update:.3f}")
    rng = random.Random(args.seed)
    top = 1 << (layout.contract.update_width - 1)
    rand = [
        efficiency(layout, [rng.randrange(-top, top) for _ in range(args.block)])
        for _ in range(200)
    ]
    print(f"random updates: payload/wire mean {statistics.fmean(p / w for p, w in rand):.4f}")
    worst = efficiency(
        layout, [int.from_bytes(bytes([END] * 3), "little", signed=True)] * args.block
    )
    print(f"worst case (every byte 0xC0): payload/wire {worst[0] / worst[1]:.4f}")


if __name__ == "__main__":
    main()
