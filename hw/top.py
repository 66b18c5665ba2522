"""SmartQuantTop: the device controller (docs/RTL.md).

    req ─▶ AddressDecoder ─cmd─▶ FetchIssue ─job─▶ [job queue] ─▶ Responder ─▶ drs / ndr
           (+ the cache's lookup)    │ reads/writes  ▲ slots           ▲ slots read, released
    csr ─▶ CsrFile ◀── events ──     ▼               │                 │
                                  DramPort ─beats─▶ BlockCache ────────┘
                                     ▲▼ AXI4 (axi)

Responses leave in request order; reads and writes may be interleaved.
"""

from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import META_SLOTS, PLANE_SLOTS
from .axi import axi4_signature
from .blockcache import BlockCache
from .csr import CSR_BUS, CsrFile
from .decode import REQUEST, AddressDecoder
from .dram import DramPort
from .fetch import FetchIssue
from .layouts import JOB
from .queue import BlockRamQueue, HeadPair
from .output import DRS, NDR
from .respond import Responder


class SmartQuantTop(wiring.Component):
    """Parameters: `lanes` weights dequantized per cycle (1..32, power of two),
    `axi_data_width` (64..512 bits), `axi_addr_width` (byte addresses), `axi_id_width`,
    `plane_slots` / `meta_slots` block buffers, `job_depth` requests between issue and response.
    Defaults sized by `smartquant bench` (docs/BENCH.md): packed k=1 needs ~(latency + 6) plane
    slots and DRAM latency L needs a job queue of ~L + 20 to stay at one host line per cycle."""

    def __init__(self, *, lanes: int = 32, axi_data_width: int = 512, axi_addr_width: int = 32,
                 axi_id_width: int = 4, plane_slots: int = PLANE_SLOTS, meta_slots: int = META_SLOTS,
                 job_depth: int = 256):
        if not 12 <= axi_addr_width <= 64:
            raise ValueError(f"AXI address width {axi_addr_width} outside 12..64")
        if not 1 <= axi_id_width <= 16:
            raise ValueError(f"AXI ID width {axi_id_width} outside 1..16")
        self.params = dict(lanes=lanes, axi_data_width=axi_data_width, axi_addr_width=axi_addr_width,
                           axi_id_width=axi_id_width, plane_slots=plane_slots, meta_slots=meta_slots,
                           job_depth=job_depth)
        self.csr_file = CsrFile(lanes=lanes, axi_data_width=axi_data_width,
                                default_dram_lines=min(1 << (axi_addr_width - 6), (1 << 32) - 1))
        # (the issue stage's decision starts at registers: the command's kind and misses are all it reads)
        self.decoder = AddressDecoder(plane_slots=plane_slots, meta_slots=meta_slots,
                                      decision_fields=FetchIssue.DECISION_FIELDS)
        self.responder = Responder(lanes=lanes, plane_slots=plane_slots, meta_slots=meta_slots)
        self.issue = FetchIssue(plane_slots=plane_slots, meta_slots=meta_slots, fp_steps=self.responder.steps)
        self.dram = DramPort(addr_width=axi_addr_width, data_width=axi_data_width, id_width=axi_id_width,
                             plane_slots=plane_slots, meta_slots=meta_slots, wresp_depth=job_depth)
        # (references in flight: the job queue, its head and the job in the response stage)
        self.cache = BlockCache(plane_slots=plane_slots, meta_slots=meta_slots, data_width=axi_data_width,
                                max_references=job_depth + 8)
        self.job_depth = job_depth
        super().__init__({
            "req": In(stream.Signature(REQUEST)),
            "drs": Out(stream.Signature(DRS)),
            "ndr": Out(stream.Signature(NDR)),
            "csr": In(CSR_BUS),
            "axi": Out(axi4_signature(addr_width=axi_addr_width, data_width=axi_data_width,
                                      id_width=axi_id_width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr_file = csr = self.csr_file
        m.submodules.decoder = dec = self.decoder
        m.submodules.issue = issue = self.issue
        m.submodules.dram = dram = self.dram
        m.submodules.responder = resp = self.responder
        m.submodules.cache = cache = self.cache
        m.submodules.jobs = jobs = BlockRamQueue(width=JOB.size, depth=self.job_depth)

        wiring.connect(m, wiring.flipped(self.csr), csr.bus)
        wiring.connect(m, wiring.flipped(self.req), dec.req)
        wiring.connect(m, wiring.flipped(self.drs), resp.drs)
        wiring.connect(m, wiring.flipped(self.ndr), resp.ndr)
        wiring.connect(m, wiring.flipped(self.axi), dram.axi)
        wiring.connect(m, dec.cmd, issue.cmd)
        wiring.connect(m, issue.plane_reads, dram.plane_reads)
        wiring.connect(m, issue.meta_reads, dram.meta_reads)
        wiring.connect(m, issue.writes, dram.writes)
        wiring.connect(m, dec.write_data, dram.write_data)
        wiring.connect(m, dram.beat, cache.beat)
        # the responder's start of a write moves a pointer, not the far write-response queue's head
        m.submodules.wresp_head = wresp_head = HeadPair(1)
        wiring.connect(m, dram.wresp, wresp_head.input)
        wiring.connect(m, wresp_head.output, resp.wresp)
        wiring.connect(m, issue.job, jobs.w_stream)
        wiring.connect(m, jobs.r_stream, resp.job)
        wiring.connect(m, resp.slots, cache.use)
        wiring.connect(m, resp.read, cache.read)
        m.d.comb += [
            dec.regions.eq(csr.regions), dec.dram_lines.eq(csr.dram_lines),
            dec.cache_invalidate.eq(csr.cache_invalidate),
            issue.reads_idle.eq(dram.reads_idle), issue.writes_idle.eq(dram.writes_idle),
            issue.plane_next.eq(cache.plane_next), issue.meta_next.eq(cache.meta_next),
            issue.plane_free.eq(cache.plane_free), issue.meta_free.eq(cache.meta_free),
            cache.plane_alloc.eq(issue.plane_alloc), cache.meta_alloc.eq(issue.meta_alloc),
            cache.acquire.eq(issue.acquire), cache.acquire_valid.eq(issue.acquire_valid),
        ]
        ev = csr.events
        m.d.comb += [
            ev.read_beat.eq(dram.read_beat), ev.write_beat.eq(dram.write_beat),
            ev.served.eq(resp.served), ev.served_view.eq(resp.served_view), ev.written.eq(resp.written),
            ev.host_stall.eq(resp.host_stall), ev.dram_stall.eq(resp.dram_stall),
            ev.decode_error.eq(dec.error), ev.dram_error.eq(resp.dram_error), ev.lookup.eq(dec.lookup),
        ]
        return m


def generate_verilog(**params) -> str:
    """Verilog text of module `smartquant_top` (ports clk, rst, then the signature's members)."""
    return verilog.convert(SmartQuantTop(**params), name="smartquant_top")
