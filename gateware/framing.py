"""SLIP frames between the UART byte streams and the command executor.

:class:`FrameReceiver` unstuffs request frames into a two-bank buffer and checks them;
:class:`FrameSender` stuffs a response body and appends its CRC. The wire format (delimiters,
escapes, CRC, status codes) is :mod:`metaplast.protocol`'s; nothing here restates it.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import crc, data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metaplast import protocol
from metaplast.protocol import END, ESC, ESC_END, ESC_ESC, Status

__all__ = ["BANKS", "BodyByte", "FrameReceiver", "FrameSender", "descriptor_layout"]

BANKS = 2
"""Receive buffer banks: one frame is executed while the next one arrives."""

CRC_BYTES = 2
MIN_FRAME = 4
"""op, seq and the CRC: the shortest frame that can be checked."""

BodyByte = data.StructLayout({"byte": 8, "last": 1})
"""One byte of a response body for :class:`FrameSender`; ``last`` marks the final one."""


def descriptor_layout(bank_size: int) -> data.StructLayout:
    """What :class:`FrameReceiver` reports about a received frame held in ``bank``.

    ``length`` counts op, seq and payload (the CRC excluded); ``crc`` is the frame's last two
    bytes as received, so ``(op, seq, crc)`` identifies a retried command.
    """
    return data.StructLayout(
        {
            "bank": range(BANKS),
            "length": range(bank_size + 1),
            "status": range(max(Status) + 1),
            "op": 8,
            "seq": 8,
            "crc": 16,
        }
    )


class FrameReceiver(wiring.Component):
    """Receives SLIP frames into a two-bank (ping-pong) buffer and describes each one.

    Every frame that is not empty takes a free bank and, at its ``END``, produces a descriptor
    on ``frame``; its bytes are read back through ``read_addr``/``read_data`` at
    ``bank * bank_size + index`` (index 0 is op, 1 seq, then the payload and the CRC). The bank
    stays busy until the executor, done with the descriptor it accepted, strobes ``release``
    (releases free the accepted banks in the order the descriptors were accepted). Frames with
    errors take a bank too, so that the executor answers them the same way. A frame that starts
    while both banks are busy is dropped whole and ``dropped`` pulses at its end.

    ``status`` is, in this priority: ``FRAMING`` (bad escape, or ``rx_error`` during the frame),
    ``OVERFLOW`` (more than ``bank_size`` bytes; the excess is not stored), ``LENGTH`` (fewer
    than 4 bytes), ``CRC`` (checked with the CRC residue), else ``OK``.

    Parameters
    ----------
    max_frame : int
        Longest frame body to hold, op to CRC inclusive (unstuffed). A bank holds the next power
        of two, ``bank_size``.

    Members
    -------
    rx : ``In(stream.Signature(8))``
        Bytes from the UART; always ready.
    rx_error : ``In(1)``
        The UART lost or garbled a byte: the frame in progress is ``FRAMING``.
    frame : ``Out(stream.Signature(descriptor_layout(bank_size)))``
        One descriptor per received frame, in arrival order.
    read_addr : ``In(range(2 * bank_size))``
        Buffer address to read.
    read_data : ``Out(8)``
        The byte at ``read_addr`` of the previous cycle.
    release : ``In(1)``
        Strobe: the oldest accepted descriptor's bank is free again.
    dropped : ``Out(1)``
        One-cycle pulse at the end of a frame dropped for lack of a free bank.
    """

    def __init__(self, max_frame: int) -> None:
        if not isinstance(max_frame, int) or isinstance(max_frame, bool):
            raise TypeError(f"max_frame must be an integer, not {max_frame!r}")
        if max_frame < MIN_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_FRAME} bytes, not {max_frame}")
        self.max_frame = max_frame
        self.bank_size = 1 << (max_frame - 1).bit_length()
        self.descriptor = descriptor_layout(self.bank_size)
        super().__init__(
            {
                "rx": In(stream.Signature(8)),
                "rx_error": In(1),
                "frame": Out(stream.Signature(self.descriptor)),
                "read_addr": In(range(BANKS * self.bank_size)),
                "read_data": Out(8),
                "release": In(1),
                "dropped": Out(1),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        bank_size = self.bank_size
        index_bits = (bank_size - 1).bit_length()

        m.submodules.memory = memory = Memory(shape=8, depth=BANKS * bank_size, init=[])
        port = memory.write_port()
        # the write a cycle late, from registers: the drop decision into the write enable was
        # in series with Yosys' read-first logic for the block RAM (its address comparison);
        # a frame's last byte is written before its END is seen
        wr = Signal(data.StructLayout({"addr": len(port.addr), "data": 8, "en": 1}))
        m.d.sync += wr.en.eq(0)
        m.d.comb += [port.addr.eq(wr.addr), port.data.eq(wr.data), port.en.eq(wr.en)]
        rd = memory.read_port()
        m.d.comb += [rd.addr.eq(self.read_addr), self.read_data.eq(rd.data)]

        m.submodules.crc = checker = crc.Processor(protocol.CRC(8))

        # Busy banks, oldest first: `first`, then ~first. Of those, the first `taken` have had
        # their descriptors accepted; the rest wait on `frame`.
        first = Signal(range(BANKS))
        busy = Signal(range(BANKS + 1))
        taken = Signal(range(BANKS + 1))
        descriptors = [Signal(self.descriptor, name=f"descriptor{i}") for i in range(BANKS)]

        out_bank = Mux(taken == 0, first, ~first)
        m.d.comb += self.frame.valid.eq(taken != busy)
        with m.If(out_bank):
            m.d.comb += self.frame.payload.eq(descriptors[1])
        with m.Else():
            m.d.comb += self.frame.payload.eq(descriptors[0])

        accept = self.frame.valid & self.frame.ready
        release = self.release & (taken != 0)
        complete = Signal()  # a frame just ended in `bank`
        bank = Signal(range(BANKS))  # the bank of the frame in progress
        free_bank = Signal(range(BANKS))  # the bank a frame starting now takes, if busy < 2
        m.d.comb += free_bank.eq(Mux(busy == 0, first, ~first))
        m.d.sync += [
            busy.eq(busy + complete - release),
            taken.eq(taken + accept - release),
        ]
        with m.If(release):
            m.d.sync += first.eq(~first)
        with m.Elif(complete & (busy == 0)):
            m.d.sync += first.eq(bank)

        # The frame in progress.
        count = Signal(range(bank_size + 2))  # saturates at bank_size + 1: overflowed
        dropping = Signal()
        escaped = Signal()
        bad_escape = Signal()
        uart_error = Signal()
        op = Signal(8)
        seq = Signal(8)
        last_two = Signal(16)  # the CRC, if this was the last byte

        # the UART's byte, what it is and its error into registers, a cycle late (the byte
        # comparisons were the head of a path through the unstuffing into the buffer's write)
        rx_valid, rx_byte, rx_error = Signal(), Signal(8), Signal()
        is_end, is_esc, is_esc_end, is_esc_esc = Signal(), Signal(), Signal(), Signal()
        m.d.comb += self.rx.ready.eq(1)
        m.d.sync += [
            rx_valid.eq(self.rx.valid),
            rx_byte.eq(self.rx.payload),
            rx_error.eq(self.rx_error),
            is_end.eq(self.rx.payload == END),
            is_esc.eq(self.rx.payload == ESC),
            is_esc_end.eq(self.rx.payload == ESC_END),
            is_esc_esc.eq(self.rx.payload == ESC_ESC),
        ]
        with m.If(rx_error):
            m.d.sync += uart_error.eq(1)

        # what `count` is, in flip-flops: each set as `count` steps, from a comparison of the
        # register (compared in place, they were in series with the unstuffing and the
        # buffer's write; compared after the step, with the step's multiplexer)
        starting = Signal(init=1)  # count == 0
        second = Signal()  # count == 1
        storing = Signal(init=1)  # count < bank_size: the byte goes into the bank
        overflowed = Signal()  # count == bank_size + 1 (it saturates there)
        short = Signal(init=1)  # count < MIN_FRAME

        # the unstuffed byte, whether it is one and whether the frame ends, into registers a
        # cycle later again (the escape decoding was in series with the buffer's write); with
        # the end, whether the frame had a bad escape or a UART error
        byte = Signal(8)
        push = Signal()  # `byte` is the next unstuffed byte of the frame
        end = Signal()
        framing = Signal()  # at `end`: the frame had a bad escape or a UART error
        m.d.sync += [push.eq(0), end.eq(0)]
        with m.If(rx_valid):
            with m.If(is_end):
                m.d.sync += [
                    end.eq(1),
                    framing.eq(escaped | bad_escape | uart_error | rx_error),
                    escaped.eq(0),
                    bad_escape.eq(0),
                    uart_error.eq(0),
                ]
            with m.Elif(escaped):
                m.d.sync += [escaped.eq(0), push.eq(1)]
                with m.If(is_esc_end):
                    m.d.sync += byte.eq(END)
                with m.Elif(is_esc_esc):
                    m.d.sync += byte.eq(ESC)
                with m.Else():
                    m.d.sync += [byte.eq(rx_byte), bad_escape.eq(1)]
            with m.Elif(is_esc):
                m.d.sync += escaped.eq(1)
            with m.Else():
                m.d.sync += [push.eq(1), byte.eq(rx_byte)]

        with m.If(push):
            full = busy == BANKS
            drop = Mux(starting, full, dropping)
            with m.If(starting):
                m.d.sync += [dropping.eq(full), bank.eq(free_bank)]
            with m.If(~overflowed):
                m.d.sync += [
                    count.eq(count + 1),
                    starting.eq(0),
                    second.eq(starting),
                    storing.eq(count < bank_size - 1),
                    overflowed.eq(count == bank_size),
                    short.eq(count < MIN_FRAME - 1),
                ]
            with m.If(~drop):
                m.d.sync += [
                    wr.addr.eq(Cat(count[:index_bits], Mux(starting, free_bank, bank))),
                    wr.data.eq(byte),
                    wr.en.eq(storing),
                ]
                m.d.comb += [
                    checker.start.eq(starting),
                    checker.valid.eq(1),
                    checker.data.eq(byte),
                ]
            with m.If(starting):
                m.d.sync += op.eq(byte)
            with m.If(second):
                m.d.sync += seq.eq(byte)
            m.d.sync += last_two.eq(Cat(last_two[8:], byte))

        with m.If(end):
            m.d.sync += [
                count.eq(0),
                starting.eq(1),
                second.eq(0),
                storing.eq(1),
                overflowed.eq(0),
                short.eq(1),
                op.eq(0),
                seq.eq(0),
                last_two.eq(0),
                dropping.eq(0),
            ]
            with m.If(~starting):
                with m.If(dropping):
                    m.d.comb += self.dropped.eq(1)
                with m.Else():
                    m.d.comb += complete.eq(1)

        status = Signal(range(max(Status) + 1))
        with m.If(framing):
            m.d.comb += status.eq(Status.FRAMING)
        with m.Elif(overflowed):
            m.d.comb += status.eq(Status.OVERFLOW)
        with m.Elif(short):
            m.d.comb += status.eq(Status.LENGTH)
        with m.Elif(~checker.match_detected):
            m.d.comb += status.eq(Status.CRC)
        with m.Else():
            m.d.comb += status.eq(Status.OK)

        for i, descriptor in enumerate(descriptors):
            with m.If(complete & (bank == i)):
                m.d.sync += [
                    descriptor.bank.eq(i),
                    descriptor.length.eq(Mux(count > CRC_BYTES, count - CRC_BYTES, 0)),
                    descriptor.status.eq(status),
                    descriptor.op.eq(op),
                    descriptor.seq.eq(seq),
                    descriptor.crc.eq(last_two),
                ]

        return m


class FrameSender(wiring.Component):
    """Frames a response: ``END``, the stuffed body, its stuffed CRC (little-endian), ``END``.

    A frame starts when the first body byte is offered. Stuffing a byte takes two beats on
    ``tx``; ``body.ready`` stays low until the second one is accepted. Both streams honour
    back-pressure.

    Members
    -------
    body : ``In(stream.Signature(BodyByte))``
        The body bytes (op | 0x80, seq, status, payload), ``last`` set on the final one.
    tx : ``Out(stream.Signature(8))``
        Wire bytes, for :class:`~metaplast.gateware.uart.UARTTx`.
    """

    def __init__(self) -> None:
        super().__init__({"body": In(stream.Signature(BodyByte)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform: object) -> Module:
        m = Module()

        m.submodules.crc = generator = crc.Processor(protocol.CRC(8))

        # the byte due on the wire is a register, taken from the body only when the previous
        # one is on the wire: `body.ready` is then a flip-flop, not the end of a path through
        # the stuffing and the UART's ready (one idle cycle between bytes; the UART needs ten
        # bit times for each)
        current = Signal(8)  # the unstuffed byte due on the wire
        # whether it is END or ESC (sent as two bytes): compared a cycle after `current` is
        # loaded, from its register (`settled` tells; no byte leaves before), where it was
        # compared on the way in, behind the body's and the CRC's multiplexers (six LUT levels
        # from `have` at 48 MHz)
        special = Signal()
        settled = Signal()
        m.d.sync += [special.eq((current == END) | (current == ESC)), settled.eq(1)]
        last = Signal()  # it is the body's last byte
        have = Signal()  # `current` holds a body byte
        escaped = Signal()  # its ESC has been sent, its escape code is due

        # the wire byte is a register too (`tx`'s valid and payload): the next one is chosen
        # from flip-flops while it is empty (`free`), never from the UART's ready, which only
        # empties it (a cycle more between wire bytes)
        out_valid, out_byte = Signal(), Signal(8)
        m.d.comb += [self.tx.valid.eq(out_valid), self.tx.payload.eq(out_byte)]
        with m.If(self.tx.ready):
            m.d.sync += out_valid.eq(0)
        free = ~out_valid

        def load(byte: Value) -> list[Any]:
            return [current.eq(byte), settled.eq(0)]

        def emit(byte: Value | int) -> None:
            m.d.sync += [out_byte.eq(byte), out_valid.eq(1)]

        wire = Mux(escaped, Mux(current == END, ESC_END, ESC_ESC), Mux(special, ESC, current))
        sent = Signal()  # a wire byte of `current` is emitted this cycle
        done = sent & (escaped | ~special)  # `current` is completely on the wire
        with m.If(sent):
            emit(wire)
            with m.If(special & ~escaped):
                m.d.sync += escaped.eq(1)
        with m.If(done):
            m.d.sync += escaped.eq(0)
        # the state moves, and the next byte is taken, a cycle after `current` is done (from a
        # register: `done` itself, the end of the stuffing's decoding, was in series with the
        # state's enable, six LUT levels at 48 MHz); the wire byte just emitted is not free
        # yet then, so nothing is sent twice
        finished = Signal()
        m.d.sync += finished.eq(done)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.body.valid & free):
                    emit(END)
                    m.d.comb += generator.start.eq(1)
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [
                    self.body.ready.eq(~have),
                    sent.eq(have & free & settled),
                    generator.data.eq(self.body.payload.byte),
                    generator.valid.eq(self.body.valid & ~have),
                ]
                with m.If(self.body.valid & ~have):
                    m.d.sync += [*load(self.body.payload.byte), last.eq(self.body.payload.last)]
                    m.d.sync += have.eq(1)
                with m.If(finished):
                    m.d.sync += have.eq(0)
                    with m.If(last):
                        # the CRC includes the last byte: it was taken at least a cycle ago
                        m.d.sync += load(generator.crc[:8])
                        m.next = "CRC_LOW"
            with m.State("CRC_LOW"):
                m.d.comb += sent.eq(free & settled)
                with m.If(finished):
                    m.d.sync += load(generator.crc[8:])
                    m.next = "CRC_HIGH"
            with m.State("CRC_HIGH"):
                m.d.comb += sent.eq(free & settled)
                with m.If(finished):
                    m.next = "END"
            with m.State("END"):
                with m.If(free):
                    emit(END)
                    m.next = "IDLE"

        return m
