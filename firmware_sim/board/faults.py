"""A faulty serial line: a pty in front of a port that corrupts, drops, duplicates or delays.

For testing what a real cable, a noisy USB adapter or an overloaded host does to a session:
``metaplast link-faults --port BOARD --byte-error-rate 1e-3`` prints a new port; a session
pointed at it must end exactly as on a clean line, only with more retries.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import serial

from metaplast.vocabulary import UNIT_BAUD

from .serial_port import open_pty

__all__ = ["FaultInjector", "Faults", "serve_proxy"]


@dataclass(frozen=True)
class Faults:
    """Per-byte rates (each direction independently) and a fixed added latency."""

    byte_error_rate: float = 0.0
    """A byte arrives with one random bit flipped."""
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("byte_error_rate", "drop_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.delay_s < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay_s}")


@dataclass
class FaultInjector:
    """Applies :class:`Faults` to the bytes of one direction, counting what it did."""

    faults: Faults
    stream: int = 0
    corrupted: int = 0
    dropped: int = 0
    duplicated: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng([self.faults.seed, self.stream])

    def __call__(self, data: bytes) -> bytes:
        f, rng = self.faults, self._rng
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        flip = rng.random(arr.size) < f.byte_error_rate
        arr[flip] ^= (1 << rng.integers(0, 8, int(flip.sum()))).astype(np.uint8)
        keep = rng.random(arr.size) >= f.drop_rate
        twice = rng.random(arr.size) < f.duplicate_rate
        self.corrupted += int(flip.sum())
        self.dropped += int((~keep).sum())
        self.duplicated += int((twice & keep).sum())
        return np.repeat(arr, keep.astype(np.int64) * (1 + twice)).tobytes()


def serve_proxy(
    upstream: str,
    to_board: FaultInjector,
    to_host: FaultInjector,
    announce: Callable[[str], None],
    *,
    baudrate: int = UNIT_BAUD,
) -> None:
    """Forward between a new pty and ``upstream`` through the injectors, until upstream goes
    away (the injectors count what they did, also when this is interrupted)."""
    faults = to_board.faults
    up = serial.serial_for_url(upstream, baudrate=baudrate, timeout=0)
    master, slave = open_pty(announce)
    try:
        while True:
            readable, _, _ = select.select([master, up.fileno()], [], [], 0.5)
            if master in readable:
                data = os.read(master, 4096)
                if faults.delay_s:
                    time.sleep(faults.delay_s)
                up.write(to_board(data))
            if up.fileno() in readable:
                data = up.read(4096)
                if not data:
                    break  # upstream closed
                if faults.delay_s:
                    time.sleep(faults.delay_s)
                os.write(master, to_host(data))
    except (OSError, serial.SerialException):
        pass  # upstream gone: so is this line
    finally:
        os.close(master)
        os.close(slave)
        up.close()
