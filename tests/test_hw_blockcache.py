"""The block cache in the Amaranth simulator: its lookup (hw/blocktags.py) against the
software model `sw.image.dram_errors.SlotModel` on random command sequences, and its slot
references (hw/blockcache.py) against a count per slot."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw_bench import lookup_reference
from smartquant.hw.blockcache import BlockCache
from smartquant.hw.blocktags import BlockTags
from smartquant.hw.layouts import Kind
from smartquant.sw.image.dram_errors import SlotModel

KINDS = [Kind.PACKED, Kind.INT8, Kind.FP16, Kind.BF16, Kind.FP16, Kind.RAW_RD, Kind.RAW_WR, Kind.ERROR]


INVALIDATE = "invalidate"       #: a pulse on `invalidate` (CSR_CACHE_INVALIDATE) with nothing in flight


def random_commands(rng, n: int, blocks: int = 6, meta_lines: int = 5) -> list:
    """Commands over a few blocks and metadata lines: reads at every k, raw reads and writes
    into those blocks' lines, table-lookup reads of two table sets, bad requests; now and
    then the cache invalidated."""
    commands = []
    for _ in range(n):
        if rng.random() < 0.02:
            commands.append(INVALIDATE)
            continue
        kind = KINDS[int(rng.integers(0, len(KINDS)))]
        block = int(rng.integers(0, blocks))
        cmd = {"kind": kind, "k": int(rng.integers(1, 9)), "plane_line": block * 8,
               "meta_line": int(rng.integers(0, meta_lines)), "lut": 0, "codebook": 0}
        if kind in (Kind.RAW_RD, Kind.RAW_WR):
            cmd["plane_line"] = block * 8 + int(rng.integers(0, 8))
        if kind in (Kind.FP16, Kind.BF16) and rng.random() < 0.3:
            cmd.update(lut=1, codebook=int(rng.integers(1, 3)))
        commands.append(cmd)
    return commands


def run_tags(commands, rng, *, plane_slots: int, meta_slots: int, p_valid: float = 0.75) -> list[dict]:
    """Feed `commands` to BlockTags (a command in some cycles, random gaps); its outputs in order."""
    dut = BlockTags(plane_slots=plane_slots, meta_slots=meta_slots)
    got = []

    async def bench(ctx):
        pending = list(commands)
        in_flight = 0
        while pending or in_flight:
            invalidate = bool(pending) and pending[0] == INVALIDATE and in_flight == 0
            if invalidate:
                pending.pop(0)
            ctx.set(dut.invalidate, int(invalidate))
            offer = bool(pending) and pending[0] != INVALIDATE and rng.random() < p_valid
            ctx.set(dut.input.valid, int(offer))
            if offer:
                for name, value in pending.pop(0).items():
                    ctx.set(getattr(dut.input.cmd, name), value)
            _, _, valid, out, events = await ctx.tick().sample(dut.output.valid, dut.output.cmd, dut.events)
            if valid:
                got.append({name: int(getattr(out, name)) for name in
                            ("fetch_plane", "fetch_meta", "fetch_table", "plane_slot", "meta_slot")}
                           | {"events": {n: int(events[n]) for n in events.shape().members}})
            in_flight += offer - valid

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("plane_slots,meta_slots,p_valid,seed", [(4, 3, 0.75, 0), (5, 2, 1.0, 1), (16, 4, 0.5, 2)])
def test_lookup_against_model(plane_slots, meta_slots, p_valid, seed):
    """Every decision (misses, table loads, slots hit or filled) and the lookup counters'
    events as the model's, back to back (the forwarded compare) and with gaps."""
    rng = np.random.default_rng(seed)
    commands = random_commands(rng, 400)
    got = run_tags(commands, rng, plane_slots=plane_slots, meta_slots=meta_slots, p_valid=p_valid)
    model = SlotModel(plane_slots, meta_slots)
    plane_hits = meta_hits = tables = 0
    outputs = iter(got)
    for i, cmd in enumerate(commands):
        if cmd == INVALIDATE:
            model.invalidate()
            continue
        out = next(outputs)
        want = lookup_reference(model, cmd["kind"], cmd["k"], cmd["plane_line"], cmd["meta_line"],
                                cmd["codebook"] if cmd["lut"] else None)
        assert {name: out[name] for name in want} == want, (i, cmd)
        quantized = cmd["kind"] in (Kind.PACKED, Kind.INT8, Kind.FP16, Kind.BF16)
        fp = cmd["kind"] in (Kind.FP16, Kind.BF16)
        assert out["events"] == {"plane_lookup": int(quantized), "plane_miss": int(quantized) & want["fetch_plane"],
                                 "meta_lookup": int(fp), "meta_miss": want["fetch_meta"]}, (i, cmd)
        plane_hits += quantized and not want["fetch_plane"]
        meta_hits += fp and not want["fetch_meta"]
        tables += want["fetch_table"]
    assert next(outputs, None) is None
    assert plane_hits > 20 and meta_hits > 20 and tables > 5 and INVALIDATE in commands


def run_references(rng, cycles: int, *, slots: int = 4):
    """BlockCache's plane slots under random acquires, releases and allocations that a legal
    issue stage / response stage could make; per cycle (pointer, free, count at the pointer)."""
    dut = BlockCache(plane_slots=slots, meta_slots=2, data_width=512, max_references=15)
    seen = []

    async def bench(ctx):
        counts = [0] * slots
        for _ in range(cycles):
            pointer, free = ctx.get(dut.plane_next), ctx.get(dut.plane_free)
            seen.append((pointer, free, counts[pointer]))
            # allocate the pointer's slot only when free (as the issue stage does), acquiring it
            alloc = free and rng.random() < 0.3
            slot = pointer if alloc else int(rng.integers(0, slots))
            acquire = alloc or (rng.random() < 0.4 and counts[slot] < 15)
            held = [s for s in range(slots) if counts[s] - (acquire and s == slot) > 0]
            release = bool(held) and rng.random() < 0.4
            released = held[int(rng.integers(0, len(held)))] if release else 0
            ctx.set(dut.plane_alloc, int(alloc))
            ctx.set(dut.acquire_valid, int(acquire))
            ctx.set(dut.acquire, {"plane": 1, "plane_slot": slot, "meta": 0, "meta_slot": 0})
            ctx.set(dut.use.release_valid, int(release))
            ctx.set(dut.use.release, {"plane": 1, "plane_slot": released, "meta": 0, "meta_slot": 0})
            await ctx.tick()
            counts[slot] += acquire
            counts[released] -= release

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_references_free_only_unreferenced_slots():
    """`plane_free` never says free while a job refers to the slot at the pointer, and says
    free again once the references are gone (at most a cycle late)."""
    seen = run_references(np.random.default_rng(3), 3000)
    assert all(count == 0 for _, free, count in seen if free)
    late = [i for i in range(1, len(seen)) if seen[i][2] == 0 and seen[i - 1][2] == 0
            and seen[i][0] == seen[i - 1][0] and not seen[i][1]]
    assert not late
    assert sum(free for _, free, _ in seen) > 100 and sum(not free for _, free, _ in seen) > 100
