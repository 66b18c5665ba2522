"""Table-lookup dequantizer (hw.lut_dequant) bit-exact against the golden LUT decoder."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from smartquant.hw.lut_dequant import LutDequantizer
from smartquant.spec import CODEBOOK_ENTRIES, ScaleFormat, View, codebook_index
from smartquant.sw.quantize.codebook import CodebookQuantizer
from smartquant.sw.fpformat import fp16_bits
from smartquant.sw.codes import view_code
from smartquant.sw.image.golden import lut_result_bits

LANES = 8
#: binary16 entries with every special case: zeros, subnormals, extremes, infinities, NaNs
SPECIAL_ENTRIES = [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x3555, 0x7BFF, 0xFBFF,
                   0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x1000, 0x2E66]
SCALES = {ScaleFormat.FP16: [0x0000, 0x0001, 0x0400, 0x2E66, 0x3C00, 0x3C01, 0xBC00, 0x5BFF, 0x7BFF, 0x7C00, 0x7E00],
          ScaleFormat.BF16: [0x0000, 0x0001, 0x0080, 0x3380, 0x3C4D, 0x3F80, 0x477F, 0x7F7F, 0x7F80, 0x7FC1],
          ScaleFormat.POW2: [0x0000, 0x0400, 0x3C55, 0x2C00, 0x7800, 0x7C55]}


def run_lut(table: np.ndarray, cases):
    """Load `table` (uint16 [512]), then for each (q codes [LANES], k, scale bits, format, out_bf16)
    return the LANES results the block answers `LATENCY` cycles after `valid` (a case per cycle)."""
    dut = LutDequantizer(LANES)
    results = []

    async def bench(ctx):
        ctx.set(dut.load.valid, 1)
        for index, entry in enumerate(table):
            ctx.set(dut.load.payload.index, index)
            ctx.set(dut.load.payload.entry, int(entry))
            await ctx.tick()
        ctx.set(dut.load.valid, 0)
        for cycle in range(len(cases) + LutDequantizer.LATENCY):
            ctx.set(dut.valid, cycle < len(cases))
            if cycle < len(cases):
                codes, k, scale, fmt, out_bf16 = cases[cycle]
                ctx.set(dut.r, [int(v) for v in view_code(codes, k)])
                ctx.set(dut.k, k)
                ctx.set(dut.scale, scale)
                ctx.set(dut.scale_bf16, fmt == ScaleFormat.BF16)
                ctx.set(dut.scale_pow2, fmt == ScaleFormat.POW2)
                ctx.set(dut.out_bf16, out_bf16)
            await ctx.tick()
            assert ctx.get(dut.result_valid) == (LutDequantizer.LATENCY - 1 <= cycle < len(cases) + LutDequantizer.LATENCY - 1)
            if ctx.get(dut.result_valid):
                results.append([int(v) for v in ctx.get(dut.result)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def expected(table, codes, k, scale, fmt, out_bf16):
    entries = table[codebook_index(k, np.asarray(codes, np.int64) >> (8 - k))]
    return lut_result_bits(entries, np.full(len(codes), scale, np.uint16), fmt,
                           View.BF16 if out_bf16 else View.FP16).tolist()


def check(table, cases):
    for case, got in zip(cases, run_lut(table, cases), strict=True):
        assert got == expected(table, *case), (case, [hex(v) for v in got],
                                               [hex(v) for v in expected(table, *case)])


@pytest.mark.parametrize("fmt", list(ScaleFormat))
def test_special_entries_every_view(fmt):
    """Every special entry against every scale of the format, both outputs, views 1..8."""
    rng = np.random.default_rng(int(fmt))
    table = np.array([SPECIAL_ENTRIES[i % len(SPECIAL_ENTRIES)] for i in range(CODEBOOK_ENTRIES)], np.uint16)
    rng.shuffle(table)
    cases = [(rng.integers(0, 256, LANES).astype(np.uint8), int(k), s, fmt, bool(ob))
             for s in SCALES[fmt] for ob in (False, True) for k in (1, 3, 4, 8)]
    check(table, cases)


def test_random_tables_and_scales():
    """Random finite entries and scales: rounding ties, subnormal outputs and overflows."""
    rng = np.random.default_rng(7)
    table = rng.integers(0, 0x7C00, CODEBOOK_ENTRIES).astype(np.uint16) | (rng.integers(0, 2, CODEBOOK_ENTRIES) << 15).astype(np.uint16)
    cases = []
    for _ in range(60):
        fmt = ScaleFormat(int(rng.integers(0, 3)))
        scale = int(rng.integers(0, 0x7F80 if fmt == ScaleFormat.BF16 else 0x7C00))
        cases.append((rng.integers(0, 256, LANES).astype(np.uint8), int(rng.integers(1, 9)), scale, fmt,
                      bool(rng.integers(0, 2))))
    check(table, cases)


def test_fitted_codebook_tensor():
    """A codebook fitted to real-looking weights decodes in the RTL as in software."""
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((4, 128)) * 0.05
    qt = CodebookQuantizer(32).quantize(weight)
    table = qt.table_bits
    codes = qt.codes.reshape(-1, 32)
    cases = [(codes[g, lane0:lane0 + LANES], k, int(qt.scale_bits.reshape(-1)[g]), ScaleFormat.FP16, False)
             for g in range(0, codes.shape[0], 3) for lane0 in (0, 24) for k in (2, 3, 4)]
    check(table, cases)
    # the software tensor's values are the golden lane's, weight by weight
    scales = np.repeat(qt.scale_bits.reshape(-1), 32)
    entries = table[codebook_index(3, qt.codes.reshape(-1).astype(np.int64) >> 5)]
    assert np.array_equal(fp16_bits(qt.dequantize(3)).reshape(-1),
                          lut_result_bits(entries, scales, ScaleFormat.FP16, View.FP16))
