"""Sequencer: the oldest job -> its steps, one a cycle, once its data have landed.

A step is one whole output line, except for fp16 / bf16, where a line of 32 weights takes
32 / lanes steps; a LUT_LOAD job (no response) takes 2**k steps, each loading one codebook
entry.  A job that allocated a slot waits for the block cache's `landed` (slots fill in
allocation order; a job hitting a slot follows the one that allocated it, later steps of a
job follow its first), a write for its write response.  The cache learns when a job that
allocated a slot starts (`slots.started`) and, the cycle after a job's last step starts,
that it no longer refers to its slots (`slots.release`, a register, so that the start
decision does not reach every slot's reference count: the slot is read in the cycles
after, and filled again at the earliest three cycles later).

Credit flow: a line's step starts only when the output queue (`queue_depth` lines) has
room for it and every line started before it and not yet taken from the queue (`credit`:
one line taken), so the stages after the sequencer never stall.  Order through the
dequantizer lanes, where a step takes `lanes.latency(...)` cycles (0 when not dequantized,
8 affine, 11 by table lookup): a step starts only when its latency is at least `ahead`,
the cycles the last step started still has to go, so lines reach the output queue in job
order, one a cycle (a raw / packed / int8 line after an fp16 one waits up to 11 cycles).
`step` is registered: the step's job and place, and the plane buffer read it asks for.
"""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODE_BITS, LINE_BITS, LINE_BYTES, CODEBOOK_ENTRY_BYTES
from .blockcache import REFERENCES, SLOT_USE
from .lanes import LATENCIES, MAX_LATENCY, by_latency, latency
from .layouts import JOB, Kind, holds_plane, is_fp, pack
from .lut_dequant import INDEX_BITS
from .planebuf import CHUNK_BITS

FP_LINE_WEIGHTS = LINE_BITS // 16           #: 32 weights per fp16 / bf16 line
LINE_ENTRIES = LINE_BYTES // CODEBOOK_ENTRY_BYTES    #: 32 codebook entries per line
ENTRY_IN_LINE_BITS = (LINE_ENTRIES - 1).bit_length()  #: 5
MAX_TABLE_ENTRIES = 1 << CODE_BITS          #: entries of view 8's table: LUT_LOAD steps at k = 8

#: sequencer -> buffer read: a step of the oldest job
STEP = data.StructLayout({
    "job": JOB,
    "step": range(MAX_TABLE_ENTRIES),       # the step's number within its job
    "first": 1, "last": 1,
    "write_failed": 1,                      # a RAW_WR: its write response was an error
    "plane_column": 1, "plane_index": 3,    # the plane buffer read: a column or a row, which
    "load_index": INDEX_BITS,               # LUT_LOAD: the table entry the step loads ...
    "entry_in_line": ENTRY_IN_LINE_BITS,    # ... and its place in the plane line read
})
#: steps never stall: the sequencer starts them against the output queue's credit
STEP_STREAM = stream.Signature(STEP, always_ready=True)


def lane_chunk(job, step, steps: int):
    """An fp16 / bf16 step's chunk of lanes bits within its plane line (`steps` a line)."""
    return job.line * steps + step


class Sequencer(wiring.Component):
    """`lanes` weights an fp16 / bf16 step; `queue_depth` lines in the output queue."""

    def __init__(self, *, lanes: int, queue_depth: int):
        self.lanes, self.queue_depth = lanes, queue_depth
        self.steps = FP_LINE_WEIGHTS // lanes
        super().__init__({
            "job": In(stream.Signature(JOB)),
            "wresp": In(stream.Signature(1)),       # a write's response: 1 = it failed
            "slots": Out(SLOT_USE),
            "credit": In(1),                        # a line left the output queue
            "step": Out(STEP_STREAM),
            "dram_stall": Out(1),                   # the oldest job waits for DRAM
        })

    def elaborate(self, platform):
        m = Module()
        steps, j, slots = self.steps, self.job.payload, self.slots
        step = Signal(range(MAX_TABLE_ENTRIES))
        first = Signal(init=1)              # step == 0, as a register
        fp = is_fp(j.kind)
        is_load = j.kind == Kind.LUT_LOAD
        last = step == j.last_step
        plane_filled = ~(first & j.plane_alloc) | slots.plane_landed
        meta_filled = ~(first & j.meta_alloc) | slots.meta_landed
        # (only jobs that read a slot allocate one, and only a write waits for its response)
        ready = plane_filled & meta_filled & ((j.kind != Kind.RAW_WR) | self.wresp.valid)
        # lines started and not yet taken from the queue; room for one more, registered: a
        # cycle late, so it keeps one entry spare for the line that may start meanwhile
        held = Signal(range(self.queue_depth + 1))
        room = Signal()
        m.d.sync += room.eq(held + 1 < self.queue_depth)
        # cycles the last step started still has to go through the lanes; whether a step of
        # each latency may start, registered from the next value
        ahead = Signal(range(MAX_LATENCY + 1))
        order_ok = {d: Signal(name=f"order_ok_{d}", init=1) for d in LATENCIES}
        in_order = is_load | by_latency(fp, j.lut, order_ok)
        go = self.job.valid & ready & room & in_order
        ahead_next = Mux(go & ~is_load, latency(fp, j.lut), Mux(ahead == 0, 0, ahead - 1))
        m.d.sync += [ahead.eq(ahead_next), *(ok.eq(ahead_next <= d) for d, ok in order_ok.items())]
        m.d.comb += [
            slots.started.plane.eq(go & first & j.plane_alloc),
            slots.started.meta.eq(go & first & j.meta_alloc),
            self.job.ready.eq(go & last),
            self.wresp.ready.eq(go & (j.kind == Kind.RAW_WR)),
            self.dram_stall.eq(self.job.valid & ~ready),
        ]
        m.d.sync += [
            slots.release_valid.eq(go & last),
            slots.release.eq(pack(REFERENCES, plane=holds_plane(j.kind), plane_slot=j.plane_slot,
                                  meta=fp, meta_slot=j.meta_slot)),
        ]
        with m.If(go):
            m.d.sync += [step.eq(Mux(last, 0, step + 1)), first.eq(last)]
        m.d.sync += held.eq(held + (go & last & ~is_load) - self.credit)

        # a LUT_LOAD step loads entry (1 << k) | step of the set, at that index in the slot's
        # lines (k < 5: the first line holds view k's entries; else they start the slot)
        load_index = (step[:CODE_BITS] | (Const(1, INDEX_BITS) << j.k))[:INDEX_BITS]
        slot_entry = Mux(j.k < 5, load_index, step)[:CODE_BITS]
        # the plane buffer read: a row for raw / packed lines and codebook entries (the output
        # line, or the entry's line), else the column of 64-bit chunks holding the step's
        # codes: chunk `line` for int8, the one holding the step's lanes for fp16 / bf16
        column = fp | (j.kind == Kind.INT8)
        index = Mux(column, Mux(fp, lane_chunk(j, step, steps) // (CHUNK_BITS // self.lanes), j.line[:3]),
                    Mux(is_load, slot_entry[ENTRY_IN_LINE_BITS:], j.line[:3]))
        m.d.sync += [
            self.step.valid.eq(go),
            self.step.payload.eq(pack(STEP, job=j, step=step, first=first, last=last,
                                      write_failed=self.wresp.payload, plane_column=column, plane_index=index,
                                      load_index=load_index, entry_in_line=slot_entry[:ENTRY_IN_LINE_BITS])),
        ]
        return m
