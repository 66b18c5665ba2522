"""Queue heads (hw.queue) in the Amaranth simulator against Python references."""

from collections import deque

import numpy as np
import pytest
from amaranth import Value
from amaranth.lib import data
from amaranth.sim import Simulator

from smartquant.hw.queue import BlockRamQueue, BypassQueue, HeadPair

DEPTH = 8


@pytest.mark.parametrize("write_rate,read_rate", [(1.0, 1.0), (0.9, 0.4), (0.4, 0.9)])
def test_entries_leave_in_order_and_nothing_is_lost(write_rate, read_rate):
    """Random writes and reads: every read returns the oldest entry the reference holds,
    `w_rdy` refuses only when full, and a full-rate stream moves one entry per cycle."""
    rng = np.random.default_rng(int(write_rate * 10 + read_rate))
    dut = BlockRamQueue(width=16, depth=DEPTH)
    reference, taken, written = deque(), [], []

    async def bench(ctx):
        value = 0
        for _ in range(400):
            write, read = rng.random() < write_rate, rng.random() < read_rate
            ctx.set(dut.w_en, write)
            ctx.set(dut.w_data, value)
            ctx.set(dut.r_en, read)
            if write and ctx.get(dut.w_rdy):
                reference.append(value)
                written.append(value)
                value += 1
            if read and ctx.get(dut.r_rdy):
                taken.append(ctx.get(dut.r_data))
                assert taken[-1] == reference.popleft()
            assert ctx.get(dut.w_rdy) or len(reference) >= DEPTH
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert taken == written[:len(taken)] and len(taken) > 100
    if write_rate == read_rate == 1.0:            # one entry per cycle once the head has filled
        assert len(taken) >= 400 - 2 * (BlockRamQueue.HEAD_DEPTH + 2)


#: a payload with a field the consumer reads early (from HeadPair's own registers)
PAIR_LAYOUT = data.StructLayout({"low": 5, "kind": 3, "high": 8})


@pytest.mark.parametrize("shape,early", [(16, ()), (PAIR_LAYOUT, ("kind",)), (PAIR_LAYOUT, ("low", "high"))])
@pytest.mark.parametrize("valid_rate,ready_rate", [(1.0, 1.0), (0.7, 0.5), (0.5, 0.9)])
def test_head_pair_passes_a_stream_in_order_at_one_per_cycle(shape, early, valid_rate, ready_rate):
    """Random valid and ready: the output stream is the input stream, in order, with its
    early fields (registered apart) matching the rest; with both always high one transfer
    per cycle."""
    rng = np.random.default_rng(int(valid_rate * 10 + ready_rate))
    dut = HeadPair(shape, early=early)
    payload_in, payload_out = Value.cast(dut.input.payload), Value.cast(dut.output.payload)
    sent, received = [], []

    async def bench(ctx):
        for _ in range(400):
            value = int(rng.integers(1 << 16))
            ctx.set(dut.input.valid, rng.random() < valid_rate)
            ctx.set(payload_in, value)
            ctx.set(dut.output.ready, rng.random() < ready_rate)
            if ctx.get(dut.input.valid) and ctx.get(dut.input.ready):
                sent.append(value)
            if ctx.get(dut.output.valid) and ctx.get(dut.output.ready):
                received.append(ctx.get(payload_out))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert received == sent[:len(received)] and len(sent) - len(received) <= 2 and len(received) > 100
    if valid_rate == ready_rate == 1.0:
        assert len(received) >= 398


@pytest.mark.parametrize("valid_rate,ready_rate", [(1.0, 1.0), (0.9, 0.4), (0.5, 0.9)])
def test_bypass_queue_keeps_order_and_an_empty_one_answers_the_next_cycle(valid_rate, ready_rate):
    """Random valid and ready (the producer offers only while `input.ready`): the output is
    the input in order, nothing lost, `level` never past the depth; then, drained, an entry
    offered is at the output the next cycle (it skips the FIFO), with its early field."""
    rng = np.random.default_rng(int(valid_rate * 10 + ready_rate))
    dut = BypassQueue(PAIR_LAYOUT, depth=DEPTH, early=("kind",))
    payload_in, payload_out = Value.cast(dut.input.payload), Value.cast(dut.output.payload)
    sent, received = [], []

    async def bench(ctx):
        for cycle in range(500):
            offer = cycle < 400 and rng.random() < valid_rate
            value = int(rng.integers(1 << 16))
            ctx.set(dut.input.valid, offer)
            ctx.set(payload_in, value)
            ctx.set(dut.output.ready, rng.random() < ready_rate or cycle >= 400)
            if offer and ctx.get(dut.input.ready):
                sent.append(value)
            if ctx.get(dut.output.valid) and ctx.get(dut.output.ready):
                received.append(ctx.get(payload_out))
            assert ctx.get(dut.level) <= DEPTH
            await ctx.tick()
        assert not ctx.get(dut.output.valid)
        ctx.set(dut.output.ready, 0)
        ctx.set(dut.input.valid, 1)
        ctx.set(payload_in, 0xBEEF)
        await ctx.tick()
        ctx.set(dut.input.valid, 0)
        assert ctx.get(dut.output.valid) and ctx.get(payload_out) == 0xBEEF
        assert ctx.get(dut.output.payload.kind) == (0xBEEF >> 5) & 7      # (kind: bits 5..7)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert received == sent and len(received) > 150
    if valid_rate == ready_rate == 1.0:
        assert len(received) == 400
