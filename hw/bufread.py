"""Buffer read: a step -> its plane chunks and metadata word, `PlaneBuffer.READ_LATENCY` cycles later.

The step's registered addresses drive the block cache's read ports (`read`) straight away;
in the same cycle the step's slots' failed flags are checked and its selects decoded from
its kind and k.  The plane buffer's data come `PlaneBuffer.READ_LATENCY` cycles after the
address (block RAM's slow clock-to-output drives only a register, then the banks'
rotation); the group's 32-bit metadata word is selected from the metadata line and
registered.  The step's fields ride beside the read in registers (`fetched.payload.ctl`), so
`fetched` carries the chunks, the word and the step together.

A failed codebook read (a LUT_LOAD job's first step whose slot failed) poisons the LUT
lookups of the steps that follow, until the next load.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import PLANES, ErrorCause, View
from .blockcache import read_signature
from .csr import ERROR_REPORT
from .layouts import JOB, Kind, is_fp, pack
from .lut_dequant import INDEX_BITS
from .pipeline import delayed
from .planebuf import CHUNK_BITS, PlaneBuffer
from .sequencer import ENTRY_IN_LINE_BITS, FP_LINE_WEIGHTS, MAX_TABLE_ENTRIES, STEP_STREAM, lane_chunk
from .transpose import VIEW_MASKS, view_masks

#: how stage 5 treats a step's line, decoded from its kind and k
SELECTS = data.StructLayout({"row": 1, "int8": 1, "poison": 1, "view": 3, "fp": 1, "load": 1, "masks": VIEW_MASKS})

_VIEW_OF_KIND = {Kind.RAW_RD: View.RAW, Kind.PACKED: View.PACKED, Kind.INT8: View.INT8,
                 Kind.FP16: View.FP16, Kind.BF16: View.BF16}


def fetched_stream(lanes: int) -> stream.Signature:
    """buffer read -> gather: a step's data and what rides beside them (never stalls)."""
    return stream.Signature(data.StructLayout({
        "chunks": data.ArrayLayout(CHUNK_BITS, PLANES),     # a row's chunks, or a column's plane lines
        "meta": 32,                                         # the step's group's metadata word
        "ctl": data.StructLayout({
            "job": JOB, "step": range(MAX_TABLE_ENTRIES), "last": 1,
            "failed": 1,                                    # its data came with an error
            "load_index": INDEX_BITS, "entry_in_line": ENTRY_IN_LINE_BITS,
            "sub": range(CHUNK_BITS // lanes),              # its lanes' place in the 64-bit chunk
            "selects": SELECTS,
        }),
    }), always_ready=True)


class BufferRead(wiring.Component):
    LATENCY = PlaneBuffer.READ_LATENCY      #: cycles from `step` to `fetched`

    def __init__(self, *, lanes: int, plane_slots: int, meta_slots: int):
        self.lanes = lanes
        self.steps = FP_LINE_WEIGHTS // lanes
        super().__init__({
            "step": In(STEP_STREAM),
            "read": Out(read_signature(plane_slots, meta_slots)),
            "fetched": Out(fetched_stream(lanes)),
            "dram_error": Out(ERROR_REPORT),        # a line's data came with an error
        })

    def elaborate(self, platform):
        m = Module()
        lanes, s, read = self.lanes, self.step.payload, self.read
        job, kind = s.job, s.job.kind
        m.d.comb += [read.plane_slot.eq(job.plane_slot), read.plane_column.eq(s.plane_column),
                     read.plane_index.eq(s.plane_index), read.meta_slot.eq(job.meta_slot)]

        # whether the step's data came with an error (a slot's flag holds until the slot is
        # allocated again, which is later than a cycle after its last job started)
        table_failed = Signal()             # the last codebook read had an error
        plane_failed = read.plane_failed.bit_select(job.plane_slot, 1)
        failed = Signal()
        with m.Switch(kind):
            with m.Case(Kind.RAW_WR):
                m.d.comb += failed.eq(s.write_failed)
            with m.Case(Kind.FP16, Kind.BF16):
                m.d.comb += failed.eq(plane_failed | read.meta_failed.bit_select(job.meta_slot, 1))
            with m.Case(Kind.RAW_RD, Kind.PACKED, Kind.INT8, Kind.LUT_LOAD):
                m.d.comb += failed.eq(plane_failed)
        step_failed = failed | (job.lut & is_fp(kind) & table_failed)     # lookups, not loads
        with m.If(self.step.valid & s.first & (kind == Kind.LUT_LOAD)):
            m.d.sync += table_failed.eq(failed)

        # the metadata word: the step's group within the line, registered with the line's read
        group = Signal(4)
        m.d.comb += group.eq(job.first_group + ((job.line * FP_LINE_WEIGHTS + s.step * lanes) >> job.log2_group))
        meta = Signal(32)
        m.d.sync += meta.eq(read.meta_data.word_select(delayed(m, group, 1, "group"), 32))
        meta = delayed(m, meta, self.LATENCY - 2, "meta")

        view = Signal(3)
        with m.Switch(kind):
            for k, v in _VIEW_OF_KIND.items():
                with m.Case(k):
                    m.d.comb += view.eq(v)
        # (whole structs assigned at once: the Verilog backend gives each separately assigned
        # bit an `always @*` block of its own, which Icarus never runs when the bit's input
        # settles at time 0 and never changes, e.g. `load` in a run without LUT regions)
        selects = Cat(kind.as_value().matches(Kind.RAW_RD, Kind.PACKED, Kind.LUT_LOAD), kind == Kind.INT8,
                      (kind == Kind.ERROR) | step_failed, view, is_fp(kind),
                      self.step.valid & (kind == Kind.LUT_LOAD), view_masks(job.k))
        ctl_layout = self.fetched.payload.shape().members["ctl"]
        ctl = Signal(ctl_layout)
        m.d.comb += ctl.eq(pack(ctl_layout, job=job, step=s.step, last=s.last, failed=step_failed,
                                load_index=s.load_index, entry_in_line=s.entry_in_line,
                                sub=lane_chunk(job, s.step, self.steps) % (CHUNK_BITS // lanes), selects=selects))
        ctl = delayed(m, ctl, self.LATENCY, "ctl")
        valid = delayed(m, self.step.valid, self.LATENCY, "valid")
        m.d.comb += [
            self.fetched.valid.eq(valid),
            self.fetched.payload.eq(pack(self.fetched.payload.shape(), chunks=read.plane_data, meta=meta, ctl=ctl)),
            self.dram_error.eq(pack(ERROR_REPORT, valid=valid & ctl.last & ctl.failed,
                                    cause=ErrorCause.DRAM_ERROR, addr=ctl.job.addr)),
        ]
        return m
