"""Formal harnesses around the read path from the issue stage to the AXI4 AR channel:
hw/fetch.py `FetchIssue` feeding hw/dram.py `DramPort`, wired as in hw/top.py, at small
parameters (2 + 2 slots, one beat a line).

The commands are free but keep what the decoder and the block cache's lookup guarantee
(the lookup's part is proven by `tags_model`): a quantized command names an 8-aligned
block with 1 <= k <= 8, misses are flagged only where the kind fetches, every line is
inside the DRAM.  The isolation property adds one region: every command decoded to it
(its blocks, metadata lines and table set are free constants).  The link property
numbers the commands (command n carries tag n mod 256) and follows each through the
issue stage into its job and its DRAM requests.  The AXI subordinate is free: it answers
R and B only while bursts are outstanding (the AXI ID is one constant, so "only for
outstanding IDs" is "only while something is outstanding").
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.hdl import Assert, Assume, Cover

from ..hw import dram, fetch
from ..hw.axi import AXI_BURST_INCR
from ..hw.layouts import COMMON_FIELDS, Kind, is_fp, is_quantized, needs_plane
from ..hw.queue import BlockRamQueue
from ..spec import CODEBOOK_ENTRY_BYTES, CODEBOOK_LINES, LINE_BYTES, PLANES, TAG_BITS, codebook_lines_read
from .formal_bench import Harness, constant, kept_until_taken, previous, shadow_count, stream_source, sticky

FETCH_SLOTS = 2                 #: plane slots and metadata slots
FETCH_DATA_WIDTH = 512          #: one beat a line
FETCH_ADDR_WIDTH = 32
FETCH_FP_STEPS = 2              #: the response stage's steps per fp16 / bf16 line (16 lanes)
#: bursts in flight at most: the landing queue's capacity (its block RAM part + head)
READS_LIMIT = 2 * FETCH_SLOTS - 1 + BlockRamQueue.HEAD_DEPTH
_PAGE_BYTES = 4096
_LINES_PER_BURST = 8            #: a block's plane lines, the longest burst


class _FetchBench:
    """FetchIssue -> DramPort with a command source, a free block cache side and a free
    AXI subordinate; `region`: every command reads one region's lines."""

    def __init__(self, h: Harness, m: Module, *, region: bool):
        self.issue = issue = fetch.FetchIssue(plane_slots=FETCH_SLOTS, meta_slots=FETCH_SLOTS,
                                                  fp_steps=FETCH_FP_STEPS)
        self.port = port = dram.DramPort(addr_width=FETCH_ADDR_WIDTH, data_width=FETCH_DATA_WIDTH, id_width=1,
                                         plane_slots=FETCH_SLOTS, meta_slots=FETCH_SLOTS, wresp_depth=2)
        m.submodules.issue, m.submodules.port = issue, port
        for name in ("plane_reads", "meta_reads", "writes"):
            source, sink = getattr(issue, name), getattr(port, name)
            m.d.comb += [sink.valid.eq(source.valid), sink.payload.eq(source.payload), source.ready.eq(sink.ready)]
        self.cmd_valid, self.cmd = cmd_valid, c = stream_source(h, m, issue.cmd, "cmd")
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


class _IssueLink:
    """What `FetchIssue` does with the command at its head (`_FetchBench`, commands
    numbered: command n carries tag n mod 256): the commands and command jobs taken so
    far, and the plane / metadata reads, writes and LUT_LOAD jobs issued for the head
    command before this cycle (each count restarts when the command is taken)."""

    def __init__(self, h: Harness, m: Module):
        self.bench = b = _FetchBench(h, m, region=False)
        issue, c = b.issue, b.cmd
        self.taken = b.cmd_valid & issue.cmd.ready
        self.commands = shadow_count(m, self.taken, 0, "commands", TAG_BITS)
        m.d.comb += Assume(~b.cmd_valid | (c.tag == self.commands))
        self.job = job = issue.job.payload
        self.job_done = issue.job.valid & issue.job.ready
        self.is_load = job.kind == Kind.LUT_LOAD
        self.command_jobs = shadow_count(m, self.job_done & ~self.is_load, 0, "command_jobs", TAG_BITS)
        self.done = {name: getattr(issue, name).valid & getattr(issue, name).ready
                     for name in ("plane_reads", "meta_reads", "writes")}
        self.done["loads"] = self.job_done & self.is_load
        self.for_head = {}
        for name, done in self.done.items():
            count = Signal(2, name=f"head_{name}")
            m.d.sync += count.eq(Mux(self.taken, 0, count + done))
            self.for_head[name] = count


def issue_one_job_per_command(h, m):
    """Every command taken becomes exactly one job, in order, with the command's tag and
    fields (kind, write, cause, k, line, slots: what the response stage reads), and no
    job comes without a command; before it is taken the issue stage makes exactly the DRAM
    requests it asks for: a table read of view k's codebook lines and a LUT_LOAD job
    (`fetch_table`, first), one plane read of the block's k lines or the raw line
    (`fetch_plane`), one metadata read of its line (`fetch_meta`), one write of its line
    (RAW_WR); the command's job says which slots it fetched (`plane_alloc`, `meta_alloc`)
    and its steps (2 for fp16 / bf16, 2**k for a LUT_LOAD, else 1)."""
    link = _IssueLink(h, m)
    b, job, c = link.bench, link.job, link.bench.cmd
    issue = b.issue
    command_job = issue.job.valid & ~link.is_load
    m.d.comb += [Assert(link.command_jobs == link.commands),
                 Assert(~command_job | (b.cmd_valid & (job.tag == link.command_jobs)))]
    with m.If(command_job):
        m.d.comb += [Assert(getattr(job, name) == getattr(c, name)) for name in COMMON_FIELDS]
        m.d.comb += [Assert(job.plane_slot == c.plane_slot), Assert(job.meta_slot == c.meta_slot),
                     Assert(job.plane_alloc == c.fetch_plane), Assert(job.meta_alloc == c.fetch_meta),
                     Assert(job.last_step == Mux(is_fp(c.kind), FETCH_FP_STEPS - 1, 0))]
    asked = {"plane_reads": c.fetch_plane + c.fetch_table, "meta_reads": c.fetch_meta,
             "writes": c.kind == Kind.RAW_WR, "loads": c.fetch_table}
    for name, count in link.for_head.items():
        m.d.comb += Assert(count + link.done[name] <= asked[name])
        with m.If(link.taken):
            m.d.comb += Assert(count + link.done[name] == asked[name])

    # the requests' payloads: the table read first, then the block's (or raw line's)
    views = range(1, PLANES + 1)     # (a table load's k: 1..8, indexed by k - 1)
    table_first = Array(Const((1 << k) * CODEBOOK_ENTRY_BYTES // LINE_BYTES, 4) for k in views)
    table_lines = Array(Const(codebook_lines_read(k), 4) for k in views)
    reads, loaded = issue.plane_reads.payload, link.for_head["loads"] + link.done["loads"]
    with m.If(link.done["plane_reads"]):
        with m.If(c.fetch_table & (link.for_head["plane_reads"] == 0)):
            m.d.comb += [Assert(reads.line == c.codebook * CODEBOOK_LINES + table_first[c.k - 1]),
                         Assert(reads.lines == table_lines[c.k - 1]), Assert(link.done["loads"])]
        with m.Else():
            m.d.comb += [Assert(reads.line == c.plane_line),
                         Assert(reads.lines == Mux(is_quantized(c.kind), c.k, 1)), Assert(loaded == c.fetch_table)]
    with m.If(link.done["loads"]):
        m.d.comb += [Assert(job.tag == c.tag), Assert(job.k == c.k), Assert(job.plane_alloc),
                     Assert(job.last_step == (1 << c.k) - 1),
                     Assert(job.plane_slot == reads.slot)]
    with m.If(link.done["meta_reads"]):
        m.d.comb += Assert(issue.meta_reads.payload.line == c.meta_line)
    with m.If(link.done["writes"]):
        m.d.comb += Assert(issue.writes.payload.line == c.plane_line)


def issue_cover(h, m):
    """A table-lookup command's table read and LUT_LOAD job, then its plane and metadata
    reads and its job; a write's job; command jobs in two cycles in a row; a command
    waiting at the head with its plane read issued (its job not yet taken)."""
    link = _IssueLink(h, m)
    b, c = link.bench, link.bench.cmd
    command_done = link.job_done & ~link.is_load
    after_job = previous(m, command_done, "after_job")
    m.d.comb += [
        Cover(link.taken & c.fetch_table & c.fetch_plane & c.fetch_meta & (link.for_head["loads"] == 1)),
        Cover(link.taken & (c.kind == Kind.RAW_WR)),
        Cover(after_job & command_done & (link.commands >= 2)),
        Cover(b.cmd_valid & ~link.taken & (link.for_head["plane_reads"] == 1) & c.fetch_plane & ~c.fetch_table),
    ]


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


class _NumberedPort:
    """`_port_bench` with numbered requests: plane request n names line 2n and n mod 8 + 1
    lines, metadata request n line 2n + 1 (n mod 16); an AR burst's first line then says
    which queue and which request it is."""

    def __init__(self, h: Harness, m: Module):
        self.port, _ = _port_bench(h, m)
        axi = self.port.axi
        self.ar_done = axi.arvalid & axi.arready
        first = axi.araddr[LINE_BYTES.bit_length() - 1:]     # (a shift, not a divider)
        self.is_meta, self.number = first[0], first[1:5]
        self.requested, self.bursts = [], []
        for name, is_meta in (("plane_reads", 0), ("meta_reads", 1)):
            reads = getattr(self.port, name)
            requested = shadow_count(m, reads.valid & reads.ready, 0, f"{name}_taken", 4)
            lines = requested[:3] + 1 if not is_meta else 1
            m.d.comb += Assume(~reads.valid | ((reads.payload.line == Cat(Const(is_meta, 1), requested))
                                               & (reads.payload.lines == lines)))
            self.requested.append(requested)
            self.bursts.append(shadow_count(m, self.ar_done & (self.is_meta == is_meta), 0, f"{name}_bursts", 4))


def dram_request_to_burst(h, m):
    """Every read request becomes exactly one AR burst, of its line and length, in its
    queue's order (metadata requests may overtake plane requests): the n-th plane burst is
    plane request n, the n-th metadata burst metadata request n, and no burst comes before
    its request."""
    b = _NumberedPort(h, m)
    axi = b.port.axi
    bursts, requested = Mux(b.is_meta, b.bursts[1], b.bursts[0]), Mux(b.is_meta, b.requested[1], b.requested[0])
    with m.If(axi.arvalid):
        m.d.comb += [Assert(b.number == bursts), Assert(bursts != requested), Assert(axi.araddr[:LINE_BYTES.bit_length() - 1] == 0),
                     Assert(axi.arlen == Mux(b.is_meta, 0, b.number[:3]))]


def dram_burst_cover(h, m):
    """The fifth plane and the fifth metadata burst (both request queues' pointers wrapped);
    a metadata burst taken while a plane request waits in its queue."""
    b = _NumberedPort(h, m)
    m.d.comb += [Cover(b.ar_done & ~b.is_meta & (b.number == 4)), Cover(b.ar_done & b.is_meta & (b.number == 4)),
                 Cover(b.ar_done & b.is_meta & (b.requested[0] != b.bursts[0]))]


# -- progress: an idle controller's command taken and its reads on AR, within bounds -----

class _IdleProgress:
    """`_FetchBench` with every need of the issue stage met: the block cache's slots free,
    the job queue and the AXI subordinate's AR, AW and W always ready, and a command offered
    only into an idle read and write path (no read request queued or burst outstanding, no
    write awaiting its response).  For the command that arrived at the head last: `age`,
    cycles since its arrival (0 in that cycle; counting on after it is taken), `asked`, the
    reads it asks for (table, plane, metadata), `accepted`, the AR bursts taken since its
    arrival, this cycle's included."""

    def __init__(self, h: Harness, m: Module):
        self.bench = b = _FetchBench(h, m, region=False)
        issue, axi, c = b.issue, b.axi, b.cmd
        m.d.comb += [Assume(issue.plane_free), Assume(issue.meta_free), Assume(issue.job.ready),
                     Assume(axi.arready), Assume(axi.awready), Assume(axi.wready)]
        self.taken = b.cmd_valid & issue.cmd.ready
        self.arrived = b.cmd_valid & ~previous(m, b.cmd_valid & ~self.taken, "head_waited")
        m.d.comb += Assume(~self.arrived | (b.port.reads_idle & b.port.writes_idle))
        self.any_arrived = self.arrived | sticky(m, self.arrived, "any_arrived")
        age = Signal(4, name="age")
        self.age = Mux(self.arrived, 0, age)
        m.d.sync += age.eq(Mux(self.age == 15, 15, self.age + 1))
        asked = Signal(2, name="asked")
        self.asked = Mux(self.arrived, c.fetch_table + c.fetch_plane + c.fetch_meta, asked)
        m.d.sync += asked.eq(self.asked)
        accepted = Signal(2, name="accepted")
        self.accepted = Mux(self.arrived, 0, accepted) + b.ar_done
        m.d.sync += accepted.eq(self.accepted)


def issue_progress(h, m):
    """Into an idle controller whose subordinate, job queue and slots are always ready, a
    command is taken in the cycle it reaches the issue stage's head (the cycle after, when
    it loads a table first), and its reads are accepted on AR one a cycle from the cycle
    after its arrival: the table read first, then the metadata read, then the plane read;
    its last `asked` cycles after it arrived (at most 3)."""
    p = _IdleProgress(h, m)
    b = p.bench
    m.d.comb += [Assert(~b.cmd_valid | (p.age <= b.cmd.fetch_table)),
                 Assert(~p.any_arrived | (p.accepted == Mux(p.age < p.asked, p.age, p.asked)))]


def issue_progress_cover(h, m):
    """An idle controller: a command with a table, a plane and a metadata read taken, its
    third read accepted on AR 3 cycles after its arrival; a second command with reads
    arriving after the first's bursts ended."""
    p = _IdleProgress(h, m)
    second = sticky(m, p.arrived & (p.asked != 0), "first_with_reads") & p.arrived & (p.asked != 0)
    m.d.comb += [Cover((p.asked == 3) & (p.accepted == 3) & (p.age == 3)), Cover(second)]
