"""Address decode: host request -> view, block, region and DRAM line addresses.

A pipeline of `STAGES` registers that never stalls; a request enters only while the
command queue at its end has room for it and every request in flight (credit flow), so
`req.ready` never waits on the issue stage.  A MemWr's payload leaves through a queue
of its own (`write_data`, to the DRAM port), so the commands stay narrow.  Stages (register after each):
  A  captures the request, and the reciprocal `RECIPROCALS[k]` of a packed k = 3, 5, 6, 7
     (picked from the address's k bits);
  B  checks view, opcode, k and the raw bound; a power-of-two lines_per_block (16 for
     fp16/bf16, 8 for int8, k = 1, 2, 4, 8 packed, 1 raw) splits the offset into block and
     line by a shift; the four 16 x 17-bit partial products of offset * reciprocal (one
     MULT18X18D each);
  Q  two partial sums;
  R  block = (sum >> DIVIDE_SHIFT) for the divided views, floor(offset / k) exactly;
  C1 the line within the block, offset - block * k (4 bits); for every region, whether it
     holds the block (two compares against its first block and its end, registered one
     cycle after the CSRs) and the block within it (block - first block);
  C2 within each group of `SELECT_GROUP` regions, the lowest-numbered one holding the
     block: its fields (copies of the region fields registered in the decoder: the CSRs
     sit far away) and the block within it (a priority select, 2 x `SELECT_GROUP` inputs a bit);
  C3 the same among the groups;
  C4 kind, cause, plane and metadata line addresses, first group; an fp16 / bf16 request on
     a table-lookup region carries `lut` and the region's codebook (int8 there: poison);
  L1, L2 the block cache's lookup (blocktags.py): which resident plane slot, metadata
     slot and table (decided by the commands before this one, in order) already hold what
     it needs; the command carries the misses (`fetch_plane`, `fetch_meta`, `fetch_table`)
     and the slots, so the issue stage compares no addresses.
The command queue at the end (`BypassQueue`) hands a command to the issue stage from a
register pair, which a command reaches one cycle after L2 while the queue is empty.
(Past 250 lines: one pipeline whose stages each use the fields the stage before
registered; split into files, every part would import the others' layouts.)
"""

import functools

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..spec import (K_SHIFT, LINE_BITS, MAX_REGIONS, OFFSET_BITS, PLANES, REQ_FIELDS, VIEW_SHIFT, ErrorCause,
                    Opcode, ScaleFormat, View)
from .blocktags import LOOKUP_STAGES, BlockTags
from .csr import ERROR_REPORT, LOOKUP_EVENTS, REGION
from .layouts import COMMAND, Kind
from .pipeline import DelayLine
from .queue import BypassQueue

REQUEST = data.StructLayout(dict(REQ_FIELDS))
_KIND_OF_VIEW = {View.RAW: Kind.RAW_RD, View.PACKED: Kind.PACKED, View.INT8: Kind.INT8,
                 View.FP16: Kind.FP16, View.BF16: Kind.BF16}
_LOG2_LINES_PER_BLOCK = {View.INT8: 3, View.FP16: 4, View.BF16: 4}

#: x // d == (x * ceil(2**35 / d)) >> 35 for every 32-bit x and d in 3..7: the product
#: overshoots x / d by less than 2**32 / 2**35 = 1/8 <= 1/d (Granlund & Montgomery 1994,
#: "Division by invariant integers using multiplication", Thm 4.2).
DIVIDE_SHIFT = OFFSET_BITS + 3
#: packed k that is not a power of two -> its 34-bit reciprocal
RECIPROCALS = {d: -(-(1 << DIVIDE_SHIFT) // d) for d in (3, 5, 6, 7)}
_LOW_BITS = 16                      #: offset split for the partial products (bits)
_RECIPROCAL_LOW_BITS = 17           #: reciprocal split (both halves 17 bits)
#: register stages from the request to the command queue's input
STAGES = 10
#: command queue entries (>= STAGES + 3 keeps one request per cycle)
QUEUE_DEPTH = 16

#: regions per group in the first step of the region select
SELECT_GROUP = 4
#: the region fields a command needs, as the decoder keeps them: `first` is the region's first block
_SELECTED = data.StructLayout({"first": 29, "meta_base": 32, "symmetric": 1, "scale_format": 2,
                               "log2_group": 4, "lut": 1, "codebook": REGION.members["codebook"]})

#: a region's fields and the block's place within it (blocks from its first)
_FOUND = data.StructLayout({"fields": _SELECTED, "in_region": 32})

#: what every stage carries: the command being built and its checks
_CARRIED = data.StructLayout({"valid": 1, "cmd": COMMAND, "view": 3, "error": 3, "divide": 1,
                              "offset": OFFSET_BITS})


def _first_hit(hits, values):
    """`values[i]` of the lowest i with `hits[i]` set (the last value when none): a priority
    select, each bit a function of len(hits) x 2 inputs."""
    return functools.reduce(lambda later, i: Mux(hits[i], values[i], later),
                            reversed(range(len(values) - 1)), values[-1])


class AddressDecoder(wiring.Component):
    """`plane_slots`, `meta_slots`: the block cache's slots, which its lookup (the last
    stages) decides among; `decision_fields`: the command fields the consumer's decision
    reads, which the command queue's head holds in registers of their own (`HeadPair`)."""

    def __init__(self, *, plane_slots: int, meta_slots: int, decision_fields=()):
        self.plane_slots, self.meta_slots, self.decision_fields = plane_slots, meta_slots, tuple(decision_fields)
        super().__init__({
            "req": In(stream.Signature(REQUEST)),
            "cmd": Out(stream.Signature(COMMAND)),
            "write_data": Out(stream.Signature(LINE_BITS)),     # the payloads of RAW_WR commands, in order
            "regions": In(data.ArrayLayout(REGION, MAX_REGIONS)),
            "dram_lines": In(32),
            "error": Out(ERROR_REPORT),
            "lookup": Out(LOOKUP_EVENTS),
            "cache_invalidate": In(1),          # to the block cache's lookup (CSR_CACHE_INVALIDATE)
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = BypassQueue(COMMAND, depth=QUEUE_DEPTH, early=self.decision_fields)
        m.submodules.data_queue = data_queue = SyncFIFOBuffered(width=LINE_BITS, depth=QUEUE_DEPTH)
        in_flight = Signal(range(STAGES + 1))
        m.d.comb += self.req.ready.eq((queue.level + in_flight < QUEUE_DEPTH)
                                      & (data_queue.level + in_flight < QUEUE_DEPTH))
        enter = self.req.valid & self.req.ready

        stage = {name: Signal(_CARRIED, name=f"stage_{name}")
                 for name in ("a", "b", "q", "r", "c1", "c2", "c3", "c4")}
        names = list(stage)
        assert len(names) + LOOKUP_STAGES == STAGES
        for earlier, later in zip(names, names[1:]):        # by default a stage passes on
            m.d.sync += stage[later].eq(stage[earlier])
        m.submodules.tags = tags = BlockTags(plane_slots=self.plane_slots, meta_slots=self.meta_slots)
        done = tags.output                                  # the last stage
        m.d.sync += in_flight.eq(in_flight + enter - done.valid)

        # --- A: capture ---
        a = stage["a"]
        req = self.req.payload
        m.d.sync += [a.valid.eq(enter), a.cmd.write.eq(req.opcode == Opcode.MEM_WR), a.cmd.tag.eq(req.tag),
                     a.cmd.addr.eq(req.addr), a.offset.eq(req.addr[:OFFSET_BITS])]
        # (the reciprocal of a packed k that is not a power of two, from the address's k bits: one LUT deep)
        reciprocal = Signal(DIVIDE_SHIFT - 1)
        with m.Switch(req.addr[K_SHIFT:K_SHIFT + 4]):
            for d, value in RECIPROCALS.items():
                with m.Case(d):
                    m.d.sync += reciprocal.eq(value)
        # a MemWr's payload keeps pace with its command in a LUT-RAM delay line
        m.submodules.data_delay = data_delay = DelayLine(LINE_BITS, STAGES)
        m.d.comb += data_delay.input.eq(req.data)

        # --- B: checks; block and line by shifting, or the reciprocal ---
        view = a.cmd.addr[VIEW_SHIFT:VIEW_SHIFT + 3]
        view_high = a.cmd.addr[VIEW_SHIFT + 3]
        k = a.cmd.addr[K_SHIFT:K_SHIFT + 4]
        offset = a.offset
        b = stage["b"]
        m.d.sync += [b.view.eq(view), b.cmd.k.eq(k), b.divide.eq(0)]
        with m.Switch(view):
            with m.Case(View.PACKED):
                with m.Switch(k):
                    for d in range(1, PLANES + 1):
                        with m.Case(d):
                            if d in RECIPROCALS:
                                m.d.sync += b.divide.eq(1)
                            else:
                                log2 = d.bit_length() - 1
                                m.d.sync += [b.cmd.plane_line.eq(offset >> log2), b.cmd.line.eq(offset[:log2])]
            for v, log2 in _LOG2_LINES_PER_BLOCK.items():
                with m.Case(v):
                    m.d.sync += [b.cmd.plane_line.eq(offset >> log2), b.cmd.line.eq(offset[:log2])]
            with m.Default():
                m.d.sync += [b.cmd.plane_line.eq(offset), b.cmd.line.eq(0)]
        quantized = view != View.RAW
        with m.If(view_high | (view > max(View))):
            m.d.sync += b.error.eq(ErrorCause.BAD_VIEW)
        with m.Elif(a.cmd.write & quantized):
            m.d.sync += b.error.eq(ErrorCause.WRITE_TO_VIEW)
        with m.Elif(quantized & ((k == 0) | (k > PLANES))):
            m.d.sync += b.error.eq(ErrorCause.BAD_K)
        with m.Elif(~quantized & (offset >= self.dram_lines)):
            m.d.sync += b.error.eq(ErrorCause.RAW_RANGE)
        with m.Else():
            m.d.sync += b.error.eq(ErrorCause.NONE)

        # --- B, Q, R: block = (offset * reciprocal) >> DIVIDE_SHIFT ---
        x_low, x_high = a.offset[:_LOW_BITS], a.offset[_LOW_BITS:]
        m_low, m_high = reciprocal[:_RECIPROCAL_LOW_BITS], reciprocal[_RECIPROCAL_LOW_BITS:]
        partial = [Signal(2 * _RECIPROCAL_LOW_BITS, name=f"partial{n}") for n in range(4)]
        m.d.sync += [partial[0].eq(x_low * m_low), partial[1].eq(x_high * m_low),
                     partial[2].eq(x_low * m_high), partial[3].eq(x_high * m_high)]
        low_sum, high_sum = Signal(OFFSET_BITS + DIVIDE_SHIFT), Signal(OFFSET_BITS + DIVIDE_SHIFT)
        m.d.sync += [low_sum.eq(partial[0] + (partial[1] << _LOW_BITS)),
                     high_sum.eq((partial[2] << _RECIPROCAL_LOW_BITS)
                                 + (partial[3] << (_LOW_BITS + _RECIPROCAL_LOW_BITS)))]
        q = stage["q"]
        with m.If(q.divide):
            m.d.sync += stage["r"].cmd.plane_line.eq((low_sum + high_sum) >> DIVIDE_SHIFT)

        # --- C1: line; which regions hold the block ---
        r = stage["r"]
        block = r.cmd.plane_line
        with m.If(r.divide):
            m.d.sync += stage["c1"].cmd.line.eq(r.offset[:4] - (block[:4] * r.cmd.k)[:4])
        hits = Signal(MAX_REGIONS)
        near = [Signal(_SELECTED, name=f"near{i}") for i in range(MAX_REGIONS)]
        found = []                          # per region: its fields and the block within it
        for i in range(MAX_REGIONS):
            region = self.regions[i]
            end, in_region = Signal(33, name=f"end{i}"), Signal(32, name=f"in_region{i}")
            m.d.sync += [near[i].first.eq(region.plane_base >> 3), end.eq((region.plane_base >> 3) + region.blocks),
                         hits[i].eq(region.valid & (block >= near[i].first) & (block < end)),
                         in_region.eq(block - near[i].first)]
            found.append(Cat(near[i].as_value(), in_region))
            m.d.sync += [getattr(near[i], name).eq(getattr(region, name)) for name in _SELECTED.members
                         if name != "first"]

        # --- C2: within each group of `SELECT_GROUP` regions, the lowest-numbered one holding the block ---
        group_hits = Signal(MAX_REGIONS // SELECT_GROUP)
        groups = [Signal(_FOUND, name=f"group{g}") for g in range(MAX_REGIONS // SELECT_GROUP)]
        for g, group in enumerate(groups):
            members = slice(g * SELECT_GROUP, (g + 1) * SELECT_GROUP)
            m.d.sync += [group_hits[g].eq(hits[members] != 0), group.eq(_first_hit(hits[members], found[members]))]

        # --- C3: the lowest-numbered group holding it: the region's fields and the block within it ---
        c3_hit, c3_found = Signal(), Signal(_FOUND)
        m.d.sync += [c3_hit.eq(group_hits != 0), c3_found.eq(_first_hit(group_hits, groups))]

        # --- C4: kind, cause and DRAM line addresses -> the block cache's lookup ---
        c3 = stage["c3"]
        c4 = stage["c4"]
        c3_region, in_region = c3_found.fields, c3_found.in_region
        cause = Signal(3)
        with m.If(c3.error != ErrorCause.NONE):
            m.d.comb += cause.eq(c3.error)
        with m.Elif((c3.view != View.RAW) & ~c3_hit):
            m.d.comb += cause.eq(ErrorCause.NO_REGION)
        with m.Elif((c3.view == View.INT8) & (~c3_region.symmetric | c3_region.lut)):
            m.d.comb += cause.eq(ErrorCause.INT8_ASYMMETRIC)
        kind = Signal(Kind)
        with m.If(cause != ErrorCause.NONE):
            m.d.comb += kind.eq(Kind.ERROR)
        with m.Elif(c3.cmd.write):
            m.d.comb += kind.eq(Kind.RAW_WR)
        with m.Else():
            with m.Switch(c3.view):
                for v, kd in _KIND_OF_VIEW.items():
                    with m.Case(v):
                        m.d.comb += kind.eq(kd)
        m.d.sync += [
            c4.cmd.kind.eq(kind), c4.cmd.cause.eq(cause),
            c4.cmd.scale_bf16.eq(c3_region.scale_format == ScaleFormat.BF16),
            c4.cmd.scale_pow2.eq(c3_region.scale_format == ScaleFormat.POW2),
            c4.cmd.log2_group.eq(c3_region.log2_group),
            c4.cmd.lut.eq(c3_region.lut & (cause == ErrorCause.NONE) & ~c3.cmd.write
                          & ((c3.view == View.FP16) | (c3.view == View.BF16))),
            c4.cmd.codebook.eq(c3_region.codebook),
            c4.cmd.first_group.eq(((in_region << 9) >> c3_region.log2_group)[:4]),
            c4.cmd.meta_line.eq(c3_region.meta_base + ((in_region << 5) >> c3_region.log2_group)),
        ]
        with m.If(c3.view != View.RAW):
            m.d.sync += c4.cmd.plane_line.eq(c3.cmd.plane_line << 3)

        # --- L1, L2: the block cache's lookup (blocktags.py); the queue takes its output ---
        m.d.comb += [tags.input.valid.eq(c4.valid), tags.input.cmd.eq(c4.cmd), self.lookup.eq(tags.events),
                     tags.invalidate.eq(self.cache_invalidate)]

        m.d.comb += [data_queue.w_en.eq(done.valid & (done.cmd.kind == Kind.RAW_WR)), data_queue.w_data.eq(data_delay.output),
                     self.write_data.valid.eq(data_queue.r_rdy), self.write_data.payload.eq(data_queue.r_data),
                     data_queue.r_en.eq(self.write_data.ready)]
        wiring.connect(m, wiring.flipped(self.cmd), queue.output)
        m.d.comb += [queue.input.valid.eq(done.valid), queue.input.payload.eq(done.cmd),
                     self.error.valid.eq(self.cmd.valid & self.cmd.ready & (self.cmd.payload.kind == Kind.ERROR)),
                     self.error.cause.eq(self.cmd.payload.cause), self.error.addr.eq(self.cmd.payload.addr)]
        return m
