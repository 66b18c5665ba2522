"""The block cache's slots: everything about fetched blocks after the lookup decided which
slot serves each request (blocktags.py, in the decoder's last stages).

- Storage: the plane buffer (`PlaneBuffer`, a slot holds a block's top k plane lines, or
  a raw line, or codebook lines) and the metadata memory (a slot holds one line).  Read
  beats arrive from the DRAM port (`beat`, always taken) and are written straight in.
- Allocation: slots are filled in round-robin order, the order of the lookup's misses
  (`plane_alloc` / `meta_alloc`: a burst into slot `plane_next` / `meta_next` was issued).
  The slot at the pointer may be filled again only when no job in flight refers to it:
  each slot counts its references (`acquire`: a job issued with its slots, counted a cycle
  later from a register, so the issue decision reaches no slot's counter; `release`: the
  response stage started the job's last step a cycle ago, so it reads the slot no more), and
  `plane_free` / `meta_free` is a register: the next slot's count is zero and no acquire
  awaits its count or comes this cycle (the pointer and the slot after it are registers).
- Fill and failure: bursts complete in issue order, so completion is a count per kind; a
  job that allocated a slot has its data once more bursts have completed than the
  allocating jobs the response stage started before it (`started`, `plane_landed` /
  `meta_landed`, registers).  A slot's failed flag is set with its burst's last beat if
  any beat had SLVERR or DECERR and cleared when the slot is allocated again.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import LINE_BITS, PLANES
from .counter import held_below
from .planebuf import CHUNK_BITS, PlaneBuffer

#: width of the completed-burst counts: more than any number of slots (<= 256) apart
FILL_COUNT_BITS = 9
#: a job's references: its plane slot and metadata slot, each if it holds one
REFERENCES = data.StructLayout({"plane": 1, "plane_slot": 8, "meta": 1, "meta_slot": 8})
#: one kind's event per slot kind
PER_KIND = data.StructLayout({"plane": 1, "meta": 1})

#: the response stage's use of the slots, as it drives them: an allocating job started
#: (its data are awaited no more), a job's last step started (it refers to its slots no
#: more; a register, set the cycle after); and whether the oldest allocating job's data
#: have landed (registers)
SLOT_USE = wiring.Signature({
    "started": Out(PER_KIND), "release": Out(REFERENCES), "release_valid": Out(1),
    "plane_landed": In(1), "meta_landed": In(1),
})


def read_signature(plane_slots: int, meta_slots: int) -> wiring.Signature:
    """The slots' read side, as the response stage drives it: a plane slot's row (one plane
    line) or column (one 64-bit chunk of every plane line), its data
    `PlaneBuffer.READ_LATENCY` cycles later; a metadata slot's line, a cycle later; and every
    slot's failed flag (an error beat in the burst that filled it)."""
    return wiring.Signature({
        "plane_slot": Out(range(plane_slots)), "plane_column": Out(1), "plane_index": Out(3),
        "plane_data": In(data.ArrayLayout(CHUNK_BITS, PLANES)), "plane_failed": In(plane_slots),
        "meta_slot": Out(range(meta_slots)), "meta_data": In(LINE_BITS), "meta_failed": In(meta_slots),
    })


def beat_layout(data_width: int) -> data.StructLayout:
    """A read data beat as the DRAM port hands it over: its burst's slot, the beat's number
    within the burst, the data, SLVERR / DECERR, the burst's last beat."""
    return data.StructLayout({"meta": 1, "slot": 8, "beat": range(PLANES * LINE_BITS // data_width),
                              "data": data_width, "failed": 1, "last": 1})


def _next(pointer, slots: int):
    return Mux(pointer == slots - 1, 0, pointer + 1)


class BlockCache(wiring.Component):
    """`plane_slots` / `meta_slots` slots, `data_width` bits a beat, `max_references`: jobs
    in flight at most (between the issue stage and the response stage's last step)."""

    def __init__(self, *, plane_slots: int, meta_slots: int, data_width: int, max_references: int):
        if plane_slots < 2 or meta_slots < 2:
            raise ValueError("at least 2 plane slots and 2 metadata slots")
        self.plane_slots, self.meta_slots, self.data_width = plane_slots, meta_slots, data_width
        self.max_references = max_references
        super().__init__({
            "beat": In(stream.Signature(beat_layout(data_width))),
            "plane_alloc": In(1), "meta_alloc": In(1),
            "plane_next": Out(range(plane_slots)), "meta_next": Out(range(meta_slots)),
            "plane_free": Out(1, init=1), "meta_free": Out(1, init=1),
            "acquire": In(REFERENCES), "acquire_valid": In(1),
            "use": In(SLOT_USE),
            "read": In(read_signature(plane_slots, meta_slots)),
        })

    def elaborate(self, platform):
        m = Module()
        width = self.data_width
        bpl = LINE_BITS // width

        # --- storage and its read ports ---
        m.submodules.planes = planes = PlaneBuffer(slots=self.plane_slots, width=width)
        m.submodules.meta_mem = meta_mem = Memory(shape=LINE_BITS, depth=self.meta_slots, init=[])
        meta_wr = meta_mem.write_port(granularity=width)
        meta_rd = meta_mem.read_port()
        read = self.read
        m.d.comb += [planes.r_slot.eq(read.plane_slot), planes.r_column.eq(read.plane_column),
                     planes.r_index.eq(read.plane_index), read.plane_data.eq(planes.r_data),
                     meta_rd.addr.eq(read.meta_slot), read.meta_data.eq(meta_rd.data)]

        # --- beats in ---
        beat = self.beat.payload
        take = self.beat.valid
        m.d.comb += [
            self.beat.ready.eq(1),
            planes.w_en.eq(take & ~beat.meta), planes.w_slot.eq(beat.slot),
            planes.w_line.eq(beat.beat // bpl), planes.w_chunk.eq((beat.beat % bpl) * (width // CHUNK_BITS)),
            planes.w_data.eq(beat.data),
            meta_wr.addr.eq(beat.slot), meta_wr.data.eq(beat.data.replicate(bpl)),
            meta_wr.en.eq((take & beat.meta) << beat.beat),
        ]
        failed = Signal()                   # an error beat earlier in this burst
        burst_failed = failed | beat.failed
        with m.If(take):
            m.d.sync += failed.eq(burst_failed & ~beat.last)

        for kind, slots, is_meta in (("plane", self.plane_slots, 0), ("meta", self.meta_slots, 1)):
            alloc, pointer, free = (getattr(self, f"{kind}_{name}") for name in ("alloc", "next", "free"))
            # fill count and failed flags
            fills = Signal(FILL_COUNT_BITS, name=f"{kind}_fills")
            burst_end = take & beat.last & (beat.meta == is_meta)
            flags = getattr(read, f"{kind}_failed")
            with m.If(burst_end):
                m.d.sync += fills.eq(fills + 1)
            for s in range(slots):
                with m.If(alloc & (pointer == s)):
                    m.d.sync += flags[s].eq(0)
                with m.If(burst_end & (beat.slot == s)):
                    m.d.sync += flags[s].eq(burst_failed)
            m.d.comb += getattr(self.use, f"{kind}_landed").eq(
                _landed(m, fills, burst_end, getattr(self.use.started, kind), kind))
            # references per slot, counted from registered acquires and releases, and the next
            # slot's freedom
            acquired = self.acquire_valid & getattr(self.acquire, kind)
            acquired_slot = getattr(self.acquire, f"{kind}_slot")
            uncounted = Signal(name=f"{kind}_acquired")          # last cycle's acquire, not yet counted
            uncounted_slot = Signal.like(acquired_slot, name=f"{kind}_acquired_slot")
            m.d.sync += [uncounted.eq(acquired), uncounted_slot.eq(acquired_slot)]
            released = self.use.release_valid & getattr(self.use.release, kind)
            idle = []
            for s in range(slots):
                up = uncounted & (uncounted_slot == s)
                down = released & (getattr(self.use.release, f"{kind}_slot") == s)
                count = Signal(range(self.max_references + 1), name=f"{kind}_refs{s}")
                m.d.sync += count.eq(count + up - down)
                idle.append(held_below(m, count, 1, up, down, name=f"{kind}_idle{s}"))
            idle_now = Cat(*idle)

            def stays_idle(slot):
                """`slot` has no reference counted, none awaiting its count and none acquired this
                cycle (the slot is picked among registers and compared with the acquire's slot
                and kind, which the issue stage picks from registers; only `acquire_valid`, the
                issue decision, comes late in the cycle)."""
                return (idle_now.bit_select(slot, 1) & ~(uncounted & (uncounted_slot == slot))
                        & ~(acquired & (acquired_slot == slot)))

            # (the slot after the pointer is a register too: no adder before the slot select)
            following = Signal(range(slots), init=1, name=f"{kind}_following")
            m.d.sync += free.eq(Mux(alloc, stays_idle(following), stays_idle(pointer)))
            with m.If(alloc):
                m.d.sync += [pointer.eq(following), following.eq(_next(following, slots))]
        return m


def _landed(m: Module, fills: Signal, fill: Signal, start: Signal, name: str) -> Signal:
    """A register: whether more bursts have completed (`fills`, counting this cycle's `fill`,
    a burst's last beat) than the allocating jobs started (counting this cycle's `start`).
    The comparisons are made from registers (each count and the count + 1) and `fill` and
    `start` only select one, so the response stage's decision meets no adder here, and
    starts the cycle after the last beat."""
    started = Signal(FILL_COUNT_BITS, name=f"{name}_started")
    started_plus_one = Signal(FILL_COUNT_BITS, init=1, name=f"{name}_started_plus_one")
    fills_plus_one = Signal(FILL_COUNT_BITS, init=1, name=f"{name}_fills_plus_one")
    landed = Signal(name=f"{name}_landed")
    with m.If(start):
        m.d.sync += [started.eq(started_plus_one), started_plus_one.eq(started_plus_one + 1)]
    with m.If(fill):
        m.d.sync += fills_plus_one.eq(fills_plus_one + 1)
    # (both counts one more: the same comparison as neither)
    m.d.sync += landed.eq(Mux(fill, Mux(start, fills != started, fills_plus_one != started),
                              Mux(start, fills != started_plus_one, fills != started)))
    return landed
