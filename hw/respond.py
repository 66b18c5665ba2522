"""Response stage: jobs in request order -> DRS / NDR lines, as a chain of streams.

    job ─▶ Sequencer ─step─▶ BufferRead ─fetched─▶ LineGather ─line─▶ DequantLanes ─▶ LinePacker
           (sequencer.py)   (bufread.py) ▲▼ read   (gather.py) ─load─▶ (lanes.py)     (output.py)
              ▲  ▲ credit                cache                                           │
              │  └──────────── OutputRouter ◀── output queue (SyncFIFOBuffered) ◀─────────┘
              wresp            drs / ndr

A step (one line, or one of an fp16 / bf16 line's 32 / lanes steps, or one codebook entry of
a LUT_LOAD job) takes register stages from its start to the output queue:
  1. the sequencer's step register (the buffer addresses, the table entry);
  2-4. the buffer read (`BufferRead.LATENCY` = `PlaneBuffer.READ_LATENCY`): the block
     buffers' registered read ports, a register after the plane banks and the group's
     metadata word, the banks' rotation; the step's fields and decoded selects beside them;
  5. plane transpose / line select, registered (`LineGather`);
  then the dequantizer lanes (`lanes.latency`): an affine step's 8 stages, a table
  lookup's 11; a raw, packed or int8 line (or an NDR) passes straight through;
then the line packer writes each whole line into the ordered output queue
(`PASS_DEPTH` = 5, `AFFINE_DEPTH` = 13, `LOOKUP_DEPTH` = 16 cycles after the step
started).  Every stream from the sequencer to the packer is always ready, and the packer
never finds the queue full: the sequencer starts a line's step only when the queue has
room for every line in flight (credit flow), so nothing stalls; it also keeps lines in job
order through the lanes' different latencies (sequencer.py).
"""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .blockcache import SLOT_USE, read_signature
from .bufread import BufferRead
from .csr import ERROR_REPORT
from .gather import LineGather
from .lanes import AFFINE_LATENCY, LOOKUP_LATENCY, MAX_LATENCY, PASS_LATENCY, DequantLanes
from .layouts import JOB
from .output import DRS, NDR, RESPONSE, LinePacker, OutputRouter
from .sequencer import Sequencer

#: register stages from a step's start to the dequantizer lanes' input
LANES_INPUT_DEPTH = 1 + BufferRead.LATENCY + 1
#: cycles from a step's start to its line's write into the output queue: a line not
#: dequantized, an affine step's, a table lookup's
PASS_DEPTH = LANES_INPUT_DEPTH + PASS_LATENCY
AFFINE_DEPTH = LANES_INPUT_DEPTH + AFFINE_LATENCY
LOOKUP_DEPTH = LANES_INPUT_DEPTH + LOOKUP_LATENCY
#: the longest of them (the output queue holds `PIPELINE_DEPTH` + 8 lines)
PIPELINE_DEPTH = LANES_INPUT_DEPTH + MAX_LATENCY


class Responder(wiring.Component):
    """`lanes` weights dequantized a cycle (1..32, power of two), `plane_slots` /
    `meta_slots` block cache slots, `out_depth` lines of output queue."""

    def __init__(self, *, lanes: int, plane_slots: int, meta_slots: int, out_depth: int = PIPELINE_DEPTH + 8):
        if lanes not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"lanes={lanes} must be a power of two in 1..32")
        self.sequencer = Sequencer(lanes=lanes, queue_depth=out_depth)
        self.buffer_read = BufferRead(lanes=lanes, plane_slots=plane_slots, meta_slots=meta_slots)
        self.gather = LineGather(lanes=lanes)
        self.dequant = DequantLanes(lanes=lanes, meta_layout=self.gather.meta_layout)
        self.packer = LinePacker(lanes=lanes, meta_layout=self.gather.meta_layout)
        self.out_depth, self.steps = out_depth, self.sequencer.steps
        super().__init__({
            "job": In(stream.Signature(JOB)),
            "wresp": In(stream.Signature(1)),
            "slots": Out(SLOT_USE),
            "read": Out(read_signature(plane_slots, meta_slots)),
            "drs": Out(stream.Signature(DRS)), "ndr": Out(stream.Signature(NDR)),
            # events for the counters
            "dram_error": Out(ERROR_REPORT),
            "served": Out(1), "served_view": Out(3), "written": Out(1),
            "host_stall": Out(1), "dram_stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.sequencer = seq = self.sequencer
        m.submodules.buffer_read = read = self.buffer_read
        m.submodules.gather = gather = self.gather
        m.submodules.dequant = dequant = self.dequant
        m.submodules.packer = packer = self.packer
        m.submodules.queue = queue = SyncFIFOBuffered(width=RESPONSE.size, depth=self.out_depth)
        m.submodules.router = router = OutputRouter()

        wiring.connect(m, wiring.flipped(self.job), seq.job)
        wiring.connect(m, wiring.flipped(self.wresp), seq.wresp)
        wiring.connect(m, wiring.flipped(self.slots), seq.slots)
        wiring.connect(m, seq.step, read.step)
        wiring.connect(m, wiring.flipped(self.read), read.read)
        wiring.connect(m, read.fetched, gather.fetched)
        wiring.connect(m, gather.line, dequant.input)
        wiring.connect(m, gather.load, dequant.load)
        wiring.connect(m, dequant.output, packer.input)
        wiring.connect(m, packer.line, queue.w_stream)
        wiring.connect(m, queue.r_stream, router.lines)
        wiring.connect(m, wiring.flipped(self.drs), router.drs)
        wiring.connect(m, wiring.flipped(self.ndr), router.ndr)
        m.d.comb += [
            seq.credit.eq(queue.r_rdy & queue.r_en),
            self.dram_error.eq(read.dram_error), self.dram_stall.eq(seq.dram_stall),
            self.served.eq(router.served), self.served_view.eq(router.served_view),
            self.written.eq(router.written), self.host_stall.eq(router.host_stall),
        ]
        return m
