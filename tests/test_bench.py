"""`smartquant bench` (sim/bench.py): a few tiny points in one Verilator run, their numbers
checked against the trace they replay; the CLI's table, JSON, plots and simulator speed."""

import json
import subprocess
import sys

import pytest

from smartquant import spec
from smartquant.atomic import MARKER
from smartquant.sim import bench
from smartquant.spec import LINE_BYTES, View
from smartquant.sw.image.trace import make_trace

BLOCKS = 16
K = 3


def trace_dram_bytes(image, view, k) -> int:
    """DRAM bytes a sequential trace needs, from the requests' addresses: the top k plane
    lines of every block addressed and, for fp16/bf16, every metadata line of those blocks."""
    entry = image.entries[0]
    trace = make_trace(image, "unused", None, [(view, k)], "sequential")
    offsets = trace.addr.astype("int64") & ((1 << spec.OFFSET_BITS) - 1)
    blocks = set((offsets // spec.lines_per_block(view, k)).tolist())
    lines = len(blocks) * k
    if view in (View.FP16, View.BF16):
        first = entry.plane_base // spec.PLANES
        lines += len({(b - first) * spec.BLOCK_WEIGHTS // entry.group_size // spec.GROUPS_PER_META_LINE
                      for b in blocks})
    return lines * LINE_BYTES


@pytest.fixture(scope="module")
def rows():
    sweep = bench.Sweep(views=(View.PACKED, View.FP16), ks=(K,), latencies=(16,), stalls=(0.0, 0.3), blocks=BLOCKS)
    return bench.run_sweep(sweep)


def test_points_are_in_sweep_order(rows):
    assert [(r["view"], r["stall"]) for r in rows] == [("packed", 0.0), ("packed", 0.3), ("fp16", 0.0), ("fp16", 0.3)]
    assert all(r["k"] == K and r["read_latency"] == 16 for r in rows)


def test_bytes_per_weight_equal_the_traces_expectation(rows):
    image = bench.bench_image(BLOCKS)
    for row in rows:
        view = View[row["view"].upper()]
        assert row["dram_bytes"] == trace_dram_bytes(image, view, K) == row["expected_dram_bytes"]
        assert row["weights"] == BLOCKS * spec.BLOCK_WEIGHTS
        assert row["bytes_per_weight"] == pytest.approx(row["ideal_bytes_per_weight"])   # full metadata lines
        assert row["lines"] == BLOCKS * spec.lines_per_block(view, K)


def test_rates_and_latency_are_plausible(rows):
    for row in rows:
        assert 0 < row["read_bus_utilisation"] <= 1
        assert 0 < row["read_bus_utilisation_run"] < row["read_bus_utilisation"] + 1e-9   # ramp-up and drain
        assert 0 < row["host_lines_per_cycle"] <= 1
        assert row["added_latency"] > 0
        assert row["cycles"] > row["lines"] + row["read_latency"]
    free = [r for r in rows if not r["stall"]]
    assert all(r["bound_lines_per_cycle"] == 1 and r["efficiency"] <= 1 for r in free)
    stalled = [r for r in rows if r["stall"]]
    assert all(s["bound_lines_per_cycle"] < 1 and s["host_lines_per_cycle"] < f["host_lines_per_cycle"]
               for s, f in zip(stalled, free))
    # packed: one plane line in, one host line out
    packed = rows[0]
    assert packed["read_bus_utilisation"] == pytest.approx(packed["host_lines_per_cycle"])


def test_acceptance_takes_the_latency_64_points_without_backpressure():
    row = {"view": "int8", "k": 2, "read_latency": 64, "stall": 0.0, "dram_outstanding": 16,
           "host_lines_per_cycle": 0.9, "read_bus_utilisation": 0.2, "bound_lines_per_cycle": 1.0,
           "bytes_vs_ideal": 1.0, "limit": "job queue (128 lines)"}
    checks = bench.acceptance([row, {**row, "stall": 0.2}, {**row, "read_latency": 16}])
    assert len(checks) == 1 and not checks[0]["passed"] and checks[0]["of_bound"] == 0.9
    assert bench.acceptance([{**row, "host_lines_per_cycle": 0.96}])[0]["passed"]
    assert not bench.acceptance([{**row, "host_lines_per_cycle": 1.0, "bytes_vs_ideal": 1.02}])[0]["passed"]


def test_cli_table_json_plots_and_simulator_speed(tmp_path):
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "bench", "--views", "int8", "--ks", "2",
                          "--latencies", "64", "--stall", "0", "--blocks", "8", "--speed-blocks", "1",
                          "--json", str(tmp_path / "bench.json"), "--plot", str(tmp_path / "plots")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "host lines/cyc" in out.stdout and "acceptance" in out.stdout and "x slowest" in out.stdout
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [(p["view"], p["k"]) for p in result["points"]] == [("int8", 2)]
    assert [c["view"] for c in result["acceptance"]] == ["int8"]
    speed = {r["simulator"]: r for r in result["simulators"]}
    present, absent = bench.present_simulators()
    assert set(speed) == set(present) and {"verilator", "amaranth"} <= set(present)
    for simulator in absent:
        assert f"{simulator}: not installed" in out.stdout
    cycles = {r["cycles"] for r in speed.values()}
    assert len(cycles) == 1        # the same trace, the same cycle count on every simulator
    assert min(r["speedup_vs_slowest"] for r in speed.values()) == 1
    assert speed["verilator"]["cycles_per_s"] > speed["amaranth"]["cycles_per_s"]
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {
        "throughput.png", "read_bus.png", "bytes_per_weight.png", "latency.png", "simulators.png", MARKER}


def test_cli_rejects_bad_input():
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "bench", "--views", "int4"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "unknown view 'int4'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "bench", "--ks", "0,3"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--ks" in out.stderr
