"""Issue stage: decoded commands -> DRAM reads into block buffers, and in-order jobs.

A plane slot holds the top k plane lines of one block (one burst), a metadata slot
one metadata line.  Slots are allocated round-robin; a command whose block (with at
least its k lines) or metadata line is the one most recently fetched reuses that slot
instead of reading DRAM again (the decoder marks such commands, `plane_hit` /
`meta_hit` / `table_hit`, so that this stage compares no addresses), so a sequential
read of a tensor fetches every plane line and metadata line once.  A slot is released by the response stage when it
starts on the job that allocated the next slot (all earlier jobs are then done), so
`slots - 1` fetches can run ahead of the response stage.

Table-lookup regions: before the first fp16 / bf16 command of a LUT region whose
(codebook, k) differs from the table last loaded, a plane read of view k's codebook
lines (`spec.codebook_lines_read(k)` lines from the line holding entry 2**k) goes into
the next plane slot and a LUT_LOAD job (no response) tells the response stage to load
the entries; then the command proceeds as usual.  A write forgets the loaded table.

Ordering against writes: a read is only issued when no write awaits its response,
and a write only when no read is in flight (the decoder's reuse stage forgets the
cached block, metadata line and table at a write).  Errors pass straight through as jobs.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODEBOOK_ENTRY_BYTES, CODEBOOK_LINES, LINE_BYTES, PLANES, codebook_lines_read
from .dram import READ_REQUEST, WRITE_REQUEST
from .layouts import COMMAND, JOB, Kind, is_fp, is_quantized, needs_plane


class FetchIssue(wiring.Component):
    """`fp_steps`: the response stage's steps per fp16 / bf16 line (32 / lanes); a job
    carries its last step's number so that the response stage compares only that."""

    def __init__(self, *, plane_slots: int, meta_slots: int, fp_steps: int):
        if plane_slots < 2 or meta_slots < 2:
            raise ValueError("at least 2 plane slots and 2 metadata slots")
        self.plane_slots, self.meta_slots, self.fp_steps = plane_slots, meta_slots, fp_steps
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "job": Out(stream.Signature(JOB)),
            "plane_reads": Out(stream.Signature(READ_REQUEST)),
            "meta_reads": Out(stream.Signature(READ_REQUEST)),
            "writes": Out(stream.Signature(WRITE_REQUEST)),
            "reads_idle": In(1), "writes_idle": In(1),
            "release_plane": In(1), "release_meta": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.cmd.payload
        P, M = self.plane_slots, self.meta_slots

        # slot bookkeeping (whether the most recent fetches serve a command comes with it:
        # `plane_hit`, `meta_hit`, `table_hit`, decided in order by the decoder)
        plane_cur = Signal(range(P), init=P - 1)     # slot of the most recent plane fetch
        meta_cur = Signal(range(M), init=M - 1)
        plane_free, meta_free = Signal(), Signal()   # a slot may be allocated
        plane_pending, meta_pending = Signal(), Signal()   # fetched for the command at the head
        table_pending = Signal()                            # ... its table loaded
        plane_next = Mux(plane_cur == P - 1, 0, plane_cur + 1)
        meta_next = Mux(meta_cur == M - 1, 0, meta_cur + 1)

        need_table = self.cmd.valid & c.lut & ~c.table_hit & ~table_pending
        table_first, table_lines = Signal(4), Signal(4)     # line of entry 2**k in the set, lines read
        with m.Switch(c.k):
            for k in range(1, PLANES + 1):
                with m.Case(k):
                    m.d.comb += [table_first.eq((1 << k) * CODEBOOK_ENTRY_BYTES // LINE_BYTES),
                                 table_lines.eq(codebook_lines_read(k))]

        quantized = is_quantized(c.kind)
        plane_needed = needs_plane(c.kind)
        meta_needed = is_fp(c.kind)
        is_write = c.kind == Kind.RAW_WR

        plane_have = plane_pending | c.plane_hit
        meta_have = meta_pending | c.meta_hit
        want_table = need_table & plane_free & self.writes_idle & self.job.ready
        want_plane = self.cmd.valid & ~need_table & plane_needed & ~plane_have & plane_free & self.writes_idle
        want_meta = self.cmd.valid & ~need_table & meta_needed & ~meta_have & meta_free & self.writes_idle
        m.d.comb += [
            self.plane_reads.valid.eq(want_plane | want_table),
            self.plane_reads.payload.line.eq(Mux(need_table, (c.codebook * CODEBOOK_LINES) + table_first,
                                                 c.plane_line)),
            self.plane_reads.payload.lines.eq(Mux(need_table, table_lines, Mux(quantized, c.k, 1))),
            self.plane_reads.payload.slot.eq(plane_next),
            self.meta_reads.valid.eq(want_meta), self.meta_reads.payload.line.eq(c.meta_line),
            self.meta_reads.payload.lines.eq(1), self.meta_reads.payload.slot.eq(meta_next),
        ]
        alloc_plane = want_plane & self.plane_reads.ready
        load_table = want_table & self.plane_reads.ready
        alloc_meta = want_meta & self.meta_reads.ready

        m.d.comb += [
            self.writes.valid.eq(self.cmd.valid & is_write & self.reads_idle & self.job.ready),
            self.writes.payload.line.eq(c.plane_line),
        ]
        plane_ok = ~plane_needed | plane_have | alloc_plane
        meta_ok = ~meta_needed | meta_have | alloc_meta
        write_ok = ~is_write | (self.writes.valid & self.writes.ready)
        fire = self.cmd.valid & ~need_table & self.job.ready & plane_ok & meta_ok & write_ok

        job = self.job.payload
        m.d.comb += [self.job.valid.eq(fire | load_table), self.cmd.ready.eq(fire)]
        for name in ("kind", "write", "tag", "addr", "cause", "line", "k", "scale_bf16", "scale_pow2",
                     "log2_group", "first_group", "lut"):
            m.d.comb += getattr(job, name).eq(getattr(c, name))
        with m.If(load_table):        # one step per entry of view k's table
            m.d.comb += [job.kind.eq(Kind.LUT_LOAD), job.last_step.eq((1 << c.k) - 1)]
        with m.Elif(meta_needed):
            m.d.comb += job.last_step.eq(self.fp_steps - 1)
        m.d.comb += [
            job.plane_slot.eq(Mux(alloc_plane | load_table, plane_next, plane_cur)),
            job.plane_alloc.eq(plane_pending | alloc_plane | load_table),
            job.meta_slot.eq(Mux(alloc_meta, meta_next, meta_cur)),
            job.meta_alloc.eq(meta_pending | alloc_meta),
        ]

        with m.If(fire):
            m.d.sync += [plane_pending.eq(0), meta_pending.eq(0), table_pending.eq(0)]
        with m.Else():
            m.d.sync += [plane_pending.eq(plane_pending | alloc_plane), meta_pending.eq(meta_pending | alloc_meta),
                         table_pending.eq(table_pending | load_table)]
        with m.If(alloc_plane | load_table):
            m.d.sync += plane_cur.eq(plane_next)
        with m.If(alloc_meta):
            m.d.sync += meta_cur.eq(meta_next)
        m.d.comb += [plane_free.eq(_slots_free(m, P, alloc_plane | load_table, self.release_plane, "plane")),
                     meta_free.eq(_slots_free(m, M, alloc_meta, self.release_meta, "meta"))]
        return m


def _slots_free(m: Module, slots: int, alloc: Signal, release: Signal, name: str) -> Signal:
    """A register: whether fewer than `slots` slots are in use (allocated, not yet released;
    one is in use from reset, the one the first allocation's predecessor stands for).  The
    next value is picked by `alloc` and `release` among comparisons of the count held, so
    neither the issue decision nor the response stage's start meets an adder on its way."""
    used = Signal(range(slots + 1), init=1, name=f"{name}_used")
    free = Signal(init=1, name=f"{name}_free")
    m.d.sync += used.eq(used + alloc - release)
    with m.If(alloc & ~release):
        m.d.sync += free.eq(used < slots - 1)
    with m.Elif(release & ~alloc):
        m.d.sync += free.eq(1)
    return free
