"""Issue stage: decoded commands -> DRAM reads into block buffers, and in-order jobs.

A plane slot of the block cache holds the top k plane lines of one block (one burst), a
metadata slot one metadata line.  The cache's lookup (blocktags.py, the decoder's last
stages) marks each command's misses, `fetch_plane` / `fetch_meta` / `fetch_table`, and
its slots, so that this stage compares no addresses: a miss fills the cache's next slot
(round-robin, the order the lookup chose them in) once no job in flight refers to it
(`plane_free` / `meta_free`); every job issued tells the cache the slots it refers to.

Table-lookup regions: before the first fp16 / bf16 command of a LUT region whose
(codebook, k) differs from the table last loaded, a plane read of view k's codebook
lines (`spec.codebook_lines_read(k)` lines from the line holding entry 2**k) goes into
the next plane slot and a LUT_LOAD job (no response) tells the response stage to load
the entries; then the command proceeds as usual.  The lookup decides which table is loaded.

Ordering against writes: a read is only issued when no write awaits its response,
and a write only when no read is in flight (the lookup invalidates the resident block
and metadata line the write lands in, and forgets the table).  Errors pass straight through as jobs.

A command's job is offered once its reads and write are taken (in that cycle, or from a
register of each after it), and a table read and its LUT_LOAD job are taken together;
no stream's `valid` looks at its own `ready` (sim/stream_loops.py checks it).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODEBOOK_ENTRY_BYTES, CODEBOOK_LINES, LINE_BYTES, PLANES, codebook_lines_read
from .blockcache import REFERENCES
from .dram import READ_REQUEST, WRITE_REQUEST
from .layouts import COMMAND, COMMON_FIELDS, JOB, Kind, holds_plane, is_fp, is_quantized, pack


class FetchIssue(wiring.Component):
    """`fp_steps`: the response stage's steps per fp16 / bf16 line (32 / lanes); a job
    carries its last step's number so that the response stage compares only that."""

    #: the command fields that the issue decision reads (besides `cmd.valid`)
    DECISION_FIELDS = ("kind", "fetch_plane", "fetch_meta", "fetch_table")

    def __init__(self, *, plane_slots: int, meta_slots: int, fp_steps: int):
        self.plane_slots, self.meta_slots, self.fp_steps = plane_slots, meta_slots, fp_steps
        super().__init__({
            "cmd": In(stream.Signature(COMMAND)),
            "job": Out(stream.Signature(JOB)),
            "plane_reads": Out(stream.Signature(READ_REQUEST)),
            "meta_reads": Out(stream.Signature(READ_REQUEST)),
            "writes": Out(stream.Signature(WRITE_REQUEST)),
            "reads_idle": In(1), "writes_idle": In(1),
            # the block cache: the next slots to fill and whether they may be; bursts into
            # them issued; the slots each issued job refers to
            "plane_next": In(range(plane_slots)), "meta_next": In(range(meta_slots)),
            "plane_free": In(1), "meta_free": In(1),
            "plane_alloc": Out(1), "meta_alloc": Out(1),
            "acquire": Out(REFERENCES), "acquire_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.cmd.payload

        # what a command must fetch comes with it (`fetch_plane`, `fetch_meta`, `fetch_table`,
        # decided in order by the block cache's lookup), and the slots: a miss fills the cache's
        # next slot, which is the one the lookup chose
        plane_free, meta_free = self.plane_free, self.meta_free
        plane_next, meta_next = self.plane_next, self.meta_next
        plane_pending, meta_pending = Signal(), Signal()   # fetched for the command at the head
        table_pending = Signal()                            # ... its table loaded
        write_pending = Signal()                            # ... its write issued

        need_table = self.cmd.valid & c.fetch_table & ~table_pending
        table_first, table_lines = Signal(4), Signal(4)     # line of entry 2**k in the set, lines read
        with m.Switch(c.k):
            for k in range(1, PLANES + 1):
                with m.Case(k):
                    m.d.comb += [table_first.eq((1 << k) * CODEBOOK_ENTRY_BYTES // LINE_BYTES),
                                 table_lines.eq(codebook_lines_read(k))]

        quantized = is_quantized(c.kind)
        is_write = c.kind == Kind.RAW_WR

        # (a table read goes with its LUT_LOAD job: the read waits for the job queue's room, the
        # job for the read's, so neither stream's `valid` looks at its own `ready`)
        table_ready = need_table & plane_free & self.writes_idle
        want_table = table_ready & self.job.ready
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
        table_job = table_ready & self.plane_reads.ready
        alloc_meta = want_meta & self.meta_reads.ready

        m.d.comb += [
            self.writes.valid.eq(self.cmd.valid & is_write & self.reads_idle & ~write_pending),
            self.writes.payload.line.eq(c.plane_line),
        ]
        plane_ok = ~c.fetch_plane | plane_pending | alloc_plane
        meta_ok = ~c.fetch_meta | meta_pending | alloc_meta
        write_done = self.writes.valid & self.writes.ready
        write_ok = ~is_write | write_pending | write_done
        offer = self.cmd.valid & ~need_table & plane_ok & meta_ok & write_ok
        fire = offer & self.job.ready

        m.d.comb += [self.job.valid.eq(offer | table_job), self.cmd.ready.eq(fire)]
        # The job's kind, slot and steps are picked by `need_table`, from registers: a job is
        # valid while the table is needed only if it is the table load (`offer` needs the table
        # loaded), so the pick equals `load_table`'s whenever the job is, and the acquire's slot
        # and kind reach the block cache without the issue decision.
        last_step = Mux(need_table, (1 << c.k) - 1,          # one step per entry of view k's table
                        Mux(is_fp(c.kind), self.fp_steps - 1, 0))
        passed_on = {name: getattr(c, name) for name in COMMON_FIELDS}
        job_kind = Signal(Kind)
        m.d.comb += job_kind.eq(Mux(need_table, Kind.LUT_LOAD, c.kind))
        passed_on["kind"] = job_kind
        plane_slot = Mux(need_table, plane_next, c.plane_slot)
        m.d.comb += self.job.payload.eq(pack(
            JOB, **passed_on, plane_slot=plane_slot, plane_alloc=plane_pending | alloc_plane | load_table,
            meta_slot=c.meta_slot, meta_alloc=meta_pending | alloc_meta, last_step=last_step))
        m.d.comb += [
            self.plane_alloc.eq(alloc_plane | load_table), self.meta_alloc.eq(alloc_meta),
            self.acquire_valid.eq(self.job.valid & self.job.ready),
            self.acquire.eq(pack(REFERENCES, plane=holds_plane(job_kind), plane_slot=plane_slot,
                                 meta=is_fp(job_kind), meta_slot=c.meta_slot)),
        ]

        with m.If(fire):
            m.d.sync += [plane_pending.eq(0), meta_pending.eq(0), table_pending.eq(0), write_pending.eq(0)]
        with m.Else():
            m.d.sync += [plane_pending.eq(plane_pending | alloc_plane), meta_pending.eq(meta_pending | alloc_meta),
                         table_pending.eq(table_pending | load_table), write_pending.eq(write_pending | write_done)]
        return m
