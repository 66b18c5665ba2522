"""Integer dot-product unit with a P-bit inner accumulator and an outer accumulator,
flagging every overflow (the hardware side of the AXE guarantee, docs/PTQ.md).

Each accepted input beat carries one integer weight v (`weight_bits`, signed; for
the store's symmetric formats v = r - 128) and one input x (`input_bits`, signed
or unsigned).  Products of `tile` consecutive beats are summed in a P-bit two's-
complement accumulator that wraps like real hardware; `tiles_per_group` tile
results are summed in the outer accumulator (`outer_bits`, wrapping too).  After
the last beat of a group the output stream carries the outer sum and two sticky
flags: `inner_overflow` (some partial sum of some tile of the group left the
P-bit range) and `outer_overflow` (some partial outer sum left its range).

Throughput: one beat per cycle; the input stalls only while a result waits.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def in_range(value, bits: int):
    """`value` fits a `bits`-bit two's-complement register."""
    return (value >= -(1 << (bits - 1))) & (value <= (1 << (bits - 1)) - 1)


class DotProductUnit(wiring.Component):
    """sum over a group of `tile * tiles_per_group` beats of weight * act, two-stage."""

    def __init__(self, accumulator_bits: int, input_bits: int, signed_inputs: bool = False,
                 tile: int = 128, tiles_per_group: int = 1, weight_bits: int = 9,
                 outer_bits: int | None = None):
        if accumulator_bits < 2 or input_bits < 1 or weight_bits < 2 or tile < 1 or tiles_per_group < 1:
            raise ValueError("accumulator_bits >= 2, input_bits >= 1, weight_bits >= 2, "
                             "tile >= 1 and tiles_per_group >= 1 are required")
        self.accumulator_bits = accumulator_bits
        self.input_bits = input_bits
        self.signed_inputs = signed_inputs
        self.tile = tile
        self.tiles_per_group = tiles_per_group
        self.weight_bits = weight_bits
        self.outer_bits = outer_bits or accumulator_bits + (tiles_per_group - 1).bit_length()
        beat = data.StructLayout({
            "weight": signed(weight_bits),
            "act": signed(input_bits) if signed_inputs else unsigned(input_bits)})
        result = data.StructLayout({
            "sum": signed(self.outer_bits), "inner_overflow": 1, "outer_overflow": 1})
        super().__init__({
            "beats": In(stream.Signature(beat)),
            "result": Out(stream.Signature(result)),
        })

    def elaborate(self, platform):
        m = Module()
        p, po = self.accumulator_bits, self.outer_bits
        product_bits = self.weight_bits + self.input_bits + (0 if self.signed_inputs else 1)
        inner = Signal(signed(p))
        outer = Signal(signed(po))
        beat_index = Signal(range(self.tile))
        tile_index = Signal(range(self.tiles_per_group))
        inner_flag = Signal()        # an inner overflow earlier in this group
        outer_flag = Signal()

        first_beat = beat_index == 0
        last_beat = beat_index == self.tile - 1
        first_tile = tile_index == 0
        last_tile = tile_index == self.tiles_per_group - 1

        product = Signal(signed(product_bits))
        inner_wide = Signal(signed(max(p, product_bits) + 1))
        tile_sum = Signal(signed(p))
        outer_wide = Signal(signed(max(po, p) + 1))
        m.d.comb += [
            product.eq(self.beats.payload.weight * self.beats.payload.act),
            inner_wide.eq(Mux(first_beat, 0, inner) + product),
            tile_sum.eq(inner_wide[:p].as_signed()),
            outer_wide.eq(Mux(first_tile, 0, outer) + tile_sum),
        ]
        inner_over = ~in_range(inner_wide, p)
        outer_over = ~in_range(outer_wide, po)
        group_inner = Mux(first_tile & first_beat, 0, inner_flag) | inner_over
        group_outer = Mux(first_tile, 0, outer_flag) | (last_beat & outer_over)

        with m.If(self.result.ready):
            m.d.sync += self.result.valid.eq(0)
        m.d.comb += self.beats.ready.eq(~self.result.valid | self.result.ready)
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += [inner.eq(tile_sum), inner_flag.eq(group_inner),
                         beat_index.eq(Mux(last_beat, 0, beat_index + 1))]
            with m.If(last_beat):
                m.d.sync += [outer.eq(outer_wide[:po].as_signed()), outer_flag.eq(group_outer),
                             tile_index.eq(Mux(last_tile, 0, tile_index + 1))]
                with m.If(last_tile):
                    m.d.sync += [self.result.valid.eq(1),
                                 self.result.payload.sum.eq(outer_wide[:po].as_signed()),
                                 self.result.payload.inner_overflow.eq(group_inner),
                                 self.result.payload.outer_overflow.eq(group_outer)]
        return m


def generate_verilog(unit: DotProductUnit, name: str = "dotproduct") -> str:
    """Verilog of a DotProductUnit (ports: beats__*, result__*, clk, rst)."""
    from amaranth.back import verilog
    return verilog.convert(unit, name=name)
