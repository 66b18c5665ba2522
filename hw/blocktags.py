"""The block cache's lookup: which resident block or metadata line serves a command,
decided in command order over every slot (docs/RTL.md, "Block cache").

Two register stages at the end of the address decoder (which never stalls):
  L1 compares the command's block (plane line // 8, 29 bits) with every plane slot's tag
     and its k (a raw write: its line's place in the block + 1) with the slot's lines, its
     metadata line (a raw write: the written line) with every metadata slot's tag, and its
     (codebook, k) with the table loaded once the command ahead has decided; it compares
     with the commands one and two ahead as well, whose allocations the tags do not hold yet;
  L2 decides: a plane hit is a valid slot holding the block with at least k lines, a
     metadata hit a valid slot holding the line.  A miss takes the slot at the round-robin
     pointer (the same order the cache component allocates in).  The loaded table changes
     at the end of L2, so the next command's L2 sees it; the slots' valid bits, tags and
     pointers (plane and metadata alike) take the decision a cycle later, from registers;
     while they do, the next command's L2 forwards it and the command after compares in
     L1 with the slot being filled as it will be (the decision, a 128-way or 32-way OR,
     and the update of every slot would not both fit in one cycle).
The hit slot's number is encoded from L2's registered one-hot vector on the way out.

Rules (sw/image/dram_errors.py `SlotModel` applies the same ones): a quantized read's miss
invalidates the slot holding its block with fewer lines (a block is resident at most
once); a raw read and a table load (codebook lines) take a slot without making it
resident, the table load first; a raw write invalidates the plane slot whose lines hold
its line and the metadata slot holding it, and forgets the loaded table; bad requests
change nothing.  A failed fetch's slot stays resident: later hits get its poison until
the slot is replaced, so the decisions depend on the request order only.
"""

import functools
import operator

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .csr import LOOKUP_EVENTS
from .layouts import COMMAND, Kind, is_fp, is_quantized, needs_plane

#: a command in flight and whether the stage holds one
STAGE = data.StructLayout({"valid": 1, "cmd": COMMAND})
#: register stages from the decoder's last stage to the command queue's input
LOOKUP_STAGES = 2
BLOCK_BITS = 29                     #: plane line // 8


def _next(pointer, slots: int):
    """`pointer + 1` modulo `slots`."""
    return Mux(pointer == slots - 1, 0, pointer + 1)


def _rotate(hot: Signal):
    """A one-hot vector moved to the next slot."""
    return Cat(hot[-1], hot[:-1])


def _encode(hot: Signal, width: int):
    """The number of the set bit of one-hot `hot` (0 when none)."""
    return Cat(*[functools.reduce(operator.or_, [hot[e] for e in range(len(hot)) if e >> b & 1], 0)
                 for b in range(width)])


class BlockTags(wiring.Component):
    def __init__(self, *, plane_slots: int, meta_slots: int):
        self.plane_slots, self.meta_slots = plane_slots, meta_slots
        super().__init__({
            "input": In(STAGE),         # the decoder's last stage (registers)
            "output": Out(STAGE),       # LOOKUP_STAGES cycles later, the misses and slots filled in
            "events": Out(LOOKUP_EVENTS),
            "invalidate": In(1),        # every slot not resident, the table forgotten (while idle)
        })

    def elaborate(self, platform):
        m = Module()
        P, M = self.plane_slots, self.meta_slots
        c = self.input.cmd
        l1, l2 = Signal(STAGE), Signal(STAGE)       # the commands in L2 and leaving the lookup
        # (named: sim/formal_cache.py's k-induction invariants refer to these registers)
        p_tag = [Signal(BLOCK_BITS, name=f"plane_tag{e}") for e in range(P)]
        p_lines = [Signal(4, name=f"plane_lines{e}") for e in range(P)]
        m_tag = [Signal(32, name=f"meta_tag{e}") for e in range(M)]
        p_valid, p_hot = Signal(P, name="p_valid"), Signal(P, init=1, name="p_hot")
        p_ptr = Signal(range(P), name="p_ptr")
        m_valid, m_hot = Signal(M, name="m_valid"), Signal(M, init=1, name="m_hot")
        m_ptr = Signal(range(M), name="m_ptr")
        table_valid, table_codebook = Signal(name="table_valid"), Signal.like(c.codebook, name="table_codebook")
        table_k = Signal(4)
        # the command in L2: its kind, and whether it loads the table (L1's `table_hit` forwarded)
        cmd, live = l1.cmd, l1.valid
        quantized, fp, is_write, loads_table, table_hit = Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.comb += [quantized.eq(is_quantized(cmd.kind)), fp.eq(is_fp(cmd.kind)), is_write.eq(cmd.kind == Kind.RAW_WR),
                     loads_table.eq(cmd.lut & ~table_hit)]

        # --- the plane decision of the command leaving (l2), applied to the slots now ---
        pend_fill, pend_table, pend_resident = Signal(name="pend_fill"), Signal(name="pend_table"), Signal()
        pend_write, pend_qmiss, pend_clears = Signal(), Signal(), Signal()
        pend_match, pend_same = Signal(P), Signal(P)        # the slots it hit; those holding its block
        p_ahead, table_hot_ahead, dropped = Signal(P, name="p_ahead"), Signal(P), Signal(P)
        valid_now, valid_next = Signal(P, name="p_valid_now"), Signal(P)   # (valid_next: invalidated too)
        hot_now, ptr_now = Signal(P), Signal(range(P))
        after = [p_hot, _rotate(p_hot), _rotate(_rotate(p_hot))]      # the pointer's slot, the next, the one after
        m.d.comb += [
            p_ahead.eq(Mux(pend_table, after[1], after[0]) & pend_fill.replicate(P)),
            table_hot_ahead.eq(p_hot & pend_table.replicate(P)),
            dropped.eq(Mux(pend_write, pend_match, Mux(pend_qmiss, pend_same, 0))),
            valid_now.eq((p_valid & ~dropped & ~table_hot_ahead & ~p_ahead) | (p_ahead & pend_resident.replicate(P))),
            valid_next.eq(Mux(self.invalidate, 0, valid_now)),
            hot_now.eq(Mux(pend_table & pend_fill, after[2], Mux(pend_table | pend_fill, after[1], after[0]))),
            ptr_now.eq(Mux(pend_table & pend_fill, _next(_next(p_ptr, P), P),
                           Mux(pend_table | pend_fill, _next(p_ptr, P), p_ptr))),
        ]
        m.d.sync += [p_valid.eq(valid_next), p_hot.eq(hot_now), p_ptr.eq(ptr_now)]
        for e in range(P):
            with m.If(p_ahead[e]):
                m.d.sync += [p_tag[e].eq(l2.cmd.plane_line[3:]), p_lines[e].eq(l2.cmd.k)]

        # --- the metadata decision of the command leaving, applied to the slots now ---
        pend_meta_fill, pend_meta_resident = Signal(name="pend_meta_fill"), Signal(name="pend_meta_resident")
        l2_m_match = Signal(M, name="l2_m_match")               # the metadata slots it hit
        m_ahead, m_valid_now = Signal(M, name="m_ahead"), Signal(M, name="m_valid_now")
        meta_ptr_now = Signal(range(M))
        m.d.comb += [
            m_ahead.eq(m_hot & pend_meta_fill.replicate(M)),
            m_valid_now.eq((m_valid & ~Mux(pend_write, l2_m_match, 0))
                           | (m_ahead & pend_meta_resident.replicate(M))),
            meta_ptr_now.eq(Mux(pend_meta_fill, _next(m_ptr, M), m_ptr)),
        ]
        m.d.sync += [m_valid.eq(Mux(self.invalidate, 0, m_valid_now)), m_ptr.eq(meta_ptr_now),
                     m_hot.eq(Mux(pend_meta_fill, _rotate(m_hot), m_hot))]
        for e in range(M):
            with m.If(m_ahead[e]):
                m.d.sync += m_tag[e].eq(l2.cmd.meta_line)

        # --- L1: compare with every slot (as L2 will find them) and with the commands ahead ---
        key, need, meta_key = Signal(BLOCK_BITS), Signal(4), Signal(32)
        write = c.kind == Kind.RAW_WR
        m.d.comb += [key.eq(c.plane_line[3:]), need.eq(Mux(write, c.plane_line[:3] + 1, c.k)),
                     meta_key.eq(Mux(write, c.plane_line, c.meta_line))]
        l1_key, l1_meta_key = Signal(BLOCK_BITS), Signal(32)
        p_hit_base, p_same_base, m_eq = Signal(P), Signal(P), Signal(M)
        ahead_eq, ahead_deep, ahead_meta_eq = Signal(), Signal(), Signal()
        # (the metadata slots are compared as they are; the one being filled now is compared
        # with the command leaving, two ahead, and L2 picks that compare for it)
        two_ahead_meta_eq, two_ahead_meta_fill = Signal(), Signal()

        def as_l2_finds(filled, per_slot):
            """Per slot: `filled` for the slot the command leaving fills, else `per_slot(e)`."""
            return Cat(*[Mux(p_ahead[e], filled, per_slot(e)) for e in range(P)])

        holds = Signal(P)
        m.d.comb += holds.eq(as_l2_finds(l2.cmd.plane_line[3:] == key, lambda e: p_tag[e] == key))
        deep = as_l2_finds(l2.cmd.k >= need, lambda e: p_lines[e] >= need)
        # (`live & loads_table`, spelled out: with that signal shared here the k-induction of
        # sim/formal_cache.py's `tags_model` takes about 18 s instead of 3)
        ahead_loads_table, ahead_writes = live & cmd.lut & ~table_hit, live & is_write
        m.d.sync += [l1.eq(self.input), l1_key.eq(key), l1_meta_key.eq(meta_key),
                     p_same_base.eq(valid_next & holds), p_hit_base.eq(valid_next & holds & deep),
                     m_eq.eq(Cat(*[tag == meta_key for tag in m_tag])),
                     two_ahead_meta_eq.eq(l2.cmd.meta_line == meta_key), two_ahead_meta_fill.eq(pend_meta_fill),
                     ahead_eq.eq(key == l1_key), ahead_deep.eq(l1.cmd.k >= need),
                     ahead_meta_eq.eq(meta_key == l1_meta_key),
                     table_hit.eq(~self.invalidate & Mux(
                         ahead_loads_table, (l1.cmd.codebook == c.codebook) & (l1.cmd.k == c.k),
                         ~ahead_writes & table_valid & (table_codebook == c.codebook) & (table_k == c.k)))]

        # --- L2: decide; the table changes now, the slots next ---
        # (every value used more than once is a signal: the Verilog then computes it once)
        fetch_plane, fetch_meta = Signal(), Signal()
        ahead_serves, ahead_dropped = Signal(), Signal()     # the fill ahead holds the block; its drop took it
        p_match, same, plane_slot, m_match = Signal(P), Signal(P), Signal(range(P)), Signal(M)
        m_two_ahead, m_holds = Signal(M), Signal(M)     # the slot the command two ahead filled; L1's compares
        # The hit, without the vector p_match: L1 found the block in at most one slot (a block is
        # resident at most once); whether that slot lies at the pointer, the next or the one after
        # is three OR trees over registers, and the pending decision and the table load pick which
        # of those positions are taken (the table load ahead, the fill ahead, this table load).
        near, taken, hit = Signal(3), Signal(), Signal()
        m.d.comb += [
            near.eq(Cat(*[(p_hit_base & position) != 0 for position in after])),
            taken.eq((near[0] & (pend_table | pend_fill | loads_table))
                     | (near[1] & ((pend_table & pend_fill) | (loads_table & (pend_table ^ pend_fill))))
                     | (near[2] & loads_table & pend_table & pend_fill)),
            hit.eq((pend_fill & ahead_serves & ahead_deep) | ((p_hit_base != 0) & ~taken & ~ahead_dropped)),
        ]

        def after_ahead(filled, base):
            """Per slot, once the command leaving has taken its slots: `filled` for the slot it
            fills; L1's `base` for the others, but for its table load's slot and its dropped block."""
            return (p_ahead & filled.replicate(P)) | (~p_ahead & base & ~table_hot_ahead & ~ahead_dropped.replicate(P))

        m.d.comb += [
            ahead_serves.eq(ahead_eq & pend_resident),
            ahead_dropped.eq(ahead_eq & pend_clears),
            same.eq(after_ahead(ahead_serves, p_same_base)),
            # (the slot a hit names; a hit on the table load's slot is no hit: `taken`)
            p_match.eq(after_ahead(ahead_serves & ahead_deep, p_hit_base)),
            fetch_plane.eq(needs_plane(cmd.kind) & ~(quantized & hit)),
            plane_slot.eq(Mux(loads_table, _next(ptr_now, P), ptr_now)),
            # (a metadata slot holds the line of the command that filled it: the command leaving
            # fills `m_ahead`, the one before it filled the slot just behind the pointer)
            m_two_ahead.eq(Cat(m_hot[1:], m_hot[0]) & two_ahead_meta_fill.replicate(M)),
            m_holds.eq((m_two_ahead & two_ahead_meta_eq.replicate(M)) | (~m_two_ahead & m_eq)),
            m_match.eq(m_valid_now & ((m_ahead & ahead_meta_eq.replicate(M)) | (~m_ahead & m_holds))),
            fetch_meta.eq(fp & (m_match == 0)),
        ]
        m.d.sync += [pend_fill.eq(live & fetch_plane), pend_table.eq(live & loads_table),
                     pend_resident.eq(live & quantized & ~self.invalidate),
                     pend_write.eq(live & is_write), pend_qmiss.eq(live & quantized & fetch_plane),
                     pend_clears.eq(live & ((quantized & fetch_plane) | (is_write & hit))),
                     pend_match.eq(p_match), pend_same.eq(same),
                     pend_meta_fill.eq(live & fetch_meta), pend_meta_resident.eq(live & fetch_meta & ~self.invalidate)]
        with m.If(live):
            with m.If(is_write):
                m.d.sync += table_valid.eq(0)
            with m.If(loads_table):
                m.d.sync += [table_valid.eq(1), table_codebook.eq(cmd.codebook), table_k.eq(cmd.k)]

        with m.If(self.invalidate):
            m.d.sync += table_valid.eq(0)

        # --- out: L2's decision, registered; the hit slots encoded ---
        l2_plane_slot, l2_meta_slot = Signal(range(P)), Signal(range(M))
        m.d.sync += [l2.eq(l1), l2.cmd.fetch_plane.eq(fetch_plane), l2.cmd.fetch_meta.eq(fetch_meta),
                     l2.cmd.fetch_table.eq(loads_table), l2_m_match.eq(m_match),
                     l2_plane_slot.eq(plane_slot), l2_meta_slot.eq(meta_ptr_now)]
        out = l2.cmd
        m.d.comb += [
            self.output.eq(l2),
            self.output.cmd.plane_slot.eq(Mux(out.fetch_plane, l2_plane_slot, _encode(pend_match, len(l2_plane_slot)))),
            self.output.cmd.meta_slot.eq(Mux(out.fetch_meta, l2_meta_slot, _encode(l2_m_match, len(l2_meta_slot)))),
            self.events.plane_lookup.eq(l2.valid & is_quantized(out.kind)),
            self.events.plane_miss.eq(l2.valid & is_quantized(out.kind) & out.fetch_plane),
            self.events.meta_lookup.eq(l2.valid & is_fp(out.kind)),
            self.events.meta_miss.eq(l2.valid & out.fetch_meta),
        ]
        return m
