"""`smartquant bench`: the RTL's DRAM bytes per weight, read-bus utilisation, host lines
per cycle and added latency per view, k, DRAM latency and backpressure; DRAM bytes / ideal
and the block cache's hit rate under interleaved, windowed and random host orders; in
cycle-level simulation (Verilator), and simulator speed (sim/bench.py, docs/BENCH.md)."""

from __future__ import annotations

import sys

from ..errors import SmartquantError
from ..report import format_table, write_json
from ..sim import bench
from ..spec import View
from ..sw.image.trace import parse_order, parse_views, view_label
from .common import check_output_options, int_at_least, probability


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SmartquantError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise SmartquantError(f"{what}: no values given")
    return values


def _views(text: str) -> tuple[View, ...]:
    names = {v.name.lower(): v for v in bench.VIEWS}
    unknown = [n for n in text.split(",") if n not in names]
    if unknown:
        raise SmartquantError(f"--views: unknown view {unknown[0]!r} (one of {', '.join(names)})")
    return tuple(names[n] for n in text.split(","))


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="throughput, DRAM bytes and latency of the RTL in simulation",
                              description=__doc__)
    p.add_argument("--full", action="store_true",
                   help="the whole grid: k = 1..8 and DRAM models holding 16 and 256 read bursts")
    p.add_argument("--views", default="packed,int8,fp16,bf16", help="views to measure")
    p.add_argument("--ks", help="bits k (default 2,3,4,8; --full: 1..8)")
    p.add_argument("--latencies", default="16,64,128", help="DRAM read latencies, cycles")
    p.add_argument("--stall", type=probability, default=bench.BACKPRESSURE_STALL,
                   help="backpressure points' pause probability per cycle (0: no backpressure points)")
    p.add_argument("--dram-outstanding", help=f"read bursts the DRAM model holds at once "
                   f"(default {bench.DRAM_OUTSTANDING}; --full: 16,{bench.DRAM_OUTSTANDING})")
    p.add_argument("--orders", help="host orders of the traffic points, e.g. streams:2,window:128,random "
                   "(default: streams:1,2,4,16, window:<the RTL's plane slots>, random; 'none': no traffic points)")
    p.add_argument("--traffic-views", default="packed:1,packed:3,packed:8,fp16:1,fp16:3,fp16:8",
                   help="view:k of the traffic points")
    p.add_argument("--blocks", type=int, default=256, help="512-weight blocks of the synthetic tensor")
    p.add_argument("--group-size", type=int, default=128, help="weights per scale of the synthetic tensor")
    p.add_argument("--lanes", type=int, help="RTL lanes per cycle (default: the RTL's)")
    p.add_argument("--axi-width", type=int, help="AXI data width in bits (default: the RTL's)")
    p.add_argument("--rtl", default="", metavar="NAME=VALUE,...",
                   help="other RTL parameters, e.g. job_depth=256,plane_slots=128 (a new Verilator build)")
    p.add_argument("--no-speed", action="store_true",
                   help="skip the simulator speed comparison (Verilator, Icarus, Amaranth; default RTL)")
    p.add_argument("--speed-blocks", type=int, default=16, help="blocks of the simulator speed trace (fp16:4)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--json", metavar="FILE", help="write points, acceptance and speed as JSON")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")
    p.add_argument("--check", action="store_true",
                   help="exit 1, listing what missed, when a threshold of docs/BENCH.md's acceptance table is not met")
    p.set_defaults(func=run)


def _rtl(args) -> dict:
    params = {}
    for item in filter(None, args.rtl.split(",")):
        name, _, value = item.partition("=")
        try:
            params[name.strip()] = int(value)
        except ValueError:
            raise SmartquantError(f"--rtl: expected NAME=INTEGER, got {item!r}") from None
    for name, value in (("lanes", args.lanes), ("axi_data_width", args.axi_width)):
        if value is not None:
            params[name] = value
    return params


def sweep_from_args(args) -> bench.Sweep:
    ks = _ints(args.ks, "--ks") if args.ks else (bench.FULL_KS if args.full else bench.DEFAULT_KS)
    if not all(1 <= k <= 8 for k in ks):
        raise SmartquantError(f"--ks: bits must be 1..8, got {ks}")
    outstanding = (_ints(args.dram_outstanding, "--dram-outstanding") if args.dram_outstanding
                   else (16, bench.DRAM_OUTSTANDING) if args.full else (bench.DRAM_OUTSTANDING,))
    return bench.Sweep(views=_views(args.views), ks=ks, latencies=_ints(args.latencies, "--latencies"),
                       stalls=(0.0, args.stall) if args.stall else (0.0,), dram_outstanding=outstanding,
                       traffic_orders=_orders(args.orders), traffic_views=_traffic_views(args.traffic_views),
                       blocks=args.blocks, group_size=args.group_size, rtl=_rtl(args), seed=args.seed)


def _traffic_views(text: str) -> tuple[tuple[View, int], ...]:
    views = tuple(parse_views(text))
    if any(view not in bench.VIEWS for view, _ in views):
        raise SmartquantError(f"--traffic-views: the bench measures {', '.join(v.name.lower() for v in bench.VIEWS)}")
    return views


def _orders(text: str | None) -> tuple[str, ...] | None:
    """--orders: None for the default orders, () for 'none', else each order checked."""
    if text is None:
        return None
    if text == "none":
        return ()
    orders = tuple(o.strip() for o in text.split(",") if o.strip())
    for order in orders:
        parse_order(order)
    return orders


POINT_COLUMNS = [("view", "view"), ("k", "k"), ("read_latency", "DRAM lat"), ("dram_outstanding", "DRAM outst"),
                 ("stall", "stall"), ("host_lines_per_cycle", "host lines/cyc"),
                 ("read_bus_utilisation", "read bus util"), ("bound_lines_per_cycle", "bound"),
                 ("efficiency", "of bound"), ("bytes_per_weight", "B/weight"), ("ideal_bytes_per_weight", "ideal"),
                 ("bytes_vs_ideal", "vs ideal"), ("hit_rate", "hit rate"), ("added_latency", "added lat"),
                 ("limit", "limit")]
TRAFFIC_COLUMNS = [("view", "view"), ("k", "k"), ("order", "order"), ("read_latency", "DRAM lat"),
                   ("bytes_vs_ideal", "DRAM bytes / ideal"), ("hit_rate", "hit rate"),
                   ("host_lines_per_cycle", "host lines/cyc"), ("efficiency", "of bound"),
                   ("added_latency", "added lat"), ("limit", "limit")]
CHECK_COLUMNS = [("check", "check"), ("view", "view"), ("k", "k"), ("order", "order"), ("read_latency", "DRAM lat"),
                 ("figure", "figure"), ("value", "value"), ("limit", "limit"), ("result", "result")]
SPEED_COLUMNS = [("simulator", "simulator"), ("cycles", "cycles"), ("wall_s", "wall s"),
                 ("cycles_per_s", "cycles/s"), ("weights_per_s", "weights/s"), ("speedup_vs_slowest", "x slowest")]


def _table(rows: list[dict], columns) -> str:
    return format_table([h for _, h in columns], [[row.get(key, "-") for key, _ in columns] for row in rows])


def run(args) -> int:
    sweep = sweep_from_args(args)
    check_output_options(args)
    rows = bench.run_sweep(sweep)
    present, absent = bench.present_simulators()
    speed = [] if args.no_speed else bench.simulator_speed(present, blocks=args.speed_blocks)
    checks = bench.acceptance(rows, bench.cache_blocks(sweep.design()))
    grid = [r for r in rows if r["order"] == "sequential"]
    traffic = [r for r in rows if r["order"] != "sequential"]
    print(_table(grid, POINT_COLUMNS))
    if traffic:
        print(f"\nDRAM traffic under host orders (DRAM latency {bench.ACCEPT_LATENCY}, no backpressure)")
        print(_table(traffic, TRAFFIC_COLUMNS))
    measured = [c for c in checks if c["value"] is not None]
    print("\nacceptance (docs/BENCH.md)")
    print(_table([{**c, "result": "PASS" if c["passed"] else "MISS"} for c in measured], CHECK_COLUMNS))
    if len(measured) < len(checks):
        print(f"{len(checks) - len(measured)} points the acceptance needs were not measured "
              f"(the default --orders and --traffic-views measure them)")
    if speed:
        print()
        print(_table(speed, SPEED_COLUMNS))
        for simulator in absent:
            print(f"{simulator}: not installed, left out of the speed table (apt-get install iverilog)")
    if args.json:
        write_json(args.json, {"sweep": {**sweep.__dict__, "views": [v.name.lower() for v in sweep.views],
                                         "traffic_views": [view_label(v, k) for v, k in sweep.traffic_views],
                                         "traffic_orders": list(dict.fromkeys(r["order"] for r in traffic)),
                                         "design": sweep.design()},
                               "points": rows, "acceptance": checks, "simulators": speed})
    if args.plot:
        bench.plot(grid, speed, args.plot)
    misses = bench.missed(checks)
    if args.check and misses:
        print(f"\nsmartquant bench --check: {len(misses)} of {len(checks)} checks missed:\n  "
              + "\n  ".join(misses), file=sys.stderr)
        return 1
    return 0
