"""Formal harnesses around the block cache at small parameters: its lookup
(hw/blocktags.py `BlockTags`) against a plain model of the slots, and its slots
(hw/blockcache.py `BlockCache`): references, the round-robin pointer, failed flags.

The lookup's model is sequential: it takes the decisions one command at a time, as they
leave the lookup, from a table of slots (valid, block, lines), two round-robin pointers
and the loaded table, by the rules in blocktags.py's docstring.  The design takes them in
two pipelined stages with the command ahead's allocation forwarded; the two must agree
on every command.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import Assert, Assume, Cover

from ..hw import blockcache, blocktags
from ..hw.layouts import Kind, is_fp, is_quantized, needs_plane
from .formal_bench import Harness, driven, elaborated, previous, shadow_count, sticky

TAG_PLANE_SLOTS = 3     #: odd, so the round-robin pointer wraps at a non-power of two
TAG_META_SLOTS = 2
CACHE_SLOTS = 2         #: plane and metadata slots of the BlockCache harness
CACHE_REFERENCES = 3    #: its `max_references`
CACHE_DATA_WIDTH = 512  #: one beat a line: a burst of k lines is k beats


def _next(pointer, slots: int):
    return Mux(pointer == slots - 1, 0, pointer + 1)


# -- BlockTags ---------------------------------------------------------------------------

class _LookupModel:
    """The slots as the rules describe them, updated by each command leaving the lookup
    (`out`, a STAGE); `invalidate` of the cycle before clears them after it (the design
    judges the command in its decision stage by the state before the invalidation).
    Every register `r` has its next value `self.next[r.name]`.  The design's table has
    already taken the command now leaving, so it equals the next values; its plane and
    metadata slots take it in this cycle, so they equal the model's registers (the
    k-induction invariants)."""

    def __init__(self, m: Module, out, invalidate):
        P, M = TAG_PLANE_SLOTS, TAG_META_SLOTS
        cmd = out.cmd
        self.next = {}

        def state(shape, name):
            register, following = Signal(shape, name=f"model_{name}"), Signal(shape, name=f"model_{name}_next")
            m.d.comb += following.eq(register)          # unless a rule below changes it
            m.d.sync += register.eq(following)
            self.next[name] = following
            return register

        valid = state(P, "p_valid")
        tags = [state(blocktags.BLOCK_BITS, f"plane_tag{e}") for e in range(P)]
        lines = [state(4, f"plane_lines{e}") for e in range(P)]
        pointer = state(range(P), "p_ptr")
        meta_valid = state(M, "m_valid")
        meta_tags = [state(32, f"meta_tag{e}") for e in range(M)]
        meta_pointer = state(range(M), "m_ptr")
        table_valid, table_codebook, table_k = state(1, "table_valid"), state(cmd.codebook.shape(), "table_codebook"), \
            state(4, "table_k")
        block = cmd.plane_line[3:]
        self.quantized, self.fp = Signal(name="model_quantized"), Signal(name="model_fp")
        self.loads_table, self.fill_slot = Signal(name="model_loads_table"), Signal(range(P), name="model_fill_slot")
        self.same_block = Signal(P, name="model_same_block")
        self.resident = Signal(P, name="model_resident")     # slots holding the block with >= k lines
        self.hit, self.fetch_plane = Signal(name="model_hit"), Signal(name="model_fetch_plane")
        self.meta_resident, self.fetch_meta = Signal(M, name="model_meta_resident"), Signal(name="model_fetch_meta")
        self.fill_hot, self.meta_hot = Signal(P, name="model_fill_hot"), Signal(M, name="model_meta_hot")
        self.valid, self.tags, self.lines, self.pointer, self.meta_valid, self.meta_tags, self.meta_pointer = \
            valid, tags, lines, pointer, meta_valid, meta_tags, meta_pointer
        is_write = cmd.kind == Kind.RAW_WR
        m.d.comb += [
            self.quantized.eq(is_quantized(cmd.kind)), self.fp.eq(is_fp(cmd.kind)),
            self.loads_table.eq(cmd.lut & ~(table_valid & (table_codebook == cmd.codebook) & (table_k == cmd.k))),
            self.fill_slot.eq(Mux(self.loads_table, _next(pointer, P), pointer)),
            self.same_block.eq(Cat(*[valid[e] & (tags[e] == block) for e in range(P)])),
            self.resident.eq(Cat(*[self.same_block[e] & (lines[e] >= cmd.k) & ~(self.loads_table & (pointer == e))
                                   for e in range(P)])),
            self.hit.eq(self.quantized & (self.resident != 0)),
            self.fetch_plane.eq(needs_plane(cmd.kind) & ~self.hit),
            self.meta_resident.eq(Cat(*[meta_valid[e] & (meta_tags[e] == cmd.meta_line) for e in range(M)])),
            self.fetch_meta.eq(self.fp & (self.meta_resident == 0)),
            self.fill_hot.eq(Cat(*[out.valid & self.fetch_plane & (self.fill_slot == e) for e in range(P)])),
            self.meta_hot.eq(Cat(*[out.valid & self.fetch_meta & (meta_pointer == e) for e in range(M)])),
        ]
        # the slots' next valid bits in one expression, in the rules' order: the table's
        # codebook lines take a slot first; a quantized miss drops the block's other copy (a
        # block is resident at most once); the fill is resident only for a quantized read;
        # a raw write drops the slot whose lines hold its line, and the metadata line
        table_hot = Cat(*[self.loads_table & (pointer == e) for e in range(P)])
        written = Cat(*[is_write & self.same_block[e] & (lines[e] > cmd.plane_line[:3]) for e in range(P)])
        dropped = (self.same_block & (self.quantized & self.fetch_plane).replicate(P)) | written
        meta_written = Cat(*[is_write & (meta_tags[e] == cmd.plane_line) for e in range(M)])
        nxt = self.next
        with m.If(out.valid):
            m.d.comb += [nxt["p_valid"].eq((valid & ~table_hot & ~dropped & ~self.fill_hot)
                                           | (self.fill_hot & self.quantized.replicate(P))),
                         nxt["m_valid"].eq((meta_valid & ~meta_written) | self.meta_hot)]
            with m.If(self.loads_table):
                m.d.comb += [nxt["table_valid"].eq(1), nxt["table_codebook"].eq(cmd.codebook),
                             nxt["table_k"].eq(cmd.k), nxt["p_ptr"].eq(_next(pointer, P))]
            with m.If(self.fetch_plane):
                m.d.comb += nxt["p_ptr"].eq(_next(self.fill_slot, P))
            for e in range(P):
                with m.If(self.fill_hot[e]):
                    m.d.comb += [nxt[f"plane_tag{e}"].eq(block), nxt[f"plane_lines{e}"].eq(cmd.k)]
            with m.If(is_write):
                m.d.comb += nxt["table_valid"].eq(0)
            with m.If(self.fetch_meta):
                m.d.comb += nxt["m_ptr"].eq(_next(meta_pointer, M))
            for e in range(M):
                with m.If(self.meta_hot[e]):
                    m.d.comb += nxt[f"meta_tag{e}"].eq(cmd.meta_line)
        self.invalidated = previous(m, invalidate, "invalidate_before")
        with m.If(self.invalidated):
            m.d.comb += [nxt["p_valid"].eq(0), nxt["m_valid"].eq(0), nxt["table_valid"].eq(0)]

    def invariants(self, inner: Module) -> list:
        """The design's slots equal the model's (with the invalidation of the cycle before
        applied); its slots once they take the command leaving, and its table, equal the
        model's next; no block or metadata line is resident twice; the one-hot pointers and
        forwarded allocations agree."""
        P, M = TAG_PLANE_SLOTS, TAG_META_SLOTS
        now = {"p_valid": Mux(self.invalidated, 0, self.valid), "p_ptr": self.pointer,
               "m_valid": Mux(self.invalidated, 0, self.meta_valid), "m_ptr": self.meta_pointer}
        now |= {f"plane_tag{e}": self.tags[e] for e in range(P)} | {f"plane_lines{e}": self.lines[e] for e in range(P)}
        now |= {f"meta_tag{e}": self.meta_tags[e] for e in range(M)}
        checks = [Assert(driven(inner, name) == now.get(name, following)) for name, following in self.next.items()]
        checks += [Assert(driven(inner, f"{kind}_valid_now") == self.next[f"{kind}_valid"]) for kind in ("p", "m")]
        checks += [Assert(~(self.valid[e] & self.valid[f] & (self.tags[e] == self.tags[f])))
                   for e in range(P) for f in range(e + 1, P)]
        checks += [Assert(~(self.meta_valid[e] & self.meta_valid[f] & (self.meta_tags[e] == self.meta_tags[f])))
                   for e in range(M) for f in range(e + 1, M)]
        checks += [Assert(self.pointer < P), Assert(self.meta_pointer < M),
                   Assert(driven(inner, "p_hot") == (1 << driven(inner, "p_ptr"))[:P]),
                   Assert(driven(inner, "m_hot") == (1 << driven(inner, "m_ptr"))[:M]),
                   Assert(driven(inner, "p_ahead") == self.fill_hot), Assert(driven(inner, "m_ahead") == self.meta_hot)]
        return checks


def _tags_bench(h: Harness, m: Module):
    """The real BlockTags fed a free command every cycle (any kind a decoder makes; `lut`
    only on quantized reads) and a free `invalidate`; returns (dut, model)."""
    dut = blocktags.BlockTags(plane_slots=TAG_PLANE_SLOTS, meta_slots=TAG_META_SLOTS)
    inner = elaborated(m, dut, "dut")
    command, invalidate = h.free(blocktags.STAGE.size, "command"), h.free(1, "invalidate")
    m.d.comb += [dut.input.eq(command), dut.invalidate.eq(invalidate)]
    c = dut.input.cmd
    m.d.comb += [Assume(c.kind != Kind.LUT_LOAD), Assume(~c.lut | is_quantized(c.kind))]
    return dut, inner, _LookupModel(m, dut.output, invalidate)


def tags_model(h, m):
    """Every command leaves the lookup two cycles after it entered, unchanged but for the
    decision; the decision equals the model's: a quantized read hits iff its block is
    resident with >= k lines (and then names a slot holding it), a miss and every raw read
    fill the slot at the pointer, an fp16 / bf16 read's metadata line likewise, a table
    load exactly when the loaded (codebook, k) differs; the lookup events count them."""
    dut, inner, model = _tags_bench(h, m)
    out, cmd = dut.output, dut.output.cmd
    m.d.comb += model.invariants(inner)
    entered = previous(m, previous(m, dut.input.as_value(), "input_1"), "input_2")
    entered = blocktags.STAGE(entered)
    same = [out.valid == entered.valid] + [getattr(cmd, f) == getattr(entered.cmd, f)
                                          for f in ("kind", "tag", "plane_line", "meta_line", "k", "codebook", "lut")]
    meta_hit = model.fp & ~model.fetch_meta
    m.d.comb += [Assert(s) for s in same]
    with m.If(out.valid):
        m.d.comb += [
            Assert(cmd.fetch_table == model.loads_table),
            Assert(cmd.fetch_plane == model.fetch_plane),
            Assert(~model.hit | ((cmd.plane_slot < TAG_PLANE_SLOTS) & model.resident.bit_select(cmd.plane_slot, 1))),
            Assert(~model.fetch_plane | (cmd.plane_slot == model.fill_slot)),
            Assert(cmd.fetch_meta == model.fetch_meta),
            Assert(~meta_hit | ((cmd.meta_slot < TAG_META_SLOTS) & model.meta_resident.bit_select(cmd.meta_slot, 1))),
            Assert(~model.fetch_meta | (cmd.meta_slot == model.meta_pointer)),
        ]
    ev = dut.events
    m.d.comb += [Assert(ev.plane_lookup == (out.valid & model.quantized)),
                 Assert(ev.plane_miss == (out.valid & model.quantized & model.fetch_plane)),
                 Assert(ev.meta_lookup == (out.valid & model.fp)),
                 Assert(ev.meta_miss == (out.valid & model.fetch_meta))]


def tags_cover(h, m):
    """A hit; a hit on the slot the command just ahead filled (the forwarded compare); a
    miss that evicts a resident block; a miss for more lines of a resident block; a table
    load; a metadata hit; a metadata hit on the slot the command just ahead or two ahead
    filled (the compares forwarded in L2 and L1); a raw write that invalidates a resident
    block, and one that invalidates a metadata line."""
    dut, _, model = _tags_bench(h, m)
    out, cmd = dut.output, dut.output.cmd
    live = out.valid
    filled_ahead = previous(m, live & model.quantized & model.fetch_plane, "filled_ahead")
    slot_ahead = previous(m, model.fill_slot, "slot_ahead")
    meta_filled = [previous(m, live & model.fetch_meta, "meta_filled_ahead")]
    meta_filled.append(previous(m, meta_filled[0], "meta_filled_two_ahead"))
    meta_slot_ahead = [previous(m, model.meta_pointer, "meta_slot_ahead")]
    meta_slot_ahead.append(previous(m, meta_slot_ahead[0], "meta_slot_two_ahead"))
    meta_hit = live & model.fp & ~model.fetch_meta
    is_write = cmd.kind == Kind.RAW_WR
    m.d.comb += [
        Cover(live & model.hit),
        Cover(live & model.hit & filled_ahead & (cmd.plane_slot == slot_ahead)),
        Cover(live & model.quantized & model.fetch_plane & model.valid.bit_select(model.fill_slot, 1)),
        Cover(live & model.quantized & model.fetch_plane & (model.same_block != 0)),
        Cover(live & model.loads_table),
        Cover(meta_hit),
        *[Cover(meta_hit & filled & (cmd.meta_slot == slot)) for filled, slot in zip(meta_filled, meta_slot_ahead)],
        Cover(live & is_write & (model.resident != 0)),
        Cover(live & is_write & (Cat(*[model.meta_valid[e] & (model.meta_tags[e] == cmd.plane_line)
                                       for e in range(TAG_META_SLOTS)]) != 0)),
    ]


# -- BlockCache --------------------------------------------------------------------------

class _CacheKind:
    """One slot kind's shadow state: references per slot, the round-robin pointer, failed
    flags, and which slots await their burst; with the assumptions that keep the other
    side legal."""

    def __init__(self, m: Module, dut: blockcache.BlockCache, kind: str, open_failed):
        S, is_meta = CACHE_SLOTS, kind == "meta"
        self.kind, self.alloc, self.free = kind, getattr(dut, f"{kind}_alloc"), getattr(dut, f"{kind}_free")
        acquire, release = dut.acquire, dut.use.release
        up = dut.acquire_valid & getattr(acquire, kind)
        down = dut.use.release_valid & getattr(release, kind)
        up_slot, down_slot = getattr(acquire, f"{kind}_slot"), getattr(release, f"{kind}_slot")
        self.refs = [shadow_count(m, up & (up_slot == s), down & (down_slot == s), f"shadow_{kind}_refs{s}", 4)
                     for s in range(S)]
        self.total = total = shadow_count(m, up, down, f"shadow_{kind}_references", 4)
        self.pointer = Signal(range(S), name=f"shadow_{kind}_pointer")
        self.failed = Signal(S, name=f"shadow_{kind}_failed")
        awaiting = Signal(S, name=f"shadow_{kind}_awaiting")
        held = Cat(*[r != 0 for r in self.refs])
        beat = dut.beat.payload
        mine = dut.beat.valid & (beat.meta == is_meta)
        self.burst_end = mine & beat.last
        m.d.comb += [
            Assume(~up | (up_slot < S)), Assume(~down | ((down_slot < S) & held.bit_select(down_slot, 1))),
            Assume(total + up - down <= CACHE_REFERENCES),
            Assume(~self.alloc | (self.free & ~awaiting.bit_select(self.pointer, 1))),
            Assume(~mine | ((beat.slot < S) & awaiting.bit_select(beat.slot, 1))),
        ]
        with m.If(self.alloc):
            m.d.sync += self.pointer.eq(_next(self.pointer, S))
        for s in range(S):
            with m.If(self.alloc & (self.pointer == s)):
                m.d.sync += [self.failed[s].eq(0), awaiting[s].eq(1)]
            with m.If(self.burst_end & (beat.slot == s)):
                m.d.sync += [self.failed[s].eq(open_failed | beat.failed), awaiting[s].eq(0)]


def _cache_bench(h: Harness, m: Module):
    """The real BlockCache (2 + 2 slots, 3 references, one beat a line) with free inputs;
    assumed: references released only while held and never more than 3 in flight, a slot
    allocated only when offered free and its last burst landed, beats only into slots
    awaiting their burst, a burst's beats together (the DRAM port's landing order)."""
    dut = blockcache.BlockCache(plane_slots=CACHE_SLOTS, meta_slots=CACHE_SLOTS, data_width=CACHE_DATA_WIDTH,
                                max_references=CACHE_REFERENCES)
    inner = elaborated(m, dut, "dut")
    inputs = [(name, getattr(dut, name)) for name in ("plane_alloc", "meta_alloc", "acquire", "acquire_valid")]
    inputs += [(f"use_{name}", getattr(dut.use, name)) for name in ("release", "release_valid", "started")]
    inputs += [(f"read_{name}", getattr(dut.read, name)) for name in ("plane_slot", "plane_column", "plane_index",
                                                                        "meta_slot")]
    for name, port in inputs:
        m.d.comb += port.eq(h.free(len(port.as_value()) if hasattr(port, "as_value") else len(port), name))
    beat_valid, beat = h.free(1, "beat_valid"), h.free(len(dut.beat.payload.as_value()), "beat_payload")
    m.d.comb += [dut.beat.valid.eq(beat_valid), dut.beat.payload.eq(beat)]
    payload = dut.beat.payload
    open_burst = Signal(name="open_burst")             # a burst's first beats taken, not its last
    open_failed = Signal(name="open_failed")           # ... one of them failed
    open_meta, open_slot = Signal(name="open_meta"), Signal(8, name="open_slot")
    with m.If(beat_valid):
        m.d.sync += [open_burst.eq(~payload.last), open_failed.eq((open_failed | payload.failed) & ~payload.last),
                     open_meta.eq(payload.meta), open_slot.eq(payload.slot)]
    m.d.comb += Assume(~(beat_valid & open_burst) | ((payload.meta == open_meta) & (payload.slot == open_slot)))
    kinds = [_CacheKind(m, dut, kind, open_failed) for kind in ("plane", "meta")]
    return dut, inner, kinds, open_failed


def cache_references(h, m):
    """Reference counts equal the jobs holding each slot (no underflow, no overflow: the
    design's counters plus the acquire awaiting its count equal the shadow counts, <= 3);
    the pointer is round-robin; a slot is offered for refill (`free`) only with no
    reference.  Invariants for k-induction: each slot's held zero flag equals its count's
    comparison, the references in flight are the slots' counts summed, and the design's
    register of the slot after the pointer is that slot."""
    dut, inner, kinds, _ = _cache_bench(h, m)
    for k in kinds:
        m.d.comb += [Assert(getattr(dut, f"{k.kind}_next") == k.pointer),
                     Assert(~k.free | (Cat(*k.refs).word_select(k.pointer, 4) == 0)),
                     Assert(k.total == sum(k.refs)),
                     Assert(driven(inner, f"{k.kind}_following") == _next(k.pointer, CACHE_SLOTS))]
        uncounted, uncounted_slot = driven(inner, f"{k.kind}_acquired"), driven(inner, f"{k.kind}_acquired_slot")
        for s, shadow in enumerate(k.refs):
            count = driven(inner, f"{k.kind}_refs{s}")
            m.d.comb += [Assert(count + (uncounted & (uncounted_slot == s)) == shadow), Assert(shadow <= CACHE_REFERENCES),
                         Assert(driven(inner, f"{k.kind}_idle{s}") == (count == 0))]


def cache_failed_flags(h, m):
    """A slot's failed flag is set exactly when the last burst into it since its
    allocation had an SLVERR / DECERR beat, and stays set until the slot is allocated
    again.  Invariants for k-induction: the design's open-burst error bit equals the
    shadow's, and its register of the slot after the pointer is that slot."""
    dut, inner, kinds, open_failed = _cache_bench(h, m)
    m.d.comb += Assert(driven(inner, "failed") == open_failed)
    for k in kinds:
        m.d.comb += [Assert(getattr(dut, f"{k.kind}_next") == k.pointer),
                     Assert(driven(inner, f"{k.kind}_following") == _next(k.pointer, CACHE_SLOTS)),
                     Assert(getattr(dut.read, f"{k.kind}_failed") == k.failed)]


def _landed_bench(h: Harness, m: Module):
    """`_cache_bench` with, per kind, the bursts completed and not yet used by an allocating
    job's start (`FILL_COUNT_BITS` wide, as the design's counts): the response stage
    starts an allocating job only while one is (`landed`)."""
    dut, inner, kinds, _ = _cache_bench(h, m)
    pending = {}
    for k in kinds:
        started = getattr(dut.use.started, k.kind)
        pending[k.kind] = count = shadow_count(m, k.burst_end, started, f"shadow_{k.kind}_unused_bursts",
                                               blockcache.FILL_COUNT_BITS)
        m.d.comb += Assume(~started | (count != 0))
    return dut, inner, kinds, pending


def cache_landed(h, m):
    """`plane_landed` / `meta_landed` is up exactly while more bursts have completed than
    allocating jobs started: it rises the cycle after the burst's last beat and falls the
    cycle after the start that uses the last completed burst.  Invariants for k-induction:
    the design's counts differ by the shadow's, and their `+ 1` registers are one more."""
    dut, inner, kinds, pending = _landed_bench(h, m)
    for k in kinds:
        fills, started = driven(inner, f"{k.kind}_fills"), driven(inner, f"{k.kind}_started")
        width = blockcache.FILL_COUNT_BITS
        m.d.comb += [Assert(getattr(dut.use, f"{k.kind}_landed") == (pending[k.kind] != 0)),
                     Assert((fills - started)[:width] == pending[k.kind]),
                     Assert(driven(inner, f"{k.kind}_fills_plus_one") == (fills + 1)[:width]),
                     Assert(driven(inner, f"{k.kind}_started_plus_one") == (started + 1)[:width])]


def cache_landed_cover(h, m):
    """A plane burst's last beat with `plane_landed` low, then up the next cycle; two bursts
    completed and unused, then one used and `plane_landed` still up."""
    dut, inner, kinds, pending = _landed_bench(h, m)
    plane = kinds[0]
    rose = previous(m, plane.burst_end & ~dut.use.plane_landed, "rose_before")
    m.d.comb += [Cover(rose & dut.use.plane_landed),
                 Cover(previous(m, dut.use.started.plane & (pending["plane"] == 2), "used_one") & dut.use.plane_landed)]


def cache_cover(h, m):
    """Every reference in flight; the slot at the pointer held (not free) and free again
    after its release; a failed flag set by an error in a burst's first beat of two or
    more, then cleared by the slot's next allocation."""
    dut, inner, kinds, open_failed = _cache_bench(h, m)
    plane, meta = kinds
    pointer_held = Cat(*plane.refs).word_select(plane.pointer, 4) != 0
    was_held = sticky(m, pointer_held, "pointer_was_held")
    failed_multi = plane.burst_end & open_failed & ~dut.beat.payload.failed
    was_failed = sticky(m, failed_multi, "was_failed")
    m.d.comb += [Cover(plane.total == CACHE_REFERENCES), Cover(pointer_held & ~plane.free),
                 Cover(was_held & plane.free & ~pointer_held), Cover(failed_multi),
                 Cover(was_failed & (plane.failed == 0) & previous(m, plane.alloc, "alloc_before")),
                 Cover(meta.burst_end & (meta.failed != 0))]
