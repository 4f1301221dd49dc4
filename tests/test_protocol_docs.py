"""docs/protocol.md's example exchange, read from the document and replayed byte for byte on
the model board, the RTL board and the Verilog board, each behind its pty: the docs an
independent implementer reads are the bytes the unit speaks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import serial
from test_link import Board
from test_verilog_board import needs_verilator

from metaplast.protocol import END, FrameDecoder, Info, Op, Status
from metaplast.vocabulary import UNIT_BAUD

DOC = Path(__file__).parent.parent / "docs" / "protocol.md"


def documented_exchange() -> list[tuple[bytes, bytes | None]]:
    """``(request, reply)`` of every ``>`` line of the Examples block; ``None``: the reply is
    the board's own (INFO)."""
    text = DOC.read_text()
    block = text[text.index("## Examples") :].split("```")[1]
    steps: list[tuple[bytes, bytes | None]] = []
    for line in block.splitlines():
        if line.startswith(">"):
            steps.append((bytes.fromhex(line[1:]), None))
        elif line.startswith("<"):
            request, reply = steps[-1]
            assert reply is None, f"two replies to {request.hex(' ')}"
            steps[-1] = (request, bytes.fromhex(line[1:]))
    return steps


def read_frame(port: serial.Serial) -> bytes:
    """One whole frame (END ... END) as received."""
    out = bytearray()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out += port.read(1)
        if len(out) > 2 and out[-1] == END and out[0] == END:
            return bytes(out)
    raise AssertionError(f"no whole reply in 60 s: {out.hex(' ')}")


def test_the_documented_exchange_is_complete() -> None:
    steps = documented_exchange()
    assert len(steps) == 8
    assert steps[0][1] is None and all(reply for _, reply in steps[1:])


@pytest.mark.parametrize(
    "backend", ["model", "rtl", pytest.param("verilog", marks=needs_verilator)]
)
def test_the_documented_exchange_replays_on_the_board(backend: str) -> None:
    board = Board("--backend", backend, "--synapses", "64", "--max-block", "16")
    try:
        with serial.Serial(board.port, baudrate=UNIT_BAUD, timeout=0.5) as port:
            for request, reply in documented_exchange():
                port.write(request)
                got = read_frame(port)
                if reply is None:
                    (frame,) = FrameDecoder().feed(got)
                    assert (frame.op, frame.status) == (Op.INFO | 0x80, Status.OK)
                    assert Info.unpack(frame.payload[1:]).synapses == 64
                else:
                    assert got.hex(" ") == reply.hex(" "), request.hex(" ")
    finally:
        board.stop()
