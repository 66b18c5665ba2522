"""Issue stage: decoded commands -> DRAM reads into block buffers, and in-order jobs.

A plane slot holds the top k plane lines of one block (one burst), a metadata slot
one metadata line.  Slots are allocated round-robin; a command whose block (with at
least its k lines) or metadata line is the one most recently fetched reuses that slot
instead of reading DRAM again (the decoder marks the misses, `fetch_plane` /
`fetch_meta` / `fetch_table`, so that this stage compares no addresses), so a sequential
read of a tensor fetches every plane line and metadata line once.  A slot is released by
the response stage when it starts on the job that allocated the next slot (all earlier
jobs are then done), so `slots - 1` fetches can run ahead of the response stage.

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
from .counter import held_below
from .dram import READ_REQUEST, WRITE_REQUEST
from .layouts import COMMAND, COMMON_FIELDS, JOB, Kind, is_fp, is_quantized, pack


class FetchIssue(wiring.Component):
    """`fp_steps`: the response stage's steps per fp16 / bf16 line (32 / lanes); a job
    carries its last step's number so that the response stage compares only that."""

    #: the command fields that the issue decision reads (besides `cmd.valid`)
    DECISION_FIELDS = ("kind", "fetch_plane", "fetch_meta", "fetch_table")

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

        # slot bookkeeping (what a command must fetch comes with it: `fetch_plane`,
        # `fetch_meta`, `fetch_table`, decided in order by the decoder)
        plane_cur = Signal(range(P), init=P - 1)     # slot of the most recent plane fetch
        meta_cur = Signal(range(M), init=M - 1)
        plane_free, meta_free = Signal(), Signal()   # a slot may be allocated
        plane_pending, meta_pending = Signal(), Signal()   # fetched for the command at the head
        table_pending = Signal()                            # ... its table loaded
        plane_next = Mux(plane_cur == P - 1, 0, plane_cur + 1)
        meta_next = Mux(meta_cur == M - 1, 0, meta_cur + 1)

        need_table = self.cmd.valid & c.fetch_table & ~table_pending
        table_first, table_lines = Signal(4), Signal(4)     # line of entry 2**k in the set, lines read
        with m.Switch(c.k):
            for k in range(1, PLANES + 1):
                with m.Case(k):
                    m.d.comb += [table_first.eq((1 << k) * CODEBOOK_ENTRY_BYTES // LINE_BYTES),
                                 table_lines.eq(codebook_lines_read(k))]

        quantized = is_quantized(c.kind)
        is_write = c.kind == Kind.RAW_WR

        want_table = need_table & plane_free & self.writes_idle & self.job.ready
        want_plane = self.cmd.valid & ~need_table & c.fetch_plane & ~plane_pending & plane_free & self.writes_idle
        want_meta = self.cmd.valid & ~need_table & c.fetch_meta & ~meta_pending & meta_free & self.writes_idle
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
        plane_ok = ~c.fetch_plane | plane_pending | alloc_plane
        meta_ok = ~c.fetch_meta | meta_pending | alloc_meta
        write_ok = ~is_write | (self.writes.valid & self.writes.ready)
        fire = self.cmd.valid & ~need_table & self.job.ready & plane_ok & meta_ok & write_ok

        m.d.comb += [self.job.valid.eq(fire | load_table), self.cmd.ready.eq(fire)]
        last_step = Mux(load_table, (1 << c.k) - 1,          # one step per entry of view k's table
                        Mux(is_fp(c.kind), self.fp_steps - 1, 0))
        passed_on = {name: getattr(c, name) for name in COMMON_FIELDS}
        passed_on["kind"] = Mux(load_table, Kind.LUT_LOAD, c.kind)
        m.d.comb += self.job.payload.eq(pack(
            JOB, **passed_on,
            plane_slot=Mux(alloc_plane | load_table, plane_next, plane_cur),
            plane_alloc=plane_pending | alloc_plane | load_table,
            meta_slot=Mux(alloc_meta, meta_next, meta_cur), meta_alloc=meta_pending | alloc_meta,
            last_step=last_step))

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


def _slots_free(m: Module, slots: int, alloc, release, name: str) -> Signal:
    """A register: whether fewer than `slots` slots are in use (allocated, not yet released;
    one is in use from reset, the one the first allocation's predecessor stands for)."""
    used = Signal(range(slots + 1), init=1, name=f"{name}_used")
    m.d.sync += used.eq(used + alloc - release)
    return held_below(m, used, slots, alloc, release, name=f"{name}_free")
