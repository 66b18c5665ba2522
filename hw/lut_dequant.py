"""Table-lookup dequantizer: `s * table_k[c]` per lane for LUT regions (docs/RECIPES.md).

The codebook table set of a region (512 binary16 entries, entry (k, c) at index
`(1 << k) | c`, spec.codebook_index) is loaded through the `load` stream, one entry
per cycle, into a table RAM per lane (every lane looks up its own entry each cycle).
A controller loads only view k's 2**k entries when the (region, k) it serves changes:
2**k cycles (8 at k = 3), the entries coming from the region's codebook lines in DRAM.

Loading takes `LOAD_STAGES` = 2 register stages before the table write (the entry as it
came, then decoded into `ENTRY_FIELDS`, so that the table RAM's slow clock-to-output feeds
a register directly); lookups wait as many stages, so a lookup sees every entry loaded
before it.  Lookup: from a lane's view code r (`transpose.CodeGather`: the top k bits c of
q, a 1, zeros) the table index is `(0x100 | r) >> (8 - k)` = `(1 << k) | c`, read at the
clock edge (stage 3); stage 4 registers the entry's fields and the decoded group scale,
stage 5 their exact product (11 x 11 significand bits) and exponent, and the affine
dequantizer's `RoundPipeline` rounds it once to the output format (stages 6-11), so
`result` follows `valid` by `LutDequantizer.LATENCY` = 11 cycles.  NaN results (a NaN operand, infinity times
zero) are the canonical quiet NaN, as in `hw.dequant`.
"""

from amaranth import Cat, Const, Module, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODE_BITS, CODEBOOK_ENTRIES
from .dequant import SIG_BITS, RoundPipeline, ScaleDecode

ENTRY_BITS = 16
INDEX_BITS = (CODEBOOK_ENTRIES - 1).bit_length()        #: 9
LOAD = data.StructLayout({"index": INDEX_BITS, "entry": ENTRY_BITS})
#: a table entry as the table RAM holds it: decoded when loaded, so that the RAM's slow
#: clock-to-output feeds a register directly
ENTRY_FIELDS = data.StructLayout({"sign": 1, "significand": SIG_BITS, "exponent": signed(10),
                                  "inf": 1, "nan": 1})


class LutLane(wiring.Component):
    """One table entry times a decoded scale, rounded once: the entry's fields registered
    (stage 4 of the module docstring), the exact product and its exponent (stage 5), then
    the dequantizer's `RoundPipeline` (stages 6-11).  Inputs: `entry` (the table read,
    `ENTRY_FIELDS`, stage 3), the scale fields and `out_bf16` (stage 4's registers, shared
    by the lanes)."""

    def __init__(self):
        super().__init__({
            "entry": In(ENTRY_FIELDS),
            "scale_sign": In(1), "significand": In(SIG_BITS), "exponent": In(signed(10)),
            "scale_inf": In(1), "scale_nan": In(1), "out_bf16": In(1),
            "result": Out(ENTRY_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        fields = Signal(ENTRY_FIELDS)
        m.d.sync += fields.eq(self.entry)

        width = 2 * SIG_BITS
        product = Signal(width)
        sign, nan, inf, out_bf16 = Signal(), Signal(), Signal(), Signal()
        exponent = Signal(signed(10))
        entry_zero = fields.significand == 0
        scale_zero = self.significand == 0
        m.d.sync += [
            product.eq(fields.significand * self.significand),
            sign.eq(fields.sign ^ self.scale_sign),
            nan.eq(fields.nan | self.scale_nan | (fields.inf & scale_zero & ~self.scale_inf)
                   | (self.scale_inf & entry_zero & ~fields.inf)),
            inf.eq(fields.inf | self.scale_inf), out_bf16.eq(self.out_bf16),
            exponent.eq(fields.exponent + self.exponent),
        ]
        m.submodules.round = rnd = RoundPipeline(width)
        m.d.comb += [rnd.advance.eq(1), rnd.product.eq(product), rnd.sign.eq(sign), rnd.nan.eq(nan),
                     rnd.inf.eq(inf), rnd.out_bf16.eq(out_bf16), rnd.exponent.eq(exponent),
                     self.result.eq(rnd.result)]
        return m


class LutDequantizer(wiring.Component):
    """`lanes` view codes r of one group -> `s * table_k[c]`, `LATENCY` cycles after `valid`,
    one step per cycle (never stalls).

    Ports: `load` (stream of {index, entry}: always ready, one table entry a cycle);
    `valid`, `r`, `k` (1..8), `scale` bits, `scale_bf16` / `scale_pow2`, `out_bf16`;
    `result` and `result_valid` `LATENCY` cycles later."""

    LOAD_STAGES = 2
    LATENCY = LOAD_STAGES + 3 + RoundPipeline.STAGES

    def __init__(self, lanes: int):
        if lanes < 1:
            raise ValueError(f"lanes={lanes} must be positive")
        self.lanes = lanes
        super().__init__({
            "load": In(stream.Signature(LOAD)),
            "valid": In(1), "r": In(data.ArrayLayout(CODE_BITS, lanes)), "k": In(4),
            "scale": In(16), "scale_bf16": In(1), "scale_pow2": In(1), "out_bf16": In(1),
            "result_valid": Out(1), "result": Out(data.ArrayLayout(ENTRY_BITS, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.scale = scale = ScaleDecode()
        valid = Signal(self.LATENCY)               # bit n: stage n + 1 holds a step
        m.d.sync += valid.eq(Cat(self.valid, valid[:-1]))
        m.d.comb += self.result_valid.eq(valid[-1])
        # a step waits `LOAD_STAGES` cycles, as loads do, then reads the tables: its inputs
        # registered (`drop`: the code bits below the view, 8 - k), then the table indices
        # `(0x100 | r) >> drop` registered
        assert self.LOAD_STAGES == 2
        shared = {"scale": 16, "bf16": 1, "pow2": 1, "out_bf16": 1}
        arrived = Signal(data.StructLayout({"r": data.ArrayLayout(CODE_BITS, self.lanes),
                                            "drop": range(CODE_BITS), **shared}))
        m.d.sync += [arrived.r.eq(self.r), arrived.drop.eq(CODE_BITS - self.k), arrived.scale.eq(self.scale),
                     arrived.bf16.eq(self.scale_bf16), arrived.pow2.eq(self.scale_pow2),
                     arrived.out_bf16.eq(self.out_bf16)]
        step = Signal(data.StructLayout({"index": data.ArrayLayout(INDEX_BITS, self.lanes), **shared}))
        m.d.sync += [*(step.index[i].eq((Cat(arrived.r[i], Const(1, 1)) >> arrived.drop)[:INDEX_BITS])
                       for i in range(self.lanes)),
                     *(getattr(step, name).eq(getattr(arrived, name)) for name in shared)]
        # the scale: held beside the table read, decoded in the stage after
        held = Signal(data.StructLayout(shared))
        decoded = Signal(data.StructLayout({"sign": 1, "significand": SIG_BITS, "exponent": signed(10),
                                            "inf": 1, "nan": 1, "out_bf16": 1}))
        m.d.comb += [self.load.ready.eq(1), scale.bits.eq(held.scale), scale.bf16.eq(held.bf16),
                     scale.pow2.eq(held.pow2)]
        m.d.sync += [*(getattr(held, name).eq(getattr(step, name)) for name in shared),
                     decoded.eq(Cat(scale.sign, scale.significand, scale.exponent, scale.inf, scale.nan,
                                    held.out_bf16))]
        # loads: the entry registered as it came, then decoded (binary16 bits: bf16 = pow2 = 0)
        incoming = Signal(data.StructLayout({"valid": 1, "load": LOAD}))
        m.d.sync += [incoming.valid.eq(self.load.valid), incoming.load.eq(self.load.payload)]
        m.submodules.load_decode = load_decode = ScaleDecode()
        loaded = Signal(data.StructLayout({"valid": 1, "index": INDEX_BITS, "entry": ENTRY_FIELDS}))
        m.d.comb += load_decode.bits.eq(incoming.load.entry)
        m.d.sync += [loaded.valid.eq(incoming.valid), loaded.index.eq(incoming.load.index),
                     loaded.entry.eq(Cat(load_decode.sign, load_decode.significand, load_decode.exponent,
                                         load_decode.inf, load_decode.nan))]
        for i in range(self.lanes):
            m.submodules[f"table{i}"] = table = memory.Memory(shape=ENTRY_FIELDS, depth=CODEBOOK_ENTRIES, init=[])
            write, read = table.write_port(), table.read_port(transparent_for=())
            m.submodules[f"lane{i}"] = lane = LutLane()
            m.d.comb += [
                write.en.eq(loaded.valid), write.addr.eq(loaded.index), write.data.eq(loaded.entry),
                read.en.eq(1), read.addr.eq(step.index[i]),
                lane.entry.eq(read.data),
                lane.scale_sign.eq(decoded.sign), lane.significand.eq(decoded.significand),
                lane.exponent.eq(decoded.exponent), lane.scale_inf.eq(decoded.inf), lane.scale_nan.eq(decoded.nan),
                lane.out_bf16.eq(decoded.out_bf16),
                self.result[i].eq(lane.result),
            ]
        return m
