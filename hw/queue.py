"""Queue heads in registers: a deep queue in block RAM, a stream's head in two registers, and
a queue with such a head that an entry skips while it is empty."""

from amaranth import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import FIFOInterface, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .counter import held_below
from .layouts import pack


class BlockRamQueue(wiring.Component):
    """First in, first out, with the ports of `amaranth.lib.fifo.SyncFIFOBuffered` (no `level`):
    `depth` entries in block RAM feed a `HEAD_DEPTH`-entry queue of registers, so that the
    block RAM's slow read (clock to output ~6 ns on an ECP5) drives only that queue's
    storage and the reader's logic starts at a flip-flop.  With 2 head entries the head
    would refill only every other cycle; with 4 it takes one entry per cycle.  `w_rdy` is a
    register too (the block RAM part then holds `depth - 1` entries).  `w_stream` / `r_stream`:
    the ports as streams, as `amaranth.lib.fifo`'s queues have them."""

    HEAD_DEPTH = 4
    w_stream = FIFOInterface.w_stream
    r_stream = FIFOInterface.r_stream

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
        used = Signal(range(self.depth + 1))    # entries in `body`, as its `level`
        write, move = self.w_en & self.w_rdy, body.r_rdy & body.r_en
        m.d.sync += used.eq(used + write - move)
        m.d.comb += [
            self.w_rdy.eq(held_below(m, used, self.depth - 1, write, move, name="room")),
            body.w_en.eq(write), body.w_data.eq(self.w_data),
            head.w_en.eq(body.r_rdy), head.w_data.eq(body.r_data), body.r_en.eq(head.w_rdy),
            self.r_rdy.eq(head.r_rdy), self.r_data.eq(head.r_data), head.r_en.eq(self.r_en),
        ]
        return m


class HeadPair(wiring.Component):
    """A stream's head in two registers used in turn: `input.ready` and the loads depend on
    registers only, and the consumer's `ready` (`output.ready`) moves a one-bit pointer, so
    a wide payload's enables never wait on the consumer's decision.  One transfer per cycle.

    `output.valid` and the `early` payload fields (names of a struct layout's fields) come
    from registers of their own, loaded with the next head's values, so that a consumer
    whose decision reads only those starts it at flip-flops, not at the pointer's multiplexer."""

    def __init__(self, shape, *, early=()):
        self.early = tuple(early)
        super().__init__({"input": In(stream.Signature(shape)), "output": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        layout = self.input.payload.shape()
        held = [Signal(layout, name=f"held{n}") for n in range(2)]
        full = [Signal(name=f"full{n}") for n in range(2)]
        head, tail = Signal(), Signal()          # the slot read next, the slot loaded next
        m.d.comb += self.input.ready.eq(~full[0] | ~full[1])
        load = self.input.valid & self.input.ready
        take = self.output.valid & self.output.ready
        loads = [load & (tail == n) for n in range(2)]
        for n in range(2):
            with m.If(loads[n]):
                m.d.sync += [held[n].eq(self.input.payload), full[n].eq(1)]
            with m.Elif(take & (head == n)):
                m.d.sync += full[n].eq(0)
        with m.If(load):
            m.d.sync += tail.eq(~tail)
        with m.If(take):
            m.d.sync += head.eq(~head)

        # the front: `output.valid` and the early fields of the slot read next cycle
        fronts = {name: Signal(layout.members[name], name=f"front_{name}") for name in self.early}
        after = [Cat(full[n] | loads[n], *(Mux(loads[n], getattr(self.input.payload, name), getattr(held[n], name))
                                           for name in fronts)) for n in range(2)]
        with m.If(take):             # (`If`, so that a simulator's unknown `ready` keeps the state)
            m.d.sync += Cat(self.output.valid, *fronts.values()).eq(Mux(head, after[0], after[1]))
        with m.Else():
            m.d.sync += Cat(self.output.valid, *fronts.values()).eq(Mux(head, after[1], after[0]))

        whole = Mux(head, held[1], held[0])
        if fronts:
            chosen = data.View(layout, whole)
            whole = pack(layout, **{name: fronts.get(name, getattr(chosen, name)) for name, _ in layout})
        m.d.comb += self.output.payload.eq(whole)
        return m


class BypassQueue(wiring.Component):
    """A `HeadPair` behind a `depth`-entry FIFO that an entry skips while the FIFO is
    empty: an entry reaches the output one cycle after it is offered (the pair's register)
    instead of three.  `level`: the entries in the FIFO (not in the pair), for credit flow.
    `early`: the pair's early fields."""

    def __init__(self, shape, *, depth: int, early=()):
        self.depth, self.early = depth, tuple(early)
        super().__init__({"input": In(stream.Signature(shape)), "output": Out(stream.Signature(shape)),
                          "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        layout = self.input.payload.shape()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=Shape.cast(layout).width, depth=self.depth)
        m.submodules.head = head = HeadPair(layout, early=self.early)
        # (the FIFO's level is a register: empty means nothing in it, its output buffer included)
        skip = (fifo.level == 0) & head.input.ready
        m.d.comb += [
            self.level.eq(fifo.level),
            fifo.w_en.eq(self.input.valid & ~skip), fifo.w_data.eq(self.input.payload),
            self.input.ready.eq(skip | fifo.w_rdy),
            head.input.valid.eq(fifo.r_rdy | (self.input.valid & skip)),
            head.input.payload.eq(Mux(fifo.r_rdy, fifo.r_data, self.input.payload)),
            fifo.r_en.eq(head.input.ready),
        ]
        wiring.connect(m, wiring.flipped(self.output), head.output)
        return m
