"""Response stage: jobs in request order -> DRS / NDR lines.

A sequencer takes the oldest job once its data is there (its plane slot filled, and its
metadata slot for fp16/bf16, told by the block cache's `landed`; its write response for
a write); the cache learns when a job that allocated a slot starts (`started`) and when a
job's last step starts, so that it no longer refers to its slots (`release`) and feeds one step per cycle into a pipeline of `PIPELINE_DEPTH` register stages:
  1. the step's buffer addresses;
  2. the block buffers' registered read ports;
  3. a register after the plane buffer's banks (block RAM's clk-to-q is half a 100 MHz
     cycle), and the group's metadata word;
  4. the plane buffer's rotation (`PlaneBuffer.READ_LATENCY` stages in all); the step's
     selects decoded from its kind;
  5. plane transpose / line select, registered;
  6.. the dequantizers (`DEQUANT_LATENCY` stages, the longer of the affine and the
     table-lookup pipelines, the shorter one's result delayed to match; other views'
     lines ride alongside);
then the line is packed into an ordered output queue.  A step is one whole line, except
for fp16/bf16 where a line of 32 weights takes 32 / lanes steps.  Table-lookup regions:
a LUT_LOAD job (no response) takes 2**k steps, each writing one codebook entry from its
plane slot into the `LutDequantizer` tables at the dequantizer's input stage (so lookups
of earlier steps see the old table, later ones the new); an fp16 / bf16 step of a LUT
region takes the lookup result instead of the affine one.  A failed codebook read
poisons the LUT lines that follow, until the next load.  The sequencer only starts a line's step when the output queue has room for every line in flight, so the
pipeline never stalls (credit flow).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..spec import CODEBOOK_ENTRY_BYTES, CODE_BITS, DRS_FIELDS, LINE_BITS, LINE_BYTES, NDR_FIELDS, PLANES, ErrorCause, View
from .csr import ERROR_REPORT
from .dequant import Dequantizer, dequant_input
from .blockcache import PER_KIND, REFERENCES
from .layouts import JOB, Kind, holds_plane, is_fp, pack
from .lut_dequant import ENTRY_BITS, INDEX_BITS, LutDequantizer
from .pipeline import DelayLine, delayed
from .planebuf import CHUNK_BITS, PlaneBuffer
from .transpose import VIEW_MASKS, CodeGather, view_masks

DRS = data.StructLayout(dict(DRS_FIELDS))
NDR = data.StructLayout(dict(NDR_FIELDS))
FP_LINE_WEIGHTS = LINE_BITS // 16           #: 32 weights per fp16 / bf16 line
LINE_ENTRIES = LINE_BYTES // CODEBOOK_ENTRY_BYTES    #: 32 codebook entries per line
_ENTRY_IN_LINE_BITS = (LINE_ENTRIES - 1).bit_length()  #: 5
MAX_TABLE_ENTRIES = 1 << CODE_BITS          #: entries of view 8's table: LUT_LOAD steps at k = 8
INT8_LINE_WEIGHTS = LINE_BITS // 8          #: 64 weights per int8 line
_OUT = data.StructLayout({"ndr": 1, "tag": 8, "poison": 1, "view": 3, "data": LINE_BITS})
#: cycles from a step's start to its line's write into the output queue
DEQUANT_LATENCY = max(Dequantizer.LATENCY, LutDequantizer.LATENCY)
PIPELINE_DEPTH = 1 + PlaneBuffer.READ_LATENCY + 1 + DEQUANT_LATENCY


def _control_layout(steps: int) -> data.StructLayout:
    """What a step carries from stage 5 to the output queue beside the dequantizers, besides its entry."""
    return data.StructLayout({"valid": 1, "last": 1, "fp": 1, "lut": 1, "step": range(steps)})


_VIEW_OF_KIND = {Kind.RAW_RD: View.RAW, Kind.PACKED: View.PACKED, Kind.INT8: View.INT8,
                 Kind.FP16: View.FP16, Kind.BF16: View.BF16}


class Responder(wiring.Component):
    def __init__(self, *, lanes: int, plane_slots: int, meta_slots: int, out_depth: int = PIPELINE_DEPTH + 8):
        if lanes not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"lanes={lanes} must be a power of two in 1..32")
        self.lanes, self.out_depth = lanes, out_depth
        self.steps = FP_LINE_WEIGHTS // lanes
        super().__init__({
            "job": In(stream.Signature(JOB)),
            "wresp": In(stream.Signature(1)),
            # the block cache: whether the oldest allocating job's data have landed, failed flags
            "plane_landed": In(1), "plane_failed": In(plane_slots),
            "meta_landed": In(1), "meta_failed": In(meta_slots),
            # plane buffer read (`PlaneBuffer`): a row (one plane line) or a column (one 64-bit
            # chunk of every plane line) of a slot, data `PlaneBuffer.READ_LATENCY` cycles later
            "plane_rd_slot": Out(range(plane_slots)), "plane_rd_column": Out(1), "plane_rd_index": Out(3),
            "plane_rd_data": In(data.ArrayLayout(CHUNK_BITS, PLANES)),
            "meta_rd_addr": Out(range(meta_slots)), "meta_rd_data": In(LINE_BITS),
            "started": Out(PER_KIND),           # a job that allocated a slot started
            "release": Out(REFERENCES), "release_valid": Out(1),    # a job's last step started
            "drs": Out(stream.Signature(DRS)), "ndr": Out(stream.Signature(NDR)),
            "dram_error": Out(ERROR_REPORT),
            "served": Out(1), "served_view": Out(3), "written": Out(1),
            "host_stall": Out(1), "dram_stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, steps = self.lanes, self.steps
        j = self.job.payload
        m.submodules.out = out = SyncFIFOBuffered(width=_OUT.size, depth=self.out_depth)

        # --- sequencer ---
        step = Signal(range(max(steps, MAX_TABLE_ENTRIES)))
        fp = is_fp(j.kind)
        is_load = j.kind == Kind.LUT_LOAD
        table_failed = Signal()             # the last codebook read had an error
        last = step == j.last_step
        # a job that allocated a slot waits for the cache's `landed` (slots fill in allocation
        # order; a job hitting a slot follows the one that allocated it, later steps of a job
        # follow its first)
        first = Signal(init=1)              # step == 0, as a register
        plane_filled = ~(first & j.plane_alloc) | self.plane_landed
        meta_filled = ~(first & j.meta_alloc) | self.meta_landed
        # (only jobs that read a slot allocate one, and only a write waits for its response)
        ready = plane_filled & meta_filled & ((j.kind != Kind.RAW_WR) | self.wresp.valid)
        s1_valid = Signal()
        s1 = Signal(JOB)
        s1_step = Signal.like(step)
        s1_last, s1_first, s1_write_failed = Signal(), Signal(), Signal()
        in_flight = Signal(range(self.out_depth + 1))       # lines started, not yet in the queue
        # room for one more line, registered: a cycle late, so it keeps one entry spare for
        # the line that may start meanwhile
        room = Signal()
        m.d.sync += room.eq(out.level + in_flight + 1 < self.out_depth)
        go = self.job.valid & ready & room
        m.d.comb += [
            self.started.plane.eq(go & first & j.plane_alloc),
            self.started.meta.eq(go & first & j.meta_alloc),
            # (the slot is read in the cycles after a step starts, and filled again at the
            # earliest two cycles after the release: its references are counted in a register)
            self.release_valid.eq(go & last),
            self.release.eq(pack(REFERENCES, plane=holds_plane(j.kind), plane_slot=j.plane_slot,
                                 meta=fp, meta_slot=j.meta_slot)),
            self.job.ready.eq(go & last),
            self.wresp.ready.eq(go & (j.kind == Kind.RAW_WR)),
            self.dram_stall.eq(self.job.valid & ~ready),
        ]
        with m.If(go):
            m.d.sync += [step.eq(Mux(last, 0, step + 1)), first.eq(last)]
        m.d.sync += in_flight.eq(in_flight + (go & last & ~is_load) - out.w_en)
        m.d.sync += [s1_valid.eq(go), s1.eq(j), s1_step.eq(step), s1_last.eq(last), s1_first.eq(first),
                     s1_write_failed.eq(self.wresp.payload)]
        # stage 1: whether the step's data came with an error (a slot's flag holds until the
        # slot is allocated again, which is later than a cycle after its last job started)
        s1_failed = Signal()
        plane_failed = self.plane_failed.bit_select(s1.plane_slot, 1)
        failed = Signal()
        with m.Switch(s1.kind):
            with m.Case(Kind.RAW_WR):
                m.d.comb += failed.eq(s1_write_failed)
            with m.Case(Kind.FP16, Kind.BF16):
                m.d.comb += failed.eq(plane_failed | self.meta_failed.bit_select(s1.meta_slot, 1))
            with m.Case(Kind.RAW_RD, Kind.PACKED, Kind.INT8, Kind.LUT_LOAD):
                m.d.comb += failed.eq(plane_failed)
        m.d.comb += s1_failed.eq(failed | (s1.lut & is_fp(s1.kind) & table_failed))   # lookups, not loads
        with m.If(s1_valid & s1_first & (s1.kind == Kind.LUT_LOAD)):
            m.d.sync += table_failed.eq(failed)
        # the step's selects and buffer addresses, registered at its start;
        # a LUT_LOAD step loads entry (1 << k) | step of the set, at that index in the slot's
        # lines (k < 5: the first line holds view k's entries; else they start the slot)
        load_index = (step[:CODE_BITS] | (Const(1, INDEX_BITS) << j.k))[:INDEX_BITS]
        slot_entry = Mux(j.k < 5, load_index, step)[:CODE_BITS]
        s1_load_index, s1_entry_in_line = Signal(INDEX_BITS), Signal(_ENTRY_IN_LINE_BITS)
        # the plane buffer read: a row for raw / packed lines and codebook entries (the output
        # line, or the entry's line), else the column of 64-bit chunks holding the step's
        # codes: chunk `line` for int8, chunk `lane_chunk(j, step) // per_chunk` for fp16 / bf16
        per_chunk = CHUNK_BITS // lanes     # steps' lanes per 64-bit chunk

        def lane_chunk(job, step):
            """The step's lanes-bit chunk within a plane line."""
            return job.line * steps + step
        column = fp | (j.kind == Kind.INT8)
        # (registered: the buffers are read in the cycle after the step starts)
        m.d.sync += [
            self.plane_rd_slot.eq(j.plane_slot), self.meta_rd_addr.eq(j.meta_slot),
            self.plane_rd_column.eq(column),
            self.plane_rd_index.eq(Mux(column, Mux(fp, lane_chunk(j, step) // per_chunk, j.line[:3]),
                                       Mux(is_load, slot_entry[_ENTRY_IN_LINE_BITS:], j.line[:3]))),
        ]
        m.d.sync += [s1_load_index.eq(load_index), s1_entry_in_line.eq(slot_entry[:_ENTRY_IN_LINE_BITS])]
        # (from stage 1's registers, not from the queue's head: the step's lanes-bit chunk
        # within its 64-bit chunk, and its group within the metadata line)
        s1_sub = Signal(range(per_chunk))
        s1_group = Signal(4)
        m.d.comb += [s1_sub.eq(lane_chunk(s1, s1_step) % per_chunk),
                     s1_group.eq(s1.first_group + ((s1.line * FP_LINE_WEIGHTS + s1_step * lanes) >> s1.log2_group))]

        # --- stages 2-4: buffers read (the plane buffer's data come `PlaneBuffer.READ_LATENCY`
        # cycles after the address: block RAM's slow clk-to-q drives only a register, then the
        # rotation); the metadata word selected and registered; the step's fields follow, with
        # the selects stage 5 needs decoded from its kind (from here on, `s1*` are stage 4's) ---
        chunks = self.plane_rd_data         # a row's chunks, or a column's plane lines
        meta = Signal(32)
        m.d.sync += meta.eq(self.meta_rd_data.word_select(delayed(m, s1_group, 1, "s1_group_b"), 32))
        meta = delayed(m, meta, PlaneBuffer.READ_LATENCY - 2, "meta")
        view = Signal(3)
        with m.Switch(s1.kind):
            for kind, v in _VIEW_OF_KIND.items():
                with m.Case(kind):
                    m.d.comb += view.eq(v)
        # (one assignment of the whole struct: the Verilog backend gives each separately
        # assigned bit an `always @*` block of its own, which Icarus never runs when the bit's
        # input settles at time 0 and never changes, e.g. `load` in a run without LUT regions)
        selects = Signal(data.StructLayout({"row": 1, "int8": 1, "poison": 1, "view": 3, "fp": 1, "load": 1,
                                            "masks": VIEW_MASKS}))
        m.d.comb += selects.eq(Cat(s1.kind.as_value().matches(Kind.RAW_RD, Kind.PACKED, Kind.LUT_LOAD),
                                   s1.kind == Kind.INT8, (s1.kind == Kind.ERROR) | s1_failed, view,
                                   is_fp(s1.kind), s1_valid & (s1.kind == Kind.LUT_LOAD), view_masks(s1.k)))
        s1_valid, s1, s1_step, s1_last, s1_failed, s1_load_index, s1_entry_in_line, s1_sub, selects = [
            delayed(m, v, PlaneBuffer.READ_LATENCY, f"{name}_b") for v, name in (
                (s1_valid, "s1_valid"), (s1, "s1"), (s1_step, "s1_step"), (s1_last, "s1_last"),
                (s1_failed, "s1_failed"), (s1_load_index, "s1_load_index"),
                (s1_entry_in_line, "s1_entry_in_line"), (s1_sub, "s1_sub"), (selects, "selects"))]

        # --- stage 5: transpose / select -> side, side_entry and the dequantizers' inputs ---
        m.submodules.gather8 = gather8 = CodeGather(INT8_LINE_WEIGHTS)
        m.submodules.gather = gather = CodeGather(lanes)
        for p in range(PLANES):
            m.d.comb += [gather8.planes[p].eq(chunks[p]),
                         gather.planes[p].eq(chunks[p].word_select(s1_sub, lanes))]
        m.d.comb += [gather8.masks.eq(selects.masks), gather.masks.eq(selects.masks)]
        int8_line = Cat(*[gather8.r[i] ^ 0x80 for i in range(INT8_LINE_WEIGHTS)])
        # raw, packed and int8 lines (AND-OR with the decoded selects)
        line_out = ((chunks.as_value() & selects.row.replicate(LINE_BITS))
                    | (int8_line & selects.int8.replicate(LINE_BITS)))
        poison = selects.poison
        m.d.comb += [
            self.dram_error.valid.eq(s1_valid & s1_last & s1_failed),
            self.dram_error.cause.eq(ErrorCause.DRAM_ERROR), self.dram_error.addr.eq(s1.addr),
        ]
        s1_load = selects.load
        # stage 5 registers: the dequantizers' input and what rides alongside it to the queue
        side = Signal(_control_layout(steps))       # the step's control bits
        side_entry = Signal(_OUT)                   # and its entry (data of raw / packed / int8 lines)
        step_in = Signal(dequant_input(lanes))
        step_k = Signal(4)
        # a LUT_LOAD step's entry: its line rides in side_entry, the entry is picked from it there
        table_load = Signal(data.StructLayout({"valid": 1, "index": INDEX_BITS, "entry_in_line": _ENTRY_IN_LINE_BITS}))
        m.d.sync += [
            table_load.valid.eq(s1_load & ~s1_failed), table_load.index.eq(s1_load_index),
            table_load.entry_in_line.eq(s1_entry_in_line), step_k.eq(s1.k),
            side.valid.eq(s1_valid & ~s1_load), side.last.eq(s1_last), side.step.eq(s1_step),
            side.fp.eq(selects.fp), side.lut.eq(s1.lut),
            side_entry.ndr.eq(s1.write), side_entry.tag.eq(s1.tag), side_entry.poison.eq(poison),
            side_entry.view.eq(selects.view), side_entry.data.eq(line_out & ~poison.replicate(LINE_BITS)),
            step_in.r.eq(gather.r), step_in.scale.eq(meta[:16]), step_in.zero.eq(meta[16:24]),
            step_in.scale_bf16.eq(s1.scale_bf16), step_in.scale_pow2.eq(s1.scale_pow2),
            step_in.out_bf16.eq(s1.kind == Kind.BF16),
        ]

        # --- stages 6..: dequantize (never stalls: the output is always taken) ---
        m.submodules.dequant = dq = Dequantizer(lanes)
        m.d.comb += [dq.input.valid.eq(side.valid & side.fp), dq.input.payload.eq(step_in),
                     dq.output.ready.eq(1)]
        # table lookup, beside it; the shorter pipeline's result is delayed so both leave together
        m.submodules.lut = lut = LutDequantizer(lanes)
        m.d.comb += [
            lut.load.valid.eq(table_load.valid), lut.load.payload.index.eq(table_load.index),
            lut.load.payload.entry.eq(side_entry.data.word_select(table_load.entry_in_line, ENTRY_BITS)),
            lut.valid.eq(side.valid & side.fp & side.lut), lut.r.eq(step_in.r), lut.k.eq(step_k),
            lut.scale.eq(step_in.scale), lut.scale_bf16.eq(step_in.scale_bf16),
            lut.scale_pow2.eq(step_in.scale_pow2), lut.out_bf16.eq(step_in.out_bf16),
        ]
        affine = delayed(m, Cat(*[dq.output.payload[i] for i in range(lanes)]),
                          DEQUANT_LATENCY - Dequantizer.LATENCY, "affine_result")
        looked_up = delayed(m, lut.result.as_value(), DEQUANT_LATENCY - LutDequantizer.LATENCY, "lut_result")

        # --- pack the line into the output queue ---
        # (beside the dequantizers, `DEQUANT_LATENCY` cycles: the control bits in registers, the
        # 525-bit entry in a LUT-RAM delay line, where a row of flip-flops per stage would take ~6 k)
        tail = delayed(m, side, DEQUANT_LATENCY, "side")
        m.submodules.entry_delay = entry_delay = DelayLine(_OUT, DEQUANT_LATENCY)
        m.d.comb += entry_delay.input.eq(side_entry)
        tail_entry = entry_delay.output
        chunk = Mux(tail.lut, looked_up, affine)
        acc = Signal(LINE_BITS)                                  # earlier steps of the line
        if steps > 1:
            with m.If(tail.valid & tail.fp & ~tail.last):
                m.d.sync += acc.word_select(tail.step, lanes * 16).eq(chunk)
        fp_line = Mux(tail_entry.poison, 0, Cat(acc[:(steps - 1) * lanes * 16], chunk))
        entry = data.View(_OUT, out.w_data)
        m.d.comb += [
            out.w_en.eq(tail.valid & tail.last),
            entry.eq(tail_entry),
            entry.data.eq(Mux(tail.fp, fp_line, tail_entry.data)),
        ]

        # --- ordered output: DRS or NDR ---
        head = data.View(_OUT, out.r_data)
        m.d.comb += [
            self.drs.valid.eq(out.r_rdy & ~head.ndr), self.ndr.valid.eq(out.r_rdy & head.ndr),
            self.drs.payload.tag.eq(head.tag), self.drs.payload.poison.eq(head.poison),
            self.drs.payload.data.eq(head.data),
            self.ndr.payload.tag.eq(head.tag), self.ndr.payload.poison.eq(head.poison),
        ]
        drs_done = self.drs.valid & self.drs.ready
        ndr_done = self.ndr.valid & self.ndr.ready
        m.d.comb += [
            out.r_en.eq(drs_done | ndr_done),
            self.host_stall.eq(out.r_rdy & ~(drs_done | ndr_done)),
            self.served.eq(drs_done & ~head.poison), self.served_view.eq(head.view),
            self.written.eq(ndr_done & ~head.poison),
        ]
        return m
