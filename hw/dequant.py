"""Dequantizer lanes: s * (r - z) as binary16 or bfloat16, rounded once to nearest even.

The exact product is sign(s) ^ sign(r - z) times |r - z| (8 bits) times the scale's
significand (11 bits, bf16 significands left-aligned), scaled by 2**E.  Its rounding:
the output's least significant bit has exponent `max(t + E - m, emin - m)` (t: position
of the product's leading one, m: output mantissa bits, emin: smallest normal exponent),
so the product is shifted right by `lsb - E` with round-to-nearest-even on the dropped
bits; adding `(max(biased exponent, 1) - 1) << m` to the rounded significand gives the
encoding, with a rounding carry moving into the exponent by itself.  Encodings at or
above infinity's become infinity.  NaN results (NaN scale, infinite scale times 0) are
the canonical quiet NaN (0x7E00 / 0x7FC0).  No floating-point library involved.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODE_BITS

SIG_BITS = 11               #: scale significand bits (binary16 with its implicit one)
PRODUCT_BITS = CODE_BITS + SIG_BITS   #: |r - z| * significand < 2**19
#: right shifts of PRODUCT_BITS + 1 or more round every product to zero alike
MAX_SHIFT = PRODUCT_BITS + 1


class ScaleDecode(wiring.Component):
    """Combinational: 16 scale bits -> sign, 11-bit significand, exponent E of its LSB, specials.

    `bf16` selects bfloat16 bits (else binary16); `pow2` reads the mantissa as zero."""

    def __init__(self):
        super().__init__({
            "bits": In(16), "bf16": In(1), "pow2": In(1),
            "sign": Out(1), "significand": Out(SIG_BITS), "exponent": Out(signed(10)),
            "inf": Out(1), "nan": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        b = self.bits
        exp = Signal(8)
        frac = Signal(10)
        exp_max = Signal()
        with m.If(self.bf16):
            m.d.comb += [exp.eq(b[7:15]), frac.eq(b[0:7] << 3), exp_max.eq(b[7:15] == 0xFF)]
        with m.Else():
            m.d.comb += [exp.eq(b[10:15]), frac.eq(Mux(self.pow2, 0, b[0:10])), exp_max.eq(b[10:15] == 0x1F)]
        normal = exp != 0
        m.d.comb += [
            self.sign.eq(b[15]),
            self.significand.eq(Mux(normal, 1 << 10, 0) | frac),
            # value = significand * 2**(max(exp, 1) - bias - 10)
            self.exponent.eq(Mux(normal, exp, 1) - Mux(self.bf16, 127 + 10, 15 + 10)),
            self.inf.eq(exp_max & (frac == 0)),
            self.nan.eq(exp_max & (frac != 0)),
        ]
        return m


class DequantLane(wiring.Component):
    """Combinational: one weight, s * (r - z) rounded to the output format (`out_bf16`)."""

    def __init__(self):
        super().__init__({
            "r": In(CODE_BITS), "zero": In(CODE_BITS),
            "scale_sign": In(1), "significand": In(SIG_BITS), "exponent": In(signed(10)),
            "scale_inf": In(1), "scale_nan": In(1), "out_bf16": In(1),
            "result": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        diff = Signal(signed(CODE_BITS + 1))
        magnitude = Signal(CODE_BITS)
        product = Signal(PRODUCT_BITS)
        m.d.comb += [
            diff.eq(self.r - self.zero),
            magnitude.eq(Mux(diff < 0, -diff, diff)),
            product.eq(magnitude * self.significand),
        ]
        sign = self.scale_sign ^ (diff < 0)

        lead = Signal(signed(6))                   # t: position of the leading one
        for i in range(PRODUCT_BITS):
            with m.If(product[i]):
                m.d.comb += lead.eq(i)

        mant_bits = Signal(4)
        bias = Signal(signed(9))
        m.d.comb += [mant_bits.eq(Mux(self.out_bf16, 7, 10)), bias.eq(Mux(self.out_bf16, 127, 15))]
        inf_enc = Mux(self.out_bf16, 0x7F80, 0x7C00)
        nan_enc = Mux(self.out_bf16, 0x7FC0, 0x7E00)

        biased = Signal(signed(12))                # biased exponent of the exact product
        m.d.comb += biased.eq(lead + self.exponent + bias)
        # shift = lsb - E = max(t - m, 1 - bias - m - E)
        shift = Signal(signed(12))
        normal_shift = lead - mant_bits
        floor_shift = 1 - bias - mant_bits - self.exponent
        m.d.comb += shift.eq(Mux(normal_shift > floor_shift, normal_shift, floor_shift))

        rounded = Signal(PRODUCT_BITS + 11)
        with m.If(shift <= 0):
            m.d.comb += rounded.eq(product << (-shift)[:4])
        with m.Else():
            below_guard = Signal(range(MAX_SHIFT))     # dropped bits under the guard bit
            m.d.comb += below_guard.eq(Mux(shift > MAX_SHIFT, MAX_SHIFT, shift) - 1)
            with_guard = Signal(PRODUCT_BITS)      # kept bits and the guard bit below them
            m.d.comb += with_guard.eq(product >> below_guard)
            sticky = (with_guard << below_guard)[:PRODUCT_BITS] != product
            kept = with_guard >> 1
            m.d.comb += rounded.eq(kept + (with_guard[0] & (sticky | kept[0])))

        encoding = Signal(range(1 << 20))
        m.d.comb += encoding.eq(rounded + ((Mux(biased > 1, biased, 1) - 1) << mant_bits)[:20])

        with m.If(self.scale_nan | (self.scale_inf & (magnitude == 0))):
            m.d.comb += self.result.eq(nan_enc)
        with m.Elif(product == 0):
            m.d.comb += self.result.eq(sign << 15)
        with m.Elif(self.scale_inf | (encoding >= inf_enc)):
            m.d.comb += self.result.eq(inf_enc | (sign << 15))
        with m.Else():
            m.d.comb += self.result.eq(encoding[:15] | (sign << 15))
        return m


class Dequantizer(wiring.Component):
    """Combinational: `lanes` codes r sharing one group (zero, scale) -> 16-bit results."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({
            "r": In(data.ArrayLayout(CODE_BITS, lanes)),
            "zero": In(CODE_BITS), "scale": In(16),
            "scale_bf16": In(1), "scale_pow2": In(1), "out_bf16": In(1),
            "result": Out(data.ArrayLayout(16, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.scale = scale = ScaleDecode()
        m.d.comb += [scale.bits.eq(self.scale), scale.bf16.eq(self.scale_bf16), scale.pow2.eq(self.scale_pow2)]
        for i in range(self.lanes):
            lane = DequantLane()
            m.submodules[f"lane{i}"] = lane
            m.d.comb += [
                lane.r.eq(self.r[i]), lane.zero.eq(self.zero),
                lane.scale_sign.eq(scale.sign), lane.significand.eq(scale.significand),
                lane.exponent.eq(scale.exponent), lane.scale_inf.eq(scale.inf),
                lane.scale_nan.eq(scale.nan), lane.out_bf16.eq(self.out_bf16),
                self.result[i].eq(lane.result),
            ]
        return m
