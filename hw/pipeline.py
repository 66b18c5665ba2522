"""Pipeline helpers: a value delayed by a chain of registers, or by a LUT-RAM delay line."""

from amaranth import Module, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


def delayed(m: Module, value, cycles: int, name: str):
    """`value` after `cycles` registers of its shape (layouts stay views) named `name0`, `name1`, ..."""
    for n in range(cycles):
        later = Signal(value.shape(), name=f"{name}{n}")
        m.d.sync += later.eq(value)
        value = later
    return value


class DelayLine(wiring.Component):
    """`output` is `input` `cycles` clock edges earlier (2..`DEPTH`), for wide data: a
    distributed RAM written every cycle and read `cycles - 1` entries behind its write
    pointer, then one register, instead of `cycles` rows of flip-flops.  The RAM is not
    reset: keep valid bits in registers (`delayed`)."""

    DEPTH = 16

    def __init__(self, shape, cycles: int):
        if not 2 <= cycles <= self.DEPTH:
            raise ValueError(f"delay of {cycles} cycles outside 2..{self.DEPTH}")
        self.cycles = cycles
        super().__init__({"input": In(shape), "output": Out(shape)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = Memory(shape=Shape.cast(self.input.shape()).width, depth=self.DEPTH, init=[])
        write, read = ram.write_port(), ram.read_port(domain="comb")
        pointer = Signal(range(self.DEPTH))         # wraps: DEPTH is a power of two
        m.d.sync += pointer.eq(pointer + 1)
        m.d.comb += [write.en.eq(1), write.addr.eq(pointer), write.data.eq(self.input),
                     read.addr.eq(pointer - (self.cycles - 1))]
        m.d.sync += self.output.eq(read.data)
        return m
