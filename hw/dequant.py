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

`Dequantizer` is a stream pipeline of `LATENCY` register stages (one result per cycle):
1. |r - z|, its sign; the group scale decoded (`ScaleDecode`, shared by all lanes);
2. the exact product |r - z| * significand (one 9x11 multiplier per lane);
3. t, the position of the product's leading one, its trailing zeros; E's terms;
4. the clamped floor of the shift, t's terms;
5. the shift amount, the exponent field of the encoding;
6. the shift with guard and sticky bits;
7. round to nearest even: rounding add plus exponent field;
8. infinity and the special cases -> the 16 result bits.
All stages advance together while the output is empty or taken (`output.ready`).
(`ScaleDecode` and `RoundPipeline` stay in this module, past 250 lines, because the table
lookup (lut_dequant.py) shares them and the arithmetic above explains all three.)
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODE_BITS

SIG_BITS = 11               #: scale significand bits (binary16 with its implicit one)
PRODUCT_BITS = CODE_BITS + SIG_BITS   #: |r - z| * significand < 2**19


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


class RoundPipeline(wiring.Component):
    """Stages 3-8 (module docstring): sign * product * 2**E, the product exact in `width`
    bits, rounded once to binary16 or bfloat16 (`out_bf16`), nearest even, `STAGES`
    registers later; its registers move on `advance`.  All inputs are sampled together;
    `exponent` is E, the exponent of the product's least significant bit.  Each stage has
    at most one carry chain or one shifter."""

    STAGES = 6

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "advance": In(1), "product": In(width), "sign": In(1), "nan": In(1), "inf": In(1),
            "out_bf16": In(1), "exponent": In(signed(10)),
            "result": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        width = self.width
        max_shift = width + 1
        latch = []                             # every register, loaded on `advance`

        def passed(stage: int, **values):
            """Registers carrying `values` into the next stage."""
            regs = {name: Signal.like(value, name=f"{name}{stage}") for name, value in values.items()}
            latch.extend(regs[name].eq(value) for name, value in values.items())
            return regs

        # 3: t, the position of the product's leading one; with E (bias, m: the output
        #    format's exponent bias and mantissa bits): 1 - bias - m - E - 1 and E + bias - 1
        lead = Signal(range(width))
        for i in range(width):
            with m.If(self.product[i]):
                m.d.comb += lead.eq(i)
        trailing = Signal(range(width + 1))    # zeros below the lowest one (width if none)
        m.d.comb += trailing.eq(width)
        for i in reversed(range(width)):
            with m.If(self.product[i]):
                m.d.comb += trailing.eq(i)
        floor_less_one, exp_base = Signal(signed(12)), Signal(signed(12))
        m.d.comb += [floor_less_one.eq(Mux(self.out_bf16, 1 - 127 - 7, 1 - 15 - 10) - 1 - self.exponent),
                     exp_base.eq(self.exponent + Mux(self.out_bf16, 127, 15) - 1)]
        flags = dict(sign=self.sign, nan=self.nan, inf=self.inf, bf16=self.out_bf16)
        s3 = passed(3, lead=lead, trailing=trailing, product=self.product, zero=self.product == 0, floor_less_one=floor_less_one,
                    exp_base=exp_base, **flags)
        flags = {name: s3[name] for name in ("sign", "nan", "inf", "bf16", "zero")}

        # 4: floor_guard = (1 - bias - m - E) clamped to -11..width + 1, minus 1; t - m - 1;
        #    t + E + bias - 1
        floor_guard = Signal(signed(6))
        m.d.comb += floor_guard.eq(Mux(s3["floor_less_one"] < -12, -12,
                                       Mux(s3["floor_less_one"] > max_shift - 1, max_shift - 1,
                                           s3["floor_less_one"])))
        normal, biased_less_one = Signal(signed(6)), Signal(signed(12))
        m.d.comb += [normal.eq(s3["lead"] - Mux(s3["bf16"], 7 + 1, 10 + 1)),
                     biased_less_one.eq(s3["lead"] + s3["exp_base"])]
        s4 = passed(4, floor_guard=floor_guard, normal=normal, biased_less_one=biased_less_one,
                    product=s3["product"], trailing=s3["trailing"], **flags)
        flags = {name: s4[name] for name in flags}

        # 5: shift = lsb - E = max(t - m, 1 - bias - m - E) (at most width + 1) as shift - 1;
        #    exponent field max(t + E + bias - 1, 0) << m
        shift_less_one = Signal(signed(6))
        m.d.comb += shift_less_one.eq(Mux(s4["normal"] > s4["floor_guard"], s4["normal"], s4["floor_guard"]))
        below_guard = Signal(range(width + 1))  # dropped bits under the guard bit
        m.d.comb += below_guard.eq(shift_less_one)
        biased = s4["biased_less_one"]
        s5 = passed(5, right=shift_less_one >= 0,   # shift > 0: rounded; else exact, shifted left
                    left=(~shift_less_one)[:4], below_guard=below_guard,
                    exp_field=(Mux(biased < 0, 0, biased) << Mux(flags["bf16"], 7, 10))[:20],
                    product=s4["product"], trailing=s4["trailing"], **flags)
        flags = {name: s5[name] for name in flags}

        # 6: shift with guard and sticky bits (a one below the guard bit: fewer trailing zeros
        #    than bits dropped under it)
        product = s5["product"]
        with_guard = Signal(width)             # kept bits and the guard bit below them
        m.d.comb += with_guard.eq(product >> s5["below_guard"])
        sticky = s5["trailing"] < s5["below_guard"]
        shifted_left = Signal(width + 11)
        m.d.comb += shifted_left.eq(product << s5["left"])
        s6 = passed(6, with_guard=with_guard, sticky=sticky, shifted_left=shifted_left, right=s5["right"],
                    exp_field=s5["exp_field"], **flags)
        flags = {name: s6[name] for name in flags}

        # 7: round to nearest even; encoding (a rounding carry moves into the exponent by itself)
        kept = s6["with_guard"] >> 1
        significand = Mux(s6["right"], kept, s6["shifted_left"])
        round_up = s6["right"] & s6["with_guard"][0] & (s6["sticky"] | kept[0])
        encoding = Signal(range(1 << 20))
        m.d.comb += encoding.eq(significand + round_up + s6["exp_field"])
        s7 = passed(7, encoding=encoding, **flags)

        # 8: infinity and the special cases
        sign, bf16 = s7["sign"], s7["bf16"]
        inf_enc = Mux(bf16, 0x7F80, 0x7C00)
        nan_enc = Mux(bf16, 0x7FC0, 0x7E00)
        latch.append(self.result.eq(
            Mux(s7["nan"], nan_enc,
                Mux(s7["zero"], sign << 15,
                    Mux(s7["inf"] | (s7["encoding"] >= inf_enc), inf_enc, s7["encoding"][:15]) | (sign << 15)))))
        with m.If(self.advance):
            m.d.sync += latch
        return m


class DequantLane(wiring.Component):
    """One weight through stages 1-8 (module docstring); its registers move on `advance`.

    `r`, `zero`: stage 1's inputs; the decoded scale fields: stage 1's registers; `out_bf16`
    and the scale's `exponent`: stage 2's (all shared by the lanes).  `result` is stage 8's
    register."""

    def __init__(self):
        super().__init__({
            "advance": In(1), "r": In(CODE_BITS), "zero": In(CODE_BITS),
            "scale_sign": In(1), "significand": In(SIG_BITS), "scale_inf": In(1), "scale_nan": In(1),
            "out_bf16": In(1), "exponent": In(signed(10)),
            "result": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        latch = []                             # stages 1 and 2, loaded on `advance`

        # 1: |r - z| and its sign
        diff = Signal(signed(CODE_BITS + 1))
        m.d.comb += diff.eq(self.r - self.zero)
        magnitude, negative = Signal(CODE_BITS), Signal()
        latch += [magnitude.eq(Mux(diff < 0, -diff, diff)), negative.eq(diff < 0)]

        # 2: exact product; the sign and the NaN / infinity cases
        product = Signal(PRODUCT_BITS)
        sign2, nan2, inf2 = Signal(), Signal(), Signal()
        latch += [product.eq(magnitude * self.significand), sign2.eq(self.scale_sign ^ negative),
                  nan2.eq(self.scale_nan | (self.scale_inf & (magnitude == 0))), inf2.eq(self.scale_inf)]
        with m.If(self.advance):
            m.d.sync += latch

        # 3-8: round
        m.submodules.round = rnd = RoundPipeline(PRODUCT_BITS)
        m.d.comb += [rnd.advance.eq(self.advance), rnd.product.eq(product), rnd.sign.eq(sign2),
                     rnd.nan.eq(nan2), rnd.inf.eq(inf2), rnd.out_bf16.eq(self.out_bf16),
                     rnd.exponent.eq(self.exponent),
                     self.result.eq(rnd.result)]
        return m


def dequant_input(lanes: int) -> data.StructLayout:
    """Payload of `Dequantizer.input`: `lanes` codes r sharing one group (zero, scale bits)."""
    return data.StructLayout({
        "r": data.ArrayLayout(CODE_BITS, lanes), "zero": CODE_BITS, "scale": 16,
        "scale_bf16": 1, "scale_pow2": 1, "out_bf16": 1,
    })


class Dequantizer(wiring.Component):
    """Stream pipeline: `lanes` codes of one group -> `lanes` 16-bit results, `LATENCY`
    cycles later, one step per cycle; stalls as a whole while `output` is held."""

    LATENCY = 2 + RoundPipeline.STAGES

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({
            "input": In(stream.Signature(dequant_input(lanes))),
            "output": Out(stream.Signature(data.ArrayLayout(16, lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.input.payload
        advance = ~self.output.valid | self.output.ready
        m.d.comb += self.input.ready.eq(advance)
        valid = Signal(self.LATENCY)           # bit n: stage n + 1 holds a step
        with m.If(advance):
            m.d.sync += valid.eq(Cat(self.input.valid, valid[:-1]))
        m.d.comb += self.output.valid.eq(valid[-1])

        # shared by the lanes: the scale decoded in stage 1, its exponent and the output format
        # passed on in stage 2
        m.submodules.scale = scale = ScaleDecode()
        m.d.comb += [scale.bits.eq(p.scale), scale.bf16.eq(p.scale_bf16), scale.pow2.eq(p.scale_pow2)]
        decoded = Signal(data.StructLayout({"sign": 1, "significand": SIG_BITS, "exponent": signed(10),
                                            "inf": 1, "nan": 1, "out_bf16": 1}))
        terms = Signal(data.StructLayout({"out_bf16": 1, "exponent": signed(10)}))
        with m.If(advance):
            m.d.sync += [decoded.eq(Cat(scale.sign, scale.significand, scale.exponent, scale.inf, scale.nan,
                                        p.out_bf16)),
                         terms.out_bf16.eq(decoded.out_bf16), terms.exponent.eq(decoded.exponent)]
        for i in range(self.lanes):
            m.submodules[f"lane{i}"] = lane = DequantLane()
            m.d.comb += [
                lane.advance.eq(advance), lane.r.eq(p.r[i]), lane.zero.eq(p.zero),
                lane.scale_sign.eq(decoded.sign), lane.significand.eq(decoded.significand),
                lane.scale_inf.eq(decoded.inf), lane.scale_nan.eq(decoded.nan),
                lane.exponent.eq(terms.exponent),
                lane.out_bf16.eq(terms.out_bf16),
                self.output.payload[i].eq(lane.result),
            ]
        return m
