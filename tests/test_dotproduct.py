"""hw.dotproduct against the bit-true accumulator model, in the Amaranth simulator."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartquant.hw.dotproduct import DotProductUnit
from smartquant.sw.quantize.accumulator_model import accumulate_group


def run_unit(unit: DotProductUnit, weights, inputs, stall_every: int = 3):
    """Stream the beats (with a stalled output every few results); return the result tuples."""
    group = unit.tile * unit.tiles_per_group
    results = []

    async def source(ctx):
        for v, x in zip(weights, inputs):
            ctx.set(unit.beats.valid, 1)
            ctx.set(unit.beats.payload, {"weight": int(v), "act": int(x)})
            await ctx.tick().until(unit.beats.ready)
        ctx.set(unit.beats.valid, 0)

    async def sink(ctx):
        cycle = 0
        while len(results) < len(weights) // group:
            ready = cycle % stall_every != 0
            ctx.set(unit.result.ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(unit.result.valid):
                p = ctx.get(unit.result.payload)
                results.append((p.sum, bool(p.inner_overflow), bool(p.outer_overflow)))
            await ctx.tick()
            cycle += 1

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    return results


@pytest.mark.parametrize("p,n,signed_inputs,tile,tiles", [
    (12, 4, False, 4, 2), (10, 3, True, 8, 1), (16, 8, False, 4, 4), (9, 8, True, 2, 3)])
def test_matches_reference_model(p, n, signed_inputs, tile, tiles):
    rng = np.random.default_rng(p * 100 + n)
    unit = DotProductUnit(p, n, signed_inputs, tile=tile, tiles_per_group=tiles)
    groups = 6
    length = groups * tile * tiles
    magnitude = np.repeat([1, 255] * (groups // 2), tile * tiles)   # small and full-range groups
    weights = rng.integers(-magnitude, magnitude + 1)
    lo, hi = (-(1 << (n - 1)), 1 << (n - 1)) if signed_inputs else (0, 1 << n)
    inputs = rng.integers(lo, hi, length)
    got = run_unit(unit, weights, inputs)
    want = [accumulate_group(weights[i:i + tile * tiles], inputs[i:i + tile * tiles], p, tile,
                             unit.outer_bits) for i in range(0, length, tile * tiles)]
    assert got == want
    assert any(w[1] for w in want) and not all(w[1] for w in want), "data should mix overflow and none"


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_rejects_bad_parameters():
    with pytest.raises(ValueError):
        DotProductUnit(1, 8)
