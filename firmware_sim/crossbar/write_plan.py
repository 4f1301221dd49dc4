"""How a lab writes a network onto a fresh passive chip: the levers it controls.

A one-shot transfer programs every device once, in its tile's order, and leaves what the
device model leaves (tuning error, V/3 disturbance, stuck devices). A lab can do more before
it trusts its chip, at a cost in programming operations and reads:

- **the order** in which a tile's devices are programmed: the V/3 disturbance falls on the
  devices programmed before the others, so the order decides which weights take it;
- **the block** of each tile that holds the network: a smaller block leaves fewer devices to
  disturb each other (the disturbance grows with the programmings after a device in its
  tile), at the cost of more tiles;
- **read-verify**: read every device after the writes, re-program those farther than a
  tolerance from their targets, and repeat up to a number of passes (each re-programming
  disturbs its tile again);
- **a known stuck map**: read the array once before writing (as the measured maps of paper
  004 were made; those shipped arrays can be the chip); the block is placed on the tile's
  rows and columns with the fewest stuck devices, a stuck device that remains is not pulsed,
  and the other device of its differential pair is retargeted so that the pair's
  difference, the weight, is kept wherever the conductance range allows it.

:class:`WritePlan` holds these choices as data, the way a device file holds the device's;
:class:`~metaplast.firmware_sim.crossbar.transfer.TransferSampler` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metaplast.firmware_sim.crossbar.devices import US, ArrayGeometry

TILE_ORDERS: tuple[str, ...] = ("device-file", "row-major", "column-major", "reverse")
STUCK_MAPS: tuple[str, ...] = ("unknown", "known", "measured")
"""What the lab knows of its array's stuck devices: nothing; a read of each fresh chip, whose
stuck devices the device file's rates place at random; or the chip is the five measured 8 x 8
arrays of paper 004 (tile ``t`` on array ``t mod 5``), read once, the same in every
transfer."""
"""Named tile orders: the device file's, rows then columns, columns then rows, and rows then
columns backwards (the last row first)."""


class WritePlanError(ValueError):
    """A write plan that cannot be carried out; the message names the option at fault."""


@dataclass(frozen=True)
class ReadVerify:
    """Re-program every device farther than ``tolerance`` (siemens) from its target, up to
    ``iterations`` read-and-write passes after the first write."""

    tolerance: float
    iterations: int

    def __post_init__(self) -> None:
        if not self.tolerance > 0:
            raise WritePlanError(
                f"read-verify tolerance must be > 0 uS, got {self.tolerance / US:g}"
            )
        if self.iterations < 1:
            raise WritePlanError(f"read-verify needs at least 1 iteration, got {self.iterations}")


@dataclass(frozen=True)
class WritePlan:
    """How a transfer is written. ``block`` is the ``rows x cols`` part of each tile that
    holds the network (``None``: the whole tile); ``order`` lists the block's slots (numbered
    row-major, ``row * cols + col``) in the sequence they are programmed (``None``: the
    device file's order). The default plan is the plain one-shot transfer."""

    order: tuple[int, ...] | None = None
    verify: ReadVerify | None = None
    stuck_map: str = "unknown"
    block: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.stuck_map not in STUCK_MAPS:
            raise WritePlanError(f"stuck map must be one of {STUCK_MAPS}, got {self.stuck_map!r}")

    @property
    def known_stuck(self) -> bool:
        return self.stuck_map != "unknown"

    @property
    def plain(self) -> bool:
        """The one-shot write: every device programmed once, in the device file's order."""
        return (
            self.order is None and self.block is None and self.verify is None
            and not self.known_stuck
        )  # fmt: skip

    def describe(self) -> dict[str, object]:
        return {
            "block": list(self.block) if self.block is not None else "tile",
            "order": list(self.order) if self.order is not None else "device-file",
            "verify_tolerance_uS": self.verify.tolerance / US if self.verify else None,
            "verify_iterations": self.verify.iterations if self.verify else 0,
            "stuck_map": self.stuck_map,
            "known_stuck": self.known_stuck,
        }


def tile_block(spec: str | None, geometry: ArrayGeometry) -> tuple[int, int] | None:
    """The ``ROWSxCOLS`` block of each tile that holds the network, checked against the
    tile; ``None`` (or the tile's own size) is the whole tile."""
    if spec is None:
        return None
    try:
        rows, cols = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise WritePlanError(f"tile block {spec!r}: expected ROWSxCOLS, e.g. 3x2") from None
    if not (1 <= rows <= geometry.tile_rows and 1 <= cols <= geometry.tile_cols):
        raise WritePlanError(
            f"tile block {rows}x{cols} does not fit the device's "
            f"{geometry.tile_rows}x{geometry.tile_cols} tile"
        )
    return rows, cols


def tile_order(
    spec: str, geometry: ArrayGeometry, block: tuple[int, int] | None = None
) -> tuple[int, ...] | None:
    """The programming sequence of a block's slots (the tile's, without a block) that ``spec``
    names: one of :data:`TILE_ORDERS`, a comma-separated list of slots, or a file holding one
    (separated by commas or white space). Anything that is not a permutation is refused."""
    rows, cols = block or (geometry.tile_rows, geometry.tile_cols)
    if spec == "device-file":
        return None
    if spec == "row-major":
        return tuple(range(rows * cols))
    if spec == "column-major":
        return tuple(r * cols + c for c in range(cols) for r in range(rows))
    if spec == "reverse":
        return tuple(reversed(range(rows * cols)))
    text = spec
    if "," not in spec and not spec.strip().isdigit():
        path = Path(spec)
        if not path.is_file():
            raise WritePlanError(
                f"tile order {spec!r} is neither one of {TILE_ORDERS}, nor a list of slots, "
                f"nor a readable file"
            )
        text = path.read_text()
    try:
        order = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise WritePlanError(f"tile order {spec!r}: slots must be integers") from None
    if sorted(order) != list(range(rows * cols)):
        missing = sorted(set(range(rows * cols)) - set(order))[:5]
        raise WritePlanError(
            f"tile order is not a permutation of the {rows} x {cols} block's slots "
            f"0..{rows * cols - 1}: {len(order)} entries"
            + (f", missing {missing}" if missing else ", some repeated or out of range")
        )
    return order
