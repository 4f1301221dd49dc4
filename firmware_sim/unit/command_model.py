"""The command engine's behaviour over the bit-exact digital unit: bytes in, bytes out.

It answers every frame exactly as the gateware does (same checks in the same order, same
status codes, same retry rule, same response bytes), so the simulated board can stand in for
the FPGA, and the gateware tests compare the RTL with it byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
import torch

from metaplast.firmware_sim.crossbar.driver import ArrayDriver
from metaplast.firmware_sim.crossbar.port_commands import MapRequest, PortCommands
from metaplast.protocol import (
    MUTATING,
    RETRY_DEPTH,
    Capability,
    Frame,
    FrameDecoder,
    Info,
    Layout,
    Op,
    Status,
    encode_response,
    mstar_code,
    signed_bytes,
    unpack_signed,
)
from metaplast.vocabulary import UNIT_CLOCK_HZ

from .digital_unit import DigitalUnit

__all__ = ["CommandModel"]


class _Reject(Exception):
    def __init__(self, status: Status) -> None:
        self.status = status


class CommandModel:
    """A digital unit that speaks the protocol: :meth:`feed` wire bytes, get the replies."""

    def __init__(
        self,
        layout: Layout,
        *,
        clock_hz: int = UNIT_CLOCK_HZ,
        baud_divisor: int = 16,
        program: Callable[[int, int, int], None] | None = None,
        array: ArrayDriver | None = None,
    ) -> None:
        """``program(address, device, level)`` is called for every operation that the
        gateware's programming port would strobe, in the same order. ``array``: the array
        behind the crossbar port (INFO then reports the capability, and the XBAR ops run)."""
        self.program = program
        self.array = array
        self.layout = layout
        self.clock_hz = clock_hz
        self.baud_divisor = baud_divisor
        self.unit = DigitalUnit(layout.contract, layout.synapses)
        self.port = (
            PortCommands(array, synapses=layout.synapses, max_block=layout.max_block)
            if array is not None
            else None
        )
        # a unit with an array takes an XBAR_MVM of a whole tile in one receive bank
        longest = max(layout.max_request, array.max_request if array else 0)
        self.decoder = FrameDecoder(max_frame=1 << (longest - 1).bit_length())
        self.lut_mstar = 0
        # the last RETRY_DEPTH state-changing commands and their replies, newest first
        self._last: list[tuple[tuple[int, int, int], bytes]] = []

    def feed(self, data: bytes) -> bytes:
        return b"".join(self.handle(frame) for frame in self.decoder.feed(data))

    def info(self) -> Info:
        return Info.from_layout(
            self.layout,
            clock_hz=self.clock_hz,
            baud_divisor=self.baud_divisor,
            lut_mstar=self.lut_mstar / Info.MSTAR_SCALE,
            lut=self.unit.lut,
            capabilities=Capability.CROSSBAR if self.array else None,
        )

    def handle(self, frame: Frame) -> bytes:
        """The reply to one received frame (state changes only for a valid one)."""
        if frame.error is not None:
            return encode_response(frame.op, frame.seq, frame.error)
        try:
            op = Op(frame.op)
        except ValueError:
            return encode_response(frame.op, frame.seq, Status.OPCODE)
        key = (frame.op, frame.seq, frame.crc)
        if op in MUTATING:
            for known, stored in self._last:
                if known == key:
                    return stored
        if op.name.startswith("XBAR_") and self.array is None:
            return encode_response(frame.op, frame.seq, Status.OPCODE)
        try:
            if op.name.startswith("XBAR_"):
                payload = self._xbar(op, frame.payload)
            else:
                payload = getattr(self, f"_{op.name.lower()}")(frame.payload)
        except _Reject as reject:
            return encode_response(frame.op, frame.seq, reject.status)
        reply = encode_response(frame.op, frame.seq, Status.OK, payload)
        if op in MUTATING:
            self._last = [(key, reply), *self._last][:RETRY_DEPTH]
        return reply

    # checks, in the gateware's order ----------------------------------------------------------

    def _elements(self, body: bytes, size: int, *, signed: bool) -> np.ndarray:
        values = unpack_signed(body, size)
        return values if signed else values & ((1 << (8 * size)) - 1)

    def _block(
        self,
        start: int,
        values: np.ndarray,
        trailing: int,
        bad: bool,
        *,
        origin_after_start: bool = False,
    ) -> None:
        """LENGTH, then RANGE (the block beyond the memory, or an UPDATE_LAYER's origin after
        its start), then VALUE, as the gateware's verdict after its first pass."""
        if trailing or not 1 <= len(values) <= self.layout.max_block:
            raise _Reject(Status.LENGTH)
        if start + len(values) > self.layout.synapses or origin_after_start:
            raise _Reject(Status.RANGE)
        if bad:
            raise _Reject(Status.VALUE)

    def _span(self, payload: bytes) -> tuple[int, int]:
        if len(payload) != 6:
            raise _Reject(Status.LENGTH)
        start, count = struct.unpack("<IH", payload)
        if not 1 <= count <= self.layout.max_block:
            raise _Reject(Status.LENGTH)
        if start + count > self.layout.synapses:
            raise _Reject(Status.RANGE)
        return start, count

    # ops --------------------------------------------------------------------------------------

    def _info(self, payload: bytes) -> bytes:
        if payload:
            raise _Reject(Status.LENGTH)
        return self.info().pack()

    def _read_hidden(self, payload: bytes) -> bytes:
        start, count = self._span(payload)
        return signed_bytes(self.unit.read(start, count).tolist(), self.layout.hidden_bytes)

    def _read_counters(self, payload: bytes) -> bytes:
        start, count = self._span(payload)
        limit = (1 << self.layout.counter_width) - 1
        counts = self.unit.change_count[start : start + count].clamp(max=limit)
        return b"".join(struct.pack("<H", v) for v in counts.tolist())

    def _write_hidden(self, payload: bytes) -> bytes:
        if len(payload) < 4:
            raise _Reject(Status.LENGTH)
        c, size = self.layout.contract, self.layout.hidden_bytes
        start = struct.unpack_from("<I", payload)[0]
        values = self._elements(payload[4:], size, signed=True)
        bad = bool(((values < c.w_min) | (values > c.w_max)).any())
        self._block(start, values, (len(payload) - 4) % size, bad)
        self.unit.write(start, torch.from_numpy(values))
        return b""

    def _update(self, payload: bytes) -> bytes:
        if len(payload) < 8:
            raise _Reject(Status.LENGTH)
        start, seed = struct.unpack_from("<II", payload)
        return self._apply_updates(start, seed, 0, payload[8:])

    def _update_layer(self, payload: bytes) -> bytes:
        if len(payload) < 12:
            raise _Reject(Status.LENGTH)
        start, seed, origin = struct.unpack_from("<III", payload)
        return self._apply_updates(start, seed, origin, payload[12:])

    def _apply_updates(self, start: int, seed: int, origin: int, body: bytes) -> bytes:
        """UPDATE's and UPDATE_LAYER's checks, application and events; the dither hashes
        ``address - origin`` (UPDATE: the address itself)."""
        c, size = self.layout.contract, self.layout.update_bytes
        values = self._elements(body, size, signed=True)
        limit = 1 << (c.update_width - 1)
        bad = bool(((values < -limit) | (values >= limit)).any())
        self._block(start, values, len(body) % size, bad, origin_after_start=origin > start)
        changes = self.unit.update(torch.from_numpy(values), start=start, seed=seed, origin=origin)
        for addr, old, new in zip(*(t.tolist() for t in changes), strict=True):
            for device, level in c.device_operations(old, new):
                self._emit(addr, device, level)
        events = zip(
            (changes.address - start).tolist(),
            changes.old_level.tolist(),
            changes.new_level.tolist(),
            strict=True,
        )
        return struct.pack("<H", len(changes)) + b"".join(struct.pack("<HBB", *e) for e in events)

    def _load_lut(self, payload: bytes) -> bytes:
        c = self.layout.contract
        if len(payload) != 2 + self.layout.lut_bytes * c.lut_entries:
            raise _Reject(Status.LENGTH)
        mstar = struct.unpack_from("<H", payload)[0]
        entries = self._elements(payload[2:], self.layout.lut_bytes, signed=False)
        if bool((entries > c.meta_one).any()):
            raise _Reject(Status.VALUE)
        self.unit.load_table(entries.tolist(), mstar / Info.MSTAR_SCALE)
        self.lut_mstar = mstar
        return b""

    def _reset(self, payload: bytes) -> bytes:
        if payload:
            raise _Reject(Status.LENGTH)
        self.unit.reset()
        self.lut_mstar = mstar_code(0.0)
        return b""

    # the crossbar port ------------------------------------------------------------------------

    def _emit(self, address: int, device: int, level: int) -> None:
        """One operation of the programming port: to the board's wiring and to its array."""
        if self.program is not None:
            self.program(address, device, level)
        if self.array is not None:
            self.array.device_operation(address, device, level)

    def _xbar(self, op: Op, payload: bytes) -> bytes:
        """The command channel's answer. After an OK XBAR_MAP the unit sweeps the layer and
        sends, for every synapse off the zero level, the operations from that level to its own
        (the driver maps a layer at the zero level: it cannot see the hidden weights)."""
        assert self.port is not None
        status, answer = self.port.answer(op, payload)
        if status != Status.OK:
            raise _Reject(status)
        if op == Op.XBAR_MAP:
            c = self.layout.contract
            span = MapRequest(payload).span
            levels = self.unit.levels()[span.start : span.stop].tolist()
            for addr, level in zip(span, levels, strict=True):
                for device, target in c.device_operations(c.zero_level, level):
                    self._emit(addr, device, target)
        return answer
