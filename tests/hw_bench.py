"""Amaranth-simulator harness for SmartQuantTop: requests played by a host with random
valid gaps that takes responses with random ready, against the AXI4 RAM and CSR driver of
sim/amaranth_bench.py (random pauses on every channel, fixed read latency, error lines
answering SLVERR to reads and writes).  Test code only."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
from amaranth.sim import Simulator

from smartquant.hw.top import SmartQuantTop
from smartquant.sim.amaranth_bench import SAMPLED, CsrBus, SteppedAxiRam
from smartquant.spec import (COUNTERS, DRS_FIELDS, LINE_BYTES, NDR_FIELDS, REQ_FIELDS, counter_csr,
                             pack_fields, region_csr_writes, unpack_fields, CSR_DRAM_LINES,
                             CSR_ERR_ADDR_HI, CSR_ERR_ADDR_LO, CSR_ERR_CAUSE, Opcode, View, host_line_address,
                             lines_per_block)
from smartquant.sw.image import golden

#: read bursts the RAM takes before it holds AR: enough for full rate at any latency used here
MAX_OUTSTANDING_READS = 256


@dataclasses.dataclass
class BenchConfig:
    latency: int = 8               #: cycles from AR accepted to its first R beat
    axi_stall: float = 0.2         #: probability a pause (of 1..7 cycles) starts on an AXI channel each cycle
    p_host_valid: float = 0.8      #: probability the host offers its next request
    p_host_ready: float = 0.8      #: probability the host takes a response
    seed: int = 0
    max_cycles: int = 2_000_000


@dataclasses.dataclass
class BenchResult:
    responses: list                #: (kind "drs"/"ndr", tag, poison, data bytes or None) in arrival order
    counters: dict                 #: COUNTERS name -> value after the run
    cycles: int                    #: cycles from the first request offered to the last response
    first_response: int            #: cycle of the first response (0 = first request offered)
    dram: np.ndarray               #: the RAM contents after the run
    error_cause: int               #: CSR_ERR_CAUSE after the run
    error_addr: int                #: CSR_ERR_ADDR_HI:LO after the run


def region_writes(entries) -> list[tuple[int, int]]:
    """CSR writes programming region i with entries[i] (TensorEntry-like)."""
    writes = []
    for i, e in enumerate(entries):
        writes += region_csr_writes(i, e.plane_base, e.meta_base, e.blocks, e.group_size,
                                    e.symmetric, e.scale_format, getattr(e, "codebook_base", None))
    return writes


def run_top(memory: np.ndarray, csr_writes, requests, *, dram_lines: int, cfg: BenchConfig = BenchConfig(),
            error_lines=(), **params) -> BenchResult:
    """Program the CSRs, play `requests` ((opcode, addr, data) tuples, tags i % 256) with
    random stalls, collect every response, read the counters."""
    dut = SmartQuantTop(**params)
    rng = np.random.default_rng(cfg.seed)
    ram = SteppedAxiRam(len(memory), dut.params["axi_data_width"] // 8, cfg.latency, random.Random(cfg.seed),
                        cfg.axi_stall, max_outstanding=MAX_OUTSTANDING_READS, error_lines=error_lines,
                        write_errors=True)
    ram.mem[:] = memory.tobytes()
    axi_sampled = [getattr(dut.axi, name) for name in SAMPLED]
    result = {}

    async def bench(ctx):
        csr = CsrBus(ctx, dut.csr)
        for addr, value in [(CSR_DRAM_LINES, dram_lines), *csr_writes]:
            await csr.write(addr, value)

        responses, pending = [], list(enumerate(requests))[::-1]
        cycle, first_response = 0, None
        offered = None
        host_sampled = [dut.req.ready, dut.drs.valid, dut.drs.payload.as_value(), dut.ndr.valid,
                        dut.ndr.payload.as_value()]
        while len(responses) < len(requests):
            assert cycle < cfg.max_cycles, f"hang: {len(responses)}/{len(requests)} responses"
            if offered is None and pending and rng.random() < cfg.p_host_valid:
                i, (opcode, addr, data) = offered = pending.pop()
                ctx.set(dut.req.payload.as_value(), pack_fields(REQ_FIELDS, opcode=opcode, tag=i % 256, addr=addr, data=data))
                ctx.set(dut.req.valid, 1)
            host_ready = int(rng.random() < cfg.p_host_ready)
            ctx.set(dut.drs.ready, host_ready)
            ctx.set(dut.ndr.ready, host_ready)
            _, _, *values = await ctx.tick().sample(*axi_sampled, *host_sampled)
            ram.edge(cycle, dict(zip(SAMPLED, values[:len(SAMPLED)])))
            for name, value in ram.out.items():
                ctx.set(getattr(dut.axi, name), value)
            req_ready, drs_valid, drs_payload, ndr_valid, ndr_payload = values[len(SAMPLED):]
            if offered is not None and req_ready:
                offered = None
                ctx.set(dut.req.valid, 0)
            if drs_valid and host_ready:
                f = unpack_fields(DRS_FIELDS, drs_payload)
                responses.append(("drs", f["tag"], f["poison"], f["data"].to_bytes(LINE_BYTES, "little")))
            if ndr_valid and host_ready:
                f = unpack_fields(NDR_FIELDS, ndr_payload)
                responses.append(("ndr", f["tag"], f["poison"], None))
            if responses and first_response is None:
                first_response = cycle
            cycle += 1
        counters = {}
        for name in COUNTERS:
            lo = await csr.read(counter_csr(name))
            hi = await csr.read(counter_csr(name) + 1)
            counters[name] = lo | (hi << 32)
        error_cause = await csr.read(CSR_ERR_CAUSE)
        error_addr = await csr.read(CSR_ERR_ADDR_LO) | (await csr.read(CSR_ERR_ADDR_HI) << 32)
        result.update(responses=responses, counters=counters, cycles=cycle, first_response=first_response,
                      error_cause=error_cause, error_addr=error_addr)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return BenchResult(dram=np.frombuffer(bytes(ram.mem), np.uint8), **result)


def measure(image_dir: str, blocks: int = 24, latency: int = 64, ks=(1, 2, 3, 4, 8)) -> list[tuple]:
    """(view, k, cycles per block, added latency) for a sequential read of `blocks` blocks of the
    smallest tensor of an image, no stalls anywhere.  Cycles per block: from the first
    response to the last, per block; added latency: first response cycle (counted from the
    first request) minus the DRAM latency."""
    from smartquant.sw.image.image import Image
    image = Image.load(image_dir)
    entry = min(image.entries, key=lambda e: (e.blocks, e.name))
    free = BenchConfig(latency=latency, axi_stall=0.0, p_host_valid=1.0, p_host_ready=1.0)
    rows = []
    for view in (View.PACKED, View.INT8, View.FP16, View.BF16):
        for k in ks:
            lpb = lines_per_block(view, k)
            base = entry.plane_base // 8 * lpb
            requests = [(Opcode.MEM_RD, host_line_address(view, k, base + i), 0) for i in range(blocks * lpb)]
            entries = [dataclasses.replace(entry, symmetric=True)]   # int8 views need a symmetric region
            result = run_top(image.dram, region_writes(entries), requests, dram_lines=image.dram_lines, cfg=free)
            rows.append((view.name.lower(), k, round((result.cycles - result.first_response) / blocks, 2),
                         result.first_response - latency))
    return rows

def _timeline_events(dut) -> dict:
    """The events of one read's way through the controller, as expressions of its ports."""
    dec, issue, cache, resp, axi = dut.decoder, dut.issue, dut.cache, dut.responder, dut.axi
    return {
        "accepted": dec.req.valid & dec.req.ready,
        "command at the issue stage": issue.cmd.valid,
        "plane read issued": issue.plane_reads.valid & issue.plane_reads.ready,
        "AR accepted": axi.arvalid & axi.arready,
        "first R beat": axi.rvalid & axi.rready,
        "plane burst's last beat": dut.dram.beat.valid & dut.dram.beat.payload.last & ~dut.dram.beat.payload.meta,
        "landed": cache.use.plane_landed,
        "response stage starts": cache.use.started.plane,
        "DRS valid": resp.drs.valid,
    }


def first_read_timeline(memory: np.ndarray, csr_writes, addr: int, *, dram_lines: int, latency: int) -> dict:
    """Cycle of each event of `_timeline_events` for one MemRd of host line `addr` into an idle
    controller (no stalls, DRAM `latency`), counted from the cycle the request is accepted."""
    dut = SmartQuantTop()
    ram = SteppedAxiRam(len(memory), dut.params["axi_data_width"] // 8, latency, random.Random(0), 0.0,
                        max_outstanding=MAX_OUTSTANDING_READS)
    ram.mem[:] = memory.tobytes()
    axi_sampled = [getattr(dut.axi, name) for name in SAMPLED]
    events = _timeline_events(dut)
    seen = {}

    async def bench(ctx):
        csr = CsrBus(ctx, dut.csr)
        for csr_addr, value in [(CSR_DRAM_LINES, dram_lines), *csr_writes]:
            await csr.write(csr_addr, value)
        ctx.set(dut.req.payload.as_value(), pack_fields(REQ_FIELDS, opcode=Opcode.MEM_RD, tag=0, addr=addr, data=0))
        ctx.set(dut.req.valid, 1)
        ctx.set(dut.drs.ready, 1)
        for cycle in range(latency + 200):
            _, _, *values = await ctx.tick().sample(*axi_sampled, *events.values())
            ram.edge(cycle, dict(zip(SAMPLED, values[:len(SAMPLED)])))
            for name, value in ram.out.items():
                ctx.set(getattr(dut.axi, name), value)
            for name, value in zip(events, values[len(SAMPLED):]):
                if value and name not in seen:
                    seen[name] = cycle
            if "accepted" in seen:
                ctx.set(dut.req.valid, 0)
            if "DRS valid" in seen:
                return

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert "DRS valid" in seen, "no response"
    return {name: seen[name] - seen["accepted"] for name in events if name in seen}


# --- request lists and the golden check shared by the top-level tests ---

KS = (2, 3, 4, 8)


def tensor_requests(entry, view, k, blocks=None):
    """MemRd of every line of `entry` in `view` at `k`, in order (first `blocks` blocks)."""
    blocks = entry.blocks if blocks is None else blocks
    return [(Opcode.MEM_RD, host_line_address(view, k, golden.view_offset(entry, view, k, b, j)), 0)
            for b in range(blocks) for j in range(lines_per_block(view, k))]


def check_against_golden(image, requests, result):
    """Every response in request order, tag, kind and data/poison as the golden decoder says."""
    assert len(result.responses) == len(requests)
    for i, ((kind, tag, poison, data), (opcode, addr, _)) in enumerate(zip(result.responses, requests)):
        assert tag == i % 256, f"response {i} out of order"
        assert kind == ("ndr" if opcode == Opcode.MEM_WR else "drs"), i
        if opcode == Opcode.MEM_RD:
            want, want_poison = golden.response_line(image, addr)
            assert (bool(poison), data) == (want_poison, want), \
                f"request {i}: addr {addr:#x} poison {poison} vs {want_poison}"


def lookup_reference(model, kind, k: int, plane_line: int, meta_line: int = 0, codebook=None) -> dict:
    """What the block cache's lookup decides for one command (`model`: a `SlotModel`, moved on
    by it): `fetch_plane`, `fetch_meta`, `fetch_table` and the slots that serve it."""
    from smartquant.hw.layouts import Kind
    out = {"fetch_plane": 0, "fetch_meta": 0, "fetch_table": 0}
    if kind == Kind.RAW_WR:
        model.write(plane_line)
    elif kind == Kind.RAW_RD:
        out.update(fetch_plane=1, plane_slot=model.raw_read())
    elif kind != Kind.ERROR:
        if codebook is not None:
            out["fetch_table"] = int(model.loads_table(codebook, k))
        slot, hit = model.plane_lookup(plane_line // 8, k)
        out.update(fetch_plane=int(not hit), plane_slot=slot)
        if kind in (Kind.FP16, Kind.BF16):
            meta_slot, meta_hit = model.meta_lookup(meta_line)
            out.update(fetch_meta=int(not meta_hit), meta_slot=meta_slot)
    return out


def timelines(latency: int = 64, cases=((View.PACKED, 2), (View.PACKED, 8), (View.INT8, 8), (View.FP16, 2))) -> list[tuple]:
    """(view, k, the cycle of each `_timeline_events` event) of the first read of the bench's
    synthetic tensor (`smartquant.sim.bench.bench_image`) into an idle controller."""
    from smartquant.sim.bench import bench_image
    image = bench_image(2)
    entry = image.entries[0]
    rows = []
    for view, k in cases:
        addr = host_line_address(view, k, entry.plane_base // 8 * lines_per_block(view, k))
        rows.append((view.name.lower(), k, first_read_timeline(image.dram, region_writes([entry]), addr,
                                                               dram_lines=image.dram_lines, latency=latency)))
    return rows


if __name__ == "__main__":
    import sys
    from smartquant.report import format_table
    if sys.argv[1:] == ["--timeline"]:
        rows = timelines()
        names = list(rows[0][2])
        print(format_table(["view", "k", *names], [(v, k, *(t.get(n, "") for n in names)) for v, k, t in rows]))
    else:
        print(format_table(["view", "k", "cycles/block", "added latency"], measure(sys.argv[1])))
