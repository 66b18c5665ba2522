"""The response stage's components, each against a Python reference, through the shared
stream helpers (sim/streams.py): sequencer, buffer read, dequantizer lanes, line packer,
output router.  The whole stage is covered bit-exactly by test_hw_top*.py."""

from __future__ import annotations

import random

import numpy as np
import pytest

from smartquant.hw.bufread import BufferRead
from smartquant.hw.gather import LineGather, line_meta
from smartquant.hw.lanes import AFFINE_LATENCY, LOOKUP_LATENCY, PASS_LATENCY, DequantLanes
from smartquant.hw.layouts import Kind
from smartquant.hw.output import LinePacker, OutputRouter
from smartquant.hw.sequencer import Sequencer
from smartquant.sim.streams import get, put, simulate
from smartquant.spec import CODEBOOK_ENTRIES, ScaleFormat
from smartquant.sw.codes import view_code

from test_hw_dequant import reference as affine_reference
from test_hw_lut import expected as lookup_reference

FP = (Kind.FP16, Kind.BF16)
VIEW_OF_KIND = {Kind.RAW_RD: 0, Kind.PACKED: 1, Kind.INT8: 2, Kind.FP16: 3, Kind.BF16: 4}


def random_job(rng: random.Random, tag: int, steps: int) -> dict:
    """A JOB payload (as a dict) of a random kind, with the last step its kind takes."""
    kind = rng.choice(list(Kind))
    k = rng.randint(1, 8)
    last_step = {Kind.FP16: steps - 1, Kind.BF16: steps - 1, Kind.LUT_LOAD: (1 << k) - 1}.get(kind, 0)
    reads_plane = kind not in (Kind.ERROR, Kind.RAW_WR)
    return dict(kind=kind, write=int(kind == Kind.RAW_WR), tag=tag, addr=rng.getrandbits(40), k=k,
                line=rng.randrange(16 if kind in FP else 8), lut=rng.randint(0, 1),
                scale_bf16=rng.randint(0, 1), scale_pow2=rng.randint(0, 1),
                log2_group=rng.randint(5, 8), first_group=rng.randrange(16),
                plane_slot=rng.randrange(6), plane_alloc=int(reads_plane and rng.random() < 0.5),
                meta_slot=rng.randrange(4), meta_alloc=int(kind in FP and rng.random() < 0.5), last_step=last_step)


def plane_read(job: dict, step: int, lanes: int) -> tuple[int, int]:
    """(column, index) of the plane buffer read of a job's step."""
    kind, steps = job["kind"], 32 // lanes
    if kind in FP:
        return 1, (job["line"] * steps + step) // (64 // lanes)
    if kind == Kind.INT8:
        return 1, job["line"] & 7
    if kind == Kind.LUT_LOAD:
        return 0, table_entry(job, step)[1] >> 5
    return 0, job["line"] & 7


def table_entry(job: dict, step: int) -> tuple[int, int]:
    """(table index, entry's place in the slot) a LUT_LOAD step loads."""
    index = (step | 1 << job["k"]) & (CODEBOOK_ENTRIES - 1)
    return index, (index if job["k"] < 5 else step) & 0xFF


# --- sequencer ---

def run_sequencer(jobs, lanes: int, depth: int, seed: int, p_landed: float, p_credit: float):
    """Feed `jobs` with random gaps, random `landed`, write responses and credits; returns the
    steps (cycle, payload), the slot events, the write responses and the most lines held."""
    dut = Sequencer(lanes=lanes, queue_depth=depth)
    rng = random.Random(seed)
    writes = [rng.randint(0, 1) for job in jobs if job["kind"] == Kind.RAW_WR]
    lines = sum(job["kind"] != Kind.LUT_LOAD for job in jobs)
    record = dict(steps=[], started=[], released=[], most_held=0, late_start=0)

    async def feed_jobs(ctx):
        await put(ctx, dut.job, jobs, rng=random.Random(seed + 1), p_valid=0.7)

    async def feed_writes(ctx):
        await put(ctx, dut.wresp, writes, rng=random.Random(seed + 2), p_valid=0.5)

    async def cache_and_queue(ctx):
        held = taken = cycle = 0
        while taken < lines:
            landed = [rng.random() < p_landed for _ in range(2)]
            ctx.set(dut.slots.plane_landed, landed[0])
            ctx.set(dut.slots.meta_landed, landed[1])
            credit = held > 0 and rng.random() < p_credit
            ctx.set(dut.credit, credit)
            _, _, valid, step, started, release_valid, release = await ctx.tick().sample(
                dut.step.valid, dut.step.payload, dut.slots.started, dut.slots.release_valid, dut.slots.release)
            for kind, flag in (("plane", started.plane), ("meta", started.meta)):
                if flag:
                    record["started"].append((cycle, kind))
                    record["late_start"] += not landed[kind == "meta"]
            if release_valid:
                record["released"].append((release.plane, release.plane_slot, release.meta, release.meta_slot))
            if valid:
                record["steps"].append((cycle, step))
                held += step.last and step.job.kind != Kind.LUT_LOAD
            held -= credit
            taken += credit
            record["most_held"] = max(record["most_held"], held)
            cycle += 1
            assert cycle < 50_000, "the sequencer hangs"

    simulate(dut, feed_jobs, feed_writes, cache_and_queue)
    return record, writes


@pytest.mark.parametrize("lanes,depth,seed", [(8, 4, 0), (32, 3, 1), (1, 6, 2)])
def test_sequencer_steps_every_job_in_order_within_credit(lanes, depth, seed):
    rng = random.Random(seed)
    steps = 32 // lanes
    jobs = [random_job(rng, tag, steps) for tag in range(60)]
    record, writes = run_sequencer(jobs, lanes, depth, seed, p_landed=0.6, p_credit=0.5)
    want = [(i, s) for i, job in enumerate(jobs) for s in range(job["last_step"] + 1)]
    assert len(record["steps"]) == len(want)
    write_results = iter(writes)
    for (cycle, got), (i, s) in zip(record["steps"], want):
        job = jobs[i]
        assert (got.job.tag, got.job.kind, got.step, got.first, got.last) == (i, job["kind"], s, s == 0,
                                                                              s == job["last_step"])
        assert (got.plane_column, got.plane_index) == plane_read(job, s, lanes), (job, s)
        if job["kind"] == Kind.LUT_LOAD:
            index, entry = table_entry(job, s)
            assert (got.load_index, got.entry_in_line) == (index, entry & 31)
        if job["kind"] == Kind.RAW_WR:
            assert got.write_failed == next(write_results)
    line_steps = [(cycle, got) for cycle, got in record["steps"] if got.job.kind != Kind.LUT_LOAD]
    exits = [cycle + lanes_latency(dict(dequantize=got.job.kind in FP, lut=got.job.lut)) for cycle, got in line_steps]
    assert exits == sorted(set(exits))                  # in order through the lanes, one a cycle
    assert record["most_held"] <= depth
    assert record["late_start"] == 0                    # no allocating job before its data landed
    assert [kind for _, kind in record["started"]] == [
        kind for job in jobs for kind, flag in (("plane", job["plane_alloc"]), ("meta", job["meta_alloc"])) if flag]
    assert record["released"] == [(int(job["kind"] not in (Kind.ERROR, Kind.RAW_WR)), job["plane_slot"],
                                   int(job["kind"] in FP), job["meta_slot"]) for job in jobs]


@pytest.mark.parametrize("kinds,lut", [((Kind.FP16, Kind.BF16), 0), ((Kind.FP16, Kind.BF16), 1),
                                      ((Kind.RAW_RD, Kind.PACKED, Kind.INT8, Kind.ERROR), 0)])
def test_sequencer_full_rate(kinds, lut):
    """With the data landed and credit back at once, a step every cycle while the jobs take
    the same time through the lanes."""
    rng = random.Random(7)
    jobs = [random_job(rng, tag, 4) for tag in range(30)]
    for job in jobs:
        job["kind"], job["lut"] = rng.choice(kinds), lut
        job["last_step"] = 3 if job["kind"] in FP else 0
    dut = Sequencer(lanes=8, queue_depth=8)
    cycles = []

    async def bench(ctx):
        ctx.set(dut.slots.plane_landed, 1)
        ctx.set(dut.slots.meta_landed, 1)
        await put(ctx, dut.job, jobs)

    async def queue(ctx):
        for _ in range(len(jobs) * 4 + 10):
            _, _, valid, step = await ctx.tick().sample(dut.step.valid, dut.step.payload)
            ctx.set(dut.credit, valid and step.last)
            cycles.append(valid)

    simulate(dut, bench, queue)
    first = cycles.index(1)
    steps = sum(job["last_step"] + 1 for job in jobs)
    assert cycles[first:first + steps] == [1] * steps


# --- buffer read ---

def chunk_data(*address) -> int:
    return random.Random(repr(address)).getrandbits(512)


def run_buffer_read(steps, lanes: int, seed: int):
    """Each (step payload dict or None) a cycle; the read ports answered by a model of the
    cache (plane data 3 cycles after the address, a metadata line 1 cycle after); returns
    what each cycle's step should give and what `fetched` gave, by cycle."""
    dut = BufferRead(lanes=lanes, plane_slots=6, meta_slots=4)
    rng = random.Random(seed)
    got, expected = {}, {}

    async def bench(ctx):
        plane_addresses, meta_addresses = [], []
        table_failed = 0
        for cycle in range(len(steps) + BufferRead.LATENCY + 1):
            step = steps[cycle] if cycle < len(steps) else None
            ctx.set(dut.step.valid, step is not None)
            if step is not None:
                ctx.set(dut.step.payload, step)
            plane_failed, meta_failed = rng.getrandbits(6), rng.getrandbits(4)
            ctx.set(dut.read.plane_failed, plane_failed)
            ctx.set(dut.read.meta_failed, meta_failed)
            if cycle >= 3:
                ctx.set(dut.read.plane_data.as_value(), chunk_data(*plane_addresses[cycle - 3]))
            if cycle >= 1:
                ctx.set(dut.read.meta_data, chunk_data("meta", meta_addresses[cycle - 1]))
            _, _, slot, column, index, meta_slot, valid, fetched, error = await ctx.tick().sample(
                dut.read.plane_slot, dut.read.plane_column, dut.read.plane_index, dut.read.meta_slot,
                dut.fetched.valid, dut.fetched.payload, dut.dram_error)
            plane_addresses.append((slot, column, index))
            meta_addresses.append(meta_slot)
            if valid:
                got[cycle] = (fetched, error)
            if step is not None:
                expected[cycle + BufferRead.LATENCY], table_failed = expect_fetched(
                    step, lanes, plane_failed, meta_failed, table_failed)

    simulate(dut, bench)
    return got, expected


def expect_fetched(step: dict, lanes: int, plane_failed: int, meta_failed: int, table_failed: int):
    """What `fetched` and `dram_error` carry for `step` (the flags of its cycle), and the
    codebook failure remembered after it."""
    job, kind = step["job"], step["job"]["kind"]
    plane_bad = plane_failed >> job["plane_slot"] & 1
    if kind == Kind.RAW_WR:
        failed = step["write_failed"]
    elif kind in FP:
        failed = plane_bad | meta_failed >> job["meta_slot"] & 1
    else:
        failed = 0 if kind == Kind.ERROR else plane_bad
    new_table_failed = failed if kind == Kind.LUT_LOAD and step["first"] else table_failed
    failed |= job["lut"] & (kind in FP) & table_failed
    group = (job["first_group"] + ((job["line"] * 32 + step["step"] * lanes) >> job["log2_group"])) & 15
    column, index = step["plane_column"], step["plane_index"]
    want = dict(
        chunks=chunk_data(job["plane_slot"], column, index),
        meta=chunk_data("meta", job["meta_slot"]) >> 32 * group & 0xFFFFFFFF,
        failed=failed, sub=(job["line"] * (32 // lanes) + step["step"]) % (64 // lanes),
        row=int(kind in (Kind.RAW_RD, Kind.PACKED, Kind.LUT_LOAD)), int8=int(kind == Kind.INT8),
        poison=int(kind == Kind.ERROR or failed), view=VIEW_OF_KIND.get(kind, 0), fp=int(kind in FP),
        load=int(kind == Kind.LUT_LOAD), keep=(1 << job["k"]) - 1, middle=(1 << job["k"]) & 0xFF,
        error=(int(step["last"] and failed), job["addr"] & ((1 << 40) - 1)))
    return want, new_table_failed


@pytest.mark.parametrize("lanes,seed", [(32, 0), (8, 1), (1, 2)])
def test_buffer_read_against_a_cache_model(lanes, seed):
    rng = random.Random(seed)
    steps = []
    for _ in range(300):
        if rng.random() < 0.25:
            steps.append(None)
            continue
        job = random_job(rng, rng.randrange(256), 32 // lanes)
        s = rng.randint(0, job["last_step"])
        steps.append(dict(job=job, step=s, first=int(s == 0), last=int(s == job["last_step"]),
                          write_failed=rng.randint(0, 1), plane_column=rng.randint(0, 1),
                          plane_index=rng.randrange(8), load_index=rng.randrange(512),
                          entry_in_line=rng.randrange(32)))
    got, expected = run_buffer_read(steps, lanes, seed)
    assert sorted(got) == sorted(expected)
    for cycle, (fetched, error) in got.items():
        want, ctl, sel = expected[cycle], fetched.ctl, fetched.ctl.selects
        step = steps[cycle - BufferRead.LATENCY]
        assert (ctl.job.tag, ctl.step, ctl.last, ctl.load_index, ctl.entry_in_line) == (
            step["job"]["tag"], step["step"], step["last"], step["load_index"], step["entry_in_line"])
        assert (fetched.chunks.as_value().value, fetched.meta, ctl.failed, ctl.sub) == (
            want["chunks"], want["meta"], want["failed"], want["sub"]), (cycle, step)
        assert (sel.row, sel.int8, sel.poison, sel.view, sel.fp, sel.load, sel.masks.keep, sel.masks.middle) == tuple(
            want[name] for name in ("row", "int8", "poison", "view", "fp", "load", "keep", "middle")), step
        assert (error.valid, error.addr) == want["error"]


# --- dequantizer lanes ---

def lanes_latency(step: dict) -> int:
    """Reference: cycles a step takes through the lanes."""
    return (LOOKUP_LATENCY if step["lut"] else AFFINE_LATENCY) if step["dequantize"] else PASS_LATENCY


def in_order_schedule(steps: list[dict], rng: random.Random) -> list[int]:
    """Reference of the sequencer's rule: each step's start cycle (random gaps), no earlier
    than one that leaves the lanes after the step before it."""
    starts = []
    for step in steps:
        start = 0 if not starts else starts[-1] + 1 + (rng.random() < 0.3) * rng.randint(1, 3)
        if starts:
            start = max(start, starts[-1] + lanes_latency(steps[len(starts) - 1]) - lanes_latency(step) + 1)
        starts.append(start)
    return starts


def test_lanes_dequantize_and_carry_meta_at_their_latency():
    """Affine and table-lookup steps against the references, other steps' meta unchanged,
    every step `lanes_latency` cycles after it came in (0 when not dequantized), in order
    when started as the sequencer starts them."""
    lanes, rng = 8, np.random.default_rng(3)
    meta_layout = line_meta(32 // lanes)
    dut = DequantLanes(lanes=lanes, meta_layout=meta_layout)
    table = rng.integers(0, 0x7C00, CODEBOOK_ENTRIES).astype(np.uint16)
    table[rng.integers(0, CODEBOOK_ENTRIES, 20)] = 0xFC00
    steps = []
    for _ in range(160):
        q = rng.integers(0, 256, lanes).astype(np.uint8)
        k = int(rng.integers(1, 9))
        fmt = ScaleFormat(int(rng.integers(0, 3)))
        scale = int(rng.integers(0, 0x7C00)) if fmt != ScaleFormat.BF16 else int(rng.integers(0x2000, 0x5000))
        steps.append(dict(q=q, k=k, fmt=fmt, scale=scale, zero=int(rng.integers(0, 256)), out_bf16=int(rng.integers(0, 2)),
                          dequantize=int(rng.random() < 0.7), lut=int(rng.integers(0, 2)),
                          meta=dict(last=int(rng.integers(0, 2)), step=int(rng.integers(0, 4)),
                                    entry=dict(tag=int(rng.integers(0, 256)), view=int(rng.integers(0, 5)),
                                               data=int(rng.integers(0, 1 << 62)) << 400 | 12345))))
    first = CODEBOOK_ENTRIES + 3        # the loads, then their own registers
    starts = [first + start for start in in_order_schedule(steps, random.Random(4))]
    results = {}

    def payload(step):
        r = view_code(step["q"], step["k"]) if step["lut"] else step["q"]
        codes = dict(r=[int(v) for v in r], zero=step["zero"], scale=step["scale"],
                     scale_bf16=int(step["fmt"] == ScaleFormat.BF16), scale_pow2=int(step["fmt"] == ScaleFormat.POW2),
                     out_bf16=step["out_bf16"])
        return dict(codes=codes, dequantize=step["dequantize"], lut=step["lut"], k=step["k"], meta=step["meta"])

    async def load_then_steps(ctx):
        await put(ctx, dut.load, [dict(index=i, entry=int(e)) for i, e in enumerate(table)])
        cycle = CODEBOOK_ENTRIES
        for step, start in zip(steps, starts):
            if start > cycle:
                await ctx.tick().repeat(start - cycle)
            ctx.set(dut.input.payload, payload(step))
            ctx.set(dut.input.valid, 1)
            await ctx.tick()
            ctx.set(dut.input.valid, 0)
            cycle = start + 1

    async def take(ctx):
        results["taken"] = await get(ctx, dut.output, len(steps), timeout=1000)

    simulate(dut, load_then_steps, take)
    for step, start, (cycle, out) in zip(steps, starts, results["taken"], strict=True):
        assert cycle - start == lanes_latency(step)
        assert out.dequantized == step["dequantize"]
        assert (out.meta.last, out.meta.step, out.meta.entry.tag, out.meta.entry.view, out.meta.entry.data) == (
            step["meta"]["last"], step["meta"]["step"], step["meta"]["entry"]["tag"], step["meta"]["entry"]["view"],
            step["meta"]["entry"]["data"])
        if step["dequantize"]:
            if step["lut"]:
                want = lookup_reference(table, step["q"], step["k"], step["scale"], step["fmt"], step["out_bf16"])
            else:
                want = affine_reference(step["q"], step["zero"], step["scale"], step["fmt"], step["out_bf16"]).tolist()
            got = [out.result >> 16 * i & 0xFFFF for i in range(lanes)]
            assert got == want, step


# --- line packer and output router ---

def random_entry(rng: random.Random) -> dict:
    return dict(ndr=rng.randint(0, 1), tag=rng.randrange(256), poison=int(rng.random() < 0.2),
                view=rng.randrange(5), data=rng.getrandbits(512))


def test_packer_collects_each_line_from_its_steps():
    """fp16 / bf16 lines from their steps' results (poisoned: zeros), other lines as their entry,
    each in the cycle of its last step."""
    lanes, steps, rng = 8, 4, random.Random(5)
    dut = LinePacker(lanes=lanes, meta_layout=line_meta(steps))
    inputs, want = [], []
    for _ in range(50):
        entry = random_entry(rng)
        if rng.random() < 0.5:
            results = [rng.getrandbits(16 * lanes) for _ in range(steps)]
            inputs += [dict(result=r, dequantized=1, meta=dict(last=int(s == steps - 1), step=s, entry=entry))
                       for s, r in enumerate(results)]
            data = 0 if entry["poison"] else sum(r << 16 * lanes * s for s, r in enumerate(results))
        else:
            inputs.append(dict(result=rng.getrandbits(16 * lanes), dequantized=0, meta=dict(last=1, step=0, entry=entry)))
            data = entry["data"]
        want.append((len(inputs) - 1, dict(entry, data=data)))
    record = {}

    async def feed(ctx):
        record["put"] = await put(ctx, dut.input, inputs, rng=random.Random(6), p_valid=0.7)

    async def take(ctx):
        record["lines"] = await get(ctx, dut.line, len(want))

    simulate(dut, feed, take)
    for (index, line), (cycle, got) in zip(want, record["lines"], strict=True):
        assert cycle == record["put"][index]
        assert (got.ndr, got.tag, got.poison, got.view, got.data) == tuple(line[name] for name in
                                                                           ("ndr", "tag", "poison", "view", "data"))


def test_router_keeps_order_and_counts():
    """Entries to DRS or NDR in queue order under random ready; served / written events for
    unpoisoned lines, DRS ones by view."""
    rng = random.Random(8)
    dut = OutputRouter()
    entries = [random_entry(rng) for _ in range(80)]
    record = {"served": [0] * 8, "written": 0}

    async def feed(ctx):
        await put(ctx, dut.lines, entries, rng=random.Random(9), p_valid=0.7)

    async def take(ctx, name):
        count = sum(e["ndr"] == (name == "ndr") for e in entries)
        record[name] = await get(ctx, getattr(dut, name), count, rng=random.Random(name), p_ready=0.6)

    async def drs(ctx):
        await take(ctx, "drs")

    async def ndr(ctx):
        await take(ctx, "ndr")

    async def events(ctx):
        for _ in range(2000):
            _, _, served, view, written = await ctx.tick().sample(dut.served, dut.served_view, dut.written)
            record["served"][view] += served
            record["written"] += written

    simulate(dut, feed, drs, ndr, events)
    taken = sorted([(cycle, "drs", p) for cycle, p in record["drs"]] + [(cycle, "ndr", p) for cycle, p in record["ndr"]],
                   key=lambda t: t[0])
    assert len(taken) == len(entries) and len({cycle for cycle, _, _ in taken}) == len(entries)
    for entry, (_, channel, payload) in zip(entries, taken):
        assert channel == ("ndr" if entry["ndr"] else "drs")
        assert (payload.tag, payload.poison) == (entry["tag"], entry["poison"])
        if channel == "drs":
            assert payload.data == entry["data"]
    assert record["served"][:5] == [sum(1 for e in entries if not e["ndr"] and not e["poison"] and e["view"] == v)
                                    for v in range(5)]
    assert record["written"] == sum(1 for e in entries if e["ndr"] and not e["poison"])


# --- gather ---

def gathered_codes(chunks: list[int], first: int, count: int, k: int) -> list[int]:
    """View codes at k of weights first.. first+count-1 of plane lines `chunks` (line p: bit 7-p)."""
    codes = []
    for i in range(first, first + count):
        q = sum((chunks[p] >> i & 1) << (7 - p) for p in range(8))
        codes.append(int(view_code([q], k)[0]))
    return codes


def test_gather_selects_lines_codes_and_table_entries():
    """Raw / packed rows and int8 columns as lines (poisoned: zeros), the step's codes and
    group for the lanes, a LUT_LOAD step's entry to the tables, a cycle after `fetched`."""
    lanes, rng = 8, random.Random(11)
    dut = LineGather(lanes=lanes)
    inputs = []
    for tag in range(150):
        job = random_job(rng, tag, 32 // lanes)
        kind, failed = job["kind"], int(rng.random() < 0.2)
        poison = int(kind == Kind.ERROR or failed)
        selects = dict(row=int(kind in (Kind.RAW_RD, Kind.PACKED, Kind.LUT_LOAD)), int8=int(kind == Kind.INT8),
                       poison=poison, view=VIEW_OF_KIND.get(kind, 0), fp=int(kind in FP),
                       load=int(kind == Kind.LUT_LOAD), masks=dict(keep=(1 << job["k"]) - 1, middle=(1 << job["k"]) & 0xFF))
        ctl = dict(job=job, step=rng.randrange(4), last=rng.randint(0, 1), failed=failed,
                   load_index=rng.randrange(512), entry_in_line=rng.randrange(32), sub=rng.randrange(64 // lanes),
                   selects=selects)
        inputs.append(dict(chunks=[rng.getrandbits(64) for _ in range(8)], meta=rng.getrandbits(32), ctl=ctl))
    seen = []

    async def feed(ctx):
        await put(ctx, dut.fetched, inputs)

    async def watch(ctx):
        for _ in range(len(inputs) + 2):
            _, _, valid, line, load_valid, load = await ctx.tick().sample(
                dut.line.valid, dut.line.payload, dut.load.valid, dut.load.payload)
            seen.append((valid, line, load_valid, load))

    simulate(dut, feed, watch)
    for n, fetched in enumerate(inputs):
        valid, line, load_valid, load = seen[n + 1]
        ctl, sel, chunks = fetched["ctl"], fetched["ctl"]["selects"], fetched["chunks"]
        job = ctl["job"]
        row = sum(c << 64 * p for p, c in enumerate(chunks))
        int8 = sum((q ^ 0x80) << 8 * i for i, q in enumerate(gathered_codes(chunks, 0, 64, job["k"])))
        data = 0 if sel["poison"] else row if sel["row"] else int8 if sel["int8"] else 0
        assert valid == (not sel["load"])
        entry = line.meta.entry
        assert (entry.ndr, entry.tag, entry.poison, entry.view, entry.data) == (
            job["write"], job["tag"], sel["poison"], sel["view"], data), job
        assert (line.meta.last, line.meta.step, line.dequantize, line.lut, line.k) == (
            ctl["last"], ctl["step"], sel["fp"], job["lut"], job["k"])
        assert [int(r) for r in line.codes.r] == gathered_codes(chunks, ctl["sub"] * lanes, lanes, job["k"])
        assert (line.codes.scale, line.codes.zero, line.codes.out_bf16) == (
            fetched["meta"] & 0xFFFF, fetched["meta"] >> 16 & 0xFF, int(job["kind"] == Kind.BF16))
        assert load_valid == (sel["load"] and not ctl["failed"])
        if load_valid:
            assert (load.index, load.entry) == (ctl["load_index"], data >> 16 * ctl["entry_in_line"] & 0xFFFF)
