"""The framed command protocol between a host and the digital unit: one definition for both.

The gateware (:mod:`metaplast.gateware.framing`, :mod:`metaplast.gateware.command_engine`),
the simulated board and the host's serial client import the opcodes, status codes, payload
layouts and the byte-level codec from here. ``docs/protocol.md`` is the same specification in
prose, for a lab that speaks it from another language.

Wire format::

    END  stuffed( op | seq | payload | crc16 )  END

* Framing is SLIP (RFC 1055): ``END`` (0xC0) delimits frames; inside a frame ``END`` is sent
  as ``ESC ESC_END`` and ``ESC`` (0xDB) as ``ESC ESC_ESC``. Any ``END`` ends the frame in
  progress, so a receiver resynchronises on the next frame whatever garbage came before.
* ``crc16`` is CRC-16/IBM-SDLC (the HDLC FCS) of ``op | seq | payload``, little-endian.
* A request's ``op`` is an :class:`Op`; its response carries ``op | 0x80``, the same ``seq``, a
  :class:`Status` byte, then the response payload. Multi-byte fields are little-endian.
* ``seq``: the unit remembers the last :data:`RETRY_DEPTH` state-changing commands it executed
  (op, seq and CRC). A byte-identical command received again is a retry: it is not executed
  a second time, its stored response is sent again. So a host that lost a response retries
  with the same ``seq``, even with two frames in flight.
"""

from __future__ import annotations

import binascii
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np
from amaranth.lib.crc import catalog

from metaplast.contract import Contract
from metaplast.vocabulary import UNIT_COUNTER_WIDTH, UNIT_MAX_BLOCK

__all__ = [
    "CRC",
    "END",
    "ESC",
    "ESC_END",
    "ESC_ESC",
    "PROTOCOL_VERSION",
    "RESPONSE",
    "RETRY_DEPTH",
    "MUTATING",
    "Capability",
    "Frame",
    "FrameDecoder",
    "Info",
    "Layout",
    "Op",
    "ProtocolError",
    "Status",
    "crc16",
    "decode_events",
    "encode_frame",
    "encode_response",
    "lut_crc",
    "mstar_code",
    "signed_bytes",
    "unpack_signed",
    "stuff",
    "XbarInfo",
    "xbar_layer",
    "xbar_map",
    "xbar_mvm",
    "xbar_span",
    "xbar_verify",
]

PROTOCOL_VERSION = 2
"""1: INFO without its arithmetic tail. 2: INFO also carries the reciprocal shift, the clip
range and the capabilities (:class:`Capability`); a host reads both."""

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD

RESPONSE = 0x80
"""Set in the op byte of every response."""

CRC = catalog.CRC16_IBM_SDLC
"""CRC of every frame (polynomial 0x1021 reflected, init and xor-out 0xFFFF)."""


class Op(IntEnum):
    INFO = 0x01
    READ_HIDDEN = 0x02
    WRITE_HIDDEN = 0x03
    LOAD_LUT = 0x04
    UPDATE = 0x05
    READ_COUNTERS = 0x06
    RESET = 0x07
    UPDATE_LAYER = 0x08
    """UPDATE whose dither hashes each synapse's index in its layer (version 2)."""
    # the crossbar port's ops (capability CROSSBAR)
    XBAR_INFO = 0x10
    XBAR_MAP = 0x11
    XBAR_LATCH = 0x12
    XBAR_MVM = 0x13
    XBAR_READ = 0x14
    XBAR_COUNTERS = 0x15
    XBAR_VERIFY = 0x16


class Capability(IntFlag):
    """Optional parts of a unit, announced in INFO; a host refuses, naming the port and the
    capability, to use one that a board lacks."""

    CROSSBAR = 0x01
    """A memristor array behind the unit's crossbar port: conductance reads, MVMs, device
    counters, program-and-verify."""


MUTATING = frozenset(
    {
        Op.WRITE_HIDDEN,
        Op.LOAD_LUT,
        Op.UPDATE,
        Op.RESET,
        Op.UPDATE_LAYER,
        Op.XBAR_MAP,
        Op.XBAR_LATCH,
        Op.XBAR_VERIFY,
    }
)
"""Ops whose retry is answered from the stored response instead of being executed again."""

RETRY_DEPTH = 2
"""How many of the last state-changing commands the unit recognises as retries: a host may
keep this many frames in flight and still resend any of them safely."""


class Status(IntEnum):
    OK = 0
    CRC = 1
    """The frame's CRC did not match (corrupted or truncated frame)."""
    LENGTH = 2
    """The payload length does not fit the op (too short, too long, count 0 or above the block)."""
    OPCODE = 3
    RANGE = 4
    """Synapse addresses outside ``0 .. synapses - 1``."""
    VALUE = 5
    """A hidden weight outside the clip range, an update outside its format, a LUT entry > 1."""
    OVERFLOW = 6
    """The frame did not fit the receive buffer, or arrived while both buffers were busy."""
    FRAMING = 7
    """A UART framing error or an invalid SLIP escape inside the frame."""
    STALE = 8
    """A crossbar MVM or read on a layer programmed since its last XBAR_LATCH."""


class ProtocolError(Exception):
    """A response that cannot be parsed, or one that reports an error status."""


# CRC -----------------------------------------------------------------------------------------


_REVERSED_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _reverse16(x: int) -> int:
    return (_REVERSED_BITS[x & 0xFF] << 8) | _REVERSED_BITS[x >> 8]


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/IBM-SDLC of ``data``; equal to ``CRC(8).compute(data)`` (tested).

    The reflected CRC is the unreflected one (CRC-16/CCITT, which :func:`binascii.crc_hqx`
    computes in C) of the bit-reversed bytes, bit-reversed: C speed, no extra dependency.
    """
    reversed_data = bytes(data).translate(_REVERSED_BITS)
    return _reverse16(binascii.crc_hqx(reversed_data, 0xFFFF)) ^ 0xFFFF


# framing -------------------------------------------------------------------------------------


def stuff(body: bytes) -> bytes:
    """SLIP-escape ``body`` (no delimiters)."""
    return bytes(body).replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")


_UNESCAPE = {ESC_END: bytes((END,)), ESC_ESC: bytes((ESC,))}


def _unstuff(raw: bytes) -> bytes | None:
    """Unescape a frame's bytes; ``None`` when an escape is invalid (the slow path decides)."""
    head, *rest = raw.split(b"\xdb")
    if any(not part or part[0] not in _UNESCAPE for part in rest):
        return None
    return head + b"".join(_UNESCAPE[part[0]] + part[1:] for part in rest)


def encode_frame(op: int, seq: int, payload: bytes = b"") -> bytes:
    """A complete request frame on the wire: delimiters, escaping and CRC included."""
    body = bytes((op & 0xFF, seq & 0xFF)) + bytes(payload)
    return bytes((END,)) + stuff(body + struct.pack("<H", crc16(body))) + bytes((END,))


def encode_response(op: int, seq: int, status: int, payload: bytes = b"") -> bytes:
    """A complete response frame (what the unit sends; used by the simulated board)."""
    return encode_frame(op | RESPONSE, seq, bytes((status,)) + bytes(payload))


@dataclass(frozen=True)
class Frame:
    """One received frame after unstuffing. ``error`` is set when it cannot be trusted."""

    op: int
    seq: int
    payload: bytes
    error: Status | None = None
    crc: int = 0
    """The frame's last two bytes as received: with op and seq, what identifies a retry."""

    @property
    def is_response(self) -> bool:
        return bool(self.op & RESPONSE)

    @property
    def status(self) -> Status:
        """Status byte of a response frame."""
        if not self.payload:
            raise ProtocolError("response frame without a status byte")
        try:
            return Status(self.payload[0])
        except ValueError:
            raise ProtocolError(f"unknown status {self.payload[0]:#04x}") from None


class FrameDecoder:
    """Byte stream to frames, resynchronising on ``END`` after garbage (host and model side)."""

    def __init__(self, max_frame: int = 1 << 16) -> None:
        self.max_frame = max_frame
        self._raw = bytearray()  # the current frame's bytes as received (stuffed)
        self._buf = bytearray()
        self._escaped = False
        self._framing = False
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        """Every frame that ``data`` completes (a list, so that none is lost to a caller
        that stops at the first it wants)."""
        frames = []
        *complete, tail = bytes(data).split(b"\xc0")
        for segment in complete:
            raw = bytes(self._raw) + segment
            self._raw.clear()
            body = _unstuff(raw)
            if body is not None:  # the common case, at the speed of bytes methods
                self._buf[:] = body[: self.max_frame]
                self._overflow = len(body) > self.max_frame
            else:
                for b in raw:
                    self._byte(b)
            frame = self._finish()
            if frame is not None:
                frames.append(frame)
        self._raw += tail
        return frames

    def _byte(self, b: int) -> None:
        """One byte of a frame with an invalid escape: exactly what the gateware does."""
        if self._escaped:
            self._escaped = False
            if b == ESC_END:
                b = END
            elif b == ESC_ESC:
                b = ESC
            else:
                self._framing = True
        elif b == ESC:
            self._escaped = True
            return
        if len(self._buf) < self.max_frame:
            self._buf.append(b)
        else:
            self._overflow = True

    def _finish(self) -> Frame | None:
        """The frame that an ``END`` closes; errors in the order of precedence the unit uses."""
        body = bytes(self._buf)
        framing, overflow = self._framing or self._escaped, self._overflow
        self._buf.clear()
        self._escaped = self._framing = self._overflow = False
        if not body and not framing:
            return None  # back-to-back delimiters: nothing was sent
        op = body[0] if body else 0
        seq = body[1] if len(body) > 1 else 0
        crc = int.from_bytes(body[-2:], "little") if len(body) >= 2 else 0
        bad = None
        if framing:
            bad = Status.FRAMING
        elif overflow:
            bad = Status.OVERFLOW
        elif len(body) < 4:
            bad = Status.LENGTH
        elif crc16(body[:-2]) != crc:
            bad = Status.CRC
        return Frame(op, seq, body[2:-2] if bad is None else b"", bad, crc)


# payloads ------------------------------------------------------------------------------------


def address_bits(synapses: int) -> int:
    """Bits of a synapse address in the unit (at least 1): its memories, its update and event
    streams and the programming port's ``prog_addr``."""
    return max(1, (synapses - 1).bit_length())


@dataclass(frozen=True)
class Layout:
    """Sizes of one unit's payload fields: everything a frame's length is checked against."""

    contract: Contract
    synapses: int
    max_block: int = UNIT_MAX_BLOCK
    counter_width: int = UNIT_COUNTER_WIDTH

    def __post_init__(self) -> None:
        if not 1 <= self.synapses <= 1 << 24:
            raise ValueError(f"synapses must be 1 .. 2**24, got {self.synapses}")
        if not 1 <= self.max_block <= 4096:
            raise ValueError(f"max_block must be 1 .. 4096, got {self.max_block}")
        if not 1 <= self.counter_width <= 16:
            raise ValueError(f"counter_width must be 1 .. 16, got {self.counter_width}")
        if len(self.contract.levels) > 255:
            raise ValueError("at most 255 levels fit an event's level byte")

    @property
    def addr_bits(self) -> int:
        return address_bits(self.synapses)

    @property
    def hidden_bytes(self) -> int:
        return math.ceil(self.contract.hidden_width / 8)

    @property
    def update_bytes(self) -> int:
        return math.ceil(self.contract.update_width / 8)

    @property
    def lut_bytes(self) -> int:
        return 2

    EVENT_BYTES = 4
    """An event: block offset u16, old level u8, new level u8."""

    @property
    def receive_buffer(self) -> int:
        """Bytes of one receive bank: the longest request rounded up to a power of two."""
        return 1 << (self.max_request - 1).bit_length()

    @property
    def max_request(self) -> int:
        """Longest valid request body (op to CRC, unstuffed)."""
        payloads = (
            6,  # READ_HIDDEN, READ_COUNTERS
            4 + self.max_block * self.hidden_bytes,
            2 + self.contract.lut_entries * self.lut_bytes,
            12 + self.max_block * self.update_bytes,  # UPDATE_LAYER
            self.info_size(),
        )
        return 2 + max(payloads) + 2

    # request payloads ------------------------------------------------------------------------

    def span(self, start: int, count: int) -> bytes:
        """READ_HIDDEN and READ_COUNTERS: ``start`` u32, ``count`` u16."""
        return struct.pack("<IH", start, count)

    def write_hidden(self, start: int, values: Iterable[int]) -> bytes:
        return struct.pack("<I", start) + signed_bytes(values, self.hidden_bytes)

    def update(self, start: int, seed: int, d: Iterable[int]) -> bytes:
        return struct.pack("<II", start, seed) + signed_bytes(d, self.update_bytes)

    def update_layer(self, start: int, seed: int, origin: int, d: Iterable[int]) -> bytes:
        """UPDATE_LAYER: as UPDATE, the dither hashing ``address - origin`` (the first
        synapse of the block's layer), so that a layer rounds alike wherever it sits."""
        return struct.pack("<III", start, seed, origin) + signed_bytes(d, self.update_bytes)

    def load_lut(self, mstar: float, entries: Iterable[int] | None = None) -> bytes:
        """LOAD_LUT for ``m*``: the contract's table unless ``entries`` are given."""
        entries = self.contract.meta_lut(mstar) if entries is None else entries
        return struct.pack("<H", mstar_code(mstar)) + b"".join(
            struct.pack("<H", e) for e in entries
        )

    def info_size(self) -> int:
        return len(Info.from_layout(self, clock_hz=0, baud_divisor=0).pack())


@dataclass(frozen=True)
class Info:
    """The INFO response payload: the unit's parameters, so that a host can check them."""

    version: int
    synapses: int
    max_block: int
    hidden_width: int
    frac_bits: int
    guard_bits: int
    meta_bits: int
    lut_entries: int
    rounding: str
    counter_width: int
    clock_hz: int
    baud_divisor: int
    lut_mstar: float
    lut_crc: int
    level_ints: tuple[int, ...]
    recip_shift: int | None = None
    """The reciprocal table's shift (version 2; ``None`` from a version-1 unit)."""
    w_min: int | None = None
    """The clip range in the hidden format, from the float levels (version 2)."""
    w_max: int | None = None
    capabilities: Capability = Capability(0)

    _HEAD = struct.Struct("<BIHBBBBHBBIHHHB")
    _TAIL = struct.Struct("<BiiI")
    """After the levels (version 2): recip_shift u8, w_min i32, w_max i32, capabilities u32."""
    MSTAR_SCALE = 256
    """m* travels as an unsigned 8.8 fixed-point number."""

    # offsets of the two fields that change at run time (the rest is a constant ROM)
    LUT_MSTAR_OFFSET = 21
    LUT_CRC_OFFSET = 23

    @classmethod
    def from_layout(
        cls,
        layout: Layout,
        *,
        clock_hz: int,
        baud_divisor: int,
        lut_mstar: float = 0.0,
        lut: tuple[int, ...] | None = None,
        capabilities: Capability | None = None,
    ) -> Info:
        c = layout.contract
        lut = c.meta_lut(lut_mstar) if lut is None else lut
        return cls(
            version=PROTOCOL_VERSION,
            synapses=layout.synapses,
            max_block=layout.max_block,
            hidden_width=c.hidden_width,
            frac_bits=c.frac_bits,
            guard_bits=c.guard_bits,
            meta_bits=c.meta_bits,
            lut_entries=c.lut_entries,
            rounding=c.rounding,
            counter_width=layout.counter_width,
            clock_hz=clock_hz,
            baud_divisor=baud_divisor,
            lut_mstar=lut_mstar,
            lut_crc=lut_crc(lut),
            level_ints=c.level_ints,
            recip_shift=c.recip_shift,
            w_min=c.w_min,
            w_max=c.w_max,
            capabilities=capabilities or Capability(0),
        )

    def pack(self) -> bytes:
        head = self._HEAD.pack(
            self.version,
            self.synapses,
            self.max_block,
            self.hidden_width,
            self.frac_bits,
            self.guard_bits,
            self.meta_bits,
            self.lut_entries,
            1 if self.rounding == "stochastic" else 0,
            self.counter_width,
            self.clock_hz,
            self.baud_divisor,
            mstar_code(self.lut_mstar),
            self.lut_crc,
            len(self.level_ints),
        )
        levels = struct.pack(f"<{len(self.level_ints)}i", *self.level_ints)
        if self.version < 2:
            return head + levels
        tail = self._TAIL.pack(self.recip_shift, self.w_min, self.w_max, self.capabilities)
        return head + levels + tail

    @classmethod
    def unpack(cls, payload: bytes) -> Info:
        n = cls._HEAD.size
        if len(payload) < n:
            raise ProtocolError(f"INFO payload of {len(payload)} bytes, expected >= {n}")
        f = cls._HEAD.unpack_from(payload)
        levels = f[-1]
        tail = cls._TAIL.size if f[0] >= 2 else 0
        if len(payload) != n + 4 * levels + tail:
            raise ProtocolError(
                f"INFO payload of {len(payload)} bytes for {levels} levels (version {f[0]})"
            )
        shift, w_min, w_max, caps = (
            cls._TAIL.unpack_from(payload, n + 4 * levels) if tail else (None, None, None, 0)
        )
        return cls(
            version=f[0],
            synapses=f[1],
            max_block=f[2],
            hidden_width=f[3],
            frac_bits=f[4],
            guard_bits=f[5],
            meta_bits=f[6],
            lut_entries=f[7],
            rounding="stochastic" if f[8] else "nearest",
            counter_width=f[9],
            clock_hz=f[10],
            baud_divisor=f[11],
            lut_mstar=f[12] / cls.MSTAR_SCALE,
            lut_crc=f[13],
            level_ints=struct.unpack_from(f"<{levels}i", payload, n),
            recip_shift=shift,
            w_min=w_min,
            w_max=w_max,
            capabilities=Capability(caps),
        )

    def to_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["level_ints"] = list(self.level_ints)
        d["lut_crc"] = f"{self.lut_crc:04x}"
        d["capabilities"] = [c.name.lower() for c in Capability if c in self.capabilities]
        return d


assert Info._HEAD.size == Info.LUT_CRC_OFFSET + 3  # the offsets above follow the struct


def mstar_code(mstar: float) -> int:
    """m* as sent in LOAD_LUT and reported by INFO (unsigned 8.8)."""
    code = round(mstar * Info.MSTAR_SCALE)
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"m* {mstar} does not fit the 8.8 format")
    return code


def lut_crc(entries: Iterable[int]) -> int:
    """Identity of a loaded meta LUT: CRC-16 of its entries as sent (u16 little-endian).

    The gateware computes it itself while the LUT is loaded, so INFO reports what the unit
    really holds, not what the host claimed.
    """
    return crc16(b"".join(struct.pack("<H", e) for e in entries))


def signed_bytes(values: Iterable[int], width: int) -> bytes:
    """Two's-complement little-endian fields of ``width`` bytes (values must fit them)."""
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype="<i8")
    limit = 1 << (8 * width - 1)
    if arr.size and (arr.min() < -limit or arr.max() >= limit):
        raise ValueError(f"values do not fit {width}-byte signed fields")
    return arr.reshape(-1, 1).view(np.uint8)[:, :width].tobytes()


def unpack_signed(data: bytes, width: int) -> np.ndarray:
    """``width``-byte two's-complement little-endian fields to int64 (the inverse of
    :func:`signed_bytes`); a trailing partial field is ignored."""
    count = len(data) // width
    raw = np.frombuffer(data, dtype=np.uint8, count=count * width).reshape(count, width)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, :width] = raw
    values = padded.view("<i8").reshape(count)
    sign = np.int64(1) << (8 * width - 1)
    return (values ^ sign) - sign if width < 8 else values


def decode_events(payload: bytes) -> list[tuple[int, int, int]]:
    """UPDATE response payload (after the status byte) to ``(offset, old, new)`` triples."""
    if len(payload) < 2:
        raise ProtocolError("UPDATE response shorter than its event count")
    count = int.from_bytes(payload[:2], "little")
    if len(payload) != 2 + Layout.EVENT_BYTES * count:
        raise ProtocolError(f"UPDATE response of {len(payload)} bytes for {count} events")
    return [struct.unpack_from("<HBB", payload, 2 + 4 * i) for i in range(count)]


# the crossbar port (capability CROSSBAR) ----------------------------------------------------


@dataclass(frozen=True)
class XbarInfo:
    """XBAR_INFO's reply: the array behind the unit, what a host needs to use it."""

    tile_rows: int
    tile_cols: int
    tiles: int  # 0: as many as the layers need
    g_unit_code: int  # one weight unit's conductance in G_LSB codes
    model: str

    _HEAD = struct.Struct("<HHIIB")

    def pack(self) -> bytes:
        name = self.model.encode("ascii")
        head = self._HEAD.pack(self.tile_rows, self.tile_cols, self.tiles, self.g_unit_code,
                               len(name))  # fmt: skip
        return head + name

    @classmethod
    def unpack(cls, payload: bytes) -> XbarInfo:
        n = cls._HEAD.size
        if len(payload) < n or len(payload) != n + payload[n - 1]:
            raise ProtocolError(f"XBAR_INFO payload of {len(payload)} bytes")
        rows, cols, tiles, g_unit, _ = cls._HEAD.unpack_from(payload)
        return cls(rows, cols, tiles, g_unit, payload[n:].decode("ascii"))


def xbar_map(layer: int, base: int, shape: tuple[int, int], seed: int) -> bytes:
    """XBAR_MAP: synapses ``base ..`` as the ``out x in`` layer ``layer`` of the array, its
    devices' variability drawn from ``seed``."""
    return struct.pack("<BIHHI", layer, base, *shape, seed)


def xbar_layer(layer: int) -> bytes:
    """XBAR_LATCH's payload."""
    return struct.pack("<B", layer)


def xbar_mvm(layer: int, transposed: bool, tile: tuple[int, int], codes: Iterable[int]) -> bytes:
    """XBAR_MVM: input codes (i16) on one tile's rows (or columns)."""
    head = struct.pack("<BBHH", layer, int(transposed), *tile)
    return head + signed_bytes(codes, 2)


def xbar_span(layer: int, start: int, count: int) -> bytes:
    """XBAR_READ and XBAR_COUNTERS: devices ``start ..`` of the layer's array, row by row."""
    return struct.pack("<BIH", layer, start, count)


def xbar_verify(layer: int, tolerance_code: int, iterations: int) -> bytes:
    """XBAR_VERIFY: a tolerance in G_LSB codes, an iteration limit."""
    return struct.pack("<BIB", layer, tolerance_code, iterations)
