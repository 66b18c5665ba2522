"""Plane buffer: the block buffers' plane lines in 8 skewed banks of 64-bit chunks.

A slot holds 8 plane lines of 512 bits.  The response stage reads either a *row* (one
plane line, for raw / packed lines and codebook entries) or a *column* (the same 64-bit
chunk c of all 8 plane lines, for int8 / fp16 / bf16 codes), 512 bits a cycle either way.
Chunk c of line p lives in bank (p + c) mod 8 at address slot * 8 + p, so a row and a
column each touch every bank once (the skewed layout of a transpose memory).  Compared
with one 4,096-bit-wide memory, an ECP5 needs ~1/4 of the block RAMs and the read data
is 512 bits instead of 4,096, so no wide bus crosses the chip.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import LINE_BITS, PLANES

CHUNK_BITS = LINE_BITS // PLANES            #: 64 bits: one bank's word


class PlaneBuffer(wiring.Component):
    """`slots` slots of `PLANES` plane lines.  Write: `w_data` (`width` bits, a power of two
    from 64 to 512) is chunks `w_chunk .. w_chunk + width/64 - 1` of line `w_line` of slot
    `w_slot` (`w_chunk` a multiple of width/64).  Read (`READ_LATENCY` cycles: the banks'
    read ports, then a register on each bank's output, so that a block RAM's slow
    clock-to-output drives only a flip-flop, then the rotation and a register after it):
    `r_column` 0: `r_data` chunk i = chunk i of line `r_index`; 1: `r_data` chunk i = chunk
    `r_index` of line i."""

    READ_LATENCY = 3

    def __init__(self, *, slots: int, width: int):
        if width not in (64, 128, 256, 512):
            raise ValueError(f"write width {width} not in 64, 128, 256, 512")
        self.slots, self.width = slots, width
        super().__init__({
            "w_en": In(1), "w_slot": In(range(slots)), "w_line": In(3), "w_chunk": In(3),
            "w_data": In(width),
            "r_slot": In(range(slots)), "r_column": In(1), "r_index": In(3),
            "r_data": Out(data.ArrayLayout(CHUNK_BITS, PLANES)),
        })

    def elaborate(self, platform):
        m = Module()
        per_beat = self.width // CHUNK_BITS
        rotate = [Signal(3, name=f"rotate{n}") for n in range(self.READ_LATENCY - 1)]   # bank of chunk / line 0
        m.d.sync += [rotate[0].eq(self.r_index), *(later.eq(earlier) for earlier, later in zip(rotate, rotate[1:]))]
        outputs = []
        for bank in range(PLANES):
            mem = Memory(shape=CHUNK_BITS, depth=self.slots * PLANES, init=[])
            m.submodules[f"bank{bank}"] = mem
            write, read = mem.write_port(), mem.read_port()
            chunk = Signal(3, name=f"chunk{bank}")          # the chunk of w_line this bank holds
            m.d.comb += [
                chunk.eq(bank - self.w_line),
                write.addr.eq(Cat(self.w_line, self.w_slot)),
                write.en.eq(self.w_en & ((chunk // per_beat) == (self.w_chunk // per_beat))),
                write.data.eq(self.w_data if per_beat == 1
                              else self.w_data.word_select(chunk % per_beat, CHUNK_BITS)),
            ]
            # row: line r_index in every bank; column: bank b holds chunk c of line b - c
            line = Signal(3, name=f"read_line{bank}")
            m.d.comb += [line.eq(Mux(self.r_column, bank - self.r_index, self.r_index)),
                         read.addr.eq(Cat(line, self.r_slot))]
            held = Signal(CHUNK_BITS, name=f"bank{bank}_data")
            m.d.sync += held.eq(read.data)
            outputs.append(held)
        # output i is bank (i + rotate) mod 8: chunk i of the row, or line i of the column
        for i in range(PLANES):
            m.d.sync += self.r_data[i].eq(Cat(*outputs).word_select((rotate[-1] + i)[:3], CHUNK_BITS))
        return m
