"""`smartquant bench` (sim/bench.py): a few tiny points in one Verilator run, their numbers
checked against the trace they replay; the acceptance verdicts on measured and made-up
numbers; the CLI's tables, JSON, plots, `--check` and simulator speed."""

import dataclasses
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


TRAFFIC_ORDERS = ("streams:2", "window:2", "random")


@pytest.fixture(scope="module")
def all_rows():
    sweep = bench.Sweep(views=(View.PACKED, View.FP16), ks=(K,), latencies=(16,), stalls=(0.0, 0.3), blocks=BLOCKS,
                        traffic_orders=TRAFFIC_ORDERS, traffic_views=((View.PACKED, K), (View.FP16, K)))
    return bench.run_sweep(sweep)


@pytest.fixture(scope="module")
def rows(all_rows):
    """The sequential grid points."""
    return [r for r in all_rows if r["order"] == "sequential"]


def test_points_are_in_sweep_order(all_rows):
    assert [(r["view"], r["order"], r["stall"]) for r in all_rows] == [
        ("packed", "sequential", 0.0), ("packed", "sequential", 0.3), ("fp16", "sequential", 0.0),
        ("fp16", "sequential", 0.3)] + [(view, order, 0.0) for view in ("packed", "fp16") for order in TRAFFIC_ORDERS]
    assert all(r["k"] == K for r in all_rows)
    assert [r["read_latency"] for r in all_rows] == [16] * 4 + [bench.ACCEPT_LATENCY] * 6


def test_sequential_hit_rate_counts_one_miss_per_block_and_metadata_line(rows):
    image = bench.bench_image(BLOCKS)
    entry = image.entries[0]
    for row in rows:
        dequantized = row["view"] == "fp16"
        lookups = row["lines"] * (2 if dequantized else 1)
        misses = BLOCKS + (entry.meta_lines if dequantized else 0)
        assert row["hit_rate"] == pytest.approx(1 - misses / lookups)


def test_traffic_points_read_every_needed_line_and_count_their_misses(all_rows):
    traffic = [r for r in all_rows if r["order"] != "sequential"]
    for row in traffic:
        assert row["dram_bytes"] >= row["expected_dram_bytes"]
        assert row["bytes_vs_ideal"] == row["dram_bytes"] / row["expected_dram_bytes"]
        assert 0 <= row["hit_rate"] < 1
        if row["view"] == "packed":         # every plane miss reads the block's k lines, nothing else
            assert row["dram_bytes"] == round((1 - row["hit_rate"]) * row["lines"]) * K * LINE_BYTES


def test_hit_rate_is_the_csr_counters_share_of_lookups_without_a_miss():
    stats = {"counters": {"plane_lookups": 100, "plane_misses": 10, "meta_lookups": 100, "meta_misses": 30}}
    assert bench.lookup_hit_rate(stats, View.FP16) == pytest.approx(0.8)
    stats["counters"].update(meta_misses=10)
    assert bench.lookup_hit_rate(stats, View.FP16) == pytest.approx(0.9)
    stats["counters"].update(plane_lookups=0, plane_misses=0, meta_lookups=0, meta_misses=0)
    assert bench.lookup_hit_rate(stats, View.PACKED) == 0.0


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


CACHE = 128


def passing_rows() -> list[dict]:
    """Made-up points that meet every threshold: each required traffic point, and the
    sequential grid of every view at two DRAM latencies."""
    good = {"stall": 0.0, "dram_outstanding": 256, "efficiency": 1.0, "bytes_vs_ideal": 1.0, "added_latency": 10,
            "limit": "host link"}
    grid = [{**good, "view": view, "k": 3, "order": "sequential", "read_latency": latency}
            for view in ("packed", "int8", "fp16", "bf16") for latency in (16, 64)]
    orders = bench.default_traffic_orders({"plane_slots": CACHE})
    traffic = [{**good, "view": view.name.lower(), "k": k, "order": order, "read_latency": 64}
               for view, k in bench.TRAFFIC_VIEWS_KS for order in orders]
    random = [r for r in traffic if r["order"] == "random"]
    for row in random:          # random order is reported, never checked
        row.update(bytes_vs_ideal=9.0, efficiency=0.1)
    return grid + traffic


def test_every_threshold_passes_on_numbers_that_meet_it():
    checks = bench.acceptance(passing_rows(), CACHE)
    assert checks and all(c["passed"] for c in checks) and bench.missed(checks) == []
    assert {c["check"] for c in checks} == {t.name for t in bench.THRESHOLDS}
    assert not any(c["order"] == "random" for c in checks)


@pytest.mark.parametrize("select, figure, value, message", [
    (dict(view="fp16", order="streams:16", k=8), "bytes_vs_ideal", 1.03,
     "streams: DRAM bytes: fp16 k=8 streams:16 at DRAM latency 64: 1.03 (limit <= 1.02)"),
    (dict(view="packed", order="streams:2", k=1), "efficiency", 0.94,
     "streams: rate: packed k=1 streams:2 at DRAM latency 64: 0.94 (limit >= 0.95; host link)"),
    (dict(view="packed", order=f"window:{CACHE}", k=3), "bytes_vs_ideal", 1.06,
     f"window: DRAM bytes: packed k=3 window:{CACHE} at DRAM latency 64: 1.06 (limit <= 1.05)"),
    (dict(view="int8", order="sequential", read_latency=16), "added_latency", 17,
     "added latency: int8 k=3 sequential at DRAM latency 16: 17 (limit <= 16)"),
    (dict(view="bf16", order="sequential", read_latency=64), "added_latency", 21,
     "added latency: bf16 k=3 sequential at DRAM latency 64: 21 (limit <= 20)"),
    (dict(view="bf16", order="sequential", read_latency=64), "bytes_vs_ideal", 1.02,
     "DRAM bytes: bf16 k=3 sequential at DRAM latency 64: 1.02 (limit <= 1.01)"),
])
def test_a_missed_threshold_fails_the_check_and_is_named(select, figure, value, message):
    rows = passing_rows()
    row = next(r for r in rows if all(r[key] == want for key, want in select.items()))
    row[figure] = value
    checks = bench.acceptance(rows, CACHE)
    assert bench.missed(checks) == [message]
    row[figure] = {"bytes_vs_ideal": 1.0, "efficiency": 1.0, "added_latency": 16 if select["view"] == "int8" else 20}[figure]
    assert bench.missed(bench.acceptance(rows, CACHE)) == []       # exactly at the limit passes


def test_required_points_not_measured_fail_the_check():
    rows = [r for r in passing_rows() if not (r["order"] == "streams:4" and r["view"] == "fp16" and r["k"] == 3)]
    misses = bench.missed(bench.acceptance(rows, CACHE))
    assert misses == ["streams: DRAM bytes: fp16 k=3 streams:4: not measured",
                      "streams: rate: fp16 k=3 streams:4: not measured"]
    no_fp16 = [r for r in passing_rows() if r["view"] not in ("fp16", "bf16") or r["order"] != "sequential"]
    assert "added latency: no point measured (sequential fp16, bf16; every DRAM latency, no backpressure)" in \
        bench.missed(bench.acceptance(no_fp16, CACHE))
    assert bench.missed(bench.acceptance(passing_rows(), CACHE * 2))[0] == \
        f"window: DRAM bytes: packed k=1 window:{CACHE * 2}: not measured"      # the window follows the cache


def test_verdicts_on_measured_points_follow_the_limits(all_rows):
    """The check machinery on this module's measured points: limits at the measured figures
    pass, limits just past them fail, for every threshold that selects one of them
    (the added latency of both view groups, and the streams:2 points' bytes and rate)."""
    exercised = []
    for threshold in (dataclasses.replace(t, required=lambda cache: []) for t in bench.THRESHOLDS):
        picked = [r for r in all_rows if threshold.selects(r, CACHE)]
        if not picked:
            continue
        exercised.append((threshold.name, threshold.limit))
        values = [r[threshold.figure] for r in picked]
        worst = max(values) if threshold.at_most else min(values)
        met = dataclasses.replace(threshold, limit=worst)
        assert all(c["passed"] for c in bench.acceptance(all_rows, CACHE, [met]))
        nudge = -1e-6 if threshold.at_most else 1e-6
        short = dataclasses.replace(threshold, limit=worst + nudge)
        assert len(bench.missed(bench.acceptance(all_rows, CACHE, [short]))) == values.count(worst)
    assert exercised == [("streams: DRAM bytes", 1.02), ("streams: rate", 0.95), ("added latency", 16),
                         ("added latency", 20)]


@pytest.mark.slow
def test_cli_table_json_plots_and_simulator_speed(tmp_path):
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "bench", "--views", "int8", "--ks", "2",
                          "--latencies", "64", "--stall", "0", "--blocks", "8", "--speed-blocks", "1",
                          "--orders", "streams:2", "--traffic-views", "packed:1", "--check",
                          "--json", str(tmp_path / "bench.json"), "--plot", str(tmp_path / "plots")],
                         capture_output=True, text=True, timeout=600)
    # --check: the acceptance needs traffic points this sweep leaves out
    assert out.returncode == 1, out.stderr
    assert "checks missed:" in out.stderr and "streams: DRAM bytes: fp16 k=8 streams:16: not measured" in out.stderr
    assert "host lines/cyc" in out.stdout and "hit rate" in out.stdout and "x slowest" in out.stdout
    assert "DRAM traffic under host orders" in out.stdout and "acceptance" in out.stdout
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [(p["view"], p["k"], p["order"]) for p in result["points"]] == [("int8", 2, "sequential"),
                                                                          ("packed", 1, "streams:2")]
    assert result["sweep"]["traffic_views"] == ["packed:1"]
    measured = [c for c in result["acceptance"] if c["value"] is not None]
    assert {(c["check"], c["view"], c["order"]) for c in measured} == {
        ("rate", "int8", "sequential"), ("DRAM bytes", "int8", "sequential"), ("added latency", "int8", "sequential"),
        ("streams: DRAM bytes", "packed", "streams:2"), ("streams: rate", "packed", "streams:2")}
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


@pytest.mark.parametrize("argv, message", [
    (["--views", "int4"], "unknown view 'int4'"),
    (["--ks", "0,3"], "--ks"),
    (["--orders", "window:0"], "order 'window:0': W must be >= 1"),
    (["--traffic-views", "raw"], "--traffic-views"),
])
def test_cli_rejects_bad_input(argv, message, capsys):
    from smartquant.cli import main
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("smartquant bench: error: ") and message in err[0]
