"""DRAM bytes / ideal and throughput of the block cache under interleaved and shuffled
host reads (docs/BENCH.md, "Block cache").

    python benchmarks/cache_streams.py [--streams 1 2 4 16] [--window 128] [--slots 128]
                                       [--blocks 256] [--latency 64] [--json FILE]

Orders of a whole-tensor read (`bench_image`), as `smartquant trace --order` makes them
(sw/image/trace.py): S hosts each reading a contiguous range of lines, their requests
taken one from each in turn (`streams:S`); a random order within each window of W blocks
(`window:W`; W = 128, the cache size).  Every point runs in the `smartquant
bench` Verilator simulation (each response compared bit for bit), DRAM latency 64, no
stalls; per point DRAM bytes / ideal, host lines per cycle against the bound (packed:
read-bus utilisation against 1), and the cache's hit rate from the lookup counters.
With several `--slots` the design is built once per size.  `--model-slots` adds hit
rates and DRAM bytes / ideal against the cache size from `sw.image.dram_errors.SlotModel`,
which decides exactly as the RTL's lookup (tests/test_hw_blockcache.py), without a
simulation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


from smartquant.report import format_table, write_json
from smartquant.sim.bench import DRAM_OUTSTANDING, bench_image, point_metrics, run_points
from smartquant.sim.perf_bench import PerfPoint
from smartquant.sim import runner
from smartquant.spec import PLANE_SLOTS, View, lines_per_block
from smartquant.sw.image.dram_errors import SlotModel, meta_line_of
from smartquant.sw.image.trace import make_trace, region_of, save_trace

POINTS = [(View.PACKED, 1), (View.PACKED, 3), (View.PACKED, 8), (View.FP16, 1), (View.FP16, 3), (View.FP16, 8)]


def orders(streams: list[int], window: int) -> list[str]:
    """The `smartquant trace --order` names measured."""
    return [f"streams:{s}" for s in streams] + [f"window:{window}"]


def model_rows(slots_list: list[int], streams: list[int], window: int, blocks: int) -> list[dict]:
    """Hit rates and DRAM bytes / ideal of every point and order from `SlotModel` per cache size."""
    image = bench_image(blocks)
    region = region_of(image.entries[0])
    rows = []
    for view, k in POINTS:
        lpb = lines_per_block(view, k)
        n = region["blocks"] * lpb
        fp = view == View.FP16
        ideal = region["blocks"] * k + (region["meta_lines"] if fp else 0)
        traces = {order: make_trace(image, "unsaved", None, [(view, k)], order) for order in orders(streams, window)}
        for order, trace in traces.items():
            for slots in slots_list:
                model = SlotModel(slots, slots // 4)
                plane_misses = meta_misses = 0
                for addr in trace.addr:
                    block = int(addr & 0xFFFFFFFF) // lpb
                    plane_misses += not model.plane_lookup(block, k)[1]
                    if fp:
                        meta_misses += not model.meta_lookup(meta_line_of(region, block))[1]
                rows.append({"slots": slots, "meta_slots": slots // 4, "view": view.name.lower(), "k": k,
                             "order": order, "bytes_vs_ideal": (plane_misses * k + meta_misses) / ideal,
                             "plane_hit_rate": 1 - plane_misses / n,
                             "meta_hit_rate": 1 - meta_misses / n if fp else None})
    return rows


def measure(slots: int, streams: list[int], window: int, blocks: int, latency: int) -> list[dict]:
    from smartquant.hw.top import SmartQuantTop, generate_verilog
    import inspect
    design = {name: p.default for name, p in inspect.signature(SmartQuantTop.__init__).parameters.items()
              if p.default is not inspect.Parameter.empty} | {"plane_slots": slots}
    image = bench_image(blocks)
    entry = image.entries[0]
    region = {"blocks": entry.blocks, "meta_lines": entry.meta_lines, "group_size": entry.group_size}
    with tempfile.TemporaryDirectory(prefix="smartquant-cache-") as work:
        work = Path(work)
        image.save(work / "image")
        points, keys = [], []
        for view, k in POINTS:
            for order in orders(streams, window):
                path = work / f"{view.name}_{k}_{order.replace(':', '_')}"
                save_trace(make_trace(image, work / "image", None, [(view, k)], order), path)
                points.append(PerfPoint(str(path), latency, 0.0, 0, dram_outstanding=DRAM_OUTSTANDING))
                keys.append((view, k, order))
        # (the default size: the runner's cached Verilog, shared with the other co-verification runs)
        verilog = runner.design_verilog() if slots == PLANE_SLOTS else generate_verilog(plane_slots=slots)
        stats = run_points(points, work / "image", verilog)
    rows = []
    for s, (view, k, order) in zip(stats, keys):
        metrics = point_metrics(s, view, k, region, design)
        value = metrics["read_bus_utilisation"] if view == View.PACKED else metrics["host_lines_per_cycle"]
        bound = 1.0 if view == View.PACKED else metrics["bound_lines_per_cycle"]
        counters = s["counters"]
        rows.append({"slots": slots, "view": view.name.lower(), "k": k, "order": order,
                     "bytes_vs_ideal": metrics["bytes_vs_ideal"], "of_bound": value / bound,
                     "added_latency": metrics["added_latency"],
                     "plane_hit_rate": 1 - counters["plane_misses"] / counters["plane_lookups"],
                     "meta_hit_rate": (1 - counters["meta_misses"] / counters["meta_lookups"]
                                       if counters["meta_lookups"] else None)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 16])
    parser.add_argument("--window", type=int, default=128, help="blocks per shuffled window")
    parser.add_argument("--slots", type=int, nargs="*", default=[128], help="sizes simulated (none: model only)")
    parser.add_argument("--blocks", type=int, default=256)
    parser.add_argument("--latency", type=int, default=64)
    parser.add_argument("--model-slots", type=int, nargs="*", default=[])
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.model_slots:
        model = model_rows(args.model_slots, args.streams, args.window, args.blocks)
        print(format_table(["slots", "meta slots", "view", "k", "order", "bytes/ideal", "plane hits", "meta hits"],
                           [[r["slots"], r["meta_slots"], r["view"], r["k"], r["order"], f"{r['bytes_vs_ideal']:.3f}",
                             f"{r['plane_hit_rate']:.3f}",
                             "" if r["meta_hit_rate"] is None else f"{r['meta_hit_rate']:.3f}"] for r in model]))
        if not args.slots:
            return 0
    rows = [row for slots in args.slots for row in measure(slots, args.streams, args.window, args.blocks, args.latency)]
    print(format_table(["slots", "view", "k", "order", "bytes/ideal", "of bound", "added latency", "plane hits",
                        "meta hits"],
                       [[r["slots"], r["view"], r["k"], r["order"], f"{r['bytes_vs_ideal']:.3f}",
                         f"{r['of_bound']:.3f}", r["added_latency"], f"{r['plane_hit_rate']:.3f}",
                         "" if r["meta_hit_rate"] is None else f"{r['meta_hit_rate']:.3f}"] for r in rows]))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
