"""Dequantizer lanes: a step's codes -> `lanes` binary16 / bfloat16 results, with side-band data.

The affine dequantizer (`Dequantizer`, `s * (r - z)`) and the table lookup
(`LutDequantizer`, `s * table_k[c]`) run side by side, each step through the one its
region asks for; a step that is not dequantized (a raw, packed or int8 line, an NDR)
passes straight through.  A step leaves `latency(dequantize, lut)` cycles after it came
in (`PASS_LATENCY` = 0, `AFFINE_LATENCY` = 8, `LOOKUP_LATENCY` = 11) with its `meta` (a
layout of the user's, as Glasgow's `IOStreamer` carries its `meta_layout`): `valid` in
registers, a dequantized step's `meta` in LUT-RAM delay lines (8 cycles, then 3 more for
a lookup; a row of flip-flops per stage for a 525-bit line would take ~6 k).  Never stalls: the output is always taken.

The caller keeps steps in order and one a cycle at the output: a step of latency `d`
enters only when `d` is at least the cycles the last step in still has to go
(`Sequencer`'s `ahead`), so it leaves after every step before it.
"""

from amaranth import Cat, Module, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .dequant import Dequantizer, dequant_input
from .layouts import pack
from .lut_dequant import LOAD, LutDequantizer
from .pipeline import DelayLine

PASS_LATENCY = 0                                #: cycles through the lanes, a step not dequantized
AFFINE_LATENCY = Dequantizer.LATENCY            #: ... an affine step
LOOKUP_LATENCY = LutDequantizer.LATENCY         #: ... a table-lookup step
LATENCIES = (PASS_LATENCY, AFFINE_LATENCY, LOOKUP_LATENCY)
MAX_LATENCY = max(LATENCIES)


def by_latency(dequantize, lut, choices: dict):
    """`choices[d]` for the latency `d` a step of this kind takes through the lanes."""
    return Mux(dequantize, Mux(lut, choices[LOOKUP_LATENCY], choices[AFFINE_LATENCY]), choices[PASS_LATENCY])


def latency(dequantize, lut):
    """Cycles a step takes through the lanes (a value, for the sequencer's rule)."""
    return by_latency(dequantize, lut, {d: d for d in LATENCIES})


def input_stream(lanes: int, meta_layout) -> stream.Signature:
    """Steps into the lanes: codes and group; `dequantize`: an fp16 / bf16 step (else only
    `meta` matters), `lut`: by table lookup at view `k`."""
    return stream.Signature(data.StructLayout({"codes": dequant_input(lanes), "dequantize": 1, "lut": 1, "k": 4,
                                               "meta": meta_layout}), always_ready=True)


def output_stream(lanes: int, meta_layout) -> stream.Signature:
    """Steps out of the lanes: `lanes` 16-bit results (lane i at bits 16i..) if `dequantized`."""
    return stream.Signature(data.StructLayout({"result": 16 * lanes, "dequantized": 1, "meta": meta_layout}),
                            always_ready=True)


class DequantLanes(wiring.Component):
    def __init__(self, *, lanes: int, meta_layout):
        self.lanes, self.meta_layout = lanes, meta_layout
        super().__init__({
            "input": In(input_stream(lanes, meta_layout)),
            "load": In(stream.Signature(LOAD)),     # a table entry (`LutDequantizer.load`)
            "output": Out(output_stream(lanes, meta_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        step = self.input.payload
        codes = step.codes
        dequantize = self.input.valid & step.dequantize
        m.submodules.affine = affine = Dequantizer(self.lanes)
        m.d.comb += [affine.input.valid.eq(dequantize & ~step.lut), affine.input.payload.eq(codes),
                     affine.output.ready.eq(1)]
        m.submodules.lookup = lookup = LutDequantizer(self.lanes)
        wiring.connect(m, wiring.flipped(self.load), lookup.load)
        m.d.comb += [
            lookup.valid.eq(dequantize & step.lut), lookup.r.eq(codes.r), lookup.k.eq(step.k),
            lookup.scale.eq(codes.scale), lookup.scale_bf16.eq(codes.scale_bf16),
            lookup.scale_pow2.eq(codes.scale_pow2), lookup.out_bf16.eq(codes.out_bf16),
        ]
        # a dequantized step's meta: AFFINE_LATENCY cycles on, and LOOKUP_LATENCY for a lookup
        m.submodules.affine_meta = affine_meta = DelayLine(self.meta_layout, AFFINE_LATENCY)
        m.submodules.lookup_meta = lookup_meta = DelayLine(self.meta_layout, LOOKUP_LATENCY - AFFINE_LATENCY)
        m.d.comb += [affine_meta.input.eq(step.meta), lookup_meta.input.eq(affine_meta.output)]
        passing = self.input.valid & ~step.dequantize
        m.d.comb += [
            self.output.valid.eq(passing | affine.output.valid | lookup.result_valid),
            self.output.payload.eq(pack(
                self.output.payload.shape(), dequantized=~passing,
                result=Mux(lookup.result_valid, lookup.result.as_value(),
                           Cat(*[affine.output.payload[i] for i in range(self.lanes)])),
                meta=Mux(passing, step.meta, Mux(lookup.result_valid, lookup_meta.output, affine_meta.output)))),
        ]
        return m
