"""Simulator speed of the fast harness (docs/COVERIFY.md): simulated cycles per second of

- the fast harness (trace replay inside the simulation, sim/fast_harness.py) on TRACE, two
  ways: over the simulator process's whole wall time (start, reading the run files, the run,
  results) and over its clock loop alone (Verilator; the run files are read before it),
- a bare C++ loop clocking the same Verilated `smartquant_top` alone (reset, then idle
  inputs) for as many cycles: the ceiling of any harness,
- the cocotb (Python) bench on TRACE, unless --no-python,

and the ratios fast / bare and fast / python, with the load average while it ran.  Builds
are cached (first run: minutes).

    python benchmarks/sim_speed.py TRACE [--stall P] [--read-latency C] [--no-python] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from smartquant.sim import runner
from smartquant.sim.build_cache import build_root, cached_build
from smartquant.sim.fast_harness import RUNTIME_OPT, build_verilator_program, optimisation

BARE_MAIN = """
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include "Vsmartquant_top.h"
#include "verilated.h"

// reset, then clock the model with idle inputs for argv[1] cycles; prints cycles per second
int main(int argc, char** argv) {
    const long cycles = std::atol(argv[1]);
    const std::unique_ptr<VerilatedContext> context{new VerilatedContext};
    const std::unique_ptr<Vsmartquant_top> top{new Vsmartquant_top{context.get()}};
    top->rst = 1;
    for (int i = 0; i < 8; ++i) { top->clk = 1; top->eval(); top->clk = 0; top->eval(); }
    top->rst = 0;
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < cycles; ++i) { top->clk = 1; top->eval(); top->clk = 0; top->eval(); }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%f\\n", cycles / seconds);
    top->final();
    return 0;
}
"""


def bare_loop_cycles_per_s(cycles: int) -> float:
    """Cycles per second of `smartquant_top` (default parameters) in the bare C++ loop."""
    design = runner.without_source_locations(runner.design_verilog())
    opt = optimisation()
    digest = hashlib.sha256("\0".join([opt, RUNTIME_OPT, design, BARE_MAIN]).encode()).hexdigest()[:16]
    build_dir = build_root() / f"bare-verilator-{digest}"
    program = build_dir / "smartquant_top"

    def make(build_dir: Path) -> None:
        (build_dir / "smartquant_top.v").write_text(design)
        build_verilator_program(build_dir, "smartquant_top", ["smartquant_top.v"], BARE_MAIN, opt)

    cached_build(build_dir, make)
    return float(subprocess.run([str(program), str(cycles)], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace")
    parser.add_argument("--stall", type=float, default=0.2)
    parser.add_argument("--read-latency", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-python", action="store_true", help="skip the cocotb bench (minutes on big traces)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    options = runner.SimOptions(seed=args.seed, stall=args.stall, read_latency=args.read_latency)
    started = time.perf_counter()
    fast = runner.run_trace(args.trace, runner.SimOptions(**{**vars(options), "harness": "fast"}))
    fast_total = time.perf_counter() - started
    if not fast["passed"]:
        raise SystemExit(f"fast harness failed: {fast['error']}")
    rows = {"fast": {"cycles": fast["cycles"], "wall_s": fast["wall_s"], "cycles_per_s": fast["cycles_per_s"],
                     "load_s": fast["load_s"], "loop_s": fast["loop_s"],
                     "loop_cycles_per_s": fast["loop_cycles_per_s"],
                     "build_s": fast["build_s"], "prepare_s": fast["prepare_s"], "total_s": fast_total}}
    rows["bare"] = {"cycles": fast["cycles"], "cycles_per_s": bare_loop_cycles_per_s(fast["cycles"])}
    if not args.no_python:
        python = runner.run_trace(args.trace, runner.SimOptions(**{**vars(options), "harness": "python"}))
        rows["python"] = {"cycles": python["cycles"], "wall_s": python["wall_s"],
                          "cycles_per_s": python["cycles_per_s"]}
    figures = {"optimisation": optimisation(), "load_average": os.getloadavg(), "runs": rows}
    for fast_rate in ("cycles_per_s", "loop_cycles_per_s"):
        figures[f"fast_vs_bare ({fast_rate})"] = rows["fast"][fast_rate] / rows["bare"]["cycles_per_s"]
        if "python" in rows:
            figures[f"fast_vs_python ({fast_rate})"] = rows["fast"][fast_rate] / rows["python"]["cycles_per_s"]
    for name, row in rows.items():
        print(f"{name:7s} {row['cycles']:>9d} cycles  {row['cycles_per_s']:>12,.0f} cycles/s (wall)"
              + (f"  {row['loop_cycles_per_s']:>12,.0f} cycles/s (loop; {row['load_s']:.2f} s reading files)"
                 if "loop_s" in row else ""))
    for name, value in figures.items():
        if name.startswith("fast_vs"):
            print(f"{name:38s} {value:8.2f}")
    print("load average (1, 5, 15 min): " + " ".join(f"{v:.2f}" for v in figures["load_average"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
