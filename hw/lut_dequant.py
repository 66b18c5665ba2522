"""Table-lookup dequantizer: `s * table_k[c]` per lane for LUT regions (docs/RECIPES.md).

The codebook table set of a region (512 binary16 entries, entry (k, c) at index
`(1 << k) | c`, spec.codebook_index) is loaded through the `load` stream, one entry
per cycle, into a table RAM per lane (every lane looks up its own entry each cycle).
A controller loads only view k's 2**k entries when the (region, k) it serves changes:
2**k cycles (8 at k = 3), the entries coming from the region's codebook lines in DRAM.

Lookup: from a lane's view code r (`transpose.CodeGather`: the top k bits c of q, a 1,
zeros) the table index is `(0x100 | r) >> (8 - k)` = `(1 << k) | c`, read at the clock
edge; the next cycle multiplies the entry by the group scale and rounds once to the
output format (`FloatRound`), so `result` follows `valid` by one cycle.  Products are
exact (11 x 11 significand bits) before the single round-to-nearest-even; NaN results
(a NaN operand, infinity times zero) are the canonical quiet NaN, as in `hw.dequant`.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODE_BITS, CODEBOOK_ENTRIES
from .dequant import SIG_BITS, ScaleDecode

ENTRY_BITS = 16
INDEX_BITS = (CODEBOOK_ENTRIES - 1).bit_length()        #: 9
LOAD = data.StructLayout({"index": INDEX_BITS, "entry": ENTRY_BITS})


class FloatRound(wiring.Component):
    """Combinational: sign * magnitude * 2**exponent (magnitude `width` bits, exact) rounded
    once to binary16 or bfloat16 (`out_bf16`), nearest even, with the special cases.

    The result's least significant bit has exponent max(t + E - m, emin - m) (t: the
    magnitude's leading one, m: mantissa bits, emin: smallest normal exponent), so the
    magnitude is shifted right by that minus E with round-to-nearest-even on the dropped
    bits; adding (max(biased exponent, 1) - 1) << m to the rounded significand gives the
    encoding (a rounding carry moves into the exponent by itself); at or above infinity's
    encoding it is infinity."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "sign": In(1), "magnitude": In(width), "exponent": In(signed(10)),
            "inf": In(1), "nan": In(1), "out_bf16": In(1),
            "result": Out(ENTRY_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        width, product = self.width, self.magnitude
        max_shift = width + 1                     # shifts beyond round everything to zero alike
        lead = Signal(range(width))
        for i in range(width):
            with m.If(product[i]):
                m.d.comb += lead.eq(i)
        mant_bits = Mux(self.out_bf16, 7, 10)
        bias = Mux(self.out_bf16, 127, 15)
        inf_enc = Mux(self.out_bf16, 0x7F80, 0x7C00)
        nan_enc = Mux(self.out_bf16, 0x7FC0, 0x7E00)
        biased = Signal(signed(12))
        shift = Signal(signed(12))
        normal_shift = lead - mant_bits
        floor_shift = 1 - bias - mant_bits - self.exponent
        m.d.comb += [biased.eq(lead + self.exponent + bias),
                     shift.eq(Mux(normal_shift > floor_shift, normal_shift, floor_shift))]
        rounded = Signal(width + 11)
        with m.If(shift <= 0):
            m.d.comb += rounded.eq(product << (-shift)[:4])
        with m.Else():
            below_guard = Signal(range(max_shift))
            with_guard = Signal(width)
            m.d.comb += [below_guard.eq(Mux(shift > max_shift, max_shift, shift) - 1),
                         with_guard.eq(product >> below_guard)]
            sticky = (with_guard << below_guard)[:width] != product
            kept = with_guard >> 1
            m.d.comb += rounded.eq(kept + (with_guard[0] & (sticky | kept[0])))
        encoding = Signal(width + 12)
        m.d.comb += encoding.eq(rounded + ((Mux(biased > 1, biased, 1) - 1) << mant_bits))
        with m.If(self.nan):
            m.d.comb += self.result.eq(nan_enc)
        with m.Elif(product == 0):
            m.d.comb += self.result.eq(self.sign << 15)
        with m.Elif(self.inf | (encoding >= inf_enc)):
            m.d.comb += self.result.eq(inf_enc | (self.sign << 15))
        with m.Else():
            m.d.comb += self.result.eq(encoding[:15] | (self.sign << 15))
        return m


class LutLane(wiring.Component):
    """Combinational: one binary16 table entry times a decoded scale, rounded once."""

    def __init__(self):
        super().__init__({
            "entry": In(ENTRY_BITS),
            "scale_sign": In(1), "significand": In(SIG_BITS), "exponent": In(signed(10)),
            "scale_inf": In(1), "scale_nan": In(1), "out_bf16": In(1),
            "result": Out(ENTRY_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.entry = entry = ScaleDecode()           # binary16 bits: bf16 = pow2 = 0
        m.submodules.round = rnd = FloatRound(2 * SIG_BITS)
        entry_zero = entry.significand == 0
        scale_zero = self.significand == 0
        m.d.comb += [
            entry.bits.eq(self.entry),
            rnd.sign.eq(entry.sign ^ self.scale_sign),
            rnd.magnitude.eq(entry.significand * self.significand),
            rnd.exponent.eq(entry.exponent + self.exponent),
            rnd.nan.eq(entry.nan | self.scale_nan | (entry.inf & scale_zero & ~self.scale_inf)
                       | (self.scale_inf & entry_zero & ~entry.inf)),
            rnd.inf.eq(entry.inf | self.scale_inf),
            rnd.out_bf16.eq(self.out_bf16),
            self.result.eq(rnd.result),
        ]
        return m


class LutDequantizer(wiring.Component):
    """`lanes` view codes r of one group -> `s * table_k[c]`, one cycle after `valid`.

    Ports: `load` (stream of {index, entry}: always ready, one table entry a cycle);
    `valid`, `r`, `k` (1..8), `scale` bits, `scale_bf16` / `scale_pow2`, `out_bf16`;
    `result` and `result_valid` one cycle later."""

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
        drop = Signal(range(CODE_BITS))            # code bits below the view: 8 - k
        m.d.comb += drop.eq(CODE_BITS - self.k)
        held = Signal(data.StructLayout({"scale": 16, "bf16": 1, "pow2": 1, "out_bf16": 1}))
        m.d.sync += [self.result_valid.eq(self.valid), held.scale.eq(self.scale), held.bf16.eq(self.scale_bf16),
                     held.pow2.eq(self.scale_pow2), held.out_bf16.eq(self.out_bf16)]
        m.d.comb += [self.load.ready.eq(1), scale.bits.eq(held.scale), scale.bf16.eq(held.bf16),
                     scale.pow2.eq(held.pow2)]
        for i in range(self.lanes):
            m.submodules[f"table{i}"] = table = memory.Memory(shape=ENTRY_BITS, depth=CODEBOOK_ENTRIES, init=[])
            write, read = table.write_port(), table.read_port(transparent_for=())
            m.submodules[f"lane{i}"] = lane = LutLane()
            m.d.comb += [
                write.en.eq(self.load.valid), write.addr.eq(self.load.payload.index),
                write.data.eq(self.load.payload.entry),
                read.en.eq(1), read.addr.eq((Cat(self.r[i], Const(1, 1)) >> drop)[:INDEX_BITS]),
                lane.entry.eq(read.data),
                lane.scale_sign.eq(scale.sign), lane.significand.eq(scale.significand),
                lane.exponent.eq(scale.exponent), lane.scale_inf.eq(scale.inf), lane.scale_nan.eq(scale.nan),
                lane.out_bf16.eq(held.out_bf16),
                self.result[i].eq(lane.result),
            ]
        return m
