"""Formal harnesses around the address decoder (hw/decode.py `AddressDecoder`, the block
cache's lookup `BlockTags` inside it) at its real width: 40-bit host line addresses, the
16-entry region table.

Every request the decoder accepts is shadowed through its `decode.STAGES` registers and
compared with the command leaving the lookup (the command queue's input): its tag and
address, its error cause (the first of spec.ErrorCause's order that applies), and for an
unpoisoned quantized request the region it decoded to, the lowest-numbered valid region
holding its block, whose plane, metadata and codebook fields it must carry.  The request
bus is free every cycle (no stream rules needed: the decoder takes whatever it sees while
`valid & ready`), the command queue's consumer and the cache invalidation are free.

The region table and the DRAM size are free constants.  Three regions are programmed
(`USED_REGIONS`: two in the region select's first group, one in another), the rest are
invalid; each keeps the set-up rules that spec.region_csr_writes enforces: an 8-aligned
plane base, a group size of 2**5..2**15; and its plane base, metadata base and block
count are below 2**16 (`REGION_FIELD_BITS`), which keeps its lines inside the 32-bit
DRAM line space.  The request's address is unrestricted.
"""

from __future__ import annotations

import functools

from amaranth import Cat, Module, Mux, Signal
from amaranth.hdl import Assert, Assume, Cover

from ..hw import decode
from ..hw.csr import REGION
from ..hw.layouts import Kind
from ..spec import K_SHIFT, LINE_ADDR_BITS, MAX_REGIONS, OFFSET_BITS, PLANES, TAG_BITS, VIEW_SHIFT, ErrorCause, View
from .formal_bench import Harness, constant, delayed, elaborated

#: the programmed regions (the others invalid): 0 and 1 in the region select's first
#: group of `decode.SELECT_GROUP`, 5 in the second
USED_REGIONS = (0, 1, 5)
DECODE_SLOTS = 2                    #: the lookup's plane and metadata slots
#: the region table's plane base, metadata base and block count are below 2**16 (the
#: solver does not settle the compares over full 32-bit region fields within minutes)
REGION_FIELD_BITS = 16
_KIND_OF_VIEW = {View.PACKED: Kind.PACKED, View.INT8: Kind.INT8, View.FP16: Kind.FP16, View.BF16: Kind.BF16}
#: log2(lines per block) of the views that split the offset by a shift
_LOG2_LINES = {View.INT8: 3, View.FP16: 4, View.BF16: 4}


def _meta_lines(region):
    """The metadata lines of a region: one per 16 groups of 2**log2_group weights, 512 a block."""
    return ((region.blocks << 5) + (1 << region.log2_group) - 1) >> region.log2_group


class _Region:
    """One programmed region-table entry: its fields, its blocks [first, end) and the end of
    its metadata lines."""

    def __init__(self, h: Harness, m: Module, index: int):
        self.fields = REGION(constant(h, m, REGION.size, f"region{index}"))
        f = self.fields
        self.first, self.end = f.plane_base >> 3, (f.plane_base >> 3) + f.blocks
        self.meta_end = f.meta_base + _meta_lines(f)
        m.d.comb += [Assume(f.plane_base[:3] == 0), Assume((f.log2_group >= 5) & (f.log2_group <= 15))]
        m.d.comb += [Assume(value[REGION_FIELD_BITS:] == 0) for value in (f.plane_base, f.meta_base, f.blocks)]

    def holds(self, block):
        return self.fields.valid & (block >= self.first) & (block < self.end)


class _DecodeBench:
    """The decoder with a free request bus; `out`: the command leaving the lookup, `sent`:
    the request that entered `decode.STAGES` cycles before (valid, write, tag, address)."""

    def __init__(self, h: Harness, m: Module):
        dut = decode.AddressDecoder(plane_slots=DECODE_SLOTS, meta_slots=DECODE_SLOTS)
        inner = elaborated(m, dut, "dut")
        req = dut.req
        valid, write, tag, addr = (h.free(1, "req_valid"), h.free(1, "req_write"), h.free(TAG_BITS, "req_tag"),
                                   h.free(LINE_ADDR_BITS, "req_addr"))
        m.d.comb += [req.valid.eq(valid), req.payload.opcode.eq(write), req.payload.tag.eq(tag),
                     req.payload.addr.eq(addr), req.payload.data.eq(0),
                     dut.cmd.ready.eq(h.free(1, "cmd_ready")), dut.write_data.ready.eq(h.free(1, "data_ready")),
                     dut.cache_invalidate.eq(h.free(1, "cache_invalidate"))]
        self.dram_lines = constant(h, m, 32, "dram_lines")
        m.d.comb += dut.dram_lines.eq(self.dram_lines)
        self.regions = []
        for i in range(MAX_REGIONS):
            if i in USED_REGIONS:
                region = _Region(h, m, i)
                self.regions.append(region)
                m.d.comb += dut.regions[i].eq(region.fields)
            else:
                m.d.comb += dut.regions[i].eq(0)

        shadow = delayed(m, Cat(valid & req.ready, write, tag, addr), decode.STAGES, "sent")
        self.sent_valid, self.sent_write = shadow[0], shadow[1]
        self.sent_tag, self.sent_addr = shadow[2:2 + TAG_BITS], shadow[2 + TAG_BITS:]
        self.out = inner.submodules["tags"].output

        a = self.sent_addr
        self.view, self.k, self.offset = a[VIEW_SHIFT:LINE_ADDR_BITS], a[K_SHIFT:K_SHIFT + 4], a[:OFFSET_BITS]
        self.quantized = (self.view != View.RAW) & (self.view <= max(View))
        # the causes the address alone decides, first in ErrorCause's order
        self.early_cause = Signal(3)
        with m.If(self.view > max(View)):
            m.d.comb += self.early_cause.eq(ErrorCause.BAD_VIEW)
        with m.Elif(self.sent_write & (self.view != View.RAW)):
            m.d.comb += self.early_cause.eq(ErrorCause.WRITE_TO_VIEW)
        with m.Elif((self.view != View.RAW) & ((self.k == 0) | (self.k > PLANES))):
            m.d.comb += self.early_cause.eq(ErrorCause.BAD_K)
        with m.Elif((self.view == View.RAW) & (self.offset >= self.dram_lines)):
            m.d.comb += self.early_cause.eq(ErrorCause.RAW_RANGE)

        # the command's block and whether a region holds it
        self.block = self.out.cmd.plane_line[3:]
        self.hit = Cat(r.holds(self.block) for r in self.regions).any()

        # the block of a view whose lines per block are a power of two, from the offset alone
        # and its line within the block; the kind of an unpoisoned quantized request
        self.shifted, self.exact_block, self.exact_line = Signal(), Signal(OFFSET_BITS), Signal(4)
        self.view_kind = Signal(Kind)

        def split(log2):
            m.d.comb += [self.shifted.eq(1), self.exact_block.eq(self.offset >> log2),
                         self.exact_line.eq(self.offset[:log2])]
        with m.Switch(self.view):
            with m.Case(View.PACKED):
                with m.Switch(self.k):
                    for k in (1, 2, 4, 8):
                        with m.Case(k):
                            split(k.bit_length() - 1)
            for view, log2 in _LOG2_LINES.items():
                with m.Case(view):
                    split(log2)
        with m.Switch(self.view):
            for view, kind in _KIND_OF_VIEW.items():
                with m.Case(view):
                    m.d.comb += self.view_kind.eq(kind)
        self.exact_hit = Cat(r.holds(self.exact_block) for r in self.regions).any()


def _lowest_holding(regions, block, value):
    """`value(region)` of the lowest-numbered region holding `block` (the last region's
    when none does)."""
    return functools.reduce(lambda later, r: Mux(r.holds(block), value(r), later), reversed(regions[:-1]),
                            value(regions[-1]))


def decode_causes(h, m):
    """Every accepted request leaves the lookup `decode.STAGES` cycles later, once, with
    its tag, address and opcode, poisoned exactly when a cause applies, with the first
    cause in spec.ErrorCause's order; a raw request reads or writes its own line, below the
    DRAM size; a view whose lines per block are a power of two (packed k = 1, 2, 4, 8,
    int8, fp16, bf16) names the block and line of its offset, and NO_REGION exactly when
    no valid region holds that block."""
    b = _DecodeBench(h, m)
    c = b.out.cmd
    poisoned = c.cause != ErrorCause.NONE
    m.d.comb += Assert(b.out.valid == b.sent_valid)
    with m.If(b.out.valid):
        m.d.comb += [Assert(c.tag == b.sent_tag), Assert(c.addr == b.sent_addr), Assert(c.write == b.sent_write),
                     Assert((c.kind == Kind.ERROR) == poisoned)]
        with m.If(b.early_cause != ErrorCause.NONE):
            m.d.comb += Assert(c.cause == b.early_cause)
        with m.Elif(~b.quantized):
            m.d.comb += [Assert(~poisoned), Assert(c.plane_line == b.offset), Assert(b.offset < b.dram_lines),
                         Assert(c.kind.as_value() == Mux(b.sent_write, Kind.RAW_WR, Kind.RAW_RD))]
        with m.Else():
            m.d.comb += [Assert(c.cause.matches(ErrorCause.NONE, ErrorCause.NO_REGION, ErrorCause.INT8_ASYMMETRIC)),
                         Assert(c.plane_line[:3] == 0), Assert(c.k == b.k)]
            with m.If(b.shifted):
                m.d.comb += [Assert(c.plane_line == (b.exact_block << 3)[:32]), Assert(c.line == b.exact_line),
                             Assert((c.cause == ErrorCause.NO_REGION) == ~b.exact_hit)]
            with m.If(~poisoned):
                m.d.comb += Assert(c.kind == b.view_kind)


def decode_isolation(h, m):
    """A quantized command not refused for want of a region lies inside the region it
    decoded to, the lowest-numbered valid region holding its block: its 8 plane lines
    within the region's plane lines, its metadata line within the region's metadata lines,
    its codebook, group size and table-lookup flag the region's; int8 refused (poisoned)
    exactly on an asymmetric or table-lookup region."""
    b = _DecodeBench(h, m)
    c = b.out.cmd
    region = REGION(_lowest_holding(b.regions, b.block, lambda r: r.fields.as_value()))
    meta_end = _lowest_holding(b.regions, b.block, lambda r: r.meta_end)
    fp = (b.view == View.FP16) | (b.view == View.BF16)
    with m.If(b.out.valid & (b.early_cause == ErrorCause.NONE) & b.quantized & (c.cause != ErrorCause.NO_REGION)):
        m.d.comb += [
            Assert(b.hit),
            Assert((c.plane_line >= region.plane_base)
                   & (c.plane_line + PLANES <= region.plane_base + (region.blocks << 3))),
            Assert((c.meta_line >= region.meta_base) & (c.meta_line < meta_end)),
            Assert(c.codebook == region.codebook), Assert(c.log2_group == region.log2_group),
            Assert(c.lut == (region.lut & fp & (c.cause == ErrorCause.NONE))),
            Assert((c.cause == ErrorCause.INT8_ASYMMETRIC)
                   == ((b.view == View.INT8) & (~region.symmetric | region.lut))),
        ]


def decode_cover(h, m):
    """An unpoisoned quantized command in a region of the select's first group and one in
    its second group; a block in no region; a bad k; a packed k = 3 read (the divided block)
    inside a region; an int8 read refused on an asymmetric region."""
    b = _DecodeBench(h, m)
    c, done = b.out.cmd, b.out.valid
    served = done & b.quantized & (c.cause == ErrorCause.NONE)
    m.d.comb += [Cover(served & b.regions[0].holds(b.block)),
                 Cover(served & b.regions[-1].holds(b.block) & ~Cat(r.holds(b.block) for r in b.regions[:-1]).any()),
                 Cover(done & (c.cause == ErrorCause.NO_REGION)), Cover(done & (c.cause == ErrorCause.BAD_K)),
                 Cover(served & (b.view == View.PACKED) & (b.k == 3) & (b.block != 0)),
                 Cover(done & (c.cause == ErrorCause.INT8_ASYMMETRIC))]
