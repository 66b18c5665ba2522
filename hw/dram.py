"""The DRAM side: AXI4 manager.

Reads: plane and metadata requests come in two queues (metadata first onto AR, unless a
plane request already waits there); each
names a block cache slot (a plane slot, 8 lines wide, or a metadata slot, one line) and a
burst of whole lines; data beats go to the block cache (`beat`: slot, beat number, data,
SLVERR / DECERR, last), which writes them into the slot.  Every read uses ARID 0 and every write
AWID 0, so the subordinate returns them in order and beats land by a FIFO of issued
bursts.  Writes: one line per request (AW and
W channels independent); B responses queue in `wresp` for the response stage.
`reads_idle` / `writes_idle` let the issue stage keep reads and writes from overtaking
each other (AXI orders neither across channels).
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..spec import LINE_BITS, LINE_BYTES, PLANES
from .axi import AXI_BURST_INCR, axi4_signature
from .blockcache import beat_layout
from .counter import held_below
from .layouts import pack
from .queue import BlockRamQueue

READ_REQUEST = data.StructLayout({"line": 32, "lines": 4, "slot": 8})
WRITE_REQUEST = data.StructLayout({"line": 32})
_LANDING = data.StructLayout({"meta": 1, "slot": 8})


class DramPort(wiring.Component):
    def __init__(self, *, addr_width: int, data_width: int, id_width: int,
                 plane_slots: int, meta_slots: int, wresp_depth: int = 16):
        if data_width not in (64, 128, 256, 512):
            raise ValueError(f"AXI data width {data_width} not in 64, 128, 256, 512")
        self.data_width = data_width
        self.beats_per_line = LINE_BITS // data_width
        self.plane_slots, self.meta_slots = plane_slots, meta_slots
        self.wresp_depth = wresp_depth
        super().__init__({
            "plane_reads": In(stream.Signature(READ_REQUEST)),
            "meta_reads": In(stream.Signature(READ_REQUEST)),
            "writes": In(stream.Signature(WRITE_REQUEST)),
            "write_data": In(stream.Signature(LINE_BITS)),      # each write's line, in write order
            "wresp": Out(stream.Signature(1)),          # 1: the write failed
            "axi": Out(axi4_signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "beat": Out(stream.Signature(beat_layout(data_width))),    # read data, to the block cache
            "reads_idle": Out(1), "writes_idle": Out(1),
            "read_beat": Out(1), "write_beat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi
        width, bpl = self.data_width, self.beats_per_line
        size = (width // 8).bit_length() - 1

        # --- read requests (plane and metadata queues) -> AR, metadata first; the queues read
        # their distributed RAM directly (first word fall-through), so a request offered in one
        # cycle is on AR in the next ---
        m.submodules.plane_queue = pq = SyncFIFO(width=READ_REQUEST.size, depth=4)
        m.submodules.meta_queue = mq = SyncFIFO(width=READ_REQUEST.size, depth=4)
        m.submodules.landing = landing = BlockRamQueue(width=_LANDING.size, depth=self.plane_slots + self.meta_slots)
        for queue, reads in ((pq, self.plane_reads), (mq, self.meta_reads)):
            m.d.comb += [queue.w_en.eq(reads.valid), queue.w_data.eq(reads.payload), reads.ready.eq(queue.w_rdy)]
        # (AXI: a request offered on AR stays offered, unchanged, until taken; so a metadata
        # request overtakes a plane request only while AR has none waiting)
        plane_waiting = Signal()
        pick_meta = Signal()
        m.d.comb += pick_meta.eq(mq.r_rdy & ~plane_waiting)
        head = data.View(READ_REQUEST, Mux(pick_meta, mq.r_data, pq.r_data))
        m.d.comb += [
            axi.arvalid.eq((pq.r_rdy | mq.r_rdy) & landing.w_rdy),
            axi.araddr.eq(head.line * LINE_BYTES), axi.arlen.eq(head.lines * bpl - 1),
            axi.arsize.eq(size), axi.arburst.eq(AXI_BURST_INCR), axi.arid.eq(0),
        ]
        ar_done = axi.arvalid & axi.arready
        m.d.sync += plane_waiting.eq(axi.arvalid & ~axi.arready & ~pick_meta)
        m.d.comb += [pq.r_en.eq(ar_done & ~pick_meta), mq.r_en.eq(ar_done & pick_meta),
                     landing.w_en.eq(ar_done), landing.w_data.eq(Cat(pick_meta, head.slot))]

        # --- R -> the block cache (which takes a beat every cycle) ---
        dest = data.View(_LANDING, landing.r_data)
        beat = Signal(range(PLANES * bpl))
        m.d.comb += axi.rready.eq(landing.r_rdy & self.beat.ready)
        r_beat = axi.rvalid & axi.rready
        m.d.comb += [
            self.beat.valid.eq(axi.rvalid & landing.r_rdy),
            self.beat.payload.eq(pack(beat_layout(width), meta=dest.meta, slot=dest.slot, beat=beat,
                                      data=axi.rdata, failed=axi.rresp[1], last=axi.rlast)),
            self.read_beat.eq(r_beat),
        ]
        outstanding = Signal(range(self.plane_slots + self.meta_slots + 4))
        plane_issued = self.plane_reads.valid & self.plane_reads.ready
        meta_issued = self.meta_reads.valid & self.meta_reads.ready
        burst_end = r_beat & axi.rlast
        m.d.sync += outstanding.eq(outstanding + plane_issued + meta_issued - burst_end)
        m.d.comb += [landing.r_en.eq(burst_end),
                     self.reads_idle.eq(held_below(m, outstanding, 1, plane_issued | meta_issued, burst_end,
                                                   name="reads_idle_held"))]
        with m.If(r_beat):
            m.d.sync += beat.eq(Mux(axi.rlast, 0, beat + 1))

        # --- writes -> AW, W; B -> wresp ---
        m.submodules.write_queue = wq = SyncFIFOBuffered(width=WRITE_REQUEST.size, depth=4)
        m.submodules.wresp_queue = bq = BlockRamQueue(width=1, depth=self.wresp_depth)
        wr = data.View(WRITE_REQUEST, wq.r_data)
        aw_sent, w_sent = Signal(), Signal()
        w_beat = Signal(range(bpl))
        # the line being written, taken from `write_data` while none is held (so the 512-bit
        # enables depend on registers only; a write after a write waits one cycle for it)
        w_line, w_line_valid = Signal(LINE_BITS), Signal()
        m.d.comb += self.write_data.ready.eq(~w_line_valid)
        with m.If(self.write_data.valid & ~w_line_valid):
            m.d.sync += [w_line.eq(self.write_data.payload), w_line_valid.eq(1)]
        m.d.comb += [
            wq.w_en.eq(self.writes.valid), wq.w_data.eq(self.writes.payload), self.writes.ready.eq(wq.w_rdy),
            axi.awvalid.eq(wq.r_rdy & ~aw_sent), axi.awaddr.eq(wr.line * LINE_BYTES),
            axi.awlen.eq(bpl - 1), axi.awsize.eq(size), axi.awburst.eq(AXI_BURST_INCR), axi.awid.eq(0),
            axi.wvalid.eq(wq.r_rdy & w_line_valid & ~w_sent),
            axi.wdata.eq(w_line.word_select(w_beat, width)),
            axi.wstrb.eq(-1), axi.wlast.eq(w_beat == bpl - 1),
            self.write_beat.eq(axi.wvalid & axi.wready),
        ]
        aw_now = aw_sent | (axi.awvalid & axi.awready)
        w_now = w_sent | (axi.wvalid & axi.wready & axi.wlast)
        with m.If(aw_now & w_now):
            m.d.comb += wq.r_en.eq(1)
            m.d.sync += [aw_sent.eq(0), w_sent.eq(0), w_line_valid.eq(0)]
        with m.Else():
            m.d.sync += [aw_sent.eq(aw_now), w_sent.eq(w_now)]
        with m.If(axi.wvalid & axi.wready):
            m.d.sync += w_beat.eq(Mux(axi.wlast, 0, w_beat + 1))
        pending = Signal(range(self.wresp_depth + 8))
        write_issued = self.writes.valid & self.writes.ready
        b_done = axi.bvalid & axi.bready
        m.d.sync += pending.eq(pending + write_issued - b_done)
        m.d.comb += [
            axi.bready.eq(bq.w_rdy), bq.w_en.eq(axi.bvalid), bq.w_data.eq(axi.bresp[1]),
            self.writes_idle.eq(held_below(m, pending, 1, write_issued, b_done, name="writes_idle_held")),
            self.wresp.valid.eq(bq.r_rdy), self.wresp.payload.eq(bq.r_data), bq.r_en.eq(self.wresp.ready),
        ]
        return m
