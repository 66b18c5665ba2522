"""Co-verification of table-lookup (codebook) regions under cocotb (Verilator): a golden
trace over LUT and affine tensors passes, and one corrupted expected LUT line is caught."""

import shutil

import numpy as np
import pytest

from smartquant import spec
from smartquant.sim.runner import SimOptions, run_trace
from smartquant.spec import Opcode, View
from smartquant.sw.image.trace import make_trace, save_trace

STALLY = dict(stall=0.25, read_latency=24)
#: fp16 / bf16 views reload the tables at every (codebook, k) change in random order
VIEWS = [(View.FP16, 3), (View.BF16, 8), (View.FP16, 2), (View.PACKED, 4), (View.INT8, 4)]


@pytest.fixture(scope="module")
def lut_trace(lut_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("lut")
    lut_image.save(root / "img")
    trace = make_trace(lut_image, root / "img", None, VIEWS, "random", errors=3, seed=13, int8_symmetric_only=True)
    save_trace(trace, root / "trace", embed_image=True)
    return root / "trace", trace


def lut_rows(trace, image):
    """Indices of the trace's unpoisoned fp16 / bf16 reads of LUT tensors."""
    lut_blocks = [(e.plane_base // spec.PLANES, e.blocks) for e in image.entries if e.codebook_base is not None]
    rows = []
    for i, addr in enumerate(trace.addr):
        view, k, offset = spec.split_host_line_address(int(addr))
        if trace.poison[i] or view not in (View.FP16, View.BF16):
            continue
        block = offset // spec.lines_per_block(View(view), k)
        if any(first <= block < first + n for first, n in lut_blocks):
            rows.append(i)
    return rows


def test_lut_trace_passes(lut_trace, lut_image):
    path, trace = lut_trace
    assert len(lut_rows(trace, lut_image)) > 100
    stats = run_trace(path, SimOptions(seed=13, **STALLY))
    assert stats["passed"], stats["error"] or stats.get("first_mismatch")
    assert stats["lines_compared"] == len(trace)
    assert stats["poisoned"] == int(trace.poison.sum()) > 0
    assert stats["counters"]["dram_bytes_read"] == stats["dram_bytes_read_bus"] > 0


def test_corrupted_expected_lut_line_is_caught(lut_trace, lut_image, tmp_path):
    source, trace = lut_trace
    path = tmp_path / "corrupt"
    shutil.copytree(source, path)
    rows = lut_rows(trace, lut_image)
    index = rows[len(rows) // 2]
    lines = trace.line.copy()
    lines[index, 21] ^= 0x04
    np.savez(path / "requests.npz", opcode=trace.opcode, tag=trace.tag, addr=trace.addr, line=lines,
             poison=trace.poison)
    stats = run_trace(path, SimOptions(seed=14, **STALLY))
    assert not stats["passed"] and stats["mismatches"] == 1
    assert f"request {index} " in stats["first_mismatch"] and "1 bytes differ" in stats["first_mismatch"]
    assert trace.opcode[index] == Opcode.MEM_RD
