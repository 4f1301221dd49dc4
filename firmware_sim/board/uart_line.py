"""A UART line whose two ends disagree on the baud rate: what each receiver reads.

A host that opens a real board's port at the wrong rate hears garbage and is heard as garbage.
The simulated board does the same on its pty: it reads the rate the host set on the port (a
Linux pty keeps it, and its master sees it) and passes every byte through :func:`misread`,
which samples the 8N1 waveform sent at one rate the way a receiver at another rate does. So
a host that has to find the board's rate (``Link.find_baudrate``) is tested against a line
that behaves like the real one, not against a pty that carries any rate.
"""

from __future__ import annotations

import fcntl
import math
import struct
import termios

__all__ = ["BoardLine", "host_baud", "misread", "set_baud"]

# struct termios2 (asm-generic/termbits.h): 4 flags of 4 bytes, c_line, 19 control characters,
# then the input and output speeds as plain integers (BOTHER), which pyserial sets
_TERMIOS2 = struct.Struct("=4IB19c2I")
_TCGETS2 = getattr(termios, "TCGETS2", 0x802C542A)
_TCSETS2 = getattr(termios, "TCSETS2", 0x402C542B)
_CBAUD = 0o010017
_BOTHER = 0o010000

BITS = 10
"""One character on the line: a start bit, 8 data bits (least significant first), a stop bit."""


def host_baud(fd: int) -> int | None:
    """The baud rate set on the tty ``fd`` (a pty's master reads its slave's), or None when
    ``fd`` is not a tty with one (a socket)."""
    buf = bytearray(_TERMIOS2.size)
    try:
        fcntl.ioctl(fd, _TCGETS2, buf)
    except OSError:
        return None
    return _TERMIOS2.unpack(buf)[-1] or None


def set_baud(fd: int, baud: int) -> None:
    """Set the tty ``fd``'s rate, so that a host that never sets one speaks the board's."""
    buf = bytearray(_TERMIOS2.size)
    fcntl.ioctl(fd, _TCGETS2, buf)
    fields = list(_TERMIOS2.unpack(buf))
    fields[2] = (fields[2] & ~_CBAUD) | _BOTHER
    fields[-2] = fields[-1] = baud
    fcntl.ioctl(fd, _TCSETS2, _TERMIOS2.pack(*fields))


def misread(data: bytes, sent_baud: int, read_baud: int) -> bytes:
    """The bytes a receiver at ``read_baud`` decodes from ``data`` sent back to back at
    ``sent_baud``.

    The receiver waits for a falling edge, samples each bit in the middle of where it expects
    it, and keeps a character only when its stop bit reads high (a framing error loses it).
    Equal rates give ``data`` back; a few percent apart is still read right, as on a real line.
    """
    if sent_baud == read_baud or not data:
        return bytes(data)
    bits: list[int] = []
    for byte in data:
        bits += [0, *((byte >> k) & 1 for k in range(8)), 1]

    def level(t: float) -> int:
        """The line at time ``t`` (in the sender's bit times); idle is high."""
        i = math.floor(t)
        return bits[i] if 0 <= i < len(bits) else 1

    ratio = sent_baud / read_baud  # one receiver bit in sender bit times
    out = bytearray()
    t = 0.0
    while t < len(bits):
        # the next falling edge: a bit boundary where a one is followed by a zero
        edge = next(
            (i for i in range(math.ceil(t), len(bits)) if bits[i] == 0 and level(i - 1) == 1),
            None,
        )
        if edge is None:
            break
        samples = [level(edge + (k + 0.5) * ratio) for k in range(BITS)]
        if samples[0] == 1:  # a glitch, not a start bit: look again from the next bit
            t = edge + 1
            continue
        if samples[-1] == 1:
            out.append(sum(bit << k for k, bit in enumerate(samples[1:9])))
        t = edge + (BITS - 0.5) * ratio  # the receiver looks for the next edge after its stop
    return bytes(out)


class BoardLine:
    """The board's end of a line on ``fd`` at ``baud``: what it hears and what the host hears.

    ``baud`` 0 (an unpaced simulated board) or a descriptor with no rate (a socket) carries
    every byte as it is.
    """

    def __init__(self, fd: int, baud: int) -> None:
        self.fd = fd
        self.baud = baud

    def _host(self) -> int | None:
        """The host's rate when it is not the board's; within 1 % a UART reads it right (and
        :func:`misread` would give the bytes back), so that is the same rate."""
        rate = host_baud(self.fd) if self.baud else None
        return rate if rate and abs(rate - self.baud) > self.baud / 100 else None

    def heard(self, data: bytes) -> bytes:
        """What the board reads of ``data``, sent by the host at its rate."""
        rate = self._host()
        return misread(data, rate, self.baud) if rate else data

    def told(self, data: bytes) -> bytes:
        """What the host reads of ``data``, sent by the board at its rate."""
        rate = self._host()
        return misread(data, self.baud, rate) if rate else data
