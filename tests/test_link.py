"""The simulated board on a real pty (and TCP) and the host's serial client against it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
import torch

from metaplast.contract import Contract
from metaplast.firmware_sim.board.uart_line import host_baud, misread
from metaplast.firmware_sim.unit.digital_unit import DigitalUnit
from metaplast.host.link import Link, LinkError
from metaplast.protocol import Capability

CLI = str(Path(sys.executable).with_name("metaplast"))
CONTRACT = Contract()


class Board:
    """``metaplast board-sim`` in a subprocess; ``port`` is the first line it prints."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [CLI, "board-sim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = self.proc.stdout.readline().strip()
        if not self.port:
            raise RuntimeError(f"board-sim printed no port: {self.proc.stderr.read()}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def board() -> Iterator[Board]:
    b = Board("--synapses", "300", "--max-block", "64", "--baud", "0")
    yield b
    b.stop()


class Faulty(serial.Serial):
    """A real port that corrupts chosen writes and swallows chosen replies."""

    def __init__(self, *args: object, corrupt: set[int], drop: set[int], **kw: object) -> None:
        super().__init__(*args, **kw)
        self.corrupt, self.drop, self.writes = corrupt, drop, 0

    def write(self, data: bytes) -> int | None:
        self.writes += 1
        if self.writes in self.corrupt:
            data = data[:3] + bytes([data[3] ^ 0x10]) + data[4:]
        return super().write(data)

    def read(self, size: int = 1) -> bytes:
        data = super().read(size)
        if self.writes in self.drop:
            return b""  # the reply to this write is lost on the way
        return data


def test_board_sim_prints_a_port_and_info_answers_json(board: Board) -> None:
    assert board.port.startswith("/dev/")
    out = subprocess.run([CLI, "info", "--port", board.port], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["version"] == 2 and info["synapses"] == 300 and info["max_block"] == 64
    assert info["level_ints"] == list(CONTRACT.level_ints)
    assert (info["recip_shift"], info["w_min"], info["w_max"]) == (
        CONTRACT.recip_shift, CONTRACT.w_min, CONTRACT.w_max
    )  # fmt: skip
    assert info["capabilities"] == ["crossbar"]  # the model board's default 1T1R array
    assert info["lut_crc"] and info["hidden_width"] == 16


def test_a_board_without_a_capability_is_refused_by_name() -> None:
    board = Board("--synapses", "300", "--crossbar", "none")
    try:
        with Link.open(board.port) as link:
            with pytest.raises(LinkError, match=rf"{board.port}: .*crossbar capability.*none"):
                link.require(Capability.CROSSBAR, "an MVM on the board's array")
    finally:
        board.stop()


def test_a_session_over_the_pty_matches_the_model(board: Board) -> None:
    rng = random.Random(0)
    model = DigitalUnit(CONTRACT, 300)
    with Link.open(board.port, timeout=0.5) as link:
        link.attach(CONTRACT, synapses=300)
        w = [rng.randint(-8000, 8000) for _ in range(300)]
        link.write_hidden(0, w)  # 5 blocks of at most 64
        model.write(0, w)
        link.load_lut(3.0)
        model.load_lut(3.0)
        for i in range(20):
            start = rng.randrange(250)
            d = [rng.randint(-(1 << 21), 1 << 21) for _ in range(50)]
            events = link.update(start, i, d)
            ch = model.update(torch.tensor(d), start=start, seed=i)
            assert events == list(zip(*(t.tolist() for t in ch), strict=True))
        assert link.read_hidden(0, 300) == model.read().tolist()
        assert link.read_counters(0, 300) == model.change_count.tolist()
        assert link.stats.retries == 0


def test_corrupted_requests_and_lost_replies_are_retried_and_applied_once(board: Board) -> None:
    # write 2 (the first update) arrives corrupted; the reply to write 3 (its retry) is lost
    port = Faulty(board.port, timeout=0.3, corrupt={2}, drop={3})
    model = DigitalUnit(CONTRACT, 300)
    with Link(port, name=board.port) as link:
        link.attach(CONTRACT)
        d = [-(1 << 20)] * 40
        events = link.update(10, 7, d)
        ch = model.update(torch.tensor(d), start=10, seed=7)
        assert len(events) == len(ch) == 40  # every synapse left level 8 for level 9
        assert link.stats.retries == 2
        assert link.stats.retry_reasons == {"CRC": 1, "timeout": 1}
        assert link.read_hidden(0, 300) == model.read().tolist()  # applied exactly once


def test_a_unit_with_another_contract_is_refused_before_any_write() -> None:
    b = Board("--synapses", "64", "--baud", "0", "--hidden-width", "12")
    try:
        with Link.open(b.port, timeout=0.5) as link, pytest.raises(LinkError, match="frac_bits"):
            link.attach(CONTRACT)
    finally:
        b.stop()


def test_a_board_that_disappears_gives_a_clear_error(board: Board) -> None:
    with Link.open(board.port, timeout=0.2, retries=2) as link:
        link.attach(CONTRACT)
        board.stop()
        with pytest.raises(LinkError, match="is the board connected|port failed"):
            link.read_hidden(0, 10)


def test_socket_url_and_a_throttled_baud_rate() -> None:
    b = Board("--synapses", "64", "--baud", "115200", "--listen", "127.0.0.1:0")
    try:
        assert b.port.startswith("socket://127.0.0.1:")
        with Link.open(b.port, timeout=1.0) as link:
            info = link.attach(CONTRACT)
            assert info.baud_divisor == 417  # 48 MHz / 115200
            link.write_hidden(0, list(range(64)))
            assert link.read_hidden(0, 64) == list(range(64))
    finally:
        b.stop()


def test_info_on_a_missing_port_fails_cleanly() -> None:
    out = subprocess.run(
        [CLI, "info", "--port", "/dev/does-not-exist"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "cannot open /dev/does-not-exist" in out.stderr


def test_a_line_reads_right_within_a_few_percent_and_garbage_beyond() -> None:
    data = bytes(range(256))
    for error in (-0.04, -0.01, 0.0, 0.02, 0.04):
        assert misread(data, 3_000_000, round(3_000_000 * (1 + error))) == data
    for rate in (12_000_000, 1_000_000, 3_300_000):
        assert misread(data, 3_000_000, rate) != data
        assert misread(data, rate, 3_000_000) != data


def test_the_host_finds_the_boards_rate_and_a_wrong_one_fails_naming_it() -> None:
    b = Board("--synapses", "64", "--baud", "12000000")
    try:
        with Link.open(b.port, baudrate=None, timeout=1.0) as link:
            assert host_baud(link.port.fd) == link.port.baudrate == 12_000_000
            assert link.stats.commands == 0  # the probes are not the session's
            info = link.attach(CONTRACT)
            assert info.clock_hz / info.baud_divisor == 12_000_000
            link.write_hidden(0, list(range(64)))
            assert link.read_hidden(0, 64) == list(range(64))
            assert link.stats.retries == 0
        with Link.open(b.port, baudrate=3_000_000, timeout=0.2, retries=1) as link:
            with pytest.raises(LinkError, match="at 3000000 baud"):
                link.read_info()  # the board hears garbage and says nothing we can read
        out = subprocess.run([CLI, "info", "--port", b.port], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert (info["baudrate"], info["baud_divisor"]) == (12_000_000, 4)  # 48 MHz / 12 Mbaud
    finally:
        b.stop()


def test_no_answer_at_any_rate_is_a_clear_error() -> None:
    master, slave = os.openpty()  # a port with nothing behind it
    try:
        with pytest.raises(LinkError, match="no unit answered INFO at any of 3000000, 12000000"):
            Link.open(os.ttyname(slave), baudrate=None, timeout=0.1)
    finally:
        os.close(master)
        os.close(slave)
