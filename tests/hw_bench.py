"""Amaranth-simulator harness for SmartQuantTop: a Python AXI4 RAM (random stalls on every
channel, fixed read latency, optional error lines), a host that issues requests with random
valid gaps and takes responses with random ready, and CSR access.  Test code only."""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
from amaranth.sim import Simulator

from smartquant.hw.top import SmartQuantTop
from smartquant.spec import (COUNTERS, CSR_READ_LATENCY, DRS_FIELDS, LINE_BYTES, NDR_FIELDS, REQ_FIELDS, counter_csr,
                             pack_fields, region_csr_writes, unpack_fields, CSR_DRAM_LINES,
                             CSR_ERR_ADDR_HI, CSR_ERR_ADDR_LO, CSR_ERR_CAUSE, Opcode, View, host_line_address,
                             lines_per_block)
from smartquant.sw.image import golden

AXI_SLVERR = 2


@dataclasses.dataclass
class BenchConfig:
    latency: int = 8               #: cycles from AR accepted to its first R beat
    p_axi_ready: float = 0.7       #: probability arready / awready / wready / bready... high each cycle
    p_axi_valid: float = 0.8       #: probability an available R beat / B response is offered
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


class AxiRam:
    """AXI4 subordinate over a byte array; one burst served at a time per direction, in order."""

    def __init__(self, axi, memory: np.ndarray, data_width: int, cfg: BenchConfig, rng, error_lines=()):
        self.axi, self.mem, self.cfg, self.rng = axi, memory, cfg, rng
        self.beat_bytes = data_width // 8
        self.error_lines = set(error_lines)
        self.reads = deque()            # (ready cycle, byte address, beats left)
        self.writes = deque()           # (byte address, beats) accepted AWs
        self.w_beats = deque()          # accepted W data (bytes)
        self.b_pending = deque()        # bresp of completed writes
        self.outputs = {}
        self.now = 0

    def _set(self, ctx, name, value):
        if self.outputs.get(name) != value:
            ctx.set(getattr(self.axi, name), value)
            self.outputs[name] = value

    def sampled(self):
        a = self.axi
        return [a.arvalid, a.araddr, a.arlen, a.rready, a.awvalid, a.awaddr, a.awlen,
                a.wvalid, a.wdata, a.wlast, a.bready]

    def drive(self, ctx):
        cfg, rng = self.cfg, self.rng
        self._set(ctx, "arready", int(rng.random() < cfg.p_axi_ready))
        self._set(ctx, "awready", int(rng.random() < cfg.p_axi_ready))
        self._set(ctx, "wready", int(rng.random() < cfg.p_axi_ready))
        beat = self.reads[0] if self.reads and self.reads[0][0] <= self.now else None
        offer = beat is not None and rng.random() < cfg.p_axi_valid
        self._set(ctx, "rvalid", int(offer))
        if offer:
            _, addr, left = beat
            chunk = self.mem[addr:addr + self.beat_bytes].tobytes()
            self._set(ctx, "rdata", int.from_bytes(chunk, "little"))
            self._set(ctx, "rlast", int(left == 1))
            self._set(ctx, "rresp", AXI_SLVERR if addr // LINE_BYTES in self.error_lines else 0)
        self.r_offered = offer
        b_offer = bool(self.b_pending) and rng.random() < cfg.p_axi_valid
        self._set(ctx, "bvalid", int(b_offer))
        if b_offer:
            self._set(ctx, "bresp", self.b_pending[0])
        self.b_offered = b_offer

    def observe(self, values):
        (arvalid, araddr, arlen, rready, awvalid, awaddr, awlen, wvalid, wdata, wlast, bready) = values
        o = self.outputs
        if arvalid and o["arready"]:
            self.reads.append((self.now + self.cfg.latency, araddr, arlen + 1))
        if self.r_offered and rready:
            ready_at, addr, left = self.reads.popleft()
            if left > 1:
                self.reads.appendleft((ready_at, addr + self.beat_bytes, left - 1))
        if awvalid and o["awready"]:
            self.writes.append((awaddr, awlen + 1))
        if wvalid and o["wready"]:
            self.w_beats.append((int(wdata).to_bytes(self.beat_bytes, "little"), wlast))
        if self.b_offered and bready:
            self.b_pending.popleft()
        # complete a write once its AW and all its W beats are in
        if self.writes and len(self.w_beats) >= self.writes[0][1]:
            addr, beats = self.writes.popleft()
            error = any(line in self.error_lines for line in
                        range(addr // LINE_BYTES, (addr + beats * self.beat_bytes - 1) // LINE_BYTES + 1))
            for i in range(beats):
                chunk, last = self.w_beats.popleft()
                assert bool(last) == (i == beats - 1), "WLAST on the wrong beat"
                if not error:
                    self.mem[addr + i * self.beat_bytes:addr + (i + 1) * self.beat_bytes] = np.frombuffer(chunk, np.uint8)
            self.b_pending.append(AXI_SLVERR if error else 0)
        self.now += 1


async def bus_write(ctx, bus, addr: int, value: int) -> None:
    """One CSR-bus write cycle."""
    ctx.set(bus.addr, addr)
    ctx.set(bus.w_data, value)
    ctx.set(bus.w_en, 1)
    await ctx.tick()
    ctx.set(bus.w_en, 0)


async def bus_read(ctx, bus, addr: int) -> int:
    """One CSR-bus read: r_en for a cycle, r_data `CSR_READ_LATENCY` cycles later."""
    ctx.set(bus.addr, addr)
    ctx.set(bus.r_en, 1)
    await ctx.tick()
    ctx.set(bus.r_en, 0)
    await ctx.tick().repeat(CSR_READ_LATENCY - 1)
    return ctx.get(bus.r_data)


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
    ram = AxiRam(dut.axi, memory.copy(), dut.params["axi_data_width"], cfg, rng, error_lines)
    result = {}

    async def bench(ctx):
        async def csr_write(addr, value):
            await bus_write(ctx, dut.csr, addr, value)

        async def csr_read(addr):
            return await bus_read(ctx, dut.csr, addr)

        for addr, value in [(CSR_DRAM_LINES, dram_lines), *csr_writes]:
            await csr_write(addr, value)

        responses, pending = [], deque(enumerate(requests))
        cycle, first_response = 0, None
        offered = None
        host_sampled = [dut.req.ready, dut.drs.valid, dut.drs.payload.as_value(), dut.ndr.valid,
                        dut.ndr.payload.as_value()]
        while len(responses) < len(requests):
            assert cycle < cfg.max_cycles, f"hang: {len(responses)}/{len(requests)} responses"
            ram.drive(ctx)
            if offered is None and pending and rng.random() < cfg.p_host_valid:
                i, (opcode, addr, data) = pending.popleft()
                offered = (i, opcode, addr, data)
                ctx.set(dut.req.payload.as_value(), pack_fields(REQ_FIELDS, opcode=opcode, tag=i % 256, addr=addr, data=data))
                ctx.set(dut.req.valid, 1)
            host_ready = int(rng.random() < cfg.p_host_ready)
            ctx.set(dut.drs.ready, host_ready)
            ctx.set(dut.ndr.ready, host_ready)
            _, _, *values = await ctx.tick().sample(*ram.sampled(), *host_sampled)
            ram.observe(values[:len(ram.sampled())])
            req_ready, drs_valid, drs_payload, ndr_valid, ndr_payload = values[len(ram.sampled()):]
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
            lo = await csr_read(counter_csr(name))
            hi = await csr_read(counter_csr(name) + 1)
            counters[name] = lo | (hi << 32)
        error_cause = await csr_read(CSR_ERR_CAUSE)
        error_addr = await csr_read(CSR_ERR_ADDR_LO) | (await csr_read(CSR_ERR_ADDR_HI) << 32)
        result.update(responses=responses, counters=counters, cycles=cycle, first_response=first_response,
                      error_cause=error_cause, error_addr=error_addr)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return BenchResult(dram=ram.mem, **result)


def measure(image_dir: str, blocks: int = 24, latency: int = 64, ks=(1, 2, 3, 4, 8)) -> list[tuple]:
    """(view, k, cycles per block, added latency) for a sequential read of `blocks` blocks of the
    smallest tensor of an image, no stalls anywhere.  Cycles per block: from the first
    response to the last, per block; added latency: first response cycle (counted from the
    first request) minus the DRAM latency."""
    from smartquant.sw.image.image import Image
    image = Image.load(image_dir)
    entry = min(image.entries, key=lambda e: (e.blocks, e.name))
    free = BenchConfig(latency=latency, p_axi_ready=1.0, p_axi_valid=1.0, p_host_valid=1.0, p_host_ready=1.0)
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
        "landed": cache.plane_landed,
        "response stage starts": resp.release_valid,
        "DRS valid": resp.drs.valid,
    }


def first_read_timeline(memory: np.ndarray, csr_writes, addr: int, *, dram_lines: int, latency: int) -> dict:
    """Cycle of each event of `_timeline_events` for one MemRd of host line `addr` into an idle
    controller (no stalls, DRAM `latency`), counted from the cycle the request is accepted."""
    dut = SmartQuantTop()
    cfg = BenchConfig(latency=latency, p_axi_ready=1.0, p_axi_valid=1.0, p_host_valid=1.0, p_host_ready=1.0)
    ram = AxiRam(dut.axi, memory.copy(), dut.params["axi_data_width"], cfg, np.random.default_rng(0))
    events = _timeline_events(dut)
    seen = {}

    async def bench(ctx):
        for csr_addr, value in [(CSR_DRAM_LINES, dram_lines), *csr_writes]:
            await bus_write(ctx, dut.csr, csr_addr, value)
        ctx.set(dut.req.payload.as_value(), pack_fields(REQ_FIELDS, opcode=Opcode.MEM_RD, tag=0, addr=addr, data=0))
        ctx.set(dut.req.valid, 1)
        ctx.set(dut.drs.ready, 1)
        for cycle in range(latency + 200):
            ram.drive(ctx)
            _, _, *values = await ctx.tick().sample(*ram.sampled(), *events.values())
            ram.observe(values[:len(ram.sampled())])
            for name, value in zip(events, values[len(ram.sampled()):]):
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
