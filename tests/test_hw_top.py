"""SmartQuantTop in the Amaranth simulator against the golden decoder (sw.golden), with
random ready/valid stalls on the host and every AXI channel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hw_bench import (KS, BenchConfig, check_against_golden, region_writes, run_top,
                      tensor_requests, timelines)
from smartquant.hw import decode
from smartquant.spec import (BLOCK_WEIGHTS, GROUPS_PER_META_LINE, LINE_BYTES, PLANES, ErrorCause, Opcode, View,
                             host_line_address, lines_per_block)
from smartquant.sw.image import golden
from smartquant.sw.image.trace import interleaved_streams

QUANTIZED = (View.PACKED, View.INT8, View.FP16, View.BF16)
def test_tiny_image_every_view_and_k(tiny_image):
    """Every tensor of the tiny image (sym/asym, fp16/bf16/pow2 scales, G=32..256), every
    quantized view at k in {2,3,4,8} (int8 of asymmetric tensors: poison), plus raw lines."""
    requests = [(Opcode.MEM_RD, host_line_address(View.RAW, 0, line), 0) for line in range(0, 40, 3)]
    for view in QUANTIZED:
        for k in KS:
            for entry in tiny_image.entries:
                requests += tensor_requests(entry, view, k)
    result = run_top(tiny_image.dram, region_writes(tiny_image.entries), requests,
                     dram_lines=tiny_image.dram_lines, cfg=BenchConfig(latency=12, seed=1))
    check_against_golden(tiny_image, requests, result)
    asym_int8 = sum(len(tensor_requests(e, View.INT8, k)) for e in tiny_image.entries if not e.symmetric
                    for k in KS)
    assert result.counters["errors_int8_asymmetric"] == asym_int8 > 0


def test_narrow_axi_few_lanes_few_buffers(tiny_image):
    """axi_data_width=128 (4 beats per line), lanes=8 (4 steps per fp16 line), and the
    fewest block buffers and a short job queue, so fetches wait for released slots."""
    requests = []
    for view in QUANTIZED:
        for entry in tiny_image.entries[:3]:
            requests += tensor_requests(entry, view, 3)
    result = run_top(tiny_image.dram, region_writes(tiny_image.entries), requests,
                     dram_lines=tiny_image.dram_lines, cfg=BenchConfig(latency=5, seed=2),
                     axi_data_width=128, lanes=8, plane_slots=2, meta_slots=2, job_depth=8)
    check_against_golden(tiny_image, requests, result)


def smallest_tensor(image):
    return min(image.entries, key=lambda e: (e.blocks, e.name))


#: blocks read from the tensor's start: 4 per host with 16 hosts, 16 metadata lines at G = 128
PREFIX_BLOCKS = 64


@pytest.mark.parametrize("view,k,streams", [pytest.param(View.PACKED, 3, 1, marks=pytest.mark.slow),
                                            pytest.param(View.FP16, 4, 1, marks=pytest.mark.slow),
                                            (View.PACKED, 3, 16), (View.FP16, 4, 4)],
                         ids=["packed-3", "fp16-4", "packed-3-16-hosts", "fp16-4-4-hosts"])
def test_minilm_tensor_reads_each_line_once(minilm_image, view, k, streams):
    """The first PREFIX_BLOCKS blocks of a MiniLM tensor read by
    `streams` hosts, each reading a contiguous part, their requests interleaved one by one
    (1: one sequential stream): bit-exact, and every plane line and metadata line is read
    once (k lines per block, plus each metadata line once for fp16), from the CSR counters."""
    entry = smallest_tensor(minilm_image)
    blocks = min(entry.blocks, PREFIX_BLOCKS)
    in_order = tensor_requests(entry, view, k, blocks)
    requests = [in_order[i] for i in interleaved_streams(len(in_order), streams)]
    result = run_top(minilm_image.dram, region_writes([entry]), requests,
                     dram_lines=minilm_image.dram_lines, cfg=BenchConfig(latency=20, seed=3 + streams))
    check_against_golden(minilm_image, requests, result)
    expected = k * LINE_BYTES * blocks
    if view == View.FP16:
        groups = -(-blocks * BLOCK_WEIGHTS // entry.group_size)      # groups run in the blocks' order
        meta_lines = -(-groups // GROUPS_PER_META_LINE)
        expected += meta_lines * LINE_BYTES
        assert result.counters["meta_misses"] == meta_lines
    assert result.counters["dram_bytes_read"] == expected
    assert result.counters[f"lines_{view.name.lower()}"] == len(requests)
    assert result.counters["dram_bytes_written"] == 0
    assert (result.counters["plane_lookups"], result.counters["plane_misses"]) == (len(requests), blocks)


@pytest.mark.slow
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("view", QUANTIZED, ids=lambda v: v.name.lower())
def test_minilm_tensor_every_view(minilm_image, view, k):
    """The acceptance sweep: a whole MiniLM tensor at every view and k (int8 views of the
    asymmetric MiniLM tensors are poison, as the golden decoder says)."""
    entry = smallest_tensor(minilm_image)
    requests = tensor_requests(entry, view, k)
    result = run_top(minilm_image.dram, region_writes([entry]), requests,
                     dram_lines=minilm_image.dram_lines, cfg=BenchConfig(latency=32, seed=k))
    check_against_golden(minilm_image, requests, result)


def test_first_read_reaches_the_dram_and_the_response_stage_without_waiting():
    """One read into an idle controller (no stalls): its AR leaves `decode.STAGES` + 2
    cycles after the request is accepted (the decoder, the command queue's register pair
    reached past the empty queue, the issue stage's read queue), and the response stage
    starts it the cycle after the last beat of its plane burst."""
    latency = 20
    for view, k, timeline in timelines(latency, cases=((View.PACKED, 3), (View.FP16, 2))):
        assert timeline["AR accepted"] == decode.STAGES + 2, (view, k, timeline)
        assert timeline["first R beat"] - timeline["AR accepted"] >= latency       # (the RAM model's)
        assert timeline["landed"] == timeline["response stage starts"] == timeline["plane burst's last beat"] + 1, (view, k)
        assert list(timeline.values()) == sorted(timeline.values()), (view, k, timeline)


def test_bad_requests_poison_and_count(tiny_image):
    """Every error cause answers poison (zero data), is counted, and leaves its neighbours intact."""
    sym = next(e for e in tiny_image.entries if e.symmetric)
    asym = next(e for e in tiny_image.entries if not e.symmetric)
    regions = [sym, asym]
    good = tensor_requests(sym, View.FP16, 4, blocks=1)
    bad_line = asym.plane_base + 1            # an AXI SLVERR line inside asym's first block
    end = (sym.plane_base // PLANES + sym.blocks) * lines_per_block(View.PACKED, 2)
    bad = {
        ErrorCause.BAD_VIEW: [(Opcode.MEM_RD, (7 << 36) | (2 << 32), 0)],
        ErrorCause.WRITE_TO_VIEW: [(Opcode.MEM_WR, host_line_address(View.FP16, 4, 0), 5)],
        ErrorCause.BAD_K: [(Opcode.MEM_RD, (int(View.PACKED) << 36), 0),
                           (Opcode.MEM_RD, (int(View.FP16) << 36) | (9 << 32), 0)],
        ErrorCause.RAW_RANGE: [(Opcode.MEM_RD, host_line_address(View.RAW, 0, tiny_image.dram_lines), 0)],
        ErrorCause.NO_REGION: [(Opcode.MEM_RD, host_line_address(View.PACKED, 2, end), 0),
                               (Opcode.MEM_RD, host_line_address(View.BF16, 2, 1 << 30), 0)],
        ErrorCause.INT8_ASYMMETRIC: tensor_requests(asym, View.INT8, 3, blocks=1)[:2],
        ErrorCause.DRAM_ERROR: [(Opcode.MEM_RD, host_line_address(View.PACKED, 2, golden.view_offset(asym, View.PACKED, 2)), 0),
                                (Opcode.MEM_RD, host_line_address(View.RAW, 0, bad_line), 0),
                                (Opcode.MEM_WR, host_line_address(View.RAW, 0, bad_line), 7)],
    }
    requests = []
    for reqs in bad.values():
        requests += good[:3] + reqs
    requests += good
    result = run_top(tiny_image.dram, region_writes(regions), requests, dram_lines=tiny_image.dram_lines,
                     cfg=BenchConfig(latency=6, seed=4), error_lines=[bad_line])
    assert len(result.responses) == len(requests)
    i = 0
    for cause, reqs in bad.items():
        for opcode, addr, _ in good[:3]:
            kind, _, poison, data = result.responses[i]
            assert (poison, data) == (0, golden.response_line(tiny_image, addr)[0]), (cause, i)
            i += 1
        for opcode, addr, _ in reqs:
            kind, tag, poison, data = result.responses[i]
            assert tag == i % 256 and poison == 1, (cause, i)
            assert kind == ("ndr" if opcode == Opcode.MEM_WR else "drs")
            assert data in (None, bytes(LINE_BYTES))
            i += 1
        assert result.counters[f"errors_{cause.name.lower()}"] == len(reqs), cause
    for (_, _, poison, data), (_, addr, _) in zip(result.responses[i:], good):
        assert (poison, data) == (0, golden.response_line(tiny_image, addr)[0])
    assert result.error_cause == ErrorCause.DRAM_ERROR
    assert result.error_addr == host_line_address(View.RAW, 0, bad_line)


def test_writes_then_reads_see_new_data(tiny_image):
    """Raw MemWr of a block's plane lines (inside and beyond the lines cached) and metadata,
    interleaved with reads of the same block through every view (the block cache holds it):
    every read sees exactly the writes issued before it."""
    entry = next(e for e in tiny_image.entries if e.symmetric)
    rng = np.random.default_rng(5)
    image = dataclasses.replace(tiny_image, dram=tiny_image.dram.copy())
    requests, expected = [], []
    reads = [(Opcode.MEM_RD, host_line_address(View.RAW, 0, entry.plane_base + line), 0) for line in (0, 6)]
    for view, k in ((View.FP16, 3), (View.PACKED, 8), (View.PACKED, 3), (View.INT8, 8), (View.BF16, 8)):
        reads += tensor_requests(entry, view, k, blocks=1)[:3]
    for rnd in range(3):
        requests += reads
        expected += [golden.response_line(image, addr) for _, addr, _ in reads]
        for line in [entry.plane_base + rnd, entry.plane_base + 6, entry.meta_base]:
            payload = rng.integers(0, 256, LINE_BYTES, dtype=np.uint8)
            requests.append((Opcode.MEM_WR, host_line_address(View.RAW, 0, line), int.from_bytes(payload.tobytes(), "little")))
            expected.append(None)
            image.dram[line * LINE_BYTES:(line + 1) * LINE_BYTES] = payload
    requests += reads
    expected += [golden.response_line(image, addr) for _, addr, _ in reads]
    result = run_top(tiny_image.dram, region_writes([entry]), requests, dram_lines=tiny_image.dram_lines,
                     cfg=BenchConfig(latency=9, seed=6))
    for i, ((kind, tag, poison, data), want) in enumerate(zip(result.responses, expected)):
        assert tag == i % 256
        if want is None:
            assert (kind, poison) == ("ndr", 0)
        else:
            assert (kind, bool(poison), data) == ("drs", want[1], want[0]), i
    assert np.array_equal(result.dram, image.dram)
    assert result.counters["lines_written"] == 9
    assert result.counters["dram_bytes_written"] == 9 * LINE_BYTES
    # (the reads between writes hit the cache: fewer plane fetches than quantized reads)
    assert result.counters["plane_misses"] < result.counters["plane_lookups"] == 4 * 15
