"""Dequantizer lanes and the plane transpose against numpy / sw.fpformat, every code value."""

import random

import numpy as np
import pytest
from amaranth import Const
from amaranth.sim import Simulator

from smartquant.hw.dequant import Dequantizer
from smartquant.hw.transpose import CodeGather, view_masks
from smartquant.sim.streams import get, put, simulate
from smartquant.spec import ScaleFormat
from smartquant.sw.fpformat import bf16_bits, fp16_bits, scale_value

LANES = 32
CANONICAL_NAN = {False: 0x7E00, True: 0x7FC0}


def reference(r, zero, scale_bits, scale_format, out_bf16):
    """Expected 16-bit results: s * (r - z) in float64, rounded once; NaN canonical."""
    s = scale_value(np.uint16(scale_bits), scale_format)
    with np.errstate(invalid="ignore"):
        values = s * (np.asarray(r, dtype=np.float64) - zero)
    bits = (bf16_bits if out_bf16 else fp16_bits)(values).astype(np.int64)
    bits[np.isnan(values)] = CANONICAL_NAN[out_bf16]
    return bits


def fp16_scales():
    """A spread of binary16 scales: zero, subnormals, tiny normals, ordinary, maximum, inf, NaN."""
    return [0x0000, 0x8000, 0x0001, 0x0003, 0x03FF, 0x0400, 0x0401, 0x1000, 0x2E66, 0x3555,
            0x3C00, 0x3C01, 0xBC00, 0x4248, 0x5BFF, 0x5C00, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00,
            0x7C01, 0x7E00]


def bf16_scales():
    """bfloat16 scales: subnormals, the fp16-subnormal range, ordinary, huge, maximum, inf, NaN."""
    return [0x0000, 0x0001, 0x007F, 0x0080, 0x2F80, 0x3380, 0x3A83, 0x3C4D, 0x3F80, 0xBF81,
            0x4780, 0x477F, 0x7F7F, 0xFF7F, 0x7F80, 0x7FC1]


def run_dequantizer(cases, seed=0):
    """cases: list of (scale_bits, scale_format, zero, out_bf16); returns results for r = 0..255 each.

    Steps of LANES codes go through the pipeline with random gaps on the input and random
    backpressure on the output; results must come back in order, one per step."""
    dut = Dequantizer(LANES)
    steps = [{"r": list(range(base, base + LANES)), "zero": zero, "scale": scale_bits,
              "scale_bf16": scale_format == ScaleFormat.BF16, "scale_pow2": scale_format == ScaleFormat.POW2,
              "out_bf16": out_bf16} for scale_bits, scale_format, zero, out_bf16 in cases for base in range(0, 256, LANES)]
    taken = []

    async def feed(ctx):
        await put(ctx, dut.input, steps, rng=random.Random(seed), p_valid=0.8)

    async def take(ctx):
        taken.extend(await get(ctx, dut.output, len(steps), rng=random.Random(seed + 1), p_ready=0.8))

    simulate(dut, feed, take)
    results = [[int(v) for v in payload] for _, payload in taken]
    per_case = 256 // LANES
    return [sum(results[i:i + per_case], []) for i in range(0, len(results), per_case)]


def test_full_rate_and_latency():
    """With the output always taken, a step enters every cycle and leaves LATENCY cycles later."""
    dut = Dequantizer(LANES)
    steps = [{"r": list(range(base, base + LANES)), "zero": 128, "scale": 0x3C00} for base in range(0, 256, LANES)]
    cycles = {}

    async def feed(ctx):
        cycles["in"] = await put(ctx, dut.input, steps)

    async def take(ctx):
        cycles["out"] = await get(ctx, dut.output, len(steps))

    simulate(dut, feed, take)
    assert cycles["in"] == list(range(len(steps)))
    assert [c for c, _ in cycles["out"]] == [Dequantizer.LATENCY + n for n in range(len(steps))]
    expected = reference(np.arange(256), 128, 0x3C00, ScaleFormat.FP16, False)
    assert sum(([int(v) for v in row] for _, row in cycles["out"]), []) == expected.tolist()


@pytest.mark.parametrize("out_bf16", [False, True])
@pytest.mark.parametrize("scale_format", list(ScaleFormat))
def test_every_code_every_scale(scale_format, out_bf16):
    scales = bf16_scales() if scale_format == ScaleFormat.BF16 else fp16_scales()
    if scale_format == ScaleFormat.POW2:
        scales = scales + [0x3C55, 0x7C55]     # mantissa bits a POW2 scale must ignore
    cases = [(s, scale_format, z, out_bf16) for s in scales for z in (0, 128, 37, 255)]
    got = run_dequantizer(cases)
    for (s, fmt, z, ob), row in zip(cases, got):
        expected = reference(np.arange(256), z, s, fmt, ob)
        mismatch = np.nonzero(np.asarray(row) != expected)[0]
        assert mismatch.size == 0, (hex(s), fmt, z, ob, [(int(r), hex(row[r]), hex(expected[r])) for r in mismatch[:4]])


def test_random_scales_round_once():
    """Random finite scales of both formats: covers rounding ties and carries broadly."""
    rng = np.random.default_rng(4)
    cases = [(int(rng.integers(0, 0x7C00)) | (int(rng.integers(0, 2)) << 15), ScaleFormat.FP16,
              int(rng.integers(0, 256)), bool(rng.integers(0, 2))) for _ in range(12)]
    cases += [(int(rng.integers(0, 0x7F80)), ScaleFormat.BF16, int(rng.integers(0, 256)),
               bool(rng.integers(0, 2))) for _ in range(12)]
    for (s, fmt, z, ob), row in zip(cases, run_dequantizer(cases, seed=1)):
        assert row == reference(np.arange(256), z, s, fmt, ob).tolist(), (hex(s), fmt, z, ob)


def view_code(q, k):
    """r of 8-bit codes q at k bits (written here from DESIGN.md section 2)."""
    q = np.asarray(q, dtype=np.int64)
    if k == 8:
        return q
    return ((q >> (8 - k)) << (8 - k)) | (1 << (7 - k))


def test_code_gather_every_code_every_k():
    dut = CodeGather(64)
    codes = np.arange(256).reshape(4, 64)
    got = {}

    async def bench(ctx):
        for k in range(1, 9):
            for row, q in enumerate(codes):
                # plane line p holds bit 7-p of every weight
                ctx.set(dut.planes, [sum(((int(v) >> (7 - p)) & 1) << i for i, v in enumerate(q))
                                     for p in range(8)])
                ctx.set(dut.masks.as_value(), ctx.get(view_masks(Const(k, 4))))
                got[k, row] = [int(v) for v in ctx.get(dut.r)]

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    for (k, row), r in got.items():
        assert r == view_code(codes[row], k).tolist(), (k, row)
