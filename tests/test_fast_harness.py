"""The fast harness (trace replay inside the simulation, sim/fast_harness.py) against the
cocotb bench: the same verdicts, poison and CSR counters on the same trace and seed, the
same corruptions caught, hangs reported; Verilator (one build per session) and Icarus."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from smartquant import spec
from smartquant.errors import SmartquantError
from smartquant.sim.runner import SimOptions, choose_harness, run_trace
from smartquant.spec import Opcode, View
from smartquant.sw.trace import load_trace, make_trace, save_trace

QUANTIZED = [(View.PACKED, 3), (View.INT8, 4), (View.FP16, 2), (View.BF16, 8)]
STALLY = dict(stall=0.25, read_latency=24)
#: counters that depend only on the request order, not on timing
ORDER_COUNTERS = ("dram_bytes_read", "dram_bytes_written", "lines_raw", "lines_packed", "lines_int8",
                  "lines_fp16", "lines_bf16", "lines_written") + tuple(
    name for name in spec.COUNTERS if name.startswith("errors_"))


@pytest.fixture(scope="module")
def stressed_trace(tiny_image, tiny_image_dir, tmp_path_factory):
    """Every tiny tensor in every quantized view, random order, bad requests and DRAM errors."""
    path = tmp_path_factory.mktemp("fast") / "trace"
    trace = make_trace(tiny_image, tiny_image_dir, None, QUANTIZED, "random", errors=6, seed=3,
                       int8_symmetric_only=True, dram_errors=4)
    save_trace(trace, path, embed_image=True)
    return path, trace


def run_both(path, seed, simulator="verilator"):
    return [run_trace(path, SimOptions(simulator=simulator, seed=seed, harness=harness, **STALLY))
            for harness in ("fast", "python")]


def test_both_harnesses_agree_with_stalls_bad_requests_and_dram_errors(stressed_trace):
    path, trace = stressed_trace
    fast, python = run_both(path, seed=7)
    assert fast["harness"] == "fast" and python["harness"] == "python"
    for stats in (fast, python):
        assert stats["passed"], stats["error"]
        assert stats["lines_compared"] == len(trace)
        assert stats["poisoned"] == int(trace.poison.sum())
        assert stats["counters"]["dram_bytes_read"] == stats["dram_bytes_read_bus"]
    assert fast["counters"]["errors_dram_error"] > 0 and fast["counters"]["errors_no_region"] > 0
    assert {n: fast["counters"][n] for n in ORDER_COUNTERS} == {n: python["counters"][n] for n in ORDER_COUNTERS}
    assert fast["latency_cycles"]["max"] >= fast["latency_cycles"]["mean"] >= fast["latency_cycles"]["min"] > 24
    assert 0 < fast["read_bus_utilisation"] < 1


def corrupt_expected_line(source, trace, out):
    """A copy of the trace at `out` with byte 9 of one unpoisoned read's expected line flipped;
    the request's index."""
    shutil.copytree(source, out)
    index = int(np.flatnonzero((trace.opcode == Opcode.MEM_RD) & (trace.poison == 0))[len(trace) // 3])
    lines = trace.line.copy()
    lines[index, 9] ^= 0x10
    np.savez(out / "requests.npz", opcode=trace.opcode, tag=trace.tag, addr=trace.addr, line=lines,
             poison=trace.poison)
    return index


def test_both_harnesses_name_a_corrupted_expected_line_alike(stressed_trace, tmp_path):
    source, trace = stressed_trace
    index = corrupt_expected_line(source, trace, tmp_path / "corrupt")
    fast, python = run_both(tmp_path / "corrupt", seed=2)
    where = f"request {index} tag {trace.tag[index]} MemRd addr {int(trace.addr[index]):#x}"
    for stats in (fast, python):
        assert not stats["passed"] and stats["mismatches"] == 1
        assert where in stats["error"] and "1 bytes differ (got != expected): [9]" in stats["error"]
    # the same message but for the cycle it was seen at
    assert fast["error"].split(": ", 1)[1] == python["error"].split(": ", 1)[1]


def test_the_cli_fast_harness_fails_on_a_corrupted_line(stressed_trace, tmp_path):
    source, trace = stressed_trace
    index = corrupt_expected_line(source, trace, tmp_path / "corrupt")
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "sim", str(tmp_path / "corrupt"),
                          "--harness", "fast", "--seed", "1"], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert f"request {index} tag {trace.tag[index]}" in out.stderr and "FAIL" in out.stdout


def test_both_harnesses_catch_a_corrupted_image_byte(stressed_trace, tmp_path):
    source, _ = stressed_trace
    path = tmp_path / "corrupt"
    shutil.copytree(source, path)
    entry = load_trace(path).load_image().entries[0]
    dram = np.fromfile(path / "image" / "dram.bin", np.uint8)
    dram[entry.plane_base * spec.LINE_BYTES + 5] ^= 0x01
    dram.tofile(path / "image" / "dram.bin")
    for stats in run_both(path, seed=4):
        assert not stats["passed"] and stats["mismatches"] >= 1
        assert "bytes differ" in stats["first_mismatch"]


def test_image_loaded_through_the_host_port(tiny_image, tiny_image_dir, tmp_path):
    trace = make_trace(tiny_image, tiny_image_dir, None, [(View.FP16, 3)], "strided", errors=2, seed=11,
                       load_via_host=True)
    save_trace(trace, tmp_path / "load")
    stats = run_trace(tmp_path / "load", SimOptions(seed=11, harness="fast", **STALLY))
    assert stats["passed"], stats["error"]
    assert stats["counters"]["lines_written"] == tiny_image.dram.size // spec.LINE_BYTES
    assert stats["dram_bytes_written_bus"] == tiny_image.dram.size


def test_a_hang_is_reported_not_waited_for(stressed_trace):
    path, _ = stressed_trace
    stats = run_trace(path, SimOptions(read_latency=400, watchdog_cycles=100, harness="fast"))
    assert not stats["passed"] and stats["error"].startswith("hang: no progress for 100 cycles")
    assert "oldest outstanding: request" in stats["error"]


def test_icarus_runs_the_fast_harness(iverilog, tiny_image, tiny_image_dir, tmp_path):
    entry = min(tiny_image.entries, key=lambda e: e.blocks)
    trace = make_trace(tiny_image, tiny_image_dir, [entry.name], [(View.PACKED, 3), (View.FP16, 2)], "random",
                       errors=2, seed=6, dram_errors=2)
    save_trace(trace, tmp_path / "t")
    stats = run_trace(tmp_path / "t", SimOptions(simulator="icarus", seed=6, harness="fast", **STALLY))
    assert stats["passed"], stats["error"]
    assert stats["lines_compared"] == len(trace) and stats["poisoned"] == int(trace.poison.sum())
    assert stats["counters"]["errors_dram_error"] > 0
    index = corrupt_expected_line(tmp_path / "t", trace, tmp_path / "corrupt")
    stats = run_trace(tmp_path / "corrupt", SimOptions(simulator="icarus", seed=6, harness="fast", **STALLY))
    assert not stats["passed"] and f"request {index} tag" in stats["error"]


def test_the_harness_choice():
    assert choose_harness(SimOptions()) == "fast"
    assert choose_harness(SimOptions(simulator="amaranth")) == "python"
    assert choose_harness(SimOptions(waves="w.vcd")) == "python"
    with pytest.raises(SmartquantError, match="--waves needs --harness python"):
        choose_harness(SimOptions(waves="w.vcd", harness="fast"))
    with pytest.raises(SmartquantError, match="--sim amaranth needs --harness python"):
        choose_harness(SimOptions(simulator="amaranth", harness="fast"))
