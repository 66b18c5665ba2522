"""Dequantizer lanes: a step's codes -> `lanes` binary16 / bfloat16 results, with side-band data.

The affine dequantizer (`Dequantizer`, `s * (r - z)`) and the table lookup
(`LutDequantizer`, `s * table_k[c]`) run side by side; the shorter pipeline's result is
delayed so that both leave `LATENCY` cycles after the step came in, the lookup's taken for
a step of a table-lookup region.  Every step, dequantized or not, comes out `LATENCY`
cycles later with its `meta` (a layout of the user's, as Glasgow's `IOStreamer` carries
its `meta_layout`): `valid` and the lanes' own flags in registers, `meta` in a LUT-RAM
delay line (a row of flip-flops per stage for a 525-bit line would take ~6 k).  Never
stalls: the output is always taken.
"""

from amaranth import Cat, Module, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .dequant import Dequantizer, dequant_input
from .layouts import pack
from .lut_dequant import LOAD, LutDequantizer
from .pipeline import DelayLine, delayed


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
    LATENCY = max(Dequantizer.LATENCY, LutDequantizer.LATENCY)     #: cycles from `input` to `output`

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
        m.d.comb += [affine.input.valid.eq(dequantize), affine.input.payload.eq(codes), affine.output.ready.eq(1)]
        m.submodules.lookup = lookup = LutDequantizer(self.lanes)
        wiring.connect(m, wiring.flipped(self.load), lookup.load)
        m.d.comb += [
            lookup.valid.eq(dequantize & step.lut), lookup.r.eq(codes.r), lookup.k.eq(step.k),
            lookup.scale.eq(codes.scale), lookup.scale_bf16.eq(codes.scale_bf16),
            lookup.scale_pow2.eq(codes.scale_pow2), lookup.out_bf16.eq(codes.out_bf16),
        ]
        affine_result = delayed(m, Cat(*[affine.output.payload[i] for i in range(self.lanes)]),
                                self.LATENCY - Dequantizer.LATENCY, "affine_result")
        lookup_result = delayed(m, lookup.result.as_value(), self.LATENCY - LutDequantizer.LATENCY, "lookup_result")
        flags = delayed(m, Cat(self.input.valid, step.dequantize, step.lut), self.LATENCY, "flags")
        m.submodules.meta = meta = DelayLine(self.meta_layout, self.LATENCY)
        m.d.comb += [
            meta.input.eq(step.meta),
            self.output.valid.eq(flags[0]),
            self.output.payload.eq(pack(self.output.payload.shape(), result=Mux(flags[2], lookup_result, affine_result),
                                        dequantized=flags[1], meta=meta.output)),
        ]
        return m
