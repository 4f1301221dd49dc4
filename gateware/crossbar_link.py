"""The crossbar port's command channel on two wires: a serial link to a driver off the FPGA.

A lab's array driver (a microcontroller, or a second FPGA board with the DAC, ADC and pulse
hardware) is wired to the board's ``xbar_tx`` and ``xbar_rx`` pins: an 8N1 UART, each crossbar
request and reply one frame in the host link's escape framing (``docs/protocol.md``), so the
channel's ``last`` survives the byte stream and every frame is checked by its CRC:

- request (unit to driver): ``op, seq, payload`` framed as the host frames a request;
- reply (driver to unit): ``op | 0x80, seq, status, payload`` framed as the unit frames a
  response (``metaplast.protocol.encode_response``).

``seq`` counts the link's requests (mod 256), so a reply that comes after its request was
given up is recognised and dropped. The components are the host link's own: the UART
(:mod:`.uart`), :class:`~.framing.FrameSender` for requests and :class:`~.framing.FrameReceiver`
for replies. A reply is held whole before its first byte reaches the unit, so a reply damaged
on the wires is never relayed as data: the unit answers it (and a reply that does not come
within ``timeout`` cycles) with a transient status the host resends on.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from metaplast.protocol import RESPONSE, Status, XbarInfo

from .crossbar_port import CrossbarPort
from .framing import FrameReceiver, FrameSender
from .uart import UARTRx, UARTTx

__all__ = ["CrossbarLink", "longest_reply"]

_CRC_BYTES = 2
_HEAD = 2  # op and seq
_LONGEST_INFO = len(XbarInfo(0, 0, 0, 0, "x" * 255).pack())
_MVM_OUTPUT = 8  # i64 per output
_SPAN_ELEMENT = 4  # u32 per device (XBAR_READ, XBAR_COUNTERS)
_VERIFY = 8


def longest_reply(tile: int, max_block: int) -> int:
    """The longest reply (status and payload) a driver gives a unit of blocks up to
    ``max_block`` over tiles of at most ``tile`` rows or columns: an XBAR_MVM of a whole tile,
    an XBAR_READ of a whole block, or an XBAR_INFO with the longest model name."""
    return 1 + max(_MVM_OUTPUT * tile, _SPAN_ELEMENT * max_block, _LONGEST_INFO, _VERIFY)


class CrossbarLink(wiring.Component):
    """The driver's side of the crossbar port, carried to a driver off the FPGA on a UART.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit of the link's UART (both directions).
    max_reply : int
        Longest reply (status and payload) the receiver must hold (:func:`longest_reply`); its
        banks hold the next power of two of this plus 4 (op, seq, CRC), and a longer reply is
        answered OVERFLOW.
    timeout : int
        Clock cycles to wait for a reply after a request's last byte; then the unit answers CRC.

    Members
    -------
    port : ``In(CrossbarPort.Signature())``
        The unit's command channel (connect the unit's ``xbar`` to it).
    tx : ``Out(1, init=1)``
        To the driver's serial input (idle high).
    rx : ``In(1, init=1)``
        From the driver's serial output.
    """

    def __init__(self, *, divisor: int, max_reply: int, timeout: int) -> None:
        if max_reply < 1:
            raise ValueError(f"max_reply must be at least 1 (the status), not {max_reply}")
        if timeout < 1:
            raise ValueError(f"timeout must be at least 1 cycle, not {timeout}")
        self.divisor = divisor
        self.max_reply = max_reply
        self.timeout = timeout
        self.uart_rx = UARTRx(divisor)
        self.uart_tx = UARTTx(divisor)
        self.sender = FrameSender()
        self.receiver = FrameReceiver(_HEAD + max_reply + _CRC_BYTES)
        super().__init__(
            {
                "port": In(CrossbarPort.Signature()),
                "tx": Out(1, init=1),
                "rx": In(1, init=1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.uart_rx = uart_rx = self.uart_rx
        m.submodules.uart_tx = uart_tx = self.uart_tx
        m.submodules.sender = sender = self.sender
        m.submodules.receiver = receiver = self.receiver
        request, reply, body, frame = (
            self.port.request,
            self.port.reply,
            sender.body,
            receiver.frame,
        )

        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            self.tx.eq(uart_tx.tx),
            receiver.rx_error.eq(uart_rx.frame_error | uart_rx.overrun),
        ]
        wiring.connect(m, uart_rx.data, receiver.rx)
        wiring.connect(m, sender.tx, uart_tx.data)

        op = Signal(8)
        seq = Signal(8)
        op_last = Signal()  # the request has no payload
        timer = Signal(range(self.timeout + 1))
        bank = Signal.like(frame.payload.bank)
        length = Signal.like(frame.payload.length)
        error = Signal(8)  # the status the unit gets for a reply that did not come whole
        k = Signal.like(length)  # the index of the reply byte in the bank
        index_bits = (receiver.bank_size - 1).bit_length()
        m.d.comb += receiver.read_addr.eq(Cat(k[:index_bits], bank))
        accepted = frame.valid & frame.ready
        sent = body.valid & body.ready

        with m.FSM():
            with m.State("IDLE"):
                # a frame now is no reply to anything waiting (a late one, line noise): dropped
                m.d.comb += frame.ready.eq(1)
                with m.If(frame.valid):
                    m.next = "DROP"
                with m.Elif(request.valid):
                    m.next = "OP"

            with m.State("DROP"):
                m.d.comb += receiver.release.eq(1)
                m.next = "IDLE"

            with m.State("OP"):
                m.d.comb += [
                    body.valid.eq(1),
                    body.payload.byte.eq(request.payload.byte),
                    request.ready.eq(body.ready),
                ]
                with m.If(sent):
                    m.d.sync += [op.eq(request.payload.byte), op_last.eq(request.payload.last)]
                    m.next = "SEQ"

            with m.State("SEQ"):
                m.d.comb += [
                    body.valid.eq(1),
                    body.payload.byte.eq(seq),
                    body.payload.last.eq(op_last),
                ]
                m.d.sync += timer.eq(self.timeout)
                with m.If(sent):
                    m.next = "PAYLOAD"
                    with m.If(op_last):
                        m.next = "WAIT"

            with m.State("PAYLOAD"):
                m.d.comb += [
                    body.valid.eq(request.valid),
                    body.payload.byte.eq(request.payload.byte),
                    body.payload.last.eq(request.payload.last),
                    request.ready.eq(body.ready),
                ]
                with m.If(sent & request.payload.last):
                    m.next = "WAIT"

            with m.State("WAIT"):
                m.d.comb += frame.ready.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(accepted):
                    m.d.sync += [
                        bank.eq(frame.payload.bank),
                        length.eq(frame.payload.length),
                        k.eq(_HEAD),
                    ]
                    with m.If(frame.payload.status != Status.OK):
                        m.d.sync += error.eq(frame.payload.status)
                        m.next = "ERROR_RELEASE"
                    with m.Elif(
                        (frame.payload.op == (op | RESPONSE))
                        & (frame.payload.seq == seq)
                        & (frame.payload.length > _HEAD)
                    ):
                        m.next = "FETCH"
                    with m.Else():
                        m.next = "STALE"
                with m.Elif(timer == 0):
                    m.d.sync += error.eq(Status.CRC)
                    m.next = "ERROR"

            with m.State("STALE"):
                # a reply to an earlier request, or a frame that is no reply: keep waiting
                m.d.comb += receiver.release.eq(1)
                m.next = "WAIT"

            with m.State("FETCH"):
                m.next = "SEND"

            with m.State("SEND"):
                final = k == length - 1
                m.d.comb += [
                    reply.valid.eq(1),
                    reply.payload.byte.eq(receiver.read_data),
                    reply.payload.last.eq(final),
                ]
                with m.If(reply.ready):
                    m.d.sync += k.eq(k + 1)
                    m.next = "FETCH"
                    with m.If(final):
                        m.next = "RELEASE"

            with m.State("ERROR_RELEASE"):
                m.d.comb += receiver.release.eq(1)
                m.next = "ERROR"

            with m.State("ERROR"):
                m.d.comb += [
                    reply.valid.eq(1),
                    reply.payload.byte.eq(error),
                    reply.payload.last.eq(1),
                ]
                with m.If(reply.ready):
                    m.d.sync += seq.eq(seq + 1)
                    m.next = "IDLE"

            with m.State("RELEASE"):
                m.d.comb += receiver.release.eq(1)
                m.d.sync += seq.eq(seq + 1)
                m.next = "IDLE"

        return m
