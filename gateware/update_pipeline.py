"""The metaplastic update of Algorithm 1, one synapse per clock, with level-change detection.

Stages (each a clock; all of them hold while a level-change event waits for the event sink):

====  ===========================================================================
 0    accept ``(addr, d, offset)`` into stage 1 with the dither hash's first round (of the
      offset, or of a token's seed: that one made in front of the inlet);
      whether the update must wait (a register, from the stages ahead)
 1    hold the update until its synapse is written back; then read ``W_H[addr]``; the
      hash's second round
 2    the memory's output into a register; the hash's third round
 3    which level boundaries ``W_H`` reaches (one comparator each); the hash's last round
 4    the level of ``W_H`` (how many boundaries it reaches) and its weight
 5    offset from the level as sign and magnitude (both differences, one chosen), the
      interval's reciprocal, into the multiplier's registers
 6    ``|offset| * recip[interval]`` (only the multiplier) into a register; ``d`` as
      magnitude and sign
 7    LUT index (``>> shift``, clamped); read the meta LUT
 8    ``M`` (the LUT's value, or 1 when the step moves towards the level) and ``|d|`` into
      the multipliers' registers
 9    ``|d| * M`` (only the multipliers, a piece of ``|d|``'s each) into registers
10    the pieces summed
11    ``d * M + dither`` rounded: the product's high part, the carry out of its low part with
      the dither (a negative product's parts inverted)
12    the step and the carry taken from ``W_H``
13    saturate
14    write back; which level boundaries the new weight reaches (one comparator each);
      dual-port: read the synapse's change counter
15    the new level, whether it changed; single-port: read the change counter
16    on a change emit the event and count it
====  ===========================================================================

Every path is one piece of arithmetic between registers: the stages are cut for the PLL
clocks (docs/results.md section 11). A multiply has a stage to itself, between registers
without reset, which Yosys moves into the iCE40 UP's multiplier blocks (:class:`_Product`).
Every constant (boundaries, reciprocals, shifts, clip range, dither hash) comes from
:class:`metaplast.contract.Contract`;
:class:`metaplast.firmware_sim.unit.digital_unit.DigitalUnit` is the bit-exact model this is
tested against.

Read-after-write: an update waits in stage 1 while an update of its synapse is in stages 2 to
14 (the write-back of stage 14 and the read are in one cycle, and the read is not transparent,
so that the read data can go straight into the block RAM's output register). Whether it must
wait is computed a cycle ahead into a register, so the address comparators never reach the
inlet's handshake, and first from the low four address bits alone (``HAZARD_BITS``), which a
block's consecutive synapses never share inside the window; the low eight (``WAIT_BITS``)
decide from the next cycle on. Waiting is the only case that costs a cycle: a block addresses
distinct synapses, so it arises only between blocks that overlap (the same synapse back to
back: one update per fourteen cycles) or whose synapses are a multiple of 256 apart inside
the window (as long as the same synapse), or for a cycle where an update's low four bits
match another block's still in flight.

``single_port=True`` keeps both memories in single-port stores (:class:`.SinglePortStore`: the
iCE40 UP's SPRAM), where a cycle either reads or writes. A read and a write of one memory are
an odd number of stages apart (the hidden weight's in stages 1 and 14, the counter's in 15 and
16), and an update leaves stage 1 only when stage 2 (the update before) and stage 14 (the
hidden weight's write) are empty: one update per two cycles over distinct synapses. An SPRAM
is not initialised by the bitstream (block RAM is, to zeros): after reset the pipeline writes
0 to every hidden weight and counter, one synapse per cycle, with ``initializing`` high;
nothing else may reach the memories until it falls.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import or_
from typing import Any

from amaranth import (
    Array,
    Cat,
    Const,
    Module,
    Mux,
    Shape,
    ShapeLike,
    Signal,
    Value,
    signed,
    unsigned,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from metaplast.contract import MIX32_ROUNDS, Contract
from metaplast.protocol import address_bits

from .single_port_store import SinglePortStore

__all__ = [
    "AccessSignature",
    "EventLayout",
    "UpdateLayout",
    "UpdatePipeline",
    "level_of",
    "seed_round",
]

#: the widest operand the iCE40 UP's multipliers (``SB_MAC16``, 16 x 16) take: a product is
#: cut into pieces this wide (the ECP5's are 18 x 18)
MULTIPLIER_WIDTH = 16


def UpdateLayout(  # noqa: N802
    contract: Contract, addr_bits: int, *, marked: bool = False
) -> data.StructLayout:
    """One synapse update: its address, ``d`` in the update format, the block's seed, and the
    origin its dither counts addresses from (UPDATE_LAYER's; 0, the memory's, otherwise).

    ``marked``: as :class:`.SynapseCore` hands them to the pipeline, the address counted from
    the origin (``offset``) in place of the origin, the seed through the dither hash's first
    round (:func:`seed_round`), and whether the seed differs from the update's before (or it
    is the first): the pipeline hashes a seed once, and chooses between the seed's first
    round and the offset's behind both adders.
    """
    fields = {"addr": unsigned(addr_bits), "d": signed(contract.update_width)}
    if marked:
        return data.StructLayout(
            {
                **fields,
                "seed_round": unsigned(32),
                "offset": unsigned(addr_bits),
                "new_seed": 1,
            }
        )
    return data.StructLayout({**fields, "seed": unsigned(32), "origin": unsigned(addr_bits)})


def seed_round(seed: Value) -> Value:
    """The dither hash's first round of a seed, made before the pipeline's inlet: the seed
    changes once a block, so its adder is off the path into stage 1."""
    return _mix_rounds(seed, MIX32_ROUNDS[:1])


def level_shape(contract: Contract) -> Shape:
    """A level index's shape."""
    return unsigned(max(1, (len(contract.levels) - 1).bit_length()))


def EventLayout(contract: Contract, addr_bits: int) -> data.StructLayout:  # noqa: N802
    """A level change: the synapse and its level index before and after."""
    level = level_shape(contract)
    return data.StructLayout({"addr": unsigned(addr_bits), "old": level, "new": level})


def AccessSignature(  # noqa: N802
    contract: Contract, addr_bits: int, counter_width: int
) -> wiring.Signature:
    """The link's port into the hidden-weight and counter memories (from the link's side).

    Read the weight and count at ``addr`` (they appear two cycles later: the memory's read,
    then its output register), write ``wdata`` with ``we``, clear the count with ``clear``.
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
    c: Contract, addr_t: Shape, hid_t: Shape, lvl_t: Shape, counter_width: int
) -> tuple[data.StructLayout, ...]:
    """The registers between the stages: what each stage hands to the next (the multipliers'
    operands and products are apart, in :class:`_Product`)."""
    head = {"valid": unsigned(1), "addr": addr_t, "d": signed(c.update_width)}
    boundaries_t = unsigned(len(c.boundary_ints))
    # |d * M| (M < 2**(meta_bits + 1)), and its high part with the sign: the step
    prod_t = unsigned(c.update_width + c.meta_bits + 1)
    step_t = signed(prod_t.width - c.round_shift + 1)
    moved_t = signed(max(step_t.width, c.hidden_width) + 1)
    # the dither hash's rounds, of an update's address or of a token's seed
    hashes = {"hash": unsigned(32), "seeding": unsigned(1)}
    dither_t = unsigned(c.round_shift)
    # d as magnitude and sign from stage 7 on (the multipliers' operands are unsigned)
    attenuating = {"valid": unsigned(1), "addr": addr_t, "w": hid_t, "lvl": lvl_t}
    attenuating |= {"atten": unsigned(1), "round": unsigned(c.round_shift)}
    attenuating |= {"magnitude": unsigned(c.update_width), "negative": unsigned(1)}
    # the product's sign beside its magnitude (from stage 9 the dither is inverted with it)
    rounding = {"valid": unsigned(1), "addr": addr_t, "w": hid_t, "lvl": lvl_t}
    rounding |= {"round": unsigned(c.round_shift), "negative": unsigned(1)}
    return (
        data.StructLayout({**head, **hashes}),
        data.StructLayout({**head, **hashes}),
        data.StructLayout({**head, **hashes, "w": hid_t}),
        data.StructLayout({**head, "w": hid_t, "reached": boundaries_t, "dither": dither_t}),
        data.StructLayout({**head, "w": hid_t, "lvl": lvl_t, "ws": hid_t, "dither": dither_t}),
        data.StructLayout(
            {
                **head,
                "w": hid_t,
                "lvl": lvl_t,
                "below": unsigned(1),
                "above": unsigned(1),
                "dither": dither_t,
            }
        ),
        data.StructLayout(attenuating),
        data.StructLayout(attenuating),
        data.StructLayout(rounding),
        data.StructLayout(rounding),
        data.StructLayout({**rounding, "prod": prod_t}),
        data.StructLayout(
            {
                "valid": unsigned(1),
                "addr": addr_t,
                "w": hid_t,
                "lvl": lvl_t,
                "step": step_t,
                "carry": unsigned(1),
            }
        ),
        data.StructLayout(
            {
                "valid": unsigned(1),
                "addr": addr_t,
                "lvl": lvl_t,
                "moved": moved_t,
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
                "old": lvl_t,
                "reached": boundaries_t,
            }
        ),
        data.StructLayout(
            {
                "valid": unsigned(1),
                "addr": addr_t,
                "old": lvl_t,
                "new": lvl_t,
                "event": unsigned(1),
                "count": unsigned(counter_width),
            }
        ),
    )


class _Product:
    """``a * b`` of unsigned operands between registers, as the iCE40 UP's multipliers compute
    it fast: ``a`` cut in pieces of :data:`MULTIPLIER_WIDTH` bits, each piece with a copy of
    ``b`` in registers without reset, each piece's product in a register without reset, the
    pieces summed a stage later.

    Yosys moves such registers into an ``SB_MAC16``'s own, so the multiply (9 ns of 20.8 at
    48 MHz) runs between the block's registers, where nextpnr times the paths around it. It
    moves none with a reset, a constant's multiplexer in front (it becomes a synchronous
    reset) or a second multiplier behind (equal registers are merged, so each piece's ``b``
    is loaded from an expression of its own), and a signed operand's zero-extension keeps its
    register out: the operands are unsigned.
    """

    def __init__(self, name: str, a_width: int, b_width: int) -> None:
        self.a = Signal(a_width, name=f"{name}_a", reset_less=True)
        self._pieces = []
        for low in range(0, a_width, MULTIPLIER_WIDTH):
            piece = self.a[low : low + MULTIPLIER_WIDTH]
            b = Signal(b_width, name=f"{name}_b{low}", reset_less=True)
            product = Signal(len(piece) + b_width, name=f"{name}_p{low}", reset_less=True)
            self._pieces.append((low, piece, b, product))

    def load(self, a: Value, b_forms: Sequence[Value]) -> list[Any]:
        """The operands into their registers: ``b`` given as equal expressions, a piece's copy
        from each in turn (a single form leaves the copies to be merged)."""
        copies = (b.eq(b_forms[i % len(b_forms)]) for i, (_, _, b, _) in enumerate(self._pieces))
        return [self.a.eq(a), *copies]

    def multiply(self) -> list[Any]:
        """The pieces' products into their registers."""
        return [product.eq(piece * b) for _, piece, b, product in self._pieces]

    @property
    def value(self) -> Value:
        """The product, summed from the registered pieces (only a wire for one piece)."""
        pieces = [product << low for low, _, _, product in self._pieces]
        return sum(pieces[1:], pieces[0])


def thermometer_lookup(t: Value, table: Sequence[int], shape: ShapeLike) -> Value:
    """``table[n]``, ``n`` the number of ones of thermometer ``t`` (ones from bit 0 up, then
    zeros); ``table`` has ``len(t) + 1`` entries.

    Each bit of the result is an OR over the runs of entries where that bit is set, one
    two-input term a run (the run from ``a`` to ``b``: ``t`` reaches ``a`` and not ``b + 1``):
    two LUT levels for 17 levels, where counting the ones was an adder tree and the table a
    multiplexer behind it (eight levels, the iCE40's critical path at 48 MHz).
    """
    n = len(t)
    if len(table) != n + 1:
        raise ValueError(
            f"a thermometer of {n} bits selects from {n + 1} entries, not {len(table)}"
        )
    shape = Shape.cast(shape)

    def reaches(i: int) -> Value:  # t has at least i ones
        return Const(1, 1) if i <= 0 else t[i - 1] if i <= n else Const(0, 1)

    bits = []
    for j in range(shape.width):
        terms, a = [], None
        for i, v in enumerate([*table, 0]):
            on = i <= n and (v >> j) & 1
            if on and a is None:
                a = i
            elif not on and a is not None:
                terms.append(reaches(a) & ~reaches(i))
                a = None
        bits.append(reduce(or_, terms) if terms else Const(0, 1))
    return Cat(*bits).as_signed() if shape.signed else Cat(*bits)


def thermometer_count(t: Value, width: int) -> Value:
    """How many bits of thermometer ``t`` are set (:func:`thermometer_lookup` of the counts)."""
    return thermometer_lookup(t, range(len(t) + 1), width)


def boundaries_reached(contract: Contract, w: Value) -> Value:
    """Which level boundaries hidden weight ``w`` reaches (ties go up), one comparator each: a
    thermometer, since the boundaries ascend."""
    return Cat(w >= b for b in contract.boundary_ints)


def level_of(contract: Contract, w: Value) -> Value:
    """Level index of hidden weight ``w``: how many boundaries it reaches."""
    return thermometer_count(boundaries_reached(contract, w), level_shape(contract).width)


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
        # a read and a write of one synapse never meet in a cycle (the hazard check; the link's
        # port only while the pipeline is empty): Yosys need not make the block RAM read the
        # old word then (`no_rw_check`), which took a comparator and a multiplexer behind it
        m.submodules[name] = memory = Memory(
            shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1}
        )
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
    depth = 16
    #: the low address bits an entering update's hazard is first judged by (more than the
    #: stages that hold an update still to write back: consecutive synapses never match)
    HAZARD_BITS = 4
    #: the low address bits an update waits by: it waits while an update in flight shares
    #: them, its own synapse's or one a multiple of 256 away (which no block's consecutive
    #: synapses are inside the window), for the comparators' sake (a third of them in LUTs
    #: on a 32,768-synapse unit, where the iCE40's logic cells run out)
    WAIT_BITS = 8

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
                "update": In(stream.Signature(UpdateLayout(contract, addr_bits, marked=True))),
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
        lvl_t = level_shape(c)
        recip_t = unsigned(max(c.recips).bit_length())
        ivl_count = len(c.levels) - 1
        layouts = _stage_layouts(c, addr_t, hid_t, lvl_t, self.counter_width)
        stages = [Signal(lay, name=f"s{i}") for i, lay in enumerate(layouts, start=1)]
        s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15, s16 = stages
        assert len(stages) == self.depth

        # a stall holds every stage: the events' sink not ready while stage 16 holds an update.
        # Whether that update is an event is not asked (a register, but the stall reaches every
        # stage and the inlet)
        advance = Signal()
        m.d.comb += advance.eq(~(s16.valid & ~self.events.ready))

        new_addr = self.update.payload.addr
        # stage 1 holds an update until its read is safe: until no update in stages 2 to 14 is
        # still to write its synapse back. That is known a cycle ahead (stage 1's ``hazard``, a
        # register): the comparators never reach the inlet's control. The write-back in stage
        # 14 is 13 stages after the read, an odd number (single-port)
        back_stage = 14
        back = stages[back_stage - 1]
        # whether stage 1 must wait, from three registers: the comparisons' OR of an update
        # that entered stage 1 last cycle, the shifted comparisons' OR of one that waited, and
        # which of the two it is (the comparators' OR need not wait for the inlet's handshake)
        hazard_new = Signal()
        hazard_held = Signal()
        entered = Signal()
        # (the held one with stage 1's valid folded in; the new one meets it here, so that the
        # inlet's valid is not in series with the comparators)
        waits = Mux(entered, hazard_new & s1.valid, hazard_held)
        issue_ok = ~waits
        if single:
            # a read and a write of one memory never in the same cycle: the counter's read in
            # stage 15 and write in stage 16, the hidden weight's read here and write in stage 14
            issue_ok &= ~s2.valid & ~back.valid
        issue = Signal()
        ready = Signal()
        take = Signal()  # stage 1 takes what stage 0 offers: an update, a seed's token, nothing
        accept = Signal()
        # the seed's half of the dither is hashed once per seed, by the address's rounds: an
        # update whose seed differs from the update's before (``new_seed``) waits a cycle at the
        # inlet while a token of its seed (no update) enters stage 1; the token's hash is kept
        # in stage 3, where the updates behind it take it (the seed's own rounds for every
        # update and their registers were 290 of the iCE40's 5,280 logic cells)
        tokened = Signal()  # the update offered has sent its seed's token
        fresh = Signal()
        # (the seed's first round or the offset's, chosen without the inlet's valid: two
        # registers meet in one LUT, which chooses behind the offset's adder; the seed's adder
        # is in front of the inlet and the choice was in front of a shared one, 21 ns)
        hash_seed = Signal()
        if c.rounding == "stochastic":
            m.d.comb += [
                hash_seed.eq(self.update.payload.new_seed & ~tokened),
                fresh.eq(self.update.valid & hash_seed),
            ]
        m.d.comb += [
            issue.eq(advance & s1.valid & issue_ok),
            ready.eq(advance & (~s1.valid | issue_ok) if single else advance & ~waits),
            take.eq(ready & ~self.initializing if single else ready),
            self.update.ready.eq(take & ~fresh),
            accept.eq(self.update.valid & self.update.ready),
            self.busy.eq(reduce(or_, (st.valid for st in stages))),
        ]
        # the stages that will hold an older update, still to write back, next cycle: those
        # before the write-back now, stage 1 too when it issues (an incoming update is only
        # accepted then, or into an empty stage 1)
        ahead = stages[: back_stage - 1]
        # which of stages 2 to 14 hold an update of stage 1's synapse (or of one that shares
        # its low ``WAIT_BITS``), one bit each: an
        # update's comparisons are made once, as it enters stage 1, and then shift with the
        # stages while it waits, so no comparator is between stage 1's address and ``hazard``
        hits = Signal(len(ahead), name="s1_hits")
        wait = min(self.WAIT_BITS, self.addr_bits)
        new_hits = Cat(st.valid & (st.addr[:wait] == new_addr[:wait]) for st in ahead)
        # the hazard of an entering update from the low address bits alone: a block's
        # successive synapses never share them inside the window (13 stages, 16 values), and a
        # false match of another block's costs one cycle (the wider `hits` decide the next).
        # All bits, the comparators and their OR were seven LUT levels at 48 MHz on the iCE40
        assert 1 << self.HAZARD_BITS > len(ahead), "consecutive synapses would match"
        low = min(self.HAZARD_BITS, self.addr_bits)
        near_hits = Cat(st.valid & (st.addr[:low] == new_addr[:low]) for st in ahead)
        with m.If(advance):
            m.d.sync += [
                entered.eq(take),
                hazard_new.eq(near_hits.any()),
                hazard_held.eq(s1.valid & hits[:-1].any()),
            ]

        # the dither hash: one round (an adder, an xor-shift) per stage, 0 to 3
        def hash_in(stage: int, x: Value) -> Value:
            rounds = MIX32_ROUNDS[stage:] if stage == 3 else MIX32_ROUNDS[stage : stage + 1]
            return _mix_rounds(x, rounds)

        # stage 0: into stage 1, the dither hash's first round (of the address from its
        # block's origin, or of a token's seed); a hazard ahead -----------------------------
        with m.If(advance):
            with m.If(take):
                m.d.sync += [
                    s1.valid.eq(self.update.valid & ~fresh),
                    s1.seeding.eq(fresh),
                    s1.addr.eq(new_addr),
                    s1.d.eq(self.update.payload.d),
                    s1.hash.eq(
                        Mux(
                            hash_seed,
                            self.update.payload.seed_round,
                            hash_in(0, self.update.payload.offset),
                        )
                    ),
                    hits.eq(new_hits),
                ]
                m.d.sync += tokened.eq(fresh)
            with m.Else():
                # stage 1 holds (a bubble into stage 2): the older updates move on a stage
                m.d.sync += hits.eq(Cat(Const(0, 1), hits[:-1]))

        # stage 1: read W_H when safe (a bubble into stage 2 otherwise); the hash's second round
        m.d.comb += [
            hidden.raddr.eq(Mux(s1.valid, s1.addr, self.access.addr)),
            hidden.ren.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [
                s2.valid.eq(issue),
                s2.addr.eq(s1.addr),
                s2.d.eq(s1.d),
                s2.hash.eq(hash_in(1, s1.hash)),
                s2.seeding.eq(s1.seeding),
            ]

        # stage 2: the memory's output into a register (the block RAM's own, where it has one);
        # the dither hash's third round
        with m.If(advance):
            m.d.sync += [
                s3.valid.eq(s2.valid),
                s3.addr.eq(s2.addr),
                s3.d.eq(s2.d),
                s3.w.eq(hidden.rdata),
                s3.hash.eq(hash_in(2, s2.hash)),
                s3.seeding.eq(s2.seeding),
            ]

        # stage 3: which boundaries W_H reaches (one comparator each) into a register, as in
        # stage 14; the hash's last round: a token's is kept, an update's with it the dither -
        mixed = Signal(c.round_shift)
        seed_hash = Signal(c.round_shift)
        m.d.comb += mixed.eq(hash_in(3, s3.hash))
        with m.If(advance & s3.seeding):
            m.d.sync += seed_hash.eq(mixed)
        with m.If(advance):
            m.d.sync += [
                s4.valid.eq(s3.valid),
                s4.addr.eq(s3.addr),
                s4.d.eq(s3.d),
                s4.w.eq(s3.w),
                s4.reached.eq(boundaries_reached(c, s3.w)),
                s4.dither.eq(mixed ^ seed_hash),
            ]

        # stage 4: the level, how many boundaries W_H reaches (``reached`` is a thermometer),
        # and its weight, both from the thermometer (the weight looked up from the level in
        # stage 5 was in series with the offset's carry chains) -------------------------------
        with m.If(advance):
            m.d.sync += [
                s5.valid.eq(s4.valid),
                s5.addr.eq(s4.addr),
                s5.d.eq(s4.d),
                s5.w.eq(s4.w),
                s5.lvl.eq(thermometer_count(s4.reached, lvl_t.width)),
                s5.ws.eq(thermometer_lookup(s4.reached, c.level_ints, hid_t)),
                s5.dither.eq(s4.dither),
            ]

        # stage 5: offset from the level as sign and magnitude, the interval's reciprocal: both
        # differences at once, so the magnitude is one carry chain and a multiplexer; the
        # reciprocal of either side looked up from the level alone. Both into the multiplier's
        # registers (the magnitude cut to the contract's widest offset)
        up5 = Signal(signed(c.hidden_width + 1))
        down5 = Signal(signed(c.hidden_width + 1))
        recips = Array(Const(r, recip_t) for r in c.recips)
        scaled = _Product("scaled", recip_t.width, c.offset_max.bit_length())
        recip5 = Mux(
            up5 < 0,
            recips[Mux(s5.lvl == 0, 0, s5.lvl - 1)],
            recips[Mux(s5.lvl > ivl_count - 1, ivl_count - 1, s5.lvl)],
        )
        m.d.comb += [up5.eq(s5.w - s5.ws), down5.eq(s5.ws - s5.w)]
        with m.If(advance):
            m.d.sync += [
                s6.valid.eq(s5.valid),
                s6.addr.eq(s5.addr),
                s6.d.eq(s5.d),
                s6.w.eq(s5.w),
                s6.lvl.eq(s5.lvl),
                s6.below.eq(up5 < 0),
                s6.above.eq(down5 < 0),
                *scaled.load(recip5, [Mux(up5 < 0, down5, up5), Mux(down5 > 0, down5, up5)]),
                s6.dither.eq(s5.dither),
            ]

        # stage 6: |offset| * reciprocal (the multiplier alone); d as magnitude and sign -----
        with m.If(advance):
            m.d.sync += [
                s7.valid.eq(s6.valid),
                s7.addr.eq(s6.addr),
                s7.magnitude.eq(Mux(s6.d < 0, -s6.d, s6.d)),
                s7.negative.eq(s6.d < 0),
                s7.w.eq(s6.w),
                s7.lvl.eq(s6.lvl),
                # d * (w - ws) < 0: the step would move W_H away from its level
                s7.atten.eq(((s6.d > 0) & s6.below) | ((s6.d < 0) & s6.above)),
                s7.round.eq(
                    s6.dither[: c.round_shift]
                    if c.rounding == "stochastic"
                    else 1 << (c.round_shift - 1)
                ),
                *scaled.multiply(),
            ]

        # stage 7: LUT index, LUT read --------------------------------------------------------
        index = scaled.value >> c.recip_shift
        j7 = Signal(range(c.lut_entries))
        m.d.comb += j7.eq(Mux(index >= c.lut_entries, c.lut_entries - 1, index))
        m.d.comb += [self.lut_index.eq(j7), self.lut_en.eq(advance)]
        with m.If(advance):
            m.d.sync += [
                s8.valid.eq(s7.valid),
                s8.addr.eq(s7.addr),
                s8.magnitude.eq(s7.magnitude),
                s8.negative.eq(s7.negative),
                s8.w.eq(s7.w),
                s8.lvl.eq(s7.lvl),
                s8.atten.eq(s7.atten),
                s8.round.eq(s7.round),
            ]

        # stage 8: |d| and M, the LUT's value or 1 (when the step moves towards the level),
        # into the multipliers' registers, M written twice (and without a multiplexer: one to
        # the constant 1 would become a synchronous reset); a negative d's dither inverted ---
        product = _Product("product", c.update_width, c.meta_bits + 1)
        on, off = s8.atten.replicate(c.meta_bits + 1), (~s8.atten).replicate(c.meta_bits + 1)
        meta = [
            (self.lut_value & on) | (~s8.atten << c.meta_bits),
            (self.lut_value | off) & (on | c.meta_one),
        ]
        with m.If(advance):
            m.d.sync += [
                s9.valid.eq(s8.valid),
                s9.addr.eq(s8.addr),
                s9.w.eq(s8.w),
                s9.lvl.eq(s8.lvl),
                s9.round.eq(s8.round ^ s8.negative.replicate(c.round_shift)),
                s9.negative.eq(s8.negative),
                *product.load(s8.magnitude, meta),
            ]

        # stage 9: |d| * M (the multipliers alone) ---------------------------------------------
        with m.If(advance):
            m.d.sync += [
                s10.valid.eq(s9.valid),
                s10.addr.eq(s9.addr),
                s10.w.eq(s9.w),
                s10.lvl.eq(s9.lvl),
                s10.round.eq(s9.round),
                s10.negative.eq(s9.negative),
                *product.multiply(),
            ]

        # stage 10: the multipliers' pieces summed --------------------------------------------
        with m.If(advance):
            m.d.sync += [
                s11.valid.eq(s10.valid),
                s11.addr.eq(s10.addr),
                s11.w.eq(s10.w),
                s11.lvl.eq(s10.lvl),
                s11.round.eq(s10.round),
                s11.negative.eq(s10.negative),
                s11.prod.eq(product.value),
            ]

        # stage 11: ``(d * M + r) >> shift`` (``r`` the dither, ``shift`` bits) as the
        # product's high part and the carry out of its low part with the dither, so the carry
        # chain is the low part's alone (the whole product's, 36 bits, failed 48 MHz on the
        # iCE40). For d < 0 it is ``-((|d| * M + ~r) >> shift)`` (``~r = 2**shift - 1 - r``,
        # inverted in stage 8). Both go to stage 12 as the terms it adds to W_H: negated
        # (inverted, and the carry inverted for the +1) where d >= 0 --------------------------
        low11 = Signal(c.round_shift + 1)
        high11 = Cat(s11.prod[c.round_shift :], Const(0, 1))
        keep = ~s11.negative
        m.d.comb += low11.eq(s11.prod[: c.round_shift] + s11.round)
        with m.If(advance):
            m.d.sync += [
                s12.valid.eq(s11.valid),
                s12.addr.eq(s11.addr),
                s12.w.eq(s11.w),
                s12.lvl.eq(s11.lvl),
                s12.step.eq((high11 ^ keep.replicate(len(high11))).as_signed()),
                s12.carry.eq(low11[-1] ^ keep),
            ]

        # stage 12: W_H moved by the step and its carry ---------------------------------------
        with m.If(advance):
            m.d.sync += [
                s13.valid.eq(s12.valid),
                s13.addr.eq(s12.addr),
                s13.lvl.eq(s12.lvl),
                s13.moved.eq(s12.w + s12.step + s12.carry),
            ]

        # stage 13: saturate ------------------------------------------------------------------
        moved = s13.moved
        with m.If(advance):
            m.d.sync += [
                s14.valid.eq(s13.valid),
                s14.addr.eq(s13.addr),
                s14.lvl.eq(s13.lvl),
                s14.w.eq(Mux(moved < c.w_min, c.w_min, Mux(moved > c.w_max, c.w_max, moved))),
            ]

        # stage 14: write back; the boundaries the new weight reaches (one comparator each);
        # the counter is read two stages before its write in stage 16 (dual-port: here, the
        # block RAM's output register in stage 15, the increment from a register) or one
        # (single-port: a read and a write an odd number of stages apart) ------------------
        count_reader = s15 if single else s14
        m.d.comb += [
            counts.raddr.eq(Mux(count_reader.valid, count_reader.addr, self.access.addr)),
            counts.ren.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [
                s15.valid.eq(s14.valid),
                s15.addr.eq(s14.addr),
                s15.old.eq(s14.lvl),
                s15.reached.eq(boundaries_reached(c, s14.w)),
            ]
        hidden_we = (back.valid & advance) | self.access.we
        hidden_waddr = Mux(back.valid, back.addr, self.access.addr)
        hidden_wdata = Mux(back.valid, back.w, self.access.wdata)

        # stage 15: the new level (how many boundaries it reaches), whether it changed ------
        new15 = Signal(lvl_t)
        m.d.comb += new15.eq(thermometer_count(s15.reached, lvl_t.width))
        with m.If(advance):
            m.d.sync += [
                s16.valid.eq(s15.valid),
                s16.addr.eq(s15.addr),
                s16.old.eq(s15.old),
                s16.new.eq(new15),
                s16.event.eq(new15 != s15.old),
                # the counter's output register (single-port: only for the access port's read,
                # the increment reads the memory in stage 16)
                s16.count.eq(counts.rdata),
            ]

        # stage 16: emit and count the level change -------------------------------------------
        # a saturating increment, written whether or not the count is saturated: the carry out
        # of the increment says so, in the data alone (a comparison in the write enable was
        # the SPRAM's read -> compare -> write enable, 25.8 ns at 48 MHz)
        count = counts.rdata if single else s16.count
        incremented = Signal(self.counter_width + 1)
        m.d.comb += incremented.eq(count + 1)
        saturating = incremented[:-1] | incremented[-1].replicate(self.counter_width)
        counts_we = (s16.valid & advance & s16.event) | self.access.clear
        counts_waddr = Mux(s16.valid, s16.addr, self.access.addr)
        counts_wdata = Mux(s16.valid, saturating, 0)
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
        # read is wanted while stage 16 holds an update: stage 15 is empty then)
        counts_wsel = counts_we
        if single:
            counts_wsel = s16.valid | self.access.clear | self.initializing
        m.d.comb += [
            hidden.we.eq(hidden_we),
            hidden.wsel.eq(hidden_we),
            hidden.waddr.eq(hidden_waddr),
            hidden.wdata.eq(hidden_wdata),
            counts.we.eq(counts_we),
            counts.wsel.eq(counts_wsel),
            counts.waddr.eq(counts_waddr),
            counts.wdata.eq(counts_wdata),
            self.events.valid.eq(s16.valid & s16.event),
            self.events.payload.addr.eq(s16.addr),
            self.events.payload.old.eq(s16.old),
            self.events.payload.new.eq(s16.new),
            # the access port reads through the output registers: the memories' outputs
            # reach no logic of the link's
            self.access.rdata.eq(s3.w),
            self.access.count.eq(s16.count),
        ]
        return m
