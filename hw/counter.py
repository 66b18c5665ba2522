"""A counter's comparison held in a register, so that the logic moving the counter
meets no adder or compare on its way to the flag."""

from amaranth import Module, Signal


def held_below(m: Module, count: Signal, limit: int, up, down, *, name: str) -> Signal:
    """A register equal to `count < limit`, where `count` (a register the caller keeps)
    rises by at least one when `up` and falls by one when `down`.  The next value is picked
    by `up` and `down` among comparisons of the count held.  Exact when `count` moves by at
    most one a cycle; with `limit = 1` (a zero flag) `up` may raise it by more, as long as
    `down` never comes while `count` is zero."""
    flag = Signal(init=count.init < limit, name=name)
    with m.If(up & ~down):
        m.d.sync += flag.eq(count < limit - 1)
    with m.Elif(down & ~up):
        m.d.sync += flag.eq(count < limit + 1)
    return flag
