"""Queue heads in registers: a deep queue in block RAM, and a stream's head in two registers."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out


class BlockRamQueue(wiring.Component):
    """First in, first out, with the ports of `amaranth.lib.fifo.SyncFIFOBuffered` (no `level`):
    `depth` entries in block RAM feed a `HEAD_DEPTH`-entry queue of registers, so that the
    block RAM's slow read (clock to output ~6 ns on an ECP5) drives only that queue's
    storage and the reader's logic starts at a flip-flop.  With 2 head entries the head
    would refill only every other cycle; with 4 it takes one entry per cycle."""

    HEAD_DEPTH = 4

    def __init__(self, *, width: int, depth: int):
        self.width, self.depth = width, depth
        super().__init__({
            "w_en": In(1), "w_data": In(width), "w_rdy": Out(1),
            "r_en": In(1), "r_data": Out(width), "r_rdy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.body = body = SyncFIFOBuffered(width=self.width, depth=self.depth)
        m.submodules.head = head = SyncFIFOBuffered(width=self.width, depth=self.HEAD_DEPTH)
        m.d.comb += [
            body.w_en.eq(self.w_en), body.w_data.eq(self.w_data), self.w_rdy.eq(body.w_rdy),
            head.w_en.eq(body.r_rdy), head.w_data.eq(body.r_data), body.r_en.eq(head.w_rdy),
            self.r_rdy.eq(head.r_rdy), self.r_data.eq(head.r_data), head.r_en.eq(self.r_en),
        ]
        return m


class HeadPair(wiring.Component):
    """A stream's head in two registers used in turn: `input.ready` and the loads depend on
    registers only, and the consumer's `ready` (`output.ready`) moves a one-bit pointer, so
    a wide payload's enables never wait on the consumer's decision.  One transfer per cycle."""

    def __init__(self, shape):
        super().__init__({"input": In(stream.Signature(shape)), "output": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        shape = self.input.payload.shape()
        held = [Signal(shape, name=f"held{n}") for n in range(2)]
        full = [Signal(name=f"full{n}") for n in range(2)]
        head, tail = Signal(), Signal()          # the slot read next, the slot loaded next
        m.d.comb += [self.input.ready.eq(~full[0] | ~full[1]),
                     self.output.valid.eq(Mux(head, full[1], full[0])),
                     self.output.payload.eq(Mux(head, held[1], held[0]))]
        load = self.input.valid & self.input.ready
        take = self.output.valid & self.output.ready
        for n in range(2):
            with m.If(load & (tail == n)):
                m.d.sync += [held[n].eq(self.input.payload), full[n].eq(1)]
            with m.Elif(take & (head == n)):
                m.d.sync += full[n].eq(0)
        with m.If(load):
            m.d.sync += tail.eq(~tail)
        with m.If(take):
            m.d.sync += head.eq(~head)
        return m
