"""counter.held_below in the Amaranth simulator against the count's own comparison."""

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from smartquant.hw.counter import held_below


@pytest.mark.parametrize("limit,init,max_up", [(1, 0, 2), (4, 1, 1), (7, 0, 1)])
def test_flag_equals_the_count_compared_with_the_limit(limit, init, max_up):
    """Random ups (by up to `max_up`) and downs, a down only while the count is above zero:
    every cycle the flag equals `count < limit`, and both values occur."""
    rng = np.random.default_rng(limit)
    m = Module()
    step, down = Signal(range(max_up + 1)), Signal()
    count = Signal(8, init=init)
    m.d.sync += count.eq(count + step - down)
    flag = held_below(m, count, limit, step != 0, down, name="below")
    seen = set()

    async def bench(ctx):
        for _ in range(500):
            value = ctx.get(count)
            assert ctx.get(flag) == (value < limit), value
            seen.add(ctx.get(flag))
            rising = value < 2 * limit or rng.random() < 0.4
            ctx.set(step, int(rng.integers(1, max_up + 1)) if rng.random() < (0.6 if rising else 0.3) else 0)
            ctx.set(down, value > 0 and rng.random() < 0.5)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {0, 1}
