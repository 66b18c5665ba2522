"""Address decoder and CSR file in the Amaranth simulator against Python references."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw_bench import lookup_reference

from smartquant.sim.amaranth_bench import CsrBus
from smartquant.hw.csr import CsrFile
from smartquant.hw.decode import AddressDecoder
from smartquant.hw.layouts import Kind
from smartquant.sw.image.dram_errors import SlotModel
from smartquant.spec import (COUNTERS, CSR_COUNTER_CLEAR, CSR_DRAM_LINES, CSR_ERR_ADDR_HI,
                             CSR_ERR_ADDR_LO, CSR_ERR_CAUSE, CSR_ID, CSR_ID_VALUE, MAX_REGIONS, REQ_FIELDS,
                             ErrorCause, Opcode, ScaleFormat, View, counter_csr, pack_fields,
                             region_csr_writes)

KIND_OF_VIEW = {View.RAW: Kind.RAW_RD, View.PACKED: Kind.PACKED, View.INT8: Kind.INT8,
                View.FP16: Kind.FP16, View.BF16: Kind.BF16}


def decode_reference(opcode, addr, regions, dram_lines):
    """What the decoder must produce for one request (from spec.py / DESIGN.md section 4)."""
    view, k, offset = addr >> 36, (addr >> 32) & 15, addr & 0xFFFFFFFF
    if view > View.BF16:
        return {"kind": Kind.ERROR, "cause": ErrorCause.BAD_VIEW}
    if opcode == Opcode.MEM_WR and view != View.RAW:
        return {"kind": Kind.ERROR, "cause": ErrorCause.WRITE_TO_VIEW}
    if view != View.RAW and not 1 <= k <= 8:
        return {"kind": Kind.ERROR, "cause": ErrorCause.BAD_K}
    if view == View.RAW:
        if offset >= dram_lines:
            return {"kind": Kind.ERROR, "cause": ErrorCause.RAW_RANGE}
        return {"kind": Kind.RAW_WR if opcode == Opcode.MEM_WR else Kind.RAW_RD, "plane_line": offset}
    lpb = {View.PACKED: k, View.INT8: 8}.get(View(view), 16)
    block, line = divmod(offset, lpb)
    for r in regions:
        if r["valid"] and r["plane_base"] // 8 <= block < r["plane_base"] // 8 + r["blocks"]:
            break
    else:
        return {"kind": Kind.ERROR, "cause": ErrorCause.NO_REGION}
    if view == View.INT8 and not r["symmetric"]:
        return {"kind": Kind.ERROR, "cause": ErrorCause.INT8_ASYMMETRIC}
    b = block - r["plane_base"] // 8
    first_group = b * 512 // r["group_size"]
    return {"kind": KIND_OF_VIEW[View(view)], "line": line, "plane_line": block * 8,
            "meta_line": r["meta_base"] + first_group // 16, "first_group": first_group % 16,
            "scale_bf16": int(r["scale_format"] == ScaleFormat.BF16),
            "scale_pow2": int(r["scale_format"] == ScaleFormat.POW2)}


def random_regions(rng):
    regions, base = [], 8 * int(rng.integers(0, 100))
    for _ in range(MAX_REGIONS):
        blocks = int(rng.integers(1, 40))
        regions.append({"valid": bool(rng.random() < 0.85), "symmetric": bool(rng.random() < 0.5),
                        "plane_base": base, "blocks": blocks, "meta_base": int(rng.integers(0, 1 << 20)),
                        "group_size": int(2 ** rng.integers(5, 12)),
                        "scale_format": ScaleFormat(int(rng.integers(0, 3)))})
        base += 8 * (blocks + int(rng.integers(0, 3)))
    return regions


def random_requests(rng, regions, n):
    """Random requests, half of them near a recent one (another line of its block, and for
    int8 / fp16 / bf16 another k), so that the block cache hits."""
    out = []
    for _ in range(n):
        if out and rng.random() < 0.5:
            _, near = out[-int(rng.integers(1, min(4, len(out)) + 1))]
            view, k, offset = near >> 36, (near >> 32) & 15, near & 0xFFFFFFFF
            lpb = {1: max(k, 1), 2: 8}.get(view, 16)
            if view in (View.INT8, View.FP16, View.BF16) and 1 <= k <= 8:
                k = int(rng.integers(1, 9))
            offset = offset // lpb * lpb + int(rng.integers(0, lpb))
            out.append((Opcode.MEM_RD, (view << 36) | (k << 32) | offset))
            continue
        r = regions[int(rng.integers(0, len(regions)))]
        view = int(rng.choice([0, 1, 1, 2, 3, 4, 4, 5, 9, 15]))
        k = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 15]))
        lpb = {1: max(k, 1), 2: 8}.get(view, 16)
        block = r["plane_base"] // 8 + int(rng.integers(-1, r["blocks"] + 1))
        offset = max(block, 0) * lpb + int(rng.integers(0, lpb))
        if rng.random() < 0.1:
            offset = int(rng.integers(0, 1 << 32))
        opcode = Opcode.MEM_WR if rng.random() < 0.1 else Opcode.MEM_RD
        out.append((opcode, (view << 36) | (k << 32) | (offset & 0xFFFFFFFF)))
    return out


def region_view(r):
    return {"plane_base": r["plane_base"], "meta_base": r["meta_base"], "blocks": r["blocks"],
            "valid": int(r["valid"]), "symmetric": int(r["symmetric"]),
            "scale_format": int(r["scale_format"]), "log2_group": r["group_size"].bit_length() - 1}


#: the block cache's slots in the decoder tests: few, so that slots are replaced
DECODER_SLOTS = dict(plane_slots=6, meta_slots=3)
LOOKUP_FIELDS = ("fetch_plane", "fetch_meta", "fetch_table", "plane_slot", "meta_slot")


def run_decoder(regions, requests, dram_lines, rng):
    """Send `requests` through the RTL decoder with random gaps and backpressure; its
    commands (selected fields) and error reports in order."""
    dut = AddressDecoder(**DECODER_SLOTS)
    got = []

    async def bench(ctx):
        ctx.set(dut.regions, [region_view(r) for r in regions])
        ctx.set(dut.dram_lines, dram_lines)
        pending = list(enumerate(requests))
        while len(got) < len(requests):
            if pending and rng.random() < 0.8:
                i, (opcode, addr) = pending[0]
                ctx.set(dut.req.payload.as_value(), pack_fields(REQ_FIELDS, opcode=opcode, tag=i % 256, addr=addr))
                ctx.set(dut.req.valid, 1)
            else:
                ctx.set(dut.req.valid, 0)
            ready = int(rng.random() < 0.7)
            ctx.set(dut.cmd.ready, ready)
            _, _, req_done, out_valid, out, err = await ctx.tick().sample(
                dut.req.valid & dut.req.ready, dut.cmd.valid, dut.cmd.payload, dut.error)
            if req_done:
                pending.pop(0)
            if out_valid and ready:
                got.append(({name: getattr(out, name) for name in
                             ("kind", "cause", "tag", "line", "plane_line", "meta_line", "first_group",
                              "scale_bf16", "scale_pow2", "k", *LOOKUP_FIELDS)}, err.valid, err.cause, err.addr))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_against_reference(seed):
    rng = np.random.default_rng(seed)
    regions = random_regions(rng)
    requests = random_requests(rng, regions, 300)
    dram_lines = 5000
    got = run_decoder(regions, requests, dram_lines, rng)
    assert len(got) == len(requests)
    cache = SlotModel(**DECODER_SLOTS)
    hits = 0
    for i, ((out, err_valid, err_cause, err_addr), (opcode, addr)) in enumerate(zip(got, requests)):
        want = decode_reference(opcode, addr, regions, dram_lines)
        assert out["tag"] == i % 256
        assert {name: out[name] for name in want} == want, (i, hex(addr), opcode)
        lookup = lookup_reference(cache, want["kind"], out["k"], want.get("plane_line", 0), want.get("meta_line", 0))
        assert {name: out[name] for name in lookup} == lookup, (i, hex(addr), opcode)
        hits += want["kind"] in (Kind.PACKED, Kind.INT8, Kind.FP16, Kind.BF16) and not lookup["fetch_plane"]
        assert bool(err_valid) == (want["kind"] == Kind.ERROR)
        if err_valid:
            assert (err_cause, err_addr) == (want["cause"], addr)
    assert hits > 10


def test_decoder_divides_every_offset_exactly():
    """Packed k = 3, 5, 6, 7 divide by a reciprocal multiply: offsets at multiples of k
    (one below, at, one above) up to 2**32 - 1 give the exact block and line."""
    rng = np.random.default_rng(7)
    region = {"valid": True, "symmetric": True, "plane_base": 0, "blocks": (1 << 32) - 1,
              "meta_base": 0, "group_size": 512, "scale_format": ScaleFormat.FP16}
    requests = []
    for k in (3, 5, 6, 7):
        top = (1 << 32) - 1
        blocks = [top // k, top // k - 1, 1, 0, *rng.integers(0, top // k, 8).tolist()]
        offsets = {min(b * k + delta, top) for b in blocks for delta in (-1, 0, 1, k - 1) if b * k + delta >= 0}
        requests += [(Opcode.MEM_RD, (View.PACKED << 36) | (k << 32) | x) for x in sorted(offsets)]
    got = run_decoder([region] + [dict(region, valid=False)] * (MAX_REGIONS - 1), requests, 0, rng)
    for (out, *_), (_, addr) in zip(got, requests, strict=True):
        k, offset = (addr >> 32) & 15, addr & 0xFFFFFFFF
        assert out["kind"] == Kind.PACKED
        assert (out["plane_line"], out["line"]) == ((offset // k * 8) & 0xFFFFFFFF, offset % k), (k, offset)


def test_csr_file():
    dut = CsrFile(lanes=16, axi_data_width=128, default_dram_lines=1 << 20)

    async def bench(ctx):
        bus = CsrBus(ctx, dut.bus)
        write, read = bus.write, bus.read

        assert await read(CSR_ID) == CSR_ID_VALUE
        assert await read(CSR_DRAM_LINES) == 1 << 20
        await write(CSR_DRAM_LINES, 1234)
        assert ctx.get(dut.dram_lines) == 1 << 20      # the bus is registered on entry:
        await ctx.tick()                                # a write lands one cycle later
        assert ctx.get(dut.dram_lines) == 1234
        for addr, value in region_csr_writes(5, 800, 9000, 77, 256, True, ScaleFormat.BF16):
            await write(addr, value)
            assert await read(addr) == value
        r = ctx.get(dut.regions[5])
        assert (r.plane_base, r.meta_base, r.blocks, r.valid, r.symmetric, r.scale_format, r.log2_group) == \
            (800, 9000, 77, 1, 1, ScaleFormat.BF16, 8)
        assert ctx.get(dut.regions[4]).valid == 0
        # counters: 70 read beats of 16 bytes, 3 host stalls, two errors in one cycle
        ctx.set(dut.events.read_beat, 1)
        await ctx.tick().repeat(70)
        ctx.set(dut.events.read_beat, 0)
        ctx.set(dut.events.host_stall, 1)
        await ctx.tick().repeat(3)
        ctx.set(dut.events.host_stall, 0)
        ctx.set(dut.events.decode_error, {"valid": 1, "cause": ErrorCause.BAD_K, "addr": 0x12_3456_789A})
        ctx.set(dut.events.dram_error, {"valid": 1, "cause": ErrorCause.DRAM_ERROR, "addr": 0x99_0000_0001})
        await ctx.tick()
        ctx.set(dut.events.decode_error.valid, 0)
        ctx.set(dut.events.dram_error.valid, 0)
        values = {}
        for name in COUNTERS:
            lo = await read(counter_csr(name))
            values[name] = lo | (await read(counter_csr(name) + 1) << 32)
        assert values == {name: {"dram_bytes_read": 70 * 16, "host_stall_cycles": 3, "errors_bad_k": 1,
                                 "errors_dram_error": 1}.get(name, 0) for name in COUNTERS}
        assert await read(CSR_ERR_CAUSE) == ErrorCause.DRAM_ERROR
        assert await read(CSR_ERR_ADDR_LO) == 1 and await read(CSR_ERR_ADDR_HI) == 0x99
        await write(CSR_ERR_CAUSE, 0)
        assert await read(CSR_ERR_CAUSE) == ErrorCause.NONE
        await write(CSR_COUNTER_CLEAR, 1)
        assert await read(counter_csr("dram_bytes_read")) == 0
        # a counter's HI half: the snapshot taken with its LO read
        ctx.set(dut.events.write_beat, 1)
        await ctx.tick().repeat(5)
        ctx.set(dut.events.write_beat, 0)
        assert await read(counter_csr("dram_bytes_written")) == 80
        assert await read(counter_csr("dram_bytes_written") + 1) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_region_writes_refuse_a_region_past_the_line_space():
    """A region whose plane lines pass 2**32 would have its block lines wrap to low DRAM
    lines (the decoder checks a block against the region, not the sum): refused."""
    last_fit = (1 << 32) - 8 * 10
    assert region_csr_writes(0, last_fit, 0, 10, 128, True, ScaleFormat.FP16)
    with pytest.raises(ValueError, match="pass the 32-bit line space"):
        region_csr_writes(0, last_fit + 8, 0, 10, 128, True, ScaleFormat.FP16)


def test_rtl_command_writes_verilog(tmp_path):
    from smartquant.cli import main
    assert main(["rtl", "-o", str(tmp_path), "--lanes", "4", "--axi-width", "128"]) == 0
    text = (tmp_path / "smartquant_top.v").read_text()
    assert "module smartquant_top(" in text
    for port in ("req__payload", "drs__payload", "ndr__valid", "csr__r_data", "axi__arvalid",
                 "axi__rdata", "axi__wstrb", "axi__bresp", "clk", "rst"):
        assert port in text, port
    bad = subprocess.run([sys.executable, "-m", "smartquant.cli", "rtl", "-o", str(tmp_path / "x"),
                          "--axi-width", "100"], capture_output=True, text=True)
    assert bad.returncode == 2 and "error:" in bad.stderr and not (tmp_path / "x").exists()
