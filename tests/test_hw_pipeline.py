"""Pipeline helpers (hw.pipeline) in the Amaranth simulator against a Python history."""

import gc

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartquant.hw.pipeline import DelayLine


@pytest.mark.parametrize("cycles", [2, 11, 16])
def test_delay_line_gives_the_input_of_cycles_edges_before(cycles):
    rng = np.random.default_rng(cycles)
    dut = DelayLine(40, cycles)
    history = []

    async def bench(ctx):
        for t in range(100):
            history.append(int(rng.integers(0, 1 << 40)))
            ctx.set(dut.input, history[-1])
            await ctx.tick()
            if t >= cycles - 1:        # the value set `cycles` edges ago
                assert ctx.get(dut.output) == history[t + 1 - cycles], t

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.filterwarnings("ignore:.*created but never used")
@pytest.mark.parametrize("cycles", [1, 17])
def test_delay_line_refuses_delays_it_cannot_hold(cycles):
    with pytest.raises(ValueError, match="outside 2..16"):
        DelayLine(8, cycles)
    gc.collect()        # the half-built component warns now, under this test's filter
