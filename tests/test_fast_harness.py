"""The fast harness (trace replay inside the simulation, sim/fast_harness.py) against the
cocotb bench: the same verdicts, poison and CSR counters on the same trace and seed, the
same corrupted line named alike; Verilator (one build per session) and Icarus.  The image
load through the host, a corrupted image byte and the watchdog run on both harnesses in
tests/test_sim_cocotb.py."""

import pytest

from smartquant import spec
from smartquant.errors import SmartquantError
from smartquant.sim.runner import SimOptions, choose_harness, run_trace
from smartquant.spec import View
from smartquant.sw.image.trace import make_trace, save_trace

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


def test_both_harnesses_name_a_corrupted_expected_line_alike(stressed_trace, tmp_path, corrupt_expected_line):
    source, trace = stressed_trace
    index = corrupt_expected_line(source, trace, tmp_path / "corrupt")
    fast, python = run_both(tmp_path / "corrupt", seed=2)
    where = f"request {index} tag {trace.tag[index]} MemRd addr {int(trace.addr[index]):#x}"
    for stats in (fast, python):
        assert not stats["passed"] and stats["mismatches"] == 1
        assert where in stats["error"] and "1 bytes differ (got != expected): [9]" in stats["error"]
    # the same message but for the cycle it was seen at
    assert fast["error"].split(": ", 1)[1] == python["error"].split(": ", 1)[1]


@pytest.fixture(scope="module")
def icarus_trace(tiny_image, tiny_image_dir, tmp_path_factory):
    """A symmetric tensor at int8 and bf16, with a bad request and a DRAM error: small, as Icarus
    runs the controller at hundreds of cycles per second."""
    path = tmp_path_factory.mktemp("icarus") / "t"
    trace = make_trace(tiny_image, tiny_image_dir, ["sym_pow2_g256"], [(View.INT8, 5), (View.BF16, 3)], "strided",
                       errors=1, seed=12, dram_errors=1)
    save_trace(trace, path)
    return path, trace


ICARUS = dict(simulator="icarus", seed=12, harness="fast", **STALLY)


def test_icarus_runs_the_fast_harness(iverilog, icarus_trace, tmp_path, corrupt_expected_line):
    path, trace = icarus_trace
    stats = run_trace(path, SimOptions(**ICARUS))
    assert stats["passed"], stats["error"]
    assert stats["lines_compared"] == len(trace) and stats["poisoned"] == int(trace.poison.sum())
    assert stats["counters"]["errors_dram_error"] > 0
    index = corrupt_expected_line(path, trace, tmp_path / "corrupt")
    assert f"request {index} tag" in run_trace(tmp_path / "corrupt", SimOptions(**ICARUS))["error"]


def test_icarus_writes_a_window_around_the_first_mismatch(iverilog, icarus_trace, tmp_path, corrupt_expected_line):
    path, trace = icarus_trace
    index = corrupt_expected_line(path, trace, tmp_path / "corrupt")
    failed = run_trace(tmp_path / "corrupt", SimOptions(waves=str(tmp_path / "w.fst"), waves_around=10, **ICARUS))
    assert f"request {index} tag" in failed["error"]
    first, last = failed["waves_cycles"]
    assert last - first == 20 and (tmp_path / "w.fst").stat().st_size > 100


def test_the_harness_choice():
    assert choose_harness(SimOptions()) == "fast"
    assert choose_harness(SimOptions(simulator="amaranth")) == "python"
    assert choose_harness(SimOptions(waves="w.vcd")) == "fast"
    assert choose_harness(SimOptions(waves="w.vcd", waves_around=0)) == "fast"
    assert choose_harness(SimOptions(responses="r.npy")) == "python"
    with pytest.raises(SmartquantError, match="--waves-around-mismatch needs the fast harness"):
        choose_harness(SimOptions(waves="w.vcd", waves_around=8, harness="python"))
    with pytest.raises(SmartquantError, match="--waves-around-mismatch needs --waves FILE"):
        choose_harness(SimOptions(waves_around=8))
    with pytest.raises(SmartquantError, match="--sim amaranth needs --harness python"):
        choose_harness(SimOptions(simulator="amaranth", harness="fast"))


def vcd_changes(path, name):
    """(timestamps, [(time, value)] of the first variable called `name`) of a VCD file."""
    times, changes, code, now = [], [], None, 0
    for line in open(path):
        words = line.split()
        if not words:
            continue
        if words[0] == "$var" and words[4] == name and code is None:
            code = words[3]
        elif words[0].startswith("#"):
            now = int(words[0][1:])
            times.append(now)
        elif code is not None and len(words) == 2 and words[1] == code:
            changes.append((now, int(words[0][1:], 2)))
    return times, changes


@pytest.mark.slow     # a second Verilator build (with tracing): minutes on a cold cache
def test_a_waveform_around_the_first_mismatch_holds_it_and_little_else(stressed_trace, tmp_path,
                                                                        corrupt_expected_line):
    source, trace = stressed_trace
    corrupt_expected_line(source, trace, tmp_path / "corrupt")
    around = 20
    options = dict(seed=2, harness="fast", **STALLY)
    window = run_trace(tmp_path / "corrupt", SimOptions(waves=str(tmp_path / "w.vcd"), waves_around=around, **options))
    whole = run_trace(tmp_path / "corrupt", SimOptions(waves=str(tmp_path / "all.vcd"), **options))
    assert not window["passed"] and window["error"] == whole["error"] and window["cycles"] == whole["cycles"]
    first, last = window["waves_cycles"]
    assert last - first == 2 * around and whole["waves_cycles"][0] == 1
    times, mismatches = vcd_changes(tmp_path / "w.vcd", "mismatches")
    # cycle c rises at time 2c - 1: the checker counts the mismatch at the middle cycle's edge
    assert (2 * (first + around) - 1, 1) in mismatches
    assert min(times) >= 2 * first - 1 and max(times) <= 2 * last
    all_times, _ = vcd_changes(tmp_path / "all.vcd", "mismatches")
    assert len(all_times) > 10 * len(times)
    assert (tmp_path / "w.vcd").stat().st_size * 5 < (tmp_path / "all.vcd").stat().st_size


def test_a_passing_run_writes_no_windowed_waveform(stressed_trace, tmp_path):
    path, _ = stressed_trace
    stats = run_trace(path, SimOptions(seed=1, harness="fast", waves=str(tmp_path / "w.vcd"), waves_around=10))
    assert stats["passed"] and "waves" not in stats and not (tmp_path / "w.vcd").exists()
