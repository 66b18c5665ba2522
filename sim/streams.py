"""Stream helpers for Amaranth testbenches (`amaranth.sim`, async): offer payloads on a
design's input stream and take them from its output stream, with random gaps on either
side, counting cycles so that latency and rate can be checked.  Streams that are always
ready (`stream.Signature(..., always_ready=True)`) are never waited on."""

from __future__ import annotations

import random

from amaranth import ClockDomain, Module
from amaranth.sim import Simulator


def simulate(dut, *benches, period: float = 1e-6) -> None:
    """Run the async testbenches `benches` (each `async def bench(ctx)`) together on `dut`
    until all have returned; its `sync` domain is made here, so that a combinational
    design can be stepped by `ctx.tick()` too."""
    m = Module()
    m.domains.sync = ClockDomain()
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(period)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


def _chance(rng: random.Random | None, p: float) -> bool:
    return rng is None or p >= 1 or rng.random() < p


async def put(ctx, stream, payloads, *, rng: random.Random | None = None, p_valid: float = 1.0) -> list[int]:
    """Offer each payload of `payloads` on `stream` (an input of the design) in turn, in a
    cycle with probability `p_valid`, until it is taken; returns the cycle (ticks since the
    call) each was taken in."""
    taken, cycle = [], 0
    for payload in payloads:
        while not _chance(rng, p_valid):
            await ctx.tick()
            cycle += 1
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        while True:
            _, _, ready = await ctx.tick().sample(stream.ready)
            cycle += 1
            if ready:
                break
        taken.append(cycle - 1)
        ctx.set(stream.valid, 0)
    return taken


async def get(ctx, stream, count: int, *, rng: random.Random | None = None, p_ready: float = 1.0,
              timeout: int = 10_000) -> list[tuple[int, object]]:
    """The next `count` payloads taken from `stream` (an output of the design), ready in a
    cycle with probability `p_ready`, each with the cycle (ticks since the call) it was taken
    in; fails after `timeout` cycles without one."""
    always_ready = stream.signature.always_ready
    taken, cycle, idle = [], 0, 0
    while len(taken) < count:
        ready = always_ready or _chance(rng, p_ready)
        if not always_ready:
            ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid and ready:
            taken.append((cycle, payload))
            idle = 0
        else:
            idle += 1
            assert idle < timeout, f"no transfer on the stream for {timeout} cycles ({len(taken)}/{count} taken)"
        cycle += 1
    if not always_ready:
        ctx.set(stream.ready, 0)
    return taken
