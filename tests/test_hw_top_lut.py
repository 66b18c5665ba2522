"""SmartQuantTop serving table-lookup (codebook) regions in the Amaranth simulator, bit-exact
against the golden decoder (sw.golden), with random stalls on the host and every AXI channel."""

from __future__ import annotations

import pytest

from hw_bench import KS, BenchConfig, check_against_golden, region_writes, run_top, tensor_requests
from smartquant.spec import LINE_BYTES, View, codebook_lines_read
from smartquant.sw.image import golden


def test_lut_regions_every_k_fp16_bf16(lut_image):
    """fp16 and bf16 views of both LUT tensors at k in {2,3,4,8}, interleaved with the affine
    tensor, so the tables are reloaded on every (codebook, k) change; packed views of a LUT
    region are its planes and int8 views are poison."""
    lut_a, affine, lut_b = lut_image.entries
    requests = []
    for k in KS:
        for view in (View.FP16, View.BF16):
            requests += tensor_requests(lut_a, view, k, blocks=1) + tensor_requests(affine, view, k, blocks=1)[:5]
            requests += tensor_requests(lut_b, view, k) + tensor_requests(lut_a, view, k, blocks=1)[:3]
    requests += tensor_requests(lut_b, View.PACKED, 3) + tensor_requests(lut_a, View.INT8, 4, blocks=1)[:2]
    result = run_top(lut_image.dram, region_writes(lut_image.entries), requests,
                     dram_lines=lut_image.dram_lines, cfg=BenchConfig(latency=10, seed=21))
    check_against_golden(lut_image, requests, result)
    assert result.counters["errors_int8_asymmetric"] == 2


@pytest.mark.parametrize("k", [3, 8])
def test_codebook_lines_count_as_dram_bytes(lut_image, k):
    """A LUT tensor read sequentially (8 lanes, 128-bit AXI): its planes and metadata once,
    plus view k's codebook lines once."""
    entry = lut_image.entries[0]
    requests = tensor_requests(entry, View.FP16, k)
    result = run_top(lut_image.dram, region_writes(lut_image.entries), requests,
                     dram_lines=lut_image.dram_lines, cfg=BenchConfig(latency=6, seed=k),
                     axi_data_width=128, lanes=8, plane_slots=2, meta_slots=2, job_depth=8)
    check_against_golden(lut_image, requests, result)
    assert result.counters["dram_bytes_read"] == LINE_BYTES * (
        k * entry.blocks + entry.meta_lines + codebook_lines_read(k))


def test_failed_codebook_read_poisons_its_lookups_until_the_next_load(lut_image):
    """An AXI error on view 3's codebook line: every fp16 line of the LUT region at k = 3 is
    poisoned (and counted), the affine region's lines are not, and the next table load (k = 5,
    from line 1) serves exact lines again."""
    lut_a, affine, _ = lut_image.entries
    failing = tensor_requests(lut_a, View.FP16, 3, blocks=1)
    after = tensor_requests(affine, View.FP16, 3, blocks=1)[:4] + tensor_requests(lut_a, View.FP16, 5, blocks=1)
    result = run_top(lut_image.dram, region_writes(lut_image.entries), failing + after,
                     dram_lines=lut_image.dram_lines, cfg=BenchConfig(latency=6, seed=5),
                     error_lines=[lut_a.codebook_base])   # line 0: entries 0..31, views 1..4
    assert [poison for _, _, poison, _ in result.responses[:len(failing)]] == [1] * len(failing)
    assert all(data == bytes(LINE_BYTES) for _, _, _, data in result.responses[:len(failing)])
    assert result.counters["errors_dram_error"] == len(failing) + 1      # the load, then each line
    for (_, _, poison, data), (_, addr, _) in zip(result.responses[len(failing):], after, strict=True):
        assert (bool(poison), data) == (False, golden.response_line(lut_image, addr)[0])
