"""The programming header's pin-out of every board, as the markdown tables in docs/bench.md,
and the crossbar link's, as the table in docs/board.md.

.venv/bin/python -m metaplast.boards.pinout      # prints the tables (the docs have them)
"""

from __future__ import annotations

from .platforms import BOARDS, Board

__all__ = ["pinout_markdown", "xbar_pinout_markdown"]


def pinout_markdown(board: Board) -> str:
    """The header table of ``board``: signal, header pin (silkscreen), FPGA pin, direction."""
    lines = [
        f"`{board.name}`: {board.title}",
        "",
        "| signal | header pin | FPGA pin | direction |",
        "| --- | --- | --- | --- |",
    ]
    for signal, label, fpga_pin in board.pinout():
        direction = "in (pull-up)" if signal == "prog_busy_n" else "out"
        lines.append(f"| `{signal}` | {label} | {fpga_pin} | {direction} |")
    return "\n".join(lines) + "\n"


def xbar_pinout_markdown() -> str:
    """The crossbar link's pins on every board: one row per board."""
    lines = [
        "| board | `xbar_tx` (out) | `xbar_rx` (in, pull-up) |",
        "| --- | --- | --- |",
    ]
    for board in BOARDS.values():
        tx, rx = (f"{label} ({fpga_pin})" for _, label, fpga_pin in board.xbar_pinout())
        lines.append(f"| `{board.name}` | {tx} | {rx} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print("\n".join(pinout_markdown(b) for b in BOARDS.values()))
    print(xbar_pinout_markdown(), end="")
