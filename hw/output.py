"""The response stage's end: steps' results -> whole lines (`LinePacker`) -> the ordered
output queue -> DRS or NDR (`OutputRouter`)."""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import DRS_FIELDS, LINE_BITS, NDR_FIELDS, TAG_BITS
from .layouts import pack
from .lanes import output_stream
from .sequencer import FP_LINE_WEIGHTS

DRS = data.StructLayout(dict(DRS_FIELDS))
NDR = data.StructLayout(dict(NDR_FIELDS))
#: an entry of the output queue: a DRS line, or an NDR (`ndr`); `view`: for the counters
RESPONSE = data.StructLayout({"ndr": 1, "tag": TAG_BITS, "poison": 1, "view": 3, "data": LINE_BITS})
#: line packer -> output queue -> router
RESPONSE_STREAM = stream.Signature(RESPONSE)


class LinePacker(wiring.Component):
    """The lanes' results -> lines: an fp16 / bf16 line collects its `steps` steps' results
    (earlier steps in a register, the last one's straight in; poisoned: all zeros); other
    lines are the entry riding in `meta`.  `line` is the output queue's input: never held,
    the sequencer's credit flow keeps room for every line."""

    def __init__(self, *, lanes: int, meta_layout):
        self.lanes, self.steps = lanes, FP_LINE_WEIGHTS // lanes
        super().__init__({
            "input": In(output_stream(lanes, meta_layout)),
            "line": Out(RESPONSE_STREAM),
        })

    def elaborate(self, platform):
        m = Module()
        step = self.input.payload
        meta, chunk, width = step.meta, step.result, self.lanes * 16
        acc = Signal(LINE_BITS)                 # earlier steps of the line
        if self.steps > 1:
            with m.If(self.input.valid & step.dequantized & ~meta.last):
                m.d.sync += acc.word_select(meta.step, width).eq(chunk)
        fp_line = Mux(meta.entry.poison, 0, Cat(acc[:(self.steps - 1) * width], chunk))
        m.d.comb += [
            self.line.valid.eq(self.input.valid & meta.last),
            self.line.payload.eq(pack(RESPONSE, ndr=meta.entry.ndr, tag=meta.entry.tag, poison=meta.entry.poison,
                                      view=meta.entry.view, data=Mux(step.dequantized, fp_line, meta.entry.data))),
        ]
        return m


class OutputRouter(wiring.Component):
    """The output queue's head -> `drs` or `ndr`, in order; per-cycle events for the counters."""

    def __init__(self):
        super().__init__({
            "lines": In(RESPONSE_STREAM),
            "drs": Out(stream.Signature(DRS)), "ndr": Out(stream.Signature(NDR)),
            "served": Out(1), "served_view": Out(3),    # an unpoisoned DRS line taken, its view
            "written": Out(1),                          # an unpoisoned NDR taken
            "host_stall": Out(1),                       # a response offered and not taken
        })

    def elaborate(self, platform):
        m = Module()
        head = self.lines.payload
        m.d.comb += [
            self.drs.valid.eq(self.lines.valid & ~head.ndr), self.ndr.valid.eq(self.lines.valid & head.ndr),
            self.drs.payload.eq(pack(DRS, tag=head.tag, poison=head.poison, data=head.data)),
            self.ndr.payload.eq(pack(NDR, tag=head.tag, poison=head.poison)),
        ]
        drs_done = self.drs.valid & self.drs.ready
        ndr_done = self.ndr.valid & self.ndr.ready
        m.d.comb += [
            self.lines.ready.eq(drs_done | ndr_done),
            self.host_stall.eq(self.lines.valid & ~(drs_done | ndr_done)),
            self.served.eq(drs_done & ~head.poison), self.served_view.eq(head.view),
            self.written.eq(ndr_done & ~head.poison),
        ]
        return m
