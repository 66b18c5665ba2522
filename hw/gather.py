"""Gather: a step's fetched chunks -> its line (raw, packed, int8) or the dequantizers' codes.

Combinational from the buffer read's registers, then registered (the cut between the
plane transpose and the dequantizers): a row's chunks are a raw or packed line (or the line
holding a codebook entry); a column's plane lines are transposed into codes, all 64 of an
int8 line (offset to unsigned) or the step's `lanes` for fp16 / bf16, with the group's
scale and zero point.  The response entry (the line's data, poisoned lines all zeros)
rides through the dequantizers as their side-band `meta`.  A LUT_LOAD step's entry leaves
through `load`, picked from its line, into the lookup tables at the dequantizers' input
stage, so lookups of earlier steps see the old table, later ones the new.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import LINE_BITS, PLANES
from .bufread import fetched_stream
from .dequant import dequant_input
from .lanes import input_stream
from .layouts import Kind, pack
from .lut_dequant import ENTRY_BITS, INDEX_BITS, LOAD
from .output import RESPONSE
from .sequencer import ENTRY_IN_LINE_BITS, FP_LINE_WEIGHTS
from .transpose import CodeGather

INT8_LINE_WEIGHTS = LINE_BITS // 8          #: 64 weights per int8 line


def line_meta(steps: int) -> data.StructLayout:
    """What rides beside a step's dequantization to the line packer: the response entry
    (data of raw, packed and int8 lines), whether the step ends its line, its place in it."""
    return data.StructLayout({"last": 1, "step": range(steps), "entry": RESPONSE})


class LineGather(wiring.Component):
    def __init__(self, *, lanes: int):
        self.lanes = lanes
        self.meta_layout = line_meta(FP_LINE_WEIGHTS // lanes)
        super().__init__({
            "fetched": In(fetched_stream(lanes)),
            "line": Out(input_stream(lanes, self.meta_layout)),
            "load": Out(stream.Signature(LOAD)),    # a codebook entry for the lookup tables
        })

    def elaborate(self, platform):
        m = Module()
        lanes, fetched = self.lanes, self.fetched.payload
        ctl, chunks = fetched.ctl, fetched.chunks
        job, selects = ctl.job, ctl.selects
        m.submodules.gather8 = gather8 = CodeGather(INT8_LINE_WEIGHTS)
        m.submodules.gather = gather = CodeGather(lanes)
        for p in range(PLANES):
            m.d.comb += [gather8.planes[p].eq(chunks[p]), gather.planes[p].eq(chunks[p].word_select(ctl.sub, lanes))]
        m.d.comb += [gather8.masks.eq(selects.masks), gather.masks.eq(selects.masks)]
        int8_line = Cat(*[gather8.r[i] ^ 0x80 for i in range(INT8_LINE_WEIGHTS)])
        # raw, packed and int8 lines (AND-OR with the decoded selects)
        line = ((chunks.as_value() & selects.row.replicate(LINE_BITS))
                | (int8_line & selects.int8.replicate(LINE_BITS)))
        poison = selects.poison
        entry = pack(RESPONSE, ndr=job.write, tag=job.tag, poison=poison, view=selects.view,
                     data=line & ~poison.replicate(LINE_BITS))
        codes = pack(dequant_input(lanes), r=gather.r, scale=fetched.meta[:16], zero=fetched.meta[16:24],
                     scale_bf16=job.scale_bf16, scale_pow2=job.scale_pow2, out_bf16=job.kind == Kind.BF16)
        out = self.line.payload
        load = Signal(data.StructLayout({"valid": 1, "index": INDEX_BITS, "entry_in_line": ENTRY_IN_LINE_BITS}))
        m.d.sync += [
            self.line.valid.eq(self.fetched.valid & ~selects.load),
            out.eq(pack(out.shape(), codes=codes, dequantize=selects.fp, lut=job.lut, k=job.k,
                        meta=pack(self.meta_layout, last=ctl.last, step=ctl.step, entry=entry))),
            load.eq(pack(load.shape(), valid=selects.load & ~ctl.failed, index=ctl.load_index,
                         entry_in_line=ctl.entry_in_line)),
        ]
        # (the entry is picked from the registered line: the step's line rides in `meta`)
        m.d.comb += [
            self.load.valid.eq(load.valid),
            self.load.payload.eq(pack(LOAD, index=load.index,
                                      entry=out.meta.entry.data.word_select(load.entry_in_line, ENTRY_BITS))),
        ]
        return m
