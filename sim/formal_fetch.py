"""Formal harnesses around the read path from the issue stage to the AXI4 AR channel:
hw/fetch.py `FetchIssue` feeding hw/dram.py `DramPort`, wired as in hw/top.py, at small
parameters (2 + 2 slots, one beat a line).

The commands are free but keep what the decoder and the block cache's lookup guarantee
(the lookup's part is proven by `tags_model`): a quantized command names an 8-aligned
block with 1 <= k <= 8, misses are flagged only where the kind fetches, every line is
inside the DRAM.  The isolation property adds one region: every command decoded to it
(its blocks, metadata lines and table set are free constants).  The AXI subordinate is
free: it answers R and B only while bursts are outstanding.
"""

from __future__ import annotations

from amaranth import Cat, Module
from amaranth.hdl import Assert, Assume, Cover

from ..hw import dram, fetch
from ..hw.axi import AXI_BURST_INCR
from ..hw.layouts import Kind, is_fp, is_quantized, needs_plane
from ..hw.queue import BlockRamQueue
from ..spec import CODEBOOK_LINES, LINE_BYTES
from .formal_bench import Harness, constant, kept_until_taken, previous, shadow_count, stream_source, sticky

FETCH_SLOTS = 2                 #: plane slots and metadata slots
FETCH_DATA_WIDTH = 512          #: one beat a line
FETCH_ADDR_WIDTH = 32
#: bursts in flight at most: the landing queue's capacity (its block RAM part + head)
READS_LIMIT = 2 * FETCH_SLOTS - 1 + BlockRamQueue.HEAD_DEPTH
_PAGE_BYTES = 4096
_LINES_PER_BURST = 8            #: a block's plane lines, the longest burst


class _FetchBench:
    """FetchIssue -> DramPort with a command source, a free block cache side and a free
    AXI subordinate; `region`: every command reads one region's lines."""

    def __init__(self, h: Harness, m: Module, *, region: bool):
        self.issue = issue = fetch.FetchIssue(plane_slots=FETCH_SLOTS, meta_slots=FETCH_SLOTS, fp_steps=2)
        self.port = port = dram.DramPort(addr_width=FETCH_ADDR_WIDTH, data_width=FETCH_DATA_WIDTH, id_width=1,
                                         plane_slots=FETCH_SLOTS, meta_slots=FETCH_SLOTS, wresp_depth=2)
        m.submodules.issue, m.submodules.port = issue, port
        for name in ("plane_reads", "meta_reads", "writes"):
            source, sink = getattr(issue, name), getattr(port, name)
            m.d.comb += [sink.valid.eq(source.valid), sink.payload.eq(source.payload), source.ready.eq(sink.ready)]
        cmd_valid, c = stream_source(h, m, issue.cmd, "cmd")
        stream_source(h, m, port.write_data, "write_data")
        m.d.comb += [issue.reads_idle.eq(port.reads_idle), issue.writes_idle.eq(port.writes_idle),
                     port.beat.ready.eq(1)]           # the block cache takes a beat every cycle
        for name, width in (("plane_next", 1), ("meta_next", 1), ("plane_free", 1), ("meta_free", 1)):
            m.d.comb += getattr(issue, name).eq(h.free(width, name))
        m.d.comb += [issue.job.ready.eq(h.free(1, "job_ready")), port.wresp.ready.eq(h.free(1, "wresp_ready"))]
        self.axi = axi = port.axi
        for name in ("arready", "awready", "wready", "rvalid", "rdata", "rresp", "rlast", "rid",
                     "bvalid", "bresp", "bid"):
            m.d.comb += getattr(axi, name).eq(h.free(len(getattr(axi, name)), f"axi_{name}"))
        self.ar_done = axi.arvalid & axi.arready
        self.outstanding = shadow_count(m, self.ar_done, axi.rvalid & axi.rready & axi.rlast, "outstanding", 5)
        writes = shadow_count(m, axi.awvalid & axi.awready, axi.bvalid & axi.bready, "writes_outstanding", 4)
        m.d.comb += [Assume(~axi.rvalid | (self.outstanding != 0)), Assume(~axi.bvalid | (writes != 0))]

        # the decoder's and the lookup's guarantees
        self.dram_lines = constant(h, m, 32, "dram_lines")
        lines = self.dram_lines
        quantized = is_quantized(c.kind)
        m.d.comb += Assume(lines <= 1 << (FETCH_ADDR_WIDTH - 6))
        with m.If(cmd_valid):
            m.d.comb += [
                Assume(c.kind != Kind.LUT_LOAD),
                Assume(~quantized | ((c.k >= 1) & (c.k <= 8) & (c.plane_line[:3] == 0))),
                Assume(~c.fetch_plane | needs_plane(c.kind)), Assume(~c.fetch_meta | is_fp(c.kind)),
                Assume(~c.fetch_table | (c.lut & quantized)),
                Assume(c.plane_line + _LINES_PER_BURST <= lines), Assume(c.meta_line < lines),
                Assume((c.codebook + 1) * CODEBOOK_LINES <= lines),
            ]
        if region:
            self.first_block, self.end_block = constant(h, m, 29, "first_block"), constant(h, m, 30, "end_block")
            self.meta_first, self.meta_end = constant(h, m, 32, "meta_first"), constant(h, m, 33, "meta_end")
            self.codebook = constant(h, m, c.codebook.shape(), "codebook")
            with m.If(cmd_valid):
                m.d.comb += [
                    Assume(quantized | (c.kind == Kind.ERROR)),
                    Assume(~quantized | ((c.plane_line[3:] >= self.first_block) & (c.plane_line[3:] < self.end_block))),
                    Assume(~is_fp(c.kind) | ((c.meta_line >= self.meta_first) & (c.meta_line < self.meta_end))),
                    Assume(c.codebook == self.codebook),
                ]

    def ar_lines(self):
        """The AR burst's first line and its line after the last (one beat a line)."""
        first = self.axi.araddr // LINE_BYTES
        return first, first + self.axi.arlen + 1


def fetch_axi_rules(h, m):
    """AXI4 manager rules on AR, AW and W: valid held and the payload stable until ready;
    INCR bursts of whole lines, at most a block's 8; no burst crosses a 4 KB page or
    leaves the DRAM."""
    b = _FetchBench(h, m, region=False)
    axi = b.axi
    first, end = b.ar_lines()
    channels = [("ar", axi.arvalid, axi.arready, Cat(axi.araddr, axi.arlen, axi.arsize, axi.arburst, axi.arid)),
                ("aw", axi.awvalid, axi.awready, Cat(axi.awaddr, axi.awlen, axi.awsize, axi.awburst, axi.awid)),
                ("w", axi.wvalid, axi.wready, Cat(axi.wdata, axi.wstrb, axi.wlast))]
    for name, valid, ready, payload in channels:
        m.d.comb += Assert(kept_until_taken(m, valid, ready, payload, name))
    with m.If(axi.arvalid):
        m.d.comb += [Assert(axi.arlen < _LINES_PER_BURST), Assert(axi.arsize == 6),
                     Assert(axi.arburst == AXI_BURST_INCR),
                     Assert(axi.araddr % _PAGE_BYTES + (axi.arlen + 1) * LINE_BYTES <= _PAGE_BYTES),
                     Assert(end <= b.dram_lines)]
    with m.If(axi.awvalid):
        m.d.comb += [Assert(axi.awlen == 0), Assert(axi.awaddr // LINE_BYTES < b.dram_lines)]


def fetch_isolation(h, m):
    """With every command decoded to one region, every AR burst lies inside that region's
    blocks, its metadata lines or its table set."""
    b = _FetchBench(h, m, region=True)
    first, end = b.ar_lines()
    in_blocks = (first >= b.first_block * 8) & (end <= b.end_block * 8)
    in_meta = (first >= b.meta_first) & (end <= b.meta_end)
    in_table = (first >= b.codebook * CODEBOOK_LINES) & (end <= (b.codebook + 1) * CODEBOOK_LINES)
    m.d.comb += Assert(~b.axi.arvalid | in_blocks | in_meta | in_table)


def fetch_cover(h, m):
    """A block's burst of 8 lines; a metadata line and a table read of the region; an AR
    held waiting then taken; three bursts outstanding."""
    b = _FetchBench(h, m, region=True)
    axi = b.axi
    first, end = b.ar_lines()
    waited = previous(m, axi.arvalid & ~axi.arready, "ar_waited")
    m.d.comb += [Cover(b.ar_done & (axi.arlen == _LINES_PER_BURST - 1)),
                 Cover(b.ar_done & (first >= b.meta_first) & (end <= b.meta_end)),
                 Cover(b.ar_done & (first >= b.codebook * CODEBOOK_LINES) & (end <= (b.codebook + 1) * CODEBOOK_LINES)
                       & (b.codebook != 0)),
                 Cover(b.ar_done & waited), Cover(b.outstanding == 3)]


def _port_bench(h: Harness, m: Module):
    """DramPort alone, its read request queues fed by free streams that keep the stream
    rules (no issue stage: requests as fast as AR takes them), the AXI subordinate free;
    returns (port, bursts outstanding)."""
    port = dram.DramPort(addr_width=FETCH_ADDR_WIDTH, data_width=FETCH_DATA_WIDTH, id_width=1,
                         plane_slots=FETCH_SLOTS, meta_slots=FETCH_SLOTS, wresp_depth=2)
    m.submodules.port = port
    for name in ("plane_reads", "meta_reads", "writes", "write_data"):
        stream_source(h, m, getattr(port, name), name)
    m.d.comb += [port.beat.ready.eq(1), port.wresp.ready.eq(h.free(1, "wresp_ready"))]
    axi = port.axi
    for name in ("arready", "awready", "wready", "rvalid", "rdata", "rresp", "rlast", "rid", "bvalid", "bresp", "bid"):
        m.d.comb += getattr(axi, name).eq(h.free(len(getattr(axi, name)), f"axi_{name}"))
    outstanding = shadow_count(m, axi.arvalid & axi.arready, axi.rvalid & axi.rready & axi.rlast, "outstanding", 5)
    writes = shadow_count(m, axi.awvalid & axi.awready, axi.bvalid & axi.bready, "writes_outstanding", 4)
    m.d.comb += [Assume(~axi.rvalid | (outstanding != 0)), Assume(~axi.bvalid | (writes != 0))]
    return port, outstanding


def dram_outstanding(h, m):
    """Never more read bursts outstanding on AXI than the landing queue holds (7)."""
    _, outstanding = _port_bench(h, m)
    m.d.comb += Assert(outstanding <= READS_LIMIT)


def dram_outstanding_cover(h, m):
    """As many bursts outstanding as the limit; the limit reached again after a burst
    completed."""
    _, outstanding = _port_bench(h, m)
    was_full = sticky(m, outstanding == READS_LIMIT, "was_full")
    was_drained = sticky(m, was_full & (outstanding == READS_LIMIT - 1), "was_drained")
    m.d.comb += [Cover(outstanding == READS_LIMIT), Cover(was_drained & (outstanding == READS_LIMIT))]
