"""Pipeline helper: a value delayed by a chain of registers."""

from amaranth import Module, Signal


def delayed(m: Module, value, cycles: int, name: str):
    """`value` after `cycles` registers of its shape (layouts stay views) named `name0`, `name1`, ..."""
    for n in range(cycles):
        later = Signal(value.shape(), name=f"{name}{n}")
        m.d.sync += later.eq(value)
        value = later
    return value
