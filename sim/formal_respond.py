"""Formal harnesses around the response stage's end (hw/respond.py): the ordered output
queue (`SyncFIFOBuffered`, as `Responder` builds it, at `ROUTER_QUEUE_DEPTH` lines) and the
`OutputRouter` behind it, which hands each line to the host's DRS or NDR stream.

The line packer writes the queue without looking at its ready flag: the sequencer's
credit flow keeps room for every line in flight, so the harness writes a free line in any
cycle the queue has room (`w_rdy`).  The host's `ready` on DRS and NDR is free.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from ..hw import output
from ..spec import TAG_BITS
from .formal_bench import Harness, previous, shadow_count, sticky

ROUTER_QUEUE_DEPTH = 4              #: output queue lines (the design's is `respond.PIPELINE_DEPTH` + 8)


class _RouterBench:
    """Output queue -> OutputRouter with a free line writer and free host `ready`s;
    `numbered`: line n carries tag n mod 2**TAG_BITS (and no data: only the order is checked)."""

    def __init__(self, h: Harness, m: Module, *, numbered: bool = False):
        self.queue = queue = SyncFIFOBuffered(width=output.RESPONSE.size, depth=ROUTER_QUEUE_DEPTH)
        self.router = router = output.OutputRouter()
        m.submodules.queue, m.submodules.router = queue, router
        wiring.connect(m, queue.r_stream, router.lines)
        self.write = h.free(1, "line_valid")
        line = output.RESPONSE(h.free(output.RESPONSE.size, "line"))
        m.d.comb += [queue.w_en.eq(self.write), queue.w_data.eq(line), Assume(~self.write | queue.w_rdy),
                     router.drs.ready.eq(h.free(1, "drs_ready")), router.ndr.ready.eq(h.free(1, "ndr_ready"))]
        self.drs, self.ndr = router.drs, router.ndr
        self.taken = (self.drs.valid & self.drs.ready) | (self.ndr.valid & self.ndr.ready)
        self.written = shadow_count(m, self.write, 0, "written", TAG_BITS)
        self.responses = shadow_count(m, self.taken, 0, "responses", TAG_BITS)
        self.held = shadow_count(m, self.write, self.taken, "held", 4)
        if numbered:
            m.d.comb += [Assume(~self.write | (line.tag == self.written)), Assume(line.data == 0)]


def router_stream_rules(h, m):
    """The host's DRS and NDR streams keep the stream rules: `valid` held and the payload
    stable until `ready`; one response offered at a time, only while a line is held."""
    b = _RouterBench(h, m)
    for name, port in (("drs", b.drs), ("ndr", b.ndr)):
        waiting = previous(m, port.valid & ~port.ready, f"{name}_waiting")
        before = previous(m, port.payload.as_value(), f"{name}_before")
        m.d.comb += Assert(~waiting | (port.valid & (port.payload.as_value() == before)))
    m.d.comb += [Assert(~(b.drs.valid & b.ndr.valid)), Assert(~(b.drs.valid | b.ndr.valid) | (b.held != 0))]


def router_order(h, m):
    """Every line written leaves exactly once, in order, with its tag (line n carries tag
    n mod 256): the response offered carries the number of responses taken so far."""
    b = _RouterBench(h, m, numbered=True)
    m.d.comb += [Assert(b.held <= ROUTER_QUEUE_DEPTH),
                 Assert(~b.drs.valid | (b.drs.payload.tag == b.responses)),
                 Assert(~b.ndr.valid | (b.ndr.payload.tag == b.responses))]


def router_cover(h, m):
    """The queue full; a DRS held waiting for the host, then taken; an NDR taken right
    after a DRS; empty again after having been full."""
    b = _RouterBench(h, m)
    was_full = sticky(m, b.held == ROUTER_QUEUE_DEPTH, "was_full")
    drs_waited = previous(m, b.drs.valid & ~b.drs.ready, "drs_waited")
    drs_taken = previous(m, b.drs.valid & b.drs.ready, "drs_taken")
    m.d.comb += [Cover(b.held == ROUTER_QUEUE_DEPTH), Cover(drs_waited & b.drs.ready),
                 Cover(drs_taken & b.ndr.valid & b.ndr.ready), Cover(was_full & (b.held == 0))]
