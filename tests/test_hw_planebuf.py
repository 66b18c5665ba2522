"""PlaneBuffer (skewed banks) in the Amaranth simulator against a plain array of plane lines."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartquant.hw.planebuf import CHUNK_BITS, PlaneBuffer
from smartquant.spec import PLANES

SLOTS = 4


@pytest.mark.parametrize("width", [64, 128, 512])
def test_rows_and_columns_read_back_what_was_written(width):
    """Random beats fill every slot; every row (a plane line) and every column (chunk c of
    the 8 lines) reads back as the reference holds it."""
    rng = np.random.default_rng(width)
    per_beat = width // CHUNK_BITS
    dut = PlaneBuffer(slots=SLOTS, width=width)
    reference = np.zeros((SLOTS, PLANES, PLANES), dtype=object)      # slot, line, chunk
    mismatches, reads = [], 0

    async def bench(ctx):
        nonlocal reads
        beats = [(s, line, c) for s in range(SLOTS) for line in range(PLANES) for c in range(0, PLANES, per_beat)]
        for slot, line, chunk in beats:              # fill everything once
            value = sum(int(rng.integers(0, 1 << 32)) << (32 * i) for i in range(width // 32))
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_slot, slot)
            ctx.set(dut.w_line, line)
            ctx.set(dut.w_chunk, chunk)
            ctx.set(dut.w_data, value)
            for i in range(per_beat):
                reference[slot, line, chunk + i] = (value >> (CHUNK_BITS * i)) & ((1 << CHUNK_BITS) - 1)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        for _ in range(200):
            slot, column, index = int(rng.integers(0, SLOTS)), int(rng.integers(0, 2)), int(rng.integers(0, PLANES))
            ctx.set(dut.r_slot, slot)
            ctx.set(dut.r_column, column)
            ctx.set(dut.r_index, index)
            await ctx.tick().repeat(PlaneBuffer.READ_LATENCY)
            got = [int(v) for v in ctx.get(dut.r_data)]
            want = list(reference[slot, :, index] if column else reference[slot, index, :])
            reads += 1
            if got != want:
                mismatches.append((slot, column, index))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert reads == 200
    assert mismatches == []
