"""Formal harnesses around the leaf components (hw/counter.py's `held_below`, hw/queue.py's
`BlockRamQueue` and `HeadPair`) at small parameters, one per property, and `PROPERTIES`:
every property `smartquant prove` checks, these and those of formal_cache.py (block
cache), formal_decode.py (address decoder), formal_fetch.py (read path), formal_respond.py
(the response stage; its output queue and router) and formal_csr.py (counters).

`prove` properties must hold by k-induction at their depth, `bmc` ones for every trace
of that many cycles from the initial state; `cover` properties list `Cover`s that must
each be reached, so no proof passes because its assumptions exclude every interesting
trace.  docs/FORMAL.md lists them all.
"""

from __future__ import annotations

import dataclasses

from amaranth import Module, Signal
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import data

from ..hw import counter, queue
from . import formal_cache, formal_csr, formal_decode, formal_fetch, formal_respond
from .formal_bench import (FormalProperty, Harness, delayed, elaborated, in_a_row, kept_until_taken, previous,
                           shadow_count, sticky, stream_source)

QUEUE_WIDTH = 3          #: bits per entry: sequence numbers mod 8 tell the 7 entries held apart
QUEUE_DEPTH = 4          #: block RAM part: 3 entries + 4 in the head = 7
PAIR_LAYOUT = data.StructLayout({"low": 2, "kind": 2})   #: 4-bit payload with an early field
BYPASS_DEPTH = 4         #: BypassQueue's FIFO: 4 entries + the HeadPair's 2 = 6
COUNT_WIDTH = 3          #: held_below's counter: 0..7
COUNT_LIMIT = 5          #: held_below's limit for the one-per-cycle case


# -- held_below -------------------------------------------------------------------------

def _held_below_bench(h: Harness, m: Module, *, limit: int, jumps: bool) -> None:
    """A counter moved by free `up`/`down` (by one, or with `jumps` by any amount up) and its
    held comparison; the flag must equal `count < limit` in every cycle."""
    up, down = h.free(1, "up"), h.free(1, "down")
    step = h.free(COUNT_WIDTH, "step") if jumps else 1
    count = Signal(COUNT_WIDTH, name="count")
    m.d.comb += [Assume(~(down & (count == 0))), Assume(~(up & (count + step > 2 ** COUNT_WIDTH - 1)))]
    if jumps:
        m.d.comb += Assume(step >= 1)
    m.d.sync += count.eq(count + (up * step) - down)
    flag = counter.held_below(m, count, limit, up, down, name="flag")
    m.d.comb += Assert(flag == (count < limit))


def held_below_step(h, m):
    _held_below_bench(h, m, limit=COUNT_LIMIT, jumps=False)


def held_below_zero(h, m):
    _held_below_bench(h, m, limit=1, jumps=True)


def held_below_cover(h, m):
    """The counter reaches the limit and returns below it; the flag falls and rises."""
    up, down = h.free(1, "up"), h.free(1, "down")
    count = Signal(COUNT_WIDTH, name="count")
    m.d.comb += [Assume(~(down & (count == 0))), Assume(~(up & (count == 2 ** COUNT_WIDTH - 1)))]
    m.d.sync += count.eq(count + up - down)
    flag = counter.held_below(m, count, COUNT_LIMIT, up, down, name="flag")
    was_at_limit = Signal()
    with m.If(~flag):
        m.d.sync += was_at_limit.eq(1)
    m.d.comb += [Cover(~flag & (count == COUNT_LIMIT)), Cover(was_at_limit & flag),
                 Cover(up & down & (count == COUNT_LIMIT - 1))]


# -- BlockRamQueue ----------------------------------------------------------------------

@dataclasses.dataclass
class _QueueBench:
    dut: queue.BlockRamQueue
    write: Signal           #: an entry goes in this cycle
    read: Signal            #: an entry leaves this cycle
    held: Signal            #: entries written and not yet read (shadow count)
    levels: Signal          #: entries the block RAM part and the head hold, by their `level`s
    body_level: Signal
    capacity: int


def _queue_bench(h: Harness, m: Module, *, numbered: bool = False) -> _QueueBench:
    """The real BlockRamQueue with free `w_en`, `r_en` and `w_data` (with `numbered`: the
    number of entries written before, mod 2**QUEUE_WIDTH); its two FIFOs' `level`s are read
    from the module it elaborates to, for the invariants that make k-induction work."""
    dut = queue.BlockRamQueue(width=QUEUE_WIDTH, depth=QUEUE_DEPTH)
    inner = elaborated(m, dut, "dut")
    body, head = inner.submodules.body, inner.submodules.head
    w_en, r_en, w_data = h.free(1, "w_en"), h.free(1, "r_en"), h.free(QUEUE_WIDTH, "w_data")
    m.d.comb += [dut.w_en.eq(w_en), dut.r_en.eq(r_en), dut.w_data.eq(w_data)]
    write, read = w_en & dut.w_rdy, r_en & dut.r_rdy
    capacity = QUEUE_DEPTH - 1 + queue.BlockRamQueue.HEAD_DEPTH
    held = shadow_count(m, write, read, "held", (capacity + 1).bit_length())
    if numbered:
        m.d.comb += Assume(w_data == shadow_count(m, write, 0, "written", QUEUE_WIDTH))
    levels = Signal(range(2 * capacity + 2), name="levels")
    m.d.comb += levels.eq(body.level + head.level)
    return _QueueBench(dut, write, read, held, levels, body.level, capacity)


def queue_occupancy(h, m):
    """No entry is lost or duplicated in count: the FIFOs hold exactly the entries written
    and not read, never more than the capacity."""
    q = _queue_bench(h, m)
    m.d.comb += [Assert(q.held == q.levels), Assert(q.held <= q.capacity)]


def queue_ready_flags(h, m):
    """`w_rdy` is the block RAM part's room (`held_below`'s flag equals its level's
    comparison), it refuses only with at least depth - 1 entries held, and `r_rdy` only
    offers an entry the queue holds."""
    q = _queue_bench(h, m)
    m.d.comb += [Assert(q.held == q.levels),
                 Assert(q.dut.w_rdy == (q.body_level < QUEUE_DEPTH - 1)),
                 Assert(q.dut.w_rdy | (q.held >= QUEUE_DEPTH - 1)),
                 Assert(~q.dut.r_rdy | (q.held > 0))]


def queue_stream_rules(h, m):
    """Once offered, an entry stays offered with the same data until read; room once
    offered stays until used."""
    q = _queue_bench(h, m)
    room_waiting = previous(m, q.dut.w_rdy & ~q.dut.w_en, "write_waiting")
    m.d.comb += [Assert(q.held == q.levels),
                 Assert(kept_until_taken(m, q.dut.r_rdy, q.dut.r_en, q.dut.r_data, "read")),
                 Assert(~room_waiting | q.dut.w_rdy)]


def queue_order(h, m):
    """Entries leave in the order they came, none lost or repeated: with entry n holding
    n (mod 8), the entry offered is always the number of entries read so far."""
    q = _queue_bench(h, m, numbered=True)
    read_count = shadow_count(m, q.read, 0, "read_count", QUEUE_WIDTH)
    m.d.comb += [Assert(q.held == q.levels), Assert(~q.dut.r_rdy | (q.dut.r_data == read_count))]


#: cycles from an entry's write to its offer at the head, with the reader always ready
QUEUE_TRANSIT = 4


def queue_progress(h, m):
    """With the reader always ready, every entry is offered `QUEUE_TRANSIT` cycles after it
    is written, with its data, and nothing is offered otherwise; the queue never refuses a
    write (one entry a cycle in, one out)."""
    q = _queue_bench(h, m, numbered=True)
    m.d.comb += Assume(q.dut.r_en)
    due = delayed(m, q.write, QUEUE_TRANSIT, "due")
    data_due = delayed(m, q.dut.w_data, QUEUE_TRANSIT, "data_due")
    m.d.comb += [Assert(q.held == q.levels), Assert(q.dut.w_rdy), Assert(q.dut.r_rdy == due),
                 Assert(~due | (q.dut.r_data == data_due))]


def queue_progress_cover(h, m):
    """With the reader always ready: entries written in three cycles in a row, each read
    `QUEUE_TRANSIT` cycles later."""
    q = _queue_bench(h, m)
    m.d.comb += Assume(q.dut.r_en)
    m.d.comb += Cover(delayed(m, in_a_row(m, q.write, 3, "wrote_before"), QUEUE_TRANSIT, "row_due") & q.read)


def queue_cover(h, m):
    """Full; empty again after having been full; a read from a full queue; a write and a
    read in the same cycle."""
    q = _queue_bench(h, m)
    was_full = Signal()
    with m.If(q.held == q.capacity):
        m.d.sync += was_full.eq(1)
    m.d.comb += [Cover(q.held == q.capacity), Cover(was_full & (q.held == 0)),
                 Cover(q.read & (q.held == q.capacity)), Cover(q.read & q.write & (q.held >= QUEUE_DEPTH))]


# -- HeadPair ---------------------------------------------------------------------------

@dataclasses.dataclass
class _PairBench:
    dut: queue.HeadPair | queue.BypassQueue
    load: Signal
    take: Signal
    held: Signal


def _pair_bench(h: Harness, m: Module, *, numbered: bool = False, bypass: bool = False) -> _PairBench:
    """The real HeadPair (with an early field), or with `bypass` the BypassQueue around one
    (`BYPASS_DEPTH` FIFO entries in front), fed by a producer that obeys the stream rules:
    `valid` held and the payload stable until `ready`."""
    dut = queue.BypassQueue(PAIR_LAYOUT, depth=BYPASS_DEPTH, early=("kind",)) if bypass else \
        queue.HeadPair(PAIR_LAYOUT, early=("kind",))
    m.submodules.dut = dut
    valid, payload = stream_source(h, m, dut.input, "in")
    ready = h.free(1, "out_ready")
    m.d.comb += dut.output.ready.eq(ready)
    load, take = valid & dut.input.ready, dut.output.valid & ready
    if numbered:
        m.d.comb += Assume(~valid | (payload.as_value() == shadow_count(m, load, 0, "loaded", PAIR_LAYOUT.size)))
    return _PairBench(dut, load, take, shadow_count(m, load, take, "held", 4))


def pair_occupancy(h, m):
    """At most two entries held; `input.ready` exactly when fewer than two; `output.valid`
    exactly when one or more."""
    p = _pair_bench(h, m)
    m.d.comb += [Assert(p.held <= 2), Assert(p.dut.input.ready == (p.held < 2)),
                 Assert(p.dut.output.valid == (p.held > 0))]


def pair_stream_rules(h, m):
    """Given a producer that keeps the rules, the output keeps them: `valid` held and the
    payload (early field included) stable until `ready`."""
    p = _pair_bench(h, m)
    out = p.dut.output
    m.d.comb += [Assert(p.dut.input.ready == (p.held < 2)), Assert(out.valid == (p.held > 0)),
                 Assert(kept_until_taken(m, out.valid, out.ready, out.payload.as_value(), "out"))]


def pair_order(h, m):
    """Payloads leave in order, none lost or repeated (payload n holds n mod 16)."""
    p = _pair_bench(h, m, numbered=True)
    taken = shadow_count(m, p.take, 0, "taken", PAIR_LAYOUT.size)
    m.d.comb += [Assert(p.dut.input.ready == (p.held < 2)), Assert(p.dut.output.valid == (p.held > 0)),
                 Assert(~p.dut.output.valid | (p.dut.output.payload.as_value() == taken))]


def pair_cover(h, m):
    """Both slots full; a hand-over (load and take in one cycle) while full and while
    holding one; empty again after having been full."""
    p = _pair_bench(h, m)
    was_full = Signal()
    with m.If(p.held == 2):
        m.d.sync += was_full.eq(1)
    m.d.comb += [Cover(p.held == 2), Cover(p.take & (p.held == 2)), Cover(p.take & p.load & (p.held == 1)),
                 Cover(was_full & (p.held == 0))]


def bypass_order(h, m):
    """The command queue (BypassQueue): entries leave in order, none lost or repeated
    (payload n holds n mod 16), whether they skip the FIFO or pass through it; at most 6
    held; the output keeps the stream rules."""
    p = _pair_bench(h, m, numbered=True, bypass=True)
    out = p.dut.output
    taken = shadow_count(m, p.take, 0, "taken", PAIR_LAYOUT.size)
    m.d.comb += [Assert(p.held <= BYPASS_DEPTH + 2), Assert(~out.valid | (out.payload.as_value() == taken)),
                 Assert(kept_until_taken(m, out.valid, out.ready, out.payload.as_value(), "out"))]


def bypass_cover(h, m):
    """The command queue full (6 held); an entry skipping the FIFO into the empty pair, taken
    the next cycle; empty again after having been full."""
    p = _pair_bench(h, m, bypass=True)
    was_full = sticky(m, p.held == BYPASS_DEPTH + 2, "was_full")
    skipped = previous(m, p.load & (p.held == 0), "skipped")
    m.d.comb += [Cover(p.held == BYPASS_DEPTH + 2), Cover(skipped & p.take), Cover(was_full & (p.held == 0))]


def _ready_consumer_bypass(h: Harness, m: Module) -> tuple[_PairBench, Signal]:
    """The command queue with a consumer always ready; returns it and whether an entry was
    loaded into it the cycle before."""
    p = _pair_bench(h, m, bypass=True)
    m.d.comb += Assume(p.dut.output.ready)
    return p, previous(m, p.load, "loaded_before")


def bypass_progress(h, m):
    """The command queue with a consumer always ready hands each entry on the cycle after
    it is offered: `output.valid` exactly when an entry was loaded the cycle before, with
    that entry's payload; the input is always ready."""
    p, loaded_before = _ready_consumer_bypass(h, m)
    out = p.dut.output
    payload_before = previous(m, p.dut.input.payload.as_value(), "payload_before")
    m.d.comb += [Assert(p.dut.input.ready), Assert(out.valid == loaded_before),
                 Assert(~out.valid | (out.payload.as_value() == payload_before))]


def bypass_progress_cover(h, m):
    """With the consumer always ready: entries loaded in three cycles in a row, the first
    two taken the cycle after their loads."""
    p, loaded_before = _ready_consumer_bypass(h, m)
    row = previous(m, loaded_before & p.take, "taken_before")
    m.d.comb += Cover(row & loaded_before & p.take & p.load)


#: every property `smartquant prove` checks, by name
PROPERTIES = {p.name: p for p in [
    FormalProperty("held_below_step", "held_below", "prove", 10, held_below_step),
    FormalProperty("held_below_zero", "held_below", "prove", 10, held_below_zero),
    FormalProperty("held_below_cover", "held_below", "cover", 12, held_below_cover),
    FormalProperty("queue_occupancy", "BlockRamQueue", "bmc", 24, queue_occupancy),
    FormalProperty("queue_ready_flags", "BlockRamQueue", "bmc", 24, queue_ready_flags),
    FormalProperty("queue_stream_rules", "BlockRamQueue", "bmc", 24, queue_stream_rules),
    FormalProperty("queue_order", "BlockRamQueue", "bmc", 14, queue_order),
    FormalProperty("queue_cover", "BlockRamQueue", "cover", 24, queue_cover),
    FormalProperty("queue_progress", "BlockRamQueue", "bmc", 24, queue_progress),
    FormalProperty("queue_progress_cover", "BlockRamQueue", "cover", 10, queue_progress_cover),
    FormalProperty("pair_occupancy", "HeadPair", "bmc", 20, pair_occupancy),
    FormalProperty("pair_stream_rules", "HeadPair", "bmc", 20, pair_stream_rules),
    FormalProperty("pair_order", "HeadPair", "bmc", 20, pair_order),
    FormalProperty("pair_cover", "HeadPair", "cover", 12, pair_cover),
    FormalProperty("bypass_order", "BypassQueue", "bmc", 14, bypass_order),
    FormalProperty("bypass_cover", "BypassQueue", "cover", 14, bypass_cover),
    FormalProperty("bypass_progress", "BypassQueue", "bmc", 10, bypass_progress),
    FormalProperty("bypass_progress_cover", "BypassQueue", "cover", 6, bypass_progress_cover),
    FormalProperty("tags_model", "BlockTags", "prove", 7, formal_cache.tags_model),
    FormalProperty("tags_cover", "BlockTags", "cover", 12, formal_cache.tags_cover),
    FormalProperty("cache_references", "BlockCache", "prove", 4, formal_cache.cache_references),
    FormalProperty("cache_failed_flags", "BlockCache", "prove", 4, formal_cache.cache_failed_flags),
    FormalProperty("cache_cover", "BlockCache", "cover", 16, formal_cache.cache_cover),
    FormalProperty("cache_landed", "BlockCache", "prove", 4, formal_cache.cache_landed),
    FormalProperty("cache_landed_cover", "BlockCache", "cover", 10, formal_cache.cache_landed_cover),
    FormalProperty("decode_causes", "AddressDecoder", "bmc", 11, formal_decode.decode_causes),
    FormalProperty("decode_isolation", "AddressDecoder", "bmc", 11, formal_decode.decode_isolation),
    FormalProperty("decode_cover", "AddressDecoder", "cover", 12, formal_decode.decode_cover),
    FormalProperty("fetch_axi_rules", "FetchIssue+DramPort", "bmc", 8, formal_fetch.fetch_axi_rules),
    FormalProperty("fetch_isolation", "FetchIssue+DramPort", "bmc", 8, formal_fetch.fetch_isolation),
    FormalProperty("fetch_cover", "FetchIssue+DramPort", "cover", 8, formal_fetch.fetch_cover),
    FormalProperty("issue_one_job_per_command", "FetchIssue+DramPort", "bmc", 10,
                   formal_fetch.issue_one_job_per_command),
    FormalProperty("issue_cover", "FetchIssue+DramPort", "cover", 10, formal_fetch.issue_cover),
    FormalProperty("issue_progress", "FetchIssue+DramPort", "bmc", 10, formal_fetch.issue_progress),
    FormalProperty("issue_progress_cover", "FetchIssue+DramPort", "cover", 10, formal_fetch.issue_progress_cover),
    FormalProperty("dram_outstanding", "DramPort", "bmc", 16, formal_fetch.dram_outstanding),
    FormalProperty("dram_outstanding_cover", "DramPort", "cover", 16, formal_fetch.dram_outstanding_cover),
    FormalProperty("dram_request_to_burst", "DramPort", "bmc", 10, formal_fetch.dram_request_to_burst),
    FormalProperty("dram_burst_cover", "DramPort", "cover", 10, formal_fetch.dram_burst_cover),
    FormalProperty("router_stream_rules", "output queue+OutputRouter", "bmc", 10, formal_respond.router_stream_rules),
    FormalProperty("router_order", "output queue+OutputRouter", "bmc", 10, formal_respond.router_order),
    FormalProperty("router_cover", "output queue+OutputRouter", "cover", 10, formal_respond.router_cover),
    FormalProperty("router_progress", "output queue+OutputRouter", "bmc", 10, formal_respond.router_progress),
    FormalProperty("router_progress_cover", "output queue+OutputRouter", "cover", 6, formal_respond.router_progress_cover),
    FormalProperty("respond_one_line_per_job", "Responder", "bmc", 20, formal_respond.respond_one_line_per_job),
    FormalProperty("respond_cover", "Responder", "cover", 21, formal_respond.respond_cover),
    FormalProperty("respond_progress", "Responder", "bmc", 14, formal_respond.respond_progress),
    FormalProperty("respond_progress_cover", "Responder", "cover", 6, formal_respond.respond_progress_cover),
    FormalProperty("csr_counters", "CsrFile", "prove", 4, formal_csr.csr_counters),
    FormalProperty("csr_cover", "CsrFile", "cover", 8, formal_csr.csr_cover),
]}
