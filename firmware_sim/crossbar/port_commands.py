"""The crossbar port's command channel in simulation: an XBAR request's op and payload in, its
status and response payload out, served by an :class:`~.driver.ArrayDriver`.

The model board (:class:`~metaplast.firmware_sim.unit.command_model.CommandModel`) and the RTL
board's testbench (``firmware_sim/board/rtl_board.py``) both answer the command channel with
this one parser, so the two boards' arrays cannot disagree on a request's checks or bytes. It
is what a lab's driver behind the port implements (``docs/bench.md``); the unit itself only
forwards the bytes, and checks nothing but the frame.
"""

from __future__ import annotations

import struct

import torch

from metaplast.firmware_sim.crossbar.driver import ArrayDriver, DriverError
from metaplast.firmware_sim.crossbar.periphery import G_LSB
from metaplast.protocol import Op, Status, XbarInfo, unpack_signed

__all__ = ["MapRequest", "PortCommands"]

_DRIVER_STATUS = {
    "range": Status.RANGE,
    "length": Status.LENGTH,
    "value": Status.VALUE,
    "stale": Status.STALE,
}


class _Reject(Exception):
    def __init__(self, status: Status) -> None:
        self.status = status


class MapRequest:
    """The fields of an XBAR_MAP payload (``layer`` u8, ``base`` u32, ``out`` u16, ``in`` u16,
    ``seed`` u32): after an OK map the unit sweeps synapses ``base .. base + out * in - 1``."""

    FORMAT = "<BIHHI"
    SIZE = struct.calcsize(FORMAT)

    def __init__(self, payload: bytes) -> None:
        self.layer, self.base, self.n_out, self.n_in, self.seed = struct.unpack(
            self.FORMAT, payload
        )

    @property
    def span(self) -> range:
        return range(self.base, self.base + self.n_out * self.n_in)


class PortCommands:
    """Answers the crossbar ops for a unit of ``synapses`` synapses and READ blocks up to
    ``max_block``, with ``driver``'s array.

    Parameters
    ----------
    driver : ArrayDriver
        The array; its device operations arrive separately (:meth:`ArrayDriver.device_operation`).
    synapses : int
        The unit's synapse count (XBAR_MAP's RANGE).
    max_block : int
        The unit's largest block (XBAR_READ's and XBAR_COUNTERS' LENGTH).
    """

    def __init__(self, driver: ArrayDriver, *, synapses: int, max_block: int) -> None:
        self.driver = driver
        self.synapses = synapses
        self.max_block = max_block

    def answer(self, op: Op, payload: bytes) -> tuple[Status, bytes]:
        """The status and response payload of one request (nothing changed unless OK)."""
        try:
            return Status.OK, getattr(self, f"_{op.name.lower()}")(payload)
        except _Reject as reject:
            return reject.status, b""
        except DriverError as error:
            return _DRIVER_STATUS[error.kind], b""

    def _xbar_info(self, payload: bytes) -> bytes:
        if payload:
            raise _Reject(Status.LENGTH)
        device = self.driver.device
        geo = device.array
        info = XbarInfo(geo.tile_rows, geo.tile_cols, geo.tiles or 0, self.driver.g_unit_code,
                        device.kind)  # fmt: skip
        return info.pack()

    def _xbar_map(self, payload: bytes) -> bytes:
        if len(payload) != MapRequest.SIZE:
            raise _Reject(Status.LENGTH)
        req = MapRequest(payload)
        if req.span.stop > self.synapses:
            raise _Reject(Status.RANGE)
        tiles = self.driver.map_layer(req.layer, req.base, (req.n_out, req.n_in), req.seed)
        return struct.pack("<H", tiles)

    def _xbar_latch(self, payload: bytes) -> bytes:
        if len(payload) != 1:
            raise _Reject(Status.LENGTH)
        self.driver.latch(payload[0])
        return b""

    def _xbar_mvm(self, payload: bytes) -> bytes:
        if len(payload) < 6 or len(payload) % 2:
            raise _Reject(Status.LENGTH)
        layer, transposed, tile_row, tile_col = struct.unpack_from("<BBHH", payload)
        if transposed > 1:
            raise _Reject(Status.VALUE)
        codes = torch.from_numpy(unpack_signed(payload[6:], 2))
        out = self.driver.mvm(layer, bool(transposed), (tile_row, tile_col), codes)
        return struct.pack(f"<{out.numel()}q", *out.tolist())

    def _span(self, payload: bytes) -> tuple[int, int, int]:
        if len(payload) != 7:
            raise _Reject(Status.LENGTH)
        layer, start, count = struct.unpack("<BIH", payload)
        if not 1 <= count <= self.max_block:
            raise _Reject(Status.LENGTH)
        return layer, start, count

    def _xbar_read(self, payload: bytes) -> bytes:
        codes = self.driver.read(*self._span(payload))
        return struct.pack(f"<{codes.numel()}I", *codes.tolist())

    def _xbar_counters(self, payload: bytes) -> bytes:
        counts = self.driver.counters(*self._span(payload))
        return struct.pack(f"<{counts.numel()}I", *counts.tolist())

    def _xbar_verify(self, payload: bytes) -> bytes:
        if len(payload) != 6:
            raise _Reject(Status.LENGTH)
        layer, tolerance, iterations = struct.unpack("<BIB", payload)
        remaining, operations = self.driver.verify(layer, tolerance * G_LSB, iterations)
        return struct.pack("<II", remaining, operations)
