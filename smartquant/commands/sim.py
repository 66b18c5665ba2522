"""`smartquant sim TRACE`: replay a golden trace on the RTL (in the fast harness or the
cocotb bench) and compare every response bit for bit (sim/, docs/COVERIFY.md).  Exit 1 on a mismatch or hang."""

from __future__ import annotations

import sys

from ..report import format_table, write_json
from ..sim import runner
from .common import check_output_options, int_at_least, probability


def register(subparsers) -> None:
    p = subparsers.add_parser("sim", help="co-verify the RTL against a golden trace (cocotb)",
                              description=__doc__)
    p.add_argument("trace", help="trace directory (smartquant trace output)")
    p.add_argument("--sim", default="verilator", choices=runner.SIMULATORS,
                   help="verilator (default), icarus, or amaranth (Amaranth's simulator: slow, small traces)")
    p.add_argument("--harness", choices=runner.HARNESSES,
                   help="fast: trace replay inside the simulation (default for verilator and icarus); "
                   "python: the cocotb bench (always for amaranth)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the stall patterns")
    p.add_argument("--stall", type=probability, default=0.2,
                   help="pause probability per cycle on every AXI channel and host stream (0: none)")
    p.add_argument("--read-latency", type=int_at_least(0), default=20, help="extra DRAM read latency, cycles per burst")
    p.add_argument("--max-in-flight", type=int_at_least(1), default=64, help="host requests outstanding at most")
    p.add_argument("--lanes", type=int, help="RTL lanes per cycle (default: the RTL's)")
    p.add_argument("--axi-width", type=int, help="AXI data width in bits (default: the RTL's)")
    p.add_argument("--waves", metavar="FILE", help="waveform of the run (.vcd for verilator, .fst for icarus); "
                   "a failing run stops shortly after the first mismatch, so the file ends around it")
    p.add_argument("--waves-around-mismatch", type=int_at_least(0), metavar="N",
                   help="fast harness: only N cycles either side of the first mismatch (or the watchdog) in --waves, "
                   "from a second run of the same seed; a passing run writes no waveform")
    p.add_argument("--json", metavar="STATS", help="write the stats as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_options(args, inputs=[args.trace])
    options = runner.SimOptions(simulator=args.sim, seed=args.seed, stall=args.stall,
                                read_latency=args.read_latency, max_in_flight=args.max_in_flight,
                                waves=args.waves, waves_around=args.waves_around_mismatch, lanes=args.lanes,
                                axi_data_width=args.axi_width,
                                harness=args.harness)
    stats = runner.run_trace(args.trace, options)
    if args.json:
        write_json(args.json, stats)
    latency = stats["latency_cycles"]
    print(format_table(
        ["result", "simulator", "lines compared", "poisoned", "cycles", "DRAM bytes read",
         "read bus util", "latency mean", "latency max", "cycles/s"],
        [["PASS" if stats["passed"] else "FAIL", stats["simulator"], stats["lines_compared"],
          stats["poisoned"], stats["cycles"], stats["dram_bytes_read_bus"], stats["read_bus_utilisation"],
          latency["mean"], latency["max"], stats["cycles_per_s"]]]))
    if stats.get("waves_cycles"):
        first, last = stats["waves_cycles"]
        print(f"smartquant sim: waveform in {stats['waves']} (clock cycles {first}..{last})", file=sys.stderr)
    elif args.waves and args.waves_around_mismatch is not None:
        print("smartquant sim: no mismatch, so no waveform written (--waves-around-mismatch)", file=sys.stderr)
    if not stats["passed"]:
        print(f"smartquant sim: {stats['error']}", file=sys.stderr)
        if stats.get("waves") and not stats.get("waves_cycles"):
            print(f"smartquant sim: waveform in {stats['waves']}", file=sys.stderr)
        return 1
    return 0
