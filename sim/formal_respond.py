"""Formal harnesses around the response stage (hw/respond.py): the whole `Responder`, from
its job stream to the host's DRS and NDR streams, and its end alone: the ordered output
queue (`SyncFIFOBuffered`, as `Responder` builds it, at `ROUTER_QUEUE_DEPTH` lines) and the
`OutputRouter` behind it, which hands each line to the host's DRS or NDR stream.

The line packer writes the queue without looking at its ready flag: the sequencer's
credit flow keeps room for every line in flight (the whole stage's property asserts it),
so the router's harness writes a free line in any cycle the queue has room (`w_rdy`).
The host's `ready` on DRS and NDR is free, except in the progress properties (always ready).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from ..hw import output, respond
from ..hw.layouts import Kind, is_fp
from ..spec import TAG_BITS, View
from .formal_bench import (Harness, delayed, in_a_row, kept_until_taken, previous, shadow_count, sticky,
                           stream_source)

ROUTER_QUEUE_DEPTH = 4              #: output queue lines (the design's is `respond.PIPELINE_DEPTH` + 8)
QUEUE_TO_HOST = 2                   #: cycles from a line's write into the output queue to DRS / NDR valid


class _RouterBench:
    """Output queue -> OutputRouter with a free line writer and free host `ready`s;
    `numbered`: line n carries tag n mod 2**TAG_BITS (and no data: only the order is checked)."""

    def __init__(self, h: Harness, m: Module, *, numbered: bool = False):
        self.queue = queue = SyncFIFOBuffered(width=output.RESPONSE.size, depth=ROUTER_QUEUE_DEPTH)
        self.router = router = output.OutputRouter()
        m.submodules.queue, m.submodules.router = queue, router
        wiring.connect(m, queue.r_stream, router.lines)
        self.write = h.free(1, "line_valid")
        line = output.RESPONSE(h.free(output.RESPONSE.size, "line"))
        m.d.comb += [queue.w_en.eq(self.write), queue.w_data.eq(line), Assume(~self.write | queue.w_rdy),
                     router.drs.ready.eq(h.free(1, "drs_ready")), router.ndr.ready.eq(h.free(1, "ndr_ready"))]
        self.drs, self.ndr = router.drs, router.ndr
        self.taken = (self.drs.valid & self.drs.ready) | (self.ndr.valid & self.ndr.ready)
        self.written = shadow_count(m, self.write, 0, "written", TAG_BITS)
        self.responses = shadow_count(m, self.taken, 0, "responses", TAG_BITS)
        self.held = shadow_count(m, self.write, self.taken, "held", 4)
        if numbered:
            m.d.comb += [Assume(~self.write | (line.tag == self.written)), Assume(line.data == 0)]


def router_stream_rules(h, m):
    """The host's DRS and NDR streams keep the stream rules: `valid` held and the payload
    stable until `ready`; one response offered at a time, only while a line is held."""
    b = _RouterBench(h, m)
    for name, port in (("drs", b.drs), ("ndr", b.ndr)):
        m.d.comb += Assert(kept_until_taken(m, port.valid, port.ready, port.payload.as_value(), name))
    m.d.comb += [Assert(~(b.drs.valid & b.ndr.valid)), Assert(~(b.drs.valid | b.ndr.valid) | (b.held != 0))]


def router_order(h, m):
    """Every line written leaves exactly once, in order, with its tag (line n carries tag
    n mod 256): the response offered carries the number of responses taken so far."""
    b = _RouterBench(h, m, numbered=True)
    m.d.comb += [Assert(b.held <= ROUTER_QUEUE_DEPTH),
                 Assert(~b.drs.valid | (b.drs.payload.tag == b.responses)),
                 Assert(~b.ndr.valid | (b.ndr.payload.tag == b.responses))]


def router_progress(h, m):
    """With the host always ready, every line written into the output queue is offered on
    DRS or NDR exactly 2 cycles later (`QUEUE_TO_HOST`), and nothing else is."""
    b = _RouterBench(h, m)
    m.d.comb += [Assume(b.drs.ready), Assume(b.ndr.ready),
                 Assert((b.drs.valid | b.ndr.valid) == delayed(m, b.write, QUEUE_TO_HOST, "line_due"))]


def router_progress_cover(h, m):
    """With the host always ready: lines written in 3 cycles in a row, the third offered
    2 cycles after its write with the first two taken."""
    b = _RouterBench(h, m)
    m.d.comb += [Assume(b.drs.ready), Assume(b.ndr.ready)]
    three_due = in_a_row(m, delayed(m, b.write, QUEUE_TO_HOST, "due"), 3, "due_before")
    m.d.comb += Cover(three_due & b.taken & (b.responses == 2))


def router_cover(h, m):
    """The queue full; a DRS held waiting for the host, then taken; an NDR taken right
    after a DRS; empty again after having been full."""
    b = _RouterBench(h, m)
    was_full = sticky(m, b.held == ROUTER_QUEUE_DEPTH, "was_full")
    drs_waited = previous(m, b.drs.valid & ~b.drs.ready, "drs_waited")
    drs_taken = previous(m, b.drs.valid & b.drs.ready, "drs_taken")
    m.d.comb += [Cover(b.held == ROUTER_QUEUE_DEPTH), Cover(drs_waited & b.drs.ready),
                 Cover(drs_taken & b.ndr.valid & b.ndr.ready), Cover(was_full & (b.held == 0))]


# -- the whole response stage: jobs -> lines ------------------------------------------------

RESPONDER_LANES = 16        #: 2 steps per fp16 / bf16 line: the widest lanes that still split a line
RESPONDER_QUEUE_DEPTH = 4   #: output queue lines: the credit stops the sequencer at 3 or 4 in flight
SEQUENCE_BITS = TAG_BITS - 2   #: a line job's number within its tag (tag bits 0, 1: write, error)


class _ResponderBench:
    """`Responder` (`RESPONDER_LANES`, 2 + 2 slots) fed legal jobs as the issue stage makes
    them (stream rules; `last_step` from kind and k; a write is RAW_WR or an ERROR; slots in
    range), with free `landed` flags, failed flags, write responses and host `ready`s; the
    slots' data are left zero (only line data and table entries read them).  A job that asks for a line carries tag (n, error, write): n counts the line
    jobs taken before it (mod 2**SEQUENCE_BITS), so a line's tag names the job it answers."""

    def __init__(self, h: Harness, m: Module):
        self.responder = r = respond.Responder(lanes=RESPONDER_LANES, plane_slots=2, meta_slots=2,
                                               out_depth=RESPONDER_QUEUE_DEPTH)
        m.submodules.responder = r
        valid, job = stream_source(h, m, r.job, "job")
        stream_source(h, m, r.wresp, "wresp")
        m.d.comb += [r.slots.plane_landed.eq(h.free(1, "plane_landed")), r.slots.meta_landed.eq(h.free(1, "meta_landed"))]
        m.d.comb += [r.read.plane_failed.eq(h.free(2, "plane_failed")), r.read.meta_failed.eq(h.free(2, "meta_failed"))]
        m.d.comb += [r.drs.ready.eq(h.free(1, "drs_ready")), r.ndr.ready.eq(h.free(1, "ndr_ready"))]

        self.kind = kind = job.kind
        self.is_load = is_load = kind == Kind.LUT_LOAD
        last_step = Mux(is_load, (Const(1, 9) << job.k) - 1, Mux(is_fp(kind), r.steps - 1, 0))
        self.taken = valid & r.job.ready
        self.lines_asked = shadow_count(m, self.taken & ~is_load, 0, "lines_asked", SEQUENCE_BITS)
        m.d.comb += Assume(~valid | ((job.last_step == last_step) & (job.plane_slot < 2) & (job.meta_slot < 2)
                                     & (~is_load | ((job.k >= 1) & (job.k <= 8)))
                                     & ((kind == Kind.ERROR) | (job.write == (kind == Kind.RAW_WR)))
                                     & (is_load | (job.tag == Cat(job.write, kind == Kind.ERROR, self.lines_asked)))))
        fp = is_fp(kind)
        #: the job's class through the lanes: a line not dequantized, affine, table lookup
        self.classes = {respond.PASS_DEPTH: ~is_load & ~fp, respond.AFFINE_DEPTH: fp & ~job.lut,
                        respond.LOOKUP_DEPTH: fp & job.lut}
        self.line = r.packer.line           # the output queue's input
        self.drs, self.ndr = r.drs, r.ndr
        self.responses = shadow_count(m, (r.drs.valid & r.drs.ready) | (r.ndr.valid & r.ndr.ready), 0,
                                      "responses", SEQUENCE_BITS)


def _answers(line, number, *, ndr) -> Value:
    """`line` (a valid DRS, NDR or queue entry) answers line job `number`: its tag says so,
    it goes the job's way (NDR for a write) and a refused job's is poisoned."""
    tag = line.tag
    return (tag[2:] == number) & (tag[0] == ndr) & (~tag[1] | line.poison)


def respond_one_line_per_job(h, m):
    """Every job taken makes exactly one line, its class's depth after its last step starts
    (`respond.PASS_DEPTH` = 5 for a line not dequantized, `AFFINE_DEPTH` = 13 and
    `LOOKUP_DEPTH` = 16 for fp16 / bf16; an fp16 / bf16 job's 2 steps packed into one, a
    LUT_LOAD none), never two due in one cycle, written into an output queue with room, in
    job order with the job's tag; the host receives them in that order, each as a DRS or
    NDR as its job asked, nothing else."""
    b = _ResponderBench(h, m)
    due = [delayed(m, b.taken & is_class, depth, f"line_due_{depth}_") for depth, is_class in b.classes.items()]
    written = shadow_count(m, b.line.valid, 0, "lines_written", SEQUENCE_BITS)
    m.d.comb += [
        Assert(sum(due) <= 1), Assert(b.line.valid == Cat(*due).any()), Assert(~b.line.valid | b.line.ready),
        Assert(~b.line.valid | _answers(b.line.payload, written, ndr=b.line.payload.ndr)),
        Assert(~b.drs.valid | _answers(b.drs.payload, b.responses, ndr=0)),
        Assert(~b.ndr.valid | _answers(b.ndr.payload, b.responses, ndr=1)),
    ]


def respond_cover(h, m):
    """The output queue's credit stopping the sequencer (3 lines in flight, the oldest job's
    data landed); a LUT_LOAD step reaching the lanes as a table entry, with no line beside
    it; a write job taken with its write response; an fp16 / bf16 line (2 steps packed)
    taken by the host as a DRS; a line not dequantized written the cycle after an fp16 / bf16
    one (it started behind it as early as the lanes allow)."""
    b = _ResponderBench(h, m)
    seq, gather = b.responder.sequencer, b.responder.gather
    fp_line = b.line.valid & b.line.payload.view.matches(View.FP16, View.BF16)
    fp_written = sticky(m, fp_line, "fp_written")
    m.d.comb += [
        Cover((b.lines_asked == RESPONDER_QUEUE_DEPTH - 1) & seq.job.valid & ~seq.dram_stall & ~seq.job.ready
              & (seq.job.payload.last_step == 0)),
        Cover(gather.load.valid & ~gather.line.valid),
        Cover(b.taken & (b.kind == Kind.RAW_WR)),
        Cover(fp_written & b.drs.valid & b.drs.ready),
        Cover(b.line.valid & ~b.line.payload.view.matches(View.FP16, View.BF16) & previous(m, fp_line, "fp_line_before")),
    ]


# -- progress: a job's start within a bound -------------------------------------------------


class _RespondProgress:
    """`_ResponderBench` with every wait met once the data land: write responses waiting,
    the host always ready, and the slots' `landed` flags, free, staying up while the job
    at the sequencer waits once both are up.  `in_flight`: lines started and not yet taken
    by the host; a job `arrives` in the first cycle it is at the sequencer with both flags
    up (the cycle its data land, or its first cycle there if they landed before), and
    `qualifies` if there was room for its line then (at most `RESPONDER_QUEUE_DEPTH` - 2 in
    flight); `age`: cycles since it arrived (0 in that cycle)."""

    def __init__(self, h: Harness, m: Module):
        self.bench = b = _ResponderBench(h, m)
        r = b.responder
        landed = r.slots.plane_landed & r.slots.meta_landed
        self.valid = r.job.valid & landed
        waited = previous(m, self.valid & ~b.taken, "job_waited")
        m.d.comb += [Assume(~waited | landed), Assume(r.wresp.valid), Assume(r.drs.ready), Assume(r.ndr.ready)]
        self.offered = r.drs.valid | r.ndr.valid
        self.in_flight = shadow_count(m, b.taken & ~b.is_load, self.offered, "in_flight", 4)
        self.arrived = self.valid & ~waited
        #: the job was at the sequencer before its data landed
        self.waited_for_data = previous(m, r.job.valid & ~landed, "job_before_landed")
        qualified = Signal(name="qualified")
        self.qualified = Mux(self.arrived, self.in_flight <= RESPONDER_QUEUE_DEPTH - 2, qualified)
        m.d.sync += qualified.eq(self.qualified)
        age = Signal(9, name="age")
        self.age = Mux(self.arrived, 0, age)
        m.d.sync += age.eq(Mux(self.age == 511, 511, self.age + 1))
        # lines in job order through the lanes: cycles the last job taken still has to go
        # beyond one of the same class starting now (a shadow of the sequencer's rule)
        depth = sum(Mux(is_class, d, 0) for d, is_class in b.classes.items())
        ahead = Signal(range(respond.PIPELINE_DEPTH + 1), name="ahead")
        m.d.sync += ahead.eq(Mux(b.taken & ~b.is_load, depth, Mux(ahead == 0, 0, ahead - 1)))
        #: cycles the job waits at arrival for the lines before it to go ahead in the lanes
        order_wait = Signal(range(respond.PIPELINE_DEPTH + 1), name="order_wait")
        self.order_wait = Mux(self.arrived, Mux(b.is_load | (ahead <= depth), 0, ahead - depth), order_wait)
        m.d.sync += order_wait.eq(self.order_wait)


def respond_progress(h, m):
    """With write responses waiting and the host always ready, a job at the sequencer whose
    data have landed (from the cycle `landed` rises, or its arrival if later) with room for
    its line in the output queue (at most 2 of 4 lines in flight) starts within 1 cycle,
    or once the lines before it are far enough ahead in the lanes (`order_wait` cycles:
    a line not dequantized after an fp16 one), and takes one step a cycle: it leaves the
    sequencer by `age` 1 + `order_wait` + `last_step`."""
    p = _RespondProgress(h, m)
    m.d.comb += Assert(~(p.valid & p.qualified)
                       | (p.age <= 1 + p.order_wait + p.bench.responder.job.payload.last_step))


def respond_progress_cover(h, m):
    """With every wait met: a qualified fp16 / bf16 job (2 steps) that arrived with 2
    lines in flight leaving the sequencer the cycle after its arrival (2 steps in 2 cycles); a job arriving
    without room (3 lines in flight); a job that waited at the sequencer for its data
    leaving the cycle after they landed."""
    p = _RespondProgress(h, m)
    b = p.bench
    m.d.comb += [Cover(b.taken & p.qualified & is_fp(b.kind) & (p.age == 1)
                       & previous(m, p.arrived & (p.in_flight == RESPONDER_QUEUE_DEPTH - 2), "arrived_at_two")),
                 Cover(p.arrived & (p.in_flight == RESPONDER_QUEUE_DEPTH - 1)),
                 Cover(b.taken & p.qualified & (p.age == 1) & previous(m, p.arrived & p.waited_for_data, "landed_late"))]
