"""The metaplastic update of Algorithm 1, one synapse per clock, with level-change detection.

Stages (each a clock; all of them hold while a level-change event waits for the event sink):

====  ===========================================================================
 0    accept ``(addr, d, seed)``; read ``W_H[addr]``; first half of the dither hash
 1    level of ``W_H`` (one comparator per boundary), offset from its level, interval
 2    LUT index ``|offset| * recip[interval] >> shift``; read the meta LUT
 3    ``M`` (or 1 when the step moves towards the level), ``d * M + dither``;
      read the synapse's change counter
 4    round, saturate, write back; new level; on a change emit the event and count it
====  ===========================================================================

Every constant (boundaries, reciprocals, shifts, clip range, dither hash) comes from
:class:`metaplast.contract.Contract`; :class:`metaplast.firmware_sim.unit.digital_unit.DigitalUnit`
is the bit-exact model this is tested against.

Read-after-write: the memory read of stage 0 is transparent for the write of stage 4, and an
update whose address is still in stages 1 to 3 waits (the only case that costs a cycle: a
block addresses distinct synapses, so it arises only between blocks that overlap).

``single_port=True`` keeps both memories in single-port stores (:class:`.SinglePortStore`: the
iCE40 UP's SPRAM), where a cycle either reads or writes. The hidden weight is then written
back one stage later (stage 5, a register after stage 4), so that a read and a write of the
same memory are always an odd number of stages apart, and an update enters only when stage 1
(the counter's read in stage 3 against the write in stage 4 of the update before) and stage 5
(the hidden weight's write against this read) are empty: one update per two cycles over
distinct synapses. An update whose address is in stages 1 to 4 waits; stage 5's write is
complete before the next read, so no transparency is needed. An SPRAM is not initialised by
the bitstream (block RAM is, to zeros): after reset the pipeline writes 0 to every hidden
weight and counter, one synapse per cycle, with ``initializing`` high; nothing else may reach
the memories until it falls.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import or_

from amaranth import Array, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metaplast.contract import MIX32_ROUNDS, Contract
from metaplast.protocol import address_bits

from .single_port_store import SinglePortStore

__all__ = ["AccessSignature", "EventLayout", "UpdateLayout", "UpdatePipeline", "level_of"]


def UpdateLayout(contract: Contract, addr_bits: int) -> data.StructLayout:  # noqa: N802
    """One synapse update: its address, ``d`` in the update format, the block's seed, and the
    origin its dither counts addresses from (UPDATE_LAYER's; 0, the memory's, otherwise)."""
    return data.StructLayout(
        {
            "addr": unsigned(addr_bits),
            "d": signed(contract.update_width),
            "seed": unsigned(32),
            "origin": unsigned(addr_bits),
        }
    )


def EventLayout(contract: Contract, addr_bits: int) -> data.StructLayout:  # noqa: N802
    """A level change: the synapse and its level index before and after."""
    level = unsigned(max(1, (len(contract.levels) - 1).bit_length()))
    return data.StructLayout({"addr": unsigned(addr_bits), "old": level, "new": level})


def AccessSignature(  # noqa: N802
    contract: Contract, addr_bits: int, counter_width: int
) -> wiring.Signature:
    """The link's port into the hidden-weight and counter memories (from the link's side).

    Read the weight and count at ``addr`` (they appear one cycle later), write ``wdata``
    with ``we``, clear the count with ``clear``.
    """
    return wiring.Signature(
        {
            "addr": Out(addr_bits),
            "we": Out(1),
            "clear": Out(1),
            "wdata": Out(signed(contract.hidden_width)),
            "rdata": In(signed(contract.hidden_width)),
            "count": In(counter_width),
        }
    )


def _stage_layouts(
    c: Contract, addr_t: Shape, hid_t: Shape, lvl_t: Shape, recip_t: Shape, counter_width: int
) -> tuple[data.StructLayout, ...]:
    """The registers between the stages: what each stage hands to the next."""
    head = {"valid": unsigned(1), "addr": addr_t, "d": signed(c.update_width)}
    return (
        data.StructLayout({**head, "hash_a": unsigned(32), "hash_s": unsigned(32)}),
        data.StructLayout({**head, "w": hid_t, "dither": unsigned(32)}),
        data.StructLayout({**head, "w": hid_t, "lvl": lvl_t, "dither": unsigned(32)}),
        data.StructLayout(
            {
                **head,
                "w": hid_t,
                "lvl": lvl_t,
                "off": signed(c.hidden_width + 1),
                "recip": recip_t,
                "dither": unsigned(32),
            }
        ),
        data.StructLayout(
            {
                **head,
                "w": hid_t,
                "lvl": lvl_t,
                "atten": unsigned(1),
                "round": unsigned(c.round_shift),
                "scaled": unsigned(c.hidden_width + 1 + recip_t.width),
            }
        ),
        data.StructLayout(
            {
                **head,
                "w": hid_t,
                "lvl": lvl_t,
                "atten": unsigned(1),
                "round": unsigned(c.round_shift),
            }
        ),
        data.StructLayout(
            {
                "valid": unsigned(1),
                "addr": addr_t,
                "w": hid_t,
                "lvl": lvl_t,
                "prod": signed(c.update_width + c.meta_bits + 2),
            }
        ),
        data.StructLayout(
            {
                "valid": unsigned(1),
                "addr": addr_t,
                "w": hid_t,
                "lvl": lvl_t,
            }
        ),
        data.StructLayout(
            {
                "valid": unsigned(1),
                "addr": addr_t,
                "w": hid_t,
                "old": lvl_t,
                "new": lvl_t,
                "event": unsigned(1),
                "count": unsigned(counter_width),
            }
        ),
    )


def level_of(contract: Contract, w: Value) -> Value:
    """Level index of hidden weight ``w``: how many boundaries it reaches (ties go up)."""
    return sum((w >= b for b in contract.boundary_ints), Const(0, 8))


def _mix_rounds(x: Value, rounds: Sequence[tuple[int, int]]) -> Value:
    for add_shift, xor_shift in rounds:
        x = (x + (x << add_shift))[:32]
        x = x ^ (x >> xor_shift)
    return x


class _MemoryPort:
    """A memory as the pipeline uses it: a read (``raddr``, ``ren``; ``rdata`` a cycle later)
    and a write (``waddr``, ``wdata``, ``we``), on two ports or on one.

    Dual-port: the read is transparent for the write when ``transparent``. Single-port: a
    write takes the cycle and the read waits (the pipeline never asks for both at once); the
    port shows ``waddr`` whenever ``wsel`` is set (by default, when ``we`` is), so that an
    address need not wait for a late write enable.
    """

    def __init__(self, m: Module, name: str, shape: Shape, depth: int, *, single: bool) -> None:
        self.raddr = Signal(range(depth), name=f"{name}_raddr")
        self.ren = Signal(name=f"{name}_ren")
        self.rdata = Signal(shape, name=f"{name}_rdata")
        self.waddr = Signal(range(depth), name=f"{name}_waddr")
        self.wdata = Signal(shape, name=f"{name}_wdata")
        self.we = Signal(name=f"{name}_we")
        self.wsel = Signal(name=f"{name}_wsel")
        if single:
            m.submodules[name] = store = SinglePortStore(shape, depth)
            m.d.comb += [
                store.addr.eq(Mux(self.wsel, self.waddr, self.raddr)),
                store.wdata.eq(self.wdata),
                store.we.eq(self.we),
                store.en.eq(self.ren),
                self.rdata.eq(store.rdata),
            ]
            return
        m.submodules[name] = memory = Memory(shape=shape, depth=depth, init=[])
        wr = memory.write_port()
        rd = memory.read_port()
        m.d.comb += [
            rd.addr.eq(self.raddr),
            rd.en.eq(self.ren),
            self.rdata.eq(rd.data),
            wr.addr.eq(self.waddr),
            wr.data.eq(self.wdata),
            wr.en.eq(self.we),
        ]


class UpdatePipeline(wiring.Component):
    """Hidden-weight memory, change counters and the update pipeline around them.

    ``access`` is the link's port into both memories (block read and write, clearing). It
    must only be driven while ``busy`` is low and no update is offered: the command engine
    executes one command at a time, which guarantees it; it never reads and writes in the same
    cycle.

    ``single_port``: both memories in single-port stores (the iCE40 UP's SPRAM), one update
    per two cycles; otherwise in dual-port block RAM, one update per clock.
    """

    #: the registered stages after the inlet: the farthest two updates of one synapse can be
    depth = 9

    def __init__(
        self,
        contract: Contract,
        synapses: int,
        *,
        counter_width: int = 16,
        single_port: bool = False,
    ) -> None:
        if synapses < 1:
            raise ValueError(f"synapses must be >= 1, got {synapses}")
        if not 1 <= counter_width <= 32:
            raise ValueError(f"counter_width must be 1..32, got {counter_width}")
        self.contract = contract
        self.synapses = synapses
        self.counter_width = counter_width
        self.single_port = single_port
        addr_bits = address_bits(synapses)
        self.addr_bits = addr_bits
        super().__init__(
            {
                "update": In(stream.Signature(UpdateLayout(contract, addr_bits))),
                "events": Out(stream.Signature(EventLayout(contract, addr_bits))),
                "lut_index": Out(range(contract.lut_entries)),
                "lut_en": Out(1),
                "lut_value": In(contract.meta_bits + 1),
                "busy": Out(1),
                "initializing": Out(1),
                "access": In(AccessSignature(contract, addr_bits, counter_width)),
            }
        )

    def elaborate(self, platform: object) -> Module:
        c = self.contract
        m = Module()
        single = self.single_port
        hidden = _MemoryPort(m, "hidden", signed(c.hidden_width), self.synapses, single=single)
        counts = _MemoryPort(
            m,
            "counts",
            unsigned(self.counter_width),
            self.synapses,
            single=single,
        )

        addr_t = unsigned(self.addr_bits)
        hid_t = signed(c.hidden_width)
        lvl_t = unsigned(max(1, (len(c.levels) - 1).bit_length()))
        recip_t = unsigned(max(c.recips).bit_length())
        ivl_count = len(c.levels) - 1
        layouts = _stage_layouts(c, addr_t, hid_t, lvl_t, recip_t, self.counter_width)
        s1, s2, s3, s4, s5, s6, s7, s8, s9 = (
            Signal(lay, name=f"s{i}") for i, lay in enumerate(layouts, start=1)
        )

        # a stall holds every stage: the events' sink not ready while stage 9 holds an update.
        # Whether that update is an event is not asked (a register, but the stall reaches every
        # stage and the inlet)
        advance = Signal()
        m.d.comb += advance.eq(~(s9.valid & ~self.events.ready))

        stages = [s1, s2, s3, s4, s5, s6, s7, s8, s9]

        new_addr = self.update.payload.addr
        # the stages whose update a new one at the same address must wait for: its write in
        # stage 8 is still to come or comes with this read (dual-port: the read is not
        # transparent, so that its data can go straight into the block RAM's output register;
        # single-port: stage 9's, which an update waits for anyway)
        pending = stages[:8]
        hazard = Signal()
        m.d.comb += hazard.eq(reduce(or_, (st.valid & (st.addr == new_addr) for st in pending)))
        ready = advance & ~hazard
        if single:
            # a read and a write of one memory never in the same cycle: the counter's read in
            # stage 8 and write in stage 9, the hidden weight's read here and write in stage 9
            ready &= ~s1.valid & ~s9.valid & ~self.initializing
        accept = Signal()
        m.d.comb += [
            self.update.ready.eq(ready),
            accept.eq(self.update.valid & self.update.ready),
            self.busy.eq(reduce(or_, (st.valid for st in stages))),
        ]

        half = len(MIX32_ROUNDS) // 2

        # stage 0: read W_H, start both halves of the dither hash --------------------------
        m.d.comb += [
            hidden.raddr.eq(Mux(self.update.valid, new_addr, self.access.addr)),
            hidden.ren.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [
                s1.valid.eq(accept),
                s1.addr.eq(new_addr),
                s1.d.eq(self.update.payload.d),
                s1.hash_a.eq(
                    _mix_rounds(
                        (new_addr - self.update.payload.origin)[: self.addr_bits],
                        MIX32_ROUNDS[:half],
                    )  # fmt: skip
                ),
                s1.hash_s.eq(_mix_rounds(self.update.payload.seed, MIX32_ROUNDS[:half])),
            ]

        # stage 1: the memory's output into a register (the block RAM's own, where it has one);
        # the dither hash's second half
        with m.If(advance):
            m.d.sync += [
                s2.valid.eq(s1.valid),
                s2.addr.eq(s1.addr),
                s2.d.eq(s1.d),
                s2.w.eq(hidden.rdata),
                s2.dither.eq(
                    _mix_rounds(s1.hash_a, MIX32_ROUNDS[half:])
                    ^ _mix_rounds(s1.hash_s, MIX32_ROUNDS[half:])
                ),
            ]

        # stage 2: level (one comparator per boundary) ---------------------------------------
        with m.If(advance):
            m.d.sync += [
                s3.valid.eq(s2.valid),
                s3.addr.eq(s2.addr),
                s3.d.eq(s2.d),
                s3.w.eq(s2.w),
                s3.lvl.eq(level_of(c, s2.w)),
                s3.dither.eq(s2.dither),
            ]

        # stage 3: offset from the level, interval, its reciprocal ----------------------------
        ws3 = Signal(hid_t)
        off3 = Signal(signed(c.hidden_width + 1))
        ivl3 = Signal(range(ivl_count))
        m.d.comb += [
            ws3.eq(Array(Const(v, hid_t) for v in c.level_ints)[s3.lvl]),
            off3.eq(s3.w - ws3),
        ]
        with m.If(off3 >= 0):
            m.d.comb += ivl3.eq(Mux(s3.lvl > ivl_count - 1, ivl_count - 1, s3.lvl))
        with m.Else():
            m.d.comb += ivl3.eq(Mux(s3.lvl == 0, 0, s3.lvl - 1))
        with m.If(advance):
            m.d.sync += [
                s4.valid.eq(s3.valid),
                s4.addr.eq(s3.addr),
                s4.d.eq(s3.d),
                s4.w.eq(s3.w),
                s4.lvl.eq(s3.lvl),
                s4.off.eq(off3),
                s4.recip.eq(Array(Const(r, recip_t) for r in c.recips)[ivl3]),
                s4.dither.eq(s3.dither),
            ]

        # stage 4: |offset| * reciprocal into a register ------------------------------------
        with m.If(advance):
            m.d.sync += [
                s5.valid.eq(s4.valid),
                s5.addr.eq(s4.addr),
                s5.d.eq(s4.d),
                s5.w.eq(s4.w),
                s5.lvl.eq(s4.lvl),
                # d * (w - ws) < 0: the step would move W_H away from its level
                s5.atten.eq(((s4.d > 0) & (s4.off < 0)) | ((s4.d < 0) & (s4.off > 0))),
                s5.round.eq(
                    s4.dither[: c.round_shift]
                    if c.rounding == "stochastic"
                    else 1 << (c.round_shift - 1)
                ),
                s5.scaled.eq(abs(s4.off) * s4.recip),
            ]

        # stage 5: LUT index, LUT read --------------------------------------------------------
        index = s5.scaled >> c.recip_shift
        j5 = Signal(range(c.lut_entries))
        m.d.comb += j5.eq(Mux(index >= c.lut_entries, c.lut_entries - 1, index))
        m.d.comb += [self.lut_index.eq(j5), self.lut_en.eq(advance)]
        with m.If(advance):
            m.d.sync += [
                s6.valid.eq(s5.valid),
                s6.addr.eq(s5.addr),
                s6.d.eq(s5.d),
                s6.w.eq(s5.w),
                s6.lvl.eq(s5.lvl),
                s6.atten.eq(s5.atten),
                s6.round.eq(s5.round),
            ]

        # stage 6: M, d * M + dither ----------------------------------------------------------
        meta = Signal(c.meta_bits + 1)
        m.d.comb += meta.eq(Mux(s6.atten, self.lut_value, c.meta_one))
        # the counter is read two stages before its write in stage 9 (dual-port: in stage 7,
        # the block RAM's output register in stage 8, the increment from a register) or one
        # (single-port: a read and a write an odd number of stages apart)
        count_reader = s8 if single else s7
        m.d.comb += [
            counts.raddr.eq(Mux(count_reader.valid, count_reader.addr, self.access.addr)),
            counts.ren.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [
                s7.valid.eq(s6.valid),
                s7.addr.eq(s6.addr),
                s7.w.eq(s6.w),
                s7.lvl.eq(s6.lvl),
                s7.prod.eq(s6.d * meta + s6.round),
            ]

        # stage 7: round, saturate ------------------------------------------------------------
        step = Signal(signed(len(s7.prod) - c.round_shift))
        moved = Signal(signed(max(len(step), c.hidden_width) + 1))
        m.d.comb += [
            step.eq(s7.prod >> c.round_shift),
            moved.eq(s7.w - step),
        ]
        with m.If(advance):
            m.d.sync += [
                s8.valid.eq(s7.valid),
                s8.addr.eq(s7.addr),
                s8.lvl.eq(s7.lvl),
                s8.w.eq(Mux(moved < c.w_min, c.w_min, Mux(moved > c.w_max, c.w_max, moved))),
            ]

        # stage 8: write back; the new level ------------------------------------------------
        lvl8 = Signal(lvl_t)
        m.d.comb += lvl8.eq(level_of(c, s8.w))
        with m.If(advance):
            m.d.sync += [
                s9.valid.eq(s8.valid),
                s9.addr.eq(s8.addr),
                s9.w.eq(s8.w),
                s9.old.eq(s8.lvl),
                s9.new.eq(lvl8),
                s9.event.eq(lvl8 != s8.lvl),
            ]
            if not single:
                m.d.sync += s9.count.eq(counts.rdata)
        # single-port: the write a stage later, an odd number of stages after the read
        back = s9 if single else s8
        hidden_we = (back.valid & advance) | self.access.we
        hidden_waddr = Mux(back.valid, back.addr, self.access.addr)
        hidden_wdata = Mux(back.valid, back.w, self.access.wdata)

        # stage 9: emit and count the level change -------------------------------------------
        count = counts.rdata if single else s9.count
        saturated = count == (1 << self.counter_width) - 1
        counts_we = (s9.valid & advance & s9.event & ~saturated) | self.access.clear
        counts_waddr = Mux(s9.valid, s9.addr, self.access.addr)
        counts_wdata = Mux(s9.valid, count + 1, 0)
        if single:
            # after reset, 0 into every word of both memories (an SPRAM starts undefined)
            wipe = Signal(range(self.synapses))
            done = Signal()
            m.d.comb += self.initializing.eq(~done)
            with m.If(~done):
                m.d.sync += wipe.eq(wipe + 1)
                with m.If(wipe == self.synapses - 1):
                    m.d.sync += done.eq(1)
            hidden_we |= ~done
            hidden_waddr = Mux(done, hidden_waddr, wipe)
            hidden_wdata = Mux(done, hidden_wdata, 0)
            counts_we |= ~done
            counts_waddr = Mux(done, counts_waddr, wipe)
            counts_wdata = Mux(done, counts_wdata, 0)
        # the counter's write enable waits for the sink's ready; its address need not (no
        # read is wanted while stage 9 holds an update: stage 8 is empty then)
        counts_wsel = counts_we
        if single:
            counts_wsel = s9.valid | self.access.clear | self.initializing
        m.d.comb += [
            hidden.we.eq(hidden_we),
            hidden.wsel.eq(hidden_we),
            hidden.waddr.eq(hidden_waddr),
            hidden.wdata.eq(hidden_wdata),
            counts.we.eq(counts_we),
            counts.wsel.eq(counts_wsel),
            counts.waddr.eq(counts_waddr),
            counts.wdata.eq(counts_wdata),
            self.events.valid.eq(s9.valid & s9.event),
            self.events.payload.addr.eq(s9.addr),
            self.events.payload.old.eq(s9.old),
            self.events.payload.new.eq(s9.new),
            self.access.rdata.eq(hidden.rdata),
            self.access.count.eq(counts.rdata),
        ]
        return m
