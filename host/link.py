"""The host's side of the link: commands to a digital unit over a serial port.

Works with anything pyserial opens: a board's ``/dev/ttyUSB*``, the simulated board's pty,
``socket://host:port``. Every command waits for its response; a timeout, a corrupted reply or
an error that says the frame was damaged on the way (CRC, FRAMING, LENGTH, OVERFLOW) resends
the same bytes with the same sequence number, which the unit applies at most once
(``docs/protocol.md``). Garbage on the line is skipped by the frame decoder.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import serial

from metaplast.contract import Contract
from metaplast.protocol import (
    RESPONSE,
    RETRY_DEPTH,
    Capability,
    Frame,
    FrameDecoder,
    Info,
    Layout,
    Op,
    Status,
    XbarInfo,
    decode_events,
    encode_frame,
    lut_crc,
    mstar_code,
    xbar_layer,
    xbar_map,
    xbar_mvm,
    xbar_span,
    xbar_verify,
)
from metaplast.vocabulary import PROBE_BAUDS, UNIT_BAUD

__all__ = ["Link", "LinkError", "LinkStats"]

# statuses that mean "the frame was damaged on the way": resending the same bytes may work
_TRANSIENT = {Status.CRC, Status.FRAMING, Status.LENGTH, Status.OVERFLOW}

SUPPORTED_VERSIONS = (1, 2)
"""Protocol versions this host speaks: version 2 only adds to INFO what version 1 left out."""


class LinkError(Exception):
    """The unit did not answer, answered with an error, or is not the unit we expect."""


@dataclass
class LinkStats:
    commands: int = 0
    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)

    def plus(self, other: LinkStats) -> LinkStats:
        """Both counts together (a run resumed over several invocations)."""
        reasons = dict(self.retry_reasons)
        for k, v in other.retry_reasons.items():
            reasons[k] = reasons.get(k, 0) + v
        return LinkStats(
            self.commands + other.commands,
            self.retries + other.retries,
            self.bytes_sent + other.bytes_sent,
            self.bytes_received + other.bytes_received,
            reasons,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "commands": self.commands,
            "retries": self.retries,
            "retry_reasons": dict(self.retry_reasons),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


class Link:
    """One digital unit behind a serial port."""

    def __init__(self, port: serial.SerialBase, *, name: str = "", retries: int = 20) -> None:
        """``retries``: resends of one command before giving up. A 780-byte frame on a line
        with a byte error rate of 1e-3 arrives intact less than half the time: hence 20."""
        self.port = port
        self.name = name or str(getattr(port, "port", port))
        self.retries = retries
        self.decoder = FrameDecoder()
        self._frames: deque[Frame] = deque()
        self.stats = LinkStats()
        self._seq = 0
        self.info: Info | None = None
        self.layout: Layout | None = None

    @classmethod
    def open(
        cls, url: str, *, baudrate: int | None = UNIT_BAUD, timeout: float = 1.0, **kw: Any
    ) -> Link:
        """``baudrate`` None: the rate the board answers at (:meth:`find_baudrate`)."""
        try:
            port = serial.serial_for_url(url, baudrate=baudrate or PROBE_BAUDS[0], timeout=timeout)
        except (serial.SerialException, ValueError) as exc:
            raise LinkError(f"cannot open {url}: {exc}") from exc
        link = cls(port, name=url, **kw)
        if baudrate is None:
            try:
                link.find_baudrate()
            except BaseException:
                link.close()
                raise
        return link

    def find_baudrate(self, rates: Sequence[int] = PROBE_BAUDS, *, wait: float = 0.25) -> Info:
        """Try ``rates`` in turn until the unit answers INFO, then keep the rate INFO reports.

        At a wrong rate each side hears garbage, which both frame decoders skip (and the unit
        remembers nothing of it); a pty or a socket carries any rate, so the unit's own rate,
        from INFO, is the one kept. ``wait``: seconds of silence that end one attempt. The
        probes are not part of :attr:`stats`.
        """
        timeout, retries = self.port.timeout, self.retries
        self.port.timeout, self.retries = wait, 1
        info = None
        try:
            for rate in rates:
                self.port.baudrate = rate
                self.port.reset_input_buffer()
                self.decoder, self._frames = FrameDecoder(), deque()
                try:
                    info = self.read_info()
                    break
                except LinkError:
                    continue
        except serial.SerialException as exc:
            raise LinkError(f"{self.name}: the port failed ({exc})") from exc
        finally:
            self.port.timeout, self.retries = timeout, retries
        if info is None:  # every rate tried
            raise LinkError(
                f"{self.name}: no unit answered INFO at any of "
                f"{', '.join(str(r) for r in rates)} baud; is the board connected and running "
                "(or at another rate: give it with --baudrate)?"
            )
        own = info.clock_hz / info.baud_divisor if info.baud_divisor else 0
        if own and abs(own - rate) > rate / 100:  # a line that carries any rate: the unit's own
            self.port.baudrate = round(own)
        self.stats = LinkStats()
        return info

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # commands in flight ------------------------------------------------------------------

    def command(self, op: Op, payload: bytes = b"") -> bytes:
        """Send ``op`` and return its response payload (after the OK status byte)."""
        return self.pipeline(op, [payload])[0]

    def pipeline(self, op: Op, payloads: Iterable[bytes], window: int = 1) -> list[bytes]:
        """Send one ``op`` per payload with up to ``window`` frames in flight; their replies,
        in the payloads' order. ``payloads`` is consumed as frames go out, so a lazy one lets
        the first frame leave before the last is encoded.

        After a timeout, a damaged reply, or a reply saying a request arrived damaged, the
        oldest frame in flight is resent as it was (the others when their turn comes): the
        unit recognises the last :data:`~metaplast.protocol.RETRY_DEPTH` commands and answers
        them again without applying them. Frames can then be applied out of order, so a
        window above 1 is only for commands that commute (update blocks on distinct
        synapses).
        """
        if not 1 <= window <= RETRY_DEPTH:
            raise ValueError(f"window must be 1 .. {RETRY_DEPTH}, got {window}")
        results: list[bytes | None] = []
        inflight: dict[int, tuple[int, bytes]] = {}  # seq -> (index, frame), oldest first
        attempts = 0
        pending = iter(payloads)
        more = True
        try:
            while more or inflight:
                while more and len(inflight) < window:
                    payload = next(pending, None)
                    if payload is None:
                        more = False
                        break
                    self._seq = (self._seq + 1) & 0xFF
                    frame = encode_frame(op, self._seq, payload)
                    inflight[self._seq] = (len(results), frame)
                    results.append(None)
                    self.stats.commands += 1
                    self._send(frame)
                if not inflight:
                    break
                reply = self._await(op, inflight)
                if reply is not None and reply.error is None and reply.seq in inflight:
                    status = reply.status
                    if status == Status.OK and reply.op == op | RESPONSE:
                        index, _ = inflight.pop(reply.seq)
                        results[index] = reply.payload[1:]
                        attempts = 0
                        continue
                    if status not in _TRANSIENT:
                        raise LinkError(
                            f"{self.name}: {op.name} rejected with status {status.name}"
                        )
                self._note(
                    "timeout"
                    if reply is None
                    else "damaged reply"
                    if reply.error is not None
                    else reply.status.name
                )
                attempts += 1
                if attempts > self.retries:
                    raise LinkError(
                        f"{self.name}: no valid response to {op.name} after {attempts} "
                        f"attempts ({self.stats.retry_reasons}); is the board connected and "
                        f"running, at {self.port.baudrate} baud?"
                    )
                # one resend per error, of the oldest frame: the replies to the others may
                # still be on their way, and resending them all on every error would flood
                # a noisy line. The rest of the call goes one frame at a time.
                window = 1
                self.stats.retries += 1
                self._send(next(iter(inflight.values()))[1])
        except serial.SerialException as exc:
            raise LinkError(f"{self.name}: the port failed ({exc})") from exc
        return results  # type: ignore[return-value]

    def _send(self, frame: bytes) -> None:
        self.port.write(frame)
        self.stats.bytes_sent += len(frame)

    def _note(self, reason: str) -> None:
        self.stats.retry_reasons[reason] = self.stats.retry_reasons.get(reason, 0) + 1

    def _await(self, op: Op, seqs: Container[int]) -> Frame | None:
        """A reply to a frame in flight, a damaged frame, a transient error, or None.

        Gives up after a silent ``timeout``, or after ten of them of bytes that make no
        answer (a line full of noise).
        """
        deadline = time.monotonic() + 10 * (self.port.timeout or 1.0)
        while True:
            while self._frames:  # one read can bring several replies: keep them all
                frame = self._frames.popleft()
                if frame.error is not None:
                    return frame  # most likely a reply of ours, damaged: resending is safe
                if frame.op == op | RESPONSE and frame.seq in seqs and frame.payload:
                    return frame
                if frame.op & RESPONSE and frame.payload and frame.payload[0] in _TRANSIENT:
                    return frame  # a request (or line noise) arrived damaged: resend now
            if time.monotonic() > deadline:
                return None
            data = self.port.read(max(1, self.port.in_waiting))
            if not data:
                return None
            self.stats.bytes_received += len(data)
            self._frames.extend(self.decoder.feed(data))

    # the commands --------------------------------------------------------------------------

    def read_info(self) -> Info:
        self.info = Info.unpack(self.command(Op.INFO))
        return self.info

    def attach(self, contract: Contract, synapses: int | None = None) -> Info:
        """INFO, checked against the contract the session trains with, before any write."""
        info = self.read_info()
        mine = Info.from_layout(
            Layout(contract, info.synapses, max_block=info.max_block),
            clock_hz=info.clock_hz,
            baud_divisor=info.baud_divisor,
        )
        fields = ("hidden_width", "frac_bits", "guard_bits", "meta_bits")
        fields += ("lut_entries", "rounding", "level_ints")
        if info.version >= 2:  # a version-1 unit does not report its derived integers
            fields += ("recip_shift", "w_min", "w_max")
        wrong = [f for f in fields if getattr(info, f) != getattr(mine, f)]
        if info.version not in SUPPORTED_VERSIONS:
            wrong.insert(0, f"protocol version {info.version} (this host speaks "
                            f"{', '.join(map(str, SUPPORTED_VERSIONS))})")  # fmt: skip
        if synapses is not None and info.synapses < synapses:
            wrong.append(f"synapses ({info.synapses} < {synapses} needed)")
        if wrong:
            raise LinkError(
                f"{self.name}: the unit does not match this session's numeric contract: "
                + ", ".join(wrong)
            )
        self.layout = Layout(
            contract, info.synapses, max_block=info.max_block, counter_width=info.counter_width
        )
        return info

    def require(self, capability: Capability, purpose: str) -> None:
        """Refuse, naming the port and the capability, what a board without it cannot do."""
        info = self.info or self.read_info()
        if capability not in info.capabilities:
            have = [c.name.lower() for c in Capability if c in info.capabilities]
            raise LinkError(
                f"{self.name}: {purpose} needs a board with the {capability.name.lower()} "
                f"capability; this board (protocol version {info.version}) has "
                f"{', '.join(have) or 'none'}"
            )

    def _layout(self) -> Layout:
        if self.layout is None:
            raise LinkError("call attach() first: the unit's parameters are not known yet")
        return self.layout

    def _blocks(self, start: int, count: int) -> Iterable[tuple[int, int]]:
        step = self._layout().max_block
        for s in range(start, start + count, step):
            yield s, min(step, start + count - s)

    def read_hidden(self, start: int, count: int) -> list[int]:
        size = self._layout().hidden_bytes
        out: list[int] = []
        for s, n in self._blocks(start, count):
            data = self.command(Op.READ_HIDDEN, self._layout().span(s, n))
            out += [
                int.from_bytes(data[i : i + size], "little", signed=True)
                for i in range(0, len(data), size)
            ]
        return out

    def write_hidden(self, start: int, values: list[int]) -> None:
        for s, n in self._blocks(start, len(values)):
            self.command(Op.WRITE_HIDDEN, self._layout().write_hidden(s, values[s - start :][:n]))

    def read_counters(self, start: int, count: int) -> list[int]:
        out: list[int] = []
        for s, n in self._blocks(start, count):
            data = self.command(Op.READ_COUNTERS, self._layout().span(s, n))
            out += list(struct.unpack(f"<{n}H", data))
        return out

    def load_lut(self, mstar: float) -> None:
        """Load the contract's table for ``m*`` and check the identity the unit reports."""
        layout = self._layout()
        self.command(Op.LOAD_LUT, layout.load_lut(mstar))
        info = self.read_info()
        table = layout.contract.meta_lut(mstar)
        if info.lut_crc != lut_crc(table) or mstar_code(info.lut_mstar) != mstar_code(mstar):
            raise LinkError(f"{self.name}: the LUT for m* = {mstar} did not load correctly")

    def update(self, start: int, seed: int, d: Sequence[int]) -> list[tuple[int, int, int]]:
        """One UPDATE block; its level-change events as ``(address, old, new)``."""
        return self.update_blocks([(start, seed, d)])

    def update_blocks(
        self, blocks: Sequence[tuple[int, int, Sequence[int]]], *, origin: int | None = None
    ) -> list[tuple[int, int, int]]:
        """UPDATE blocks ``(start, seed, d)`` on distinct synapses, two frames in flight so
        that the line never waits for the host; all their level-change events. With
        ``origin`` (a unit of protocol version 2), UPDATE_LAYER: the dither hashes each
        synapse's address minus ``origin``, so a layer rounds alike wherever it sits."""
        layout = self._layout()
        if origin is None:
            op, payloads = Op.UPDATE, (layout.update(*b) for b in blocks)
        else:
            if self.info is None or self.info.version < 2:
                raise LinkError(f"{self.name}: a protocol-version-1 unit has no UPDATE_LAYER")
            op = Op.UPDATE_LAYER
            payloads = (layout.update_layer(s, seed, origin, d) for s, seed, d in blocks)
        replies = self.pipeline(op, payloads, window=RETRY_DEPTH)
        return [
            (start + off, old, new)
            for (start, _, _), reply in zip(blocks, replies, strict=True)
            for off, old, new in decode_events(reply)
        ]

    def reset(self) -> None:
        self.command(Op.RESET)

    # the crossbar port (capability CROSSBAR) -----------------------------------------------

    def xbar_info(self) -> XbarInfo:
        return XbarInfo.unpack(self.command(Op.XBAR_INFO))

    def xbar_map(self, layer: int, base: int, shape: tuple[int, int], seed: int) -> int:
        """Map synapses ``base ..`` onto the array as layer ``layer``; the tiles it takes."""
        return int.from_bytes(
            self.command(Op.XBAR_MAP, xbar_map(layer, base, shape, seed)), "little"
        )

    def xbar_latch(self, layer: int) -> None:
        self.command(Op.XBAR_LATCH, xbar_layer(layer))

    def xbar_mvm(
        self, layer: int, transposed: bool, tiles: Sequence[tuple[tuple[int, int], Sequence[int]]]
    ) -> list[np.ndarray]:
        """Integer currents (int64) of each ``(tile, input codes)``, two frames in flight (the
        products do not change the array: they commute)."""
        payloads = (xbar_mvm(layer, transposed, tile, codes) for tile, codes in tiles)
        replies = self.pipeline(Op.XBAR_MVM, payloads, window=RETRY_DEPTH)
        return [np.frombuffer(r, dtype="<i8") for r in replies]

    def xbar_read(self, layer: int, start: int, count: int) -> np.ndarray:
        """Conductance codes of devices ``start ..`` as the last latch read them."""
        return self._xbar_span(Op.XBAR_READ, layer, start, count)

    def xbar_counters(self, layer: int, start: int, count: int) -> np.ndarray:
        """Programming operations of devices ``start ..``."""
        return self._xbar_span(Op.XBAR_COUNTERS, layer, start, count)

    def _xbar_span(self, op: Op, layer: int, start: int, count: int) -> np.ndarray:
        step = self._layout().max_block
        spans = range(start, start + count, step)
        payloads = (xbar_span(layer, s, min(step, start + count - s)) for s in spans)
        replies = self.pipeline(op, payloads, window=RETRY_DEPTH)
        return np.concatenate([np.frombuffer(r, dtype="<u4") for r in replies]).astype(np.int64)

    def xbar_verify(self, layer: int, tolerance_code: int, iterations: int) -> tuple[int, int]:
        """Program-and-verify one layer; the devices still outside, and the operations."""
        reply = self.command(Op.XBAR_VERIFY, xbar_verify(layer, tolerance_code, iterations))
        remaining, operations = struct.unpack("<II", reply)
        return remaining, operations
