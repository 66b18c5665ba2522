"""Address decode: host request -> view, block, region and DRAM line addresses.

Three registered stages (each advances when the next one has room):
  A  captures the request;
  B  splits the view offset into block and line: offset // lines_per_block, where
     lines_per_block is 16 (fp16/bf16), 8 (int8) or k (packed).  Powers of two are
     shifts; k = 3, 5, 7 multiply by a 33-bit reciprocal, floor(x * ceil(2**s / d) / 2**s)
     with s = 32 + ceil(log2 d), exact for every 32-bit x (Granlund & Montgomery 1994,
     "Division by invariant integers using multiplication", Thm 4.2); k = 6 is (x >> 1) / 3.
     Checks view, opcode, k and the raw bound;
  C  finds the lowest-numbered valid region holding the block and forms the block's
     plane and metadata line addresses (never outside the region); an fp16 / bf16 request
     on a table-lookup region carries `lut` and the region's codebook (int8 there: poison).
"""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import (K_SHIFT, MAX_REGIONS, OFFSET_BITS, PLANES, REQ_FIELDS, VIEW_SHIFT, ErrorCause,
                    Opcode, ScaleFormat, View)
from .csr import ERROR_REPORT, REGION
from .layouts import COMMAND, Kind

REQUEST = data.StructLayout(dict(REQ_FIELDS))
_KIND_OF_VIEW = {View.RAW: Kind.RAW_RD, View.PACKED: Kind.PACKED, View.INT8: Kind.INT8,
                 View.FP16: Kind.FP16, View.BF16: Kind.BF16}
_LOG2_LINES_PER_BLOCK = {View.INT8: 3, View.FP16: 4, View.BF16: 4}


def reciprocal(divisor: int, bits: int = OFFSET_BITS) -> tuple[int, int]:
    """(multiplier, shift) with floor(x * multiplier >> shift) == x // divisor for x < 2**bits."""
    shift = bits + (divisor - 1).bit_length()
    return -(-(1 << shift) // divisor), shift


class AddressDecoder(wiring.Component):
    def __init__(self):
        super().__init__({
            "req": In(stream.Signature(REQUEST)),
            "cmd": Out(stream.Signature(COMMAND)),
            "regions": In(data.ArrayLayout(REGION, MAX_REGIONS)),
            "dram_lines": In(32),
            "error": Out(ERROR_REPORT),
        })

    def elaborate(self, platform):
        m = Module()
        a_valid, b_valid = Signal(), Signal()
        a = Signal(REQUEST)
        b = Signal(COMMAND)                 # block index in plane_line until stage C
        b_error = Signal(3)
        b_view = Signal(3)
        c = self.cmd

        # ready chain: a stage takes new data when empty or when it hands its own on
        c_take = ~c.valid | c.ready
        b_take = ~b_valid | c_take
        a_take = ~a_valid | b_take
        m.d.comb += self.req.ready.eq(a_take)

        # --- A: capture ---
        with m.If(a_take):
            m.d.sync += [a_valid.eq(self.req.valid), a.eq(self.req.payload)]

        # --- B: view, k, divide ---
        view = a.addr[VIEW_SHIFT:VIEW_SHIFT + 3]
        view_high = a.addr[VIEW_SHIFT + 3]
        k = a.addr[K_SHIFT:K_SHIFT + 4]
        offset = a.addr[:OFFSET_BITS]
        block = Signal(OFFSET_BITS)
        line = Signal(4)
        with m.Switch(view):
            with m.Case(View.PACKED):
                with m.Switch(k):
                    for d in range(1, PLANES + 1):
                        with m.Case(d):
                            if d & (d - 1) == 0:
                                quotient = offset >> (d.bit_length() - 1)
                            else:
                                pre = 1 if d == 6 else 0
                                mult, shift = reciprocal(d >> pre, OFFSET_BITS - pre)
                                quotient = ((offset >> pre) * mult) >> shift
                            m.d.comb += [block.eq(quotient), line.eq(offset - quotient * d)]
            for v, log2 in _LOG2_LINES_PER_BLOCK.items():
                with m.Case(v):
                    m.d.comb += [block.eq(offset >> log2), line.eq(offset[:log2])]
            with m.Case(View.RAW):
                m.d.comb += block.eq(offset)
        error = Signal(3)
        quantized = view != View.RAW
        with m.If(view_high | (view > max(View))):
            m.d.comb += error.eq(ErrorCause.BAD_VIEW)
        with m.Elif((a.opcode == Opcode.MEM_WR) & quantized):
            m.d.comb += error.eq(ErrorCause.WRITE_TO_VIEW)
        with m.Elif(quantized & ((k == 0) | (k > PLANES))):
            m.d.comb += error.eq(ErrorCause.BAD_K)
        with m.Elif(~quantized & (offset >= self.dram_lines)):
            m.d.comb += error.eq(ErrorCause.RAW_RANGE)
        with m.If(b_take):
            m.d.sync += [
                b_valid.eq(a_valid), b_error.eq(error), b_view.eq(view),
                b.write.eq(a.opcode == Opcode.MEM_WR), b.tag.eq(a.tag), b.addr.eq(a.addr),
                b.k.eq(k), b.line.eq(line), b.plane_line.eq(block), b.data.eq(a.data),
            ]

        # --- C: region lookup ---
        global_block = b.plane_line
        hit = Signal()
        region = Signal(REGION)
        in_region = Signal(32)              # block index within the region
        for i in reversed(range(MAX_REGIONS)):       # the lowest index wins
            r = self.regions[i]
            rel = Signal(33, name=f"rel{i}")
            m.d.comb += rel.eq(global_block - (r.plane_base >> 3))
            with m.If(r.valid & (global_block >= (r.plane_base >> 3)) & (rel < r.blocks)):
                m.d.comb += [hit.eq(1), region.eq(r), in_region.eq(rel)]
        cause = Signal(3)
        with m.If(b_error != ErrorCause.NONE):
            m.d.comb += cause.eq(b_error)
        with m.Elif((b_view != View.RAW) & ~hit):
            m.d.comb += cause.eq(ErrorCause.NO_REGION)
        with m.Elif((b_view == View.INT8) & (~region.symmetric | region.lut)):
            m.d.comb += cause.eq(ErrorCause.INT8_ASYMMETRIC)
        kind = Signal(Kind)
        with m.If(cause != ErrorCause.NONE):
            m.d.comb += kind.eq(Kind.ERROR)
        with m.Elif(b.write):
            m.d.comb += kind.eq(Kind.RAW_WR)
        with m.Else():
            with m.Switch(b_view):
                for v, kd in _KIND_OF_VIEW.items():
                    with m.Case(v):
                        m.d.comb += kind.eq(kd)
        with m.If(c_take):
            m.d.sync += [c.valid.eq(b_valid), c.payload.eq(b), c.payload.kind.eq(kind),
                         c.payload.cause.eq(cause),
                         c.payload.scale_bf16.eq(region.scale_format == ScaleFormat.BF16),
                         c.payload.scale_pow2.eq(region.scale_format == ScaleFormat.POW2),
                         c.payload.log2_group.eq(region.log2_group),
                         c.payload.lut.eq(region.lut & (cause == ErrorCause.NONE) & ~b.write
                                          & ((b_view == View.FP16) | (b_view == View.BF16))),
                         c.payload.codebook.eq(region.codebook),
                         c.payload.first_group.eq(((in_region << 9) >> region.log2_group)[:4]),
                         c.payload.meta_line.eq(region.meta_base + ((in_region << 5) >> region.log2_group))]
            with m.If(b_view != View.RAW):
                m.d.sync += c.payload.plane_line.eq(global_block << 3)

        m.d.comb += [self.error.valid.eq(c.valid & c.ready & (c.payload.kind == Kind.ERROR)),
                     self.error.cause.eq(c.payload.cause), self.error.addr.eq(c.payload.addr)]
        return m
