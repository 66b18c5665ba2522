"""Co-verification of the RTL top level (hw/top.py) against golden traces in the cocotb bench
(`harness="python"`; tests/test_fast_harness.py covers the fast one): Verilator by default (one compile per session, cached), Icarus for the same scoreboard."""

import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from smartquant import spec
from smartquant.sim.runner import SimOptions, run_trace
from smartquant.spec import View
from smartquant.sw.image.trace import load_trace, make_trace, save_trace

KS = (2, 3, 4, 8)
QUANTIZED = (View.PACKED, View.INT8, View.FP16, View.BF16)
#: every run: random pauses on all AXI channels and host streams, and DRAM latency
STALLY = dict(stall=0.25, read_latency=24, harness="python")


def seeded_trace(tiny_image, tiny_image_dir, out, seed: int, **kwargs):
    """A trace over all tiny tensors: every quantized view at a k drawn from KS, in a
    random order kind, three bad requests mixed in."""
    rng = random.Random(seed)
    views = [(view, rng.choice(KS)) for view in QUANTIZED]
    trace = make_trace(tiny_image, tiny_image_dir, None, views, rng.choice(["sequential", "strided", "random"]),
                       errors=kwargs.pop("errors", 3), seed=seed, int8_symmetric_only=True, **kwargs)
    save_trace(trace, out, embed_image=True)
    return trace


@pytest.fixture(scope="module")
def base_trace(tiny_image, tiny_image_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "base"
    return path, seeded_trace(tiny_image, tiny_image_dir, path, seed=0)


def assert_passed(stats, trace):
    assert stats["passed"], stats["error"]
    assert stats["lines_compared"] == len(trace)
    assert stats["poisoned"] == int(trace.poison.sum()) > 0
    assert stats["counters"]["dram_bytes_read"] == stats["dram_bytes_read_bus"] > 0


def run_sweep(tiny_image, tiny_image_dir, tmp_path, seed):
    trace = seeded_trace(tiny_image, tiny_image_dir, tmp_path / f"seed{seed}", seed)
    stats = run_trace(tmp_path / f"seed{seed}", SimOptions(seed=seed, **STALLY))
    assert_passed(stats, trace)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_seeds_with_stalls_pass(tiny_image, tiny_image_dir, tmp_path, seed):
    run_sweep(tiny_image, tiny_image_dir, tmp_path, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 120))
def test_twenty_seed_sweep(tiny_image, tiny_image_dir, tmp_path, seed):
    run_sweep(tiny_image, tiny_image_dir, tmp_path, seed)


def test_every_view_and_k_passes(tiny_image, tiny_image_dir, tmp_path):
    views = [(view, k) for view in QUANTIZED for k in KS]
    trace = make_trace(tiny_image, tiny_image_dir, None, views, "random", errors=2, seed=5, int8_symmetric_only=True)
    save_trace(trace, tmp_path / "t")
    assert_passed(run_trace(tmp_path / "t", SimOptions(seed=5, **STALLY)), trace)


@pytest.mark.parametrize("harness", ["python", "fast"])
def test_corrupted_expected_line_is_caught_by_the_cli(base_trace, tmp_path, corrupt_expected_line, harness):
    source, trace = base_trace
    path = tmp_path / "corrupt"
    index = corrupt_expected_line(source, trace, path)
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "sim", str(path), "--harness", harness,
                          "--seed", "3", "--json", str(tmp_path / "stats.json")], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    view, k, _ = spec.split_host_line_address(int(trace.addr[index]))
    assert f"request {index} tag {trace.tag[index]} MemRd addr {int(trace.addr[index]):#x}" in out.stderr
    assert f"{View(view).name.lower()} k={k}" in out.stderr and "1 bytes differ" in out.stderr
    assert "[9]" in out.stderr and "FAIL" in out.stdout
    assert json.loads((tmp_path / "stats.json").read_text())["mismatches"] == 1


@pytest.mark.parametrize("harness", ["python", "fast"])
def test_corrupted_image_byte_is_caught(base_trace, tmp_path, harness):
    source, trace = base_trace
    path = tmp_path / "corrupt"
    shutil.copytree(source, path)
    # the top plane (line 0) of the first block of a tensor the trace reads: every view sees it
    entry = load_trace(path).load_image().entries[0]
    dram = np.fromfile(path / "image" / "dram.bin", np.uint8)
    dram[entry.plane_base * spec.LINE_BYTES + 5] ^= 0x01
    dram.tofile(path / "image" / "dram.bin")
    stats = run_trace(path, SimOptions(seed=4, **{**STALLY, "harness": harness}))
    assert not stats["passed"] and stats["mismatches"] >= 1
    assert "bytes differ" in stats["first_mismatch"]


def test_bad_requests_answer_poison_without_hanging(tiny_image, tiny_image_dir, tmp_path):
    trace = seeded_trace(tiny_image, tiny_image_dir, tmp_path / "errors", seed=9, errors=40)
    stats = run_trace(tmp_path / "errors", SimOptions(seed=9, **STALLY))
    assert_passed(stats, trace)
    assert stats["poisoned"] == 40
    errors = {name: v for name, v in stats["counters"].items() if name.startswith("errors_") and v}
    assert {"errors_write_to_view", "errors_bad_k", "errors_no_region", "errors_int8_asymmetric"} <= set(errors)


@pytest.mark.parametrize("harness", ["python", "fast"])
def test_image_loaded_through_the_host_port(tiny_image, tiny_image_dir, tmp_path, harness):
    trace = seeded_trace(tiny_image, tiny_image_dir, tmp_path / "load", seed=11, load_via_host=True)
    stats = run_trace(tmp_path / "load", SimOptions(seed=11, **{**STALLY, "harness": harness}))
    assert_passed(stats, trace)
    assert stats["counters"]["lines_written"] == tiny_image.dram.size // spec.LINE_BYTES
    assert stats["dram_bytes_written_bus"] == tiny_image.dram.size


@pytest.mark.parametrize("harness", ["python", "fast"])
def test_watchdog_fails_a_stuck_run(base_trace, harness):
    path, _ = base_trace
    stats = run_trace(path, SimOptions(read_latency=400, watchdog_cycles=100, harness=harness))
    assert not stats["passed"] and stats["error"].startswith("hang: no progress for 100 cycles")
    assert "oldest outstanding: request" in stats["error"]


def test_icarus_runs_the_same_scoreboard_and_writes_fst(iverilog, tiny_image, tiny_image_dir, tmp_path):
    # Icarus runs this design at tens of cycles per second: a small trace
    entry = min(tiny_image.entries, key=lambda e: e.blocks)
    trace = make_trace(tiny_image, tiny_image_dir, [entry.name], [(View.PACKED, 3), (View.FP16, 2)], "random",
                       errors=2, seed=6)
    save_trace(trace, tmp_path / "t")
    waves = tmp_path / "run.fst"
    stats = run_trace(tmp_path / "t", SimOptions(simulator="icarus", seed=6, waves=str(waves), **STALLY))
    assert_passed(stats, trace)
    assert waves.stat().st_size > 1000


def test_amaranth_simulator_runs_the_same_scoreboard(tiny_image, tiny_image_dir, tmp_path):
    entry = next(e for e in tiny_image.entries if e.symmetric)
    trace = make_trace(tiny_image, tiny_image_dir, [entry.name], [(View.INT8, 3), (View.BF16, 2)], "random",
                       errors=2, seed=8)
    save_trace(trace, tmp_path / "t")
    stats = run_trace(tmp_path / "t", SimOptions(simulator="amaranth", seed=8, **STALLY))
    assert_passed(stats, trace)
    assert stats["simulator"] == "amaranth"
