"""The last state-changing commands and their responses, so that a retry is not applied twice.

A host that lost a response sends the same frame again. A byte-identical repetition (same op,
seq and CRC) of one of the last :data:`~metaplast.protocol.RETRY_DEPTH` state-changing commands
is a retry: it is answered with the stored response and not applied again. Several, so that a
host may keep that many frames in flight (the receiver has two buffers) and still retry any of
them.

Only an UPDATE's response has a payload: its level changes, which the memory keeps in an event
buffer with one bank per remembered command. Each command recorded takes the bank of the oldest
one, which the same command's push then forgets, so the banks of the remembered ones stay
intact.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["EventRecord", "RetryKey", "RetryMemory", "StoredReply"]

RetryKey = data.StructLayout({"op": 8, "seq": 8, "crc": 16})
"""What identifies a command: a retry repeats all three."""

EventRecord = data.StructLayout({"offset": 16, "old": 8, "new": 8})
"""A level change as an UPDATE's response carries it: offset into the block, old and new level
(the field order of the response's little-endian bytes)."""


def StoredReply(depth: int, max_block: int) -> data.StructLayout:  # noqa: N802
    """Where a response's events are: how many, in which bank."""
    return data.StructLayout({"events": range(max_block + 1), "bank": range(depth)})


class RetryMemory(wiring.Component):
    """Remembers ``depth`` commands (newest first) with the events of their responses.

    Looking up: ``hit`` tells whether ``key`` is remembered, ``stored`` where the newest such
    entry's events are, a cycle after ``key`` is set. Recording: ``record.begin`` starts a
    response in a bank of its own, each ``record.event`` appends one (``recorded`` counts
    them), and ``push`` remembers ``key`` with them as the newest entry, forgetting the oldest.
    A lookup changes nothing, so retries do not reorder the entries. Replaying: the event at
    ``replay.index`` of ``replay.bank`` appears on ``replay.data`` two cycles later.

    Parameters
    ----------
    depth : int
        Commands remembered.
    max_block : int
        Most events in one response (an UPDATE's block size).

    Members
    -------
    key : ``In(RetryKey)``
        The command being executed.
    hit : ``Out(1)``
    stored : ``Out(StoredReply(depth, max_block))``
        Of the newest entry matching ``key``, two cycles after ``key`` is set (and after a
        push).
    record : ``In(RetryMemory.RecordSignature())``
    recorded : ``Out(StoredReply(depth, max_block))``
        The response being recorded.
    push : ``In(1)``
        Strobe: remember ``key`` with the recorded response.
    replay : ``In(RetryMemory.ReplaySignature(depth, max_block))``
    """

    class RecordSignature(wiring.Signature):
        """Recording a response, from the recorder's side.

        Members
        -------
        begin : ``Out(1)``
            Strobe: a new response, with no events yet.
        event : ``Out(stream.Signature(EventRecord, always_ready=True))``
        """

        def __init__(self) -> None:
            super().__init__(
                {
                    "begin": Out(1),
                    "event": Out(stream.Signature(EventRecord, always_ready=True)),
                }
            )

        def __eq__(self, other: object) -> bool:
            return type(other) is type(self)

        def __repr__(self) -> str:
            return "RetryMemory.RecordSignature()"

    class ReplaySignature(wiring.Signature):
        """Reading a stored response, from the reader's side.

        Members
        -------
        bank : ``Out(range(depth))``
        index : ``Out(range(max_block))``
        data : ``In(EventRecord)``
            The event addressed two cycles before (the memory's read, then its output
            register).
        """

        def __init__(self, depth: int, max_block: int) -> None:
            self.depth = depth
            self.max_block = max_block
            super().__init__(
                {
                    "bank": Out(range(depth)),
                    "index": Out(range(max_block)),
                    "data": In(EventRecord),
                }
            )

        def __eq__(self, other: object) -> bool:
            return (
                type(other) is type(self)
                and other.depth == self.depth
                and other.max_block == self.max_block
            )

        def __repr__(self) -> str:
            return f"RetryMemory.ReplaySignature({self.depth}, {self.max_block})"

    def __init__(self, *, depth: int, max_block: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        if max_block < 1:
            raise ValueError(f"max_block must be at least 1, not {max_block}")
        self.depth = depth
        self.max_block = max_block
        stored = StoredReply(depth, max_block)
        super().__init__(
            {
                "key": In(RetryKey),
                "hit": Out(1),
                "stored": Out(stored),
                "record": In(self.RecordSignature()),
                "recorded": Out(stored),
                "push": In(1),
                "replay": In(self.ReplaySignature(depth, max_block)),
            }
        )

    def elaborate(self, platform: object) -> Module:
        m = Module()
        entry_layout = data.StructLayout(
            {"valid": 1, "key": RetryKey, "reply": StoredReply(self.depth, self.max_block)}
        )
        entries = [Signal(entry_layout, name=f"entry_{i}") for i in range(self.depth)]

        # the newest matching entry; whether each matches is a register (the key's comparisons
        # and the choice of the entry were one path into the engine's registers), and each
        # byte's comparison a register before it (32 bits compared at once were six LUT
        # levels, at 48 MHz on the iCE40)
        key = self.key.as_value()
        matches = []
        for i, entry in enumerate(entries):
            stored_key = entry.key.as_value()
            same = Signal(len(key) // 8 + 1, name=f"same_{i}")
            m.d.sync += same.eq(
                Cat(
                    entry.valid,
                    *(stored_key[b : b + 8] == key[b : b + 8] for b in range(0, len(key), 8)),
                )
            )
            match = Signal(name=f"match_{i}")
            m.d.sync += match.eq(same.all())
            matches.append(match)
        for i in reversed(range(self.depth)):
            with m.If(matches[i]):
                m.d.comb += [self.hit.eq(1), self.stored.eq(entries[i].reply)]

        with m.If(self.push):
            m.d.sync += [
                entries[0].valid.eq(1),
                entries[0].key.eq(self.key),
                entries[0].reply.eq(self.recorded),
            ]
            for i in range(1, self.depth):
                m.d.sync += entries[i].eq(entries[i - 1])

        # the event buffer: one bank per entry, each as deep as a block (a power of two)
        index_bits = (self.max_block - 1).bit_length()
        bank_bits = (self.depth - 1).bit_length()
        m.submodules.events = events = Memory(
            shape=EventRecord, depth=1 << (index_bits + bank_bits), init=[]
        )
        write = events.write_port()
        read = events.read_port()
        bank, count = self.recorded.bank, self.recorded.events
        event = self.record.event
        with m.If(self.record.begin):
            m.d.sync += [count.eq(0), bank.eq(Mux(bank == self.depth - 1, 0, bank + 1))]
        with m.Elif(event.valid):
            m.d.sync += count.eq(count + 1)
        m.d.comb += [
            write.en.eq(event.valid),
            write.addr.eq(Cat(count[:index_bits], bank)),
            write.data.eq(event.payload),
            read.addr.eq(Cat(self.replay.index[:index_bits], self.replay.bank)),
        ]
        # the memory's output register: its output reaches no logic of the reply builder's
        m.d.sync += self.replay.data.eq(read.data)
        return m
