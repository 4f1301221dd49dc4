"""The simulated board: the digital unit's protocol on a virtual serial port.

A pty (what a USB serial adapter looks like to the host) or a TCP socket (pyserial's
``socket://``) in front of :class:`~metaplast.firmware_sim.unit.command_model.CommandModel`, the
bit-exact model that answers every frame as the gateware does. A simulated baud rate paces
both directions the way a UART would (10 bits per byte); ``baud=0`` is as fast as possible.
"""

from __future__ import annotations

import os
import select
import socket
import time
import tty
from collections.abc import Callable

from metaplast.firmware_sim.unit.command_model import CommandModel

from .uart_line import BoardLine, set_baud

__all__ = ["Pacer", "open_pty", "serve_fd", "serve_pty", "serve_tcp"]


def open_pty(announce: Callable[[str], None], baud: int = 0) -> tuple[int, int]:
    """A raw pty (no echo, no line editing: a byte pipe like a UART), announced by its path.

    The caller keeps the slave descriptor open too, so that a host that closes the port and
    comes back later finds it still there (and the master never sees end-of-file). ``baud``:
    the port's initial rate (a host that sets none speaks the board's).
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    if baud:
        set_baud(slave, baud)
    announce(os.ttyname(slave))
    return master, slave


class Pacer:
    """When the next byte may cross a simulated UART of ``baud`` (10 bits a byte)."""

    BURST = 64

    def __init__(self, baud: int) -> None:
        if baud < 0:
            raise ValueError(f"baud must be >= 0, got {baud}")
        self.byte_time = 10 / baud if baud else 0.0
        self._free = 0.0

    def budget(self, now: float, *, line_busy: bool = False) -> int:
        """Bytes that may cross now (a large number when unthrottled).

        An idle line earns at most a USB packet's worth (64 bytes) of credit; a busy one (its
        bytes waited for us while we computed, as they would in the UART's buffer) keeps it.
        """
        if not self.byte_time:
            return 1 << 16
        if not line_busy:
            self._free = max(self._free, now - self.BURST * self.byte_time)
        return max(0, int((now - self._free) / self.byte_time))

    def spend(self, count: int) -> None:
        self._free += count * self.byte_time

    def wait(self, now: float) -> float:
        """Seconds until one more byte may cross."""
        return max(0.0, self._free + self.byte_time - now) if self.byte_time else 0.0


def serve_fd(
    fd: int,
    model: CommandModel,
    baud: int,
    *,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Answer frames arriving on ``fd`` until ``stop()`` or the peer goes away for good.

    A host whose port is set to another rate than ``baud`` hears and is heard as garbage
    (:class:`~.uart_line.BoardLine`), as on a real UART.
    """
    rx, tx = Pacer(baud), Pacer(baud)
    line = BoardLine(fd, baud)
    pending = bytearray()
    line_busy = False  # bytes were waiting when we last looked: the line kept delivering
    while not stop():
        now = time.monotonic()
        want_read = rx.budget(now, line_busy=line_busy) > 0
        timeout = 0.2
        if pending:
            timeout = min(timeout, tx.wait(now))
        if not want_read:
            timeout = min(timeout, rx.wait(now))
        readable, writable, _ = select.select(
            [fd] if want_read else [], [fd] if pending and tx.budget(now) else [], [], timeout
        )
        now = time.monotonic()
        if readable:
            try:
                data = os.read(fd, min(4096, rx.budget(now, line_busy=line_busy)))
            except OSError:  # a pty whose other side is closed: wait for a new one
                time.sleep(0.05)
                continue
            if not data:
                return
            rx.spend(len(data))
            pending += model.feed(line.heard(data))
            line_busy = bool(select.select([fd], [], [], 0)[0])
        if writable and pending:
            n = min(len(pending), tx.budget(now))
            if n:
                chunk = bytes(pending[:n])
                out = line.told(chunk)
                if out is chunk:
                    n = os.write(fd, chunk)
                elif out:
                    os.write(fd, out)  # garbage for the host: a short write loses a little more
                tx.spend(n)
                del pending[:n]


def serve_pty(model: CommandModel, baud: int, announce: Callable[[str], None]) -> None:
    """Open a pty, announce its path, serve on it until stopped (a signal)."""
    master, slave = open_pty(announce, baud)
    try:
        serve_fd(master, model, baud)
    finally:
        os.close(master)
        os.close(slave)


def serve_tcp(
    model: CommandModel, baud: int, host: str, port: int, announce: Callable[[str], None]
) -> None:
    """Listen on ``host:port`` (``socket://host:port`` for pyserial); one host at a time."""
    with socket.create_server((host, port)) as server:
        announce(f"socket://{host}:{server.getsockname()[1]}")
        while True:
            conn, _ = server.accept()
            with conn:
                serve_fd(conn.fileno(), model, baud)
