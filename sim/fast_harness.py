"""The fast harness: a trace replayed inside the simulation (docs/COVERIFY.md).

`run_trace_fast` writes the trace as binary files (`$fread`) into a run directory, builds
`sq_harness` (sim/fast_verilog.py) around the design once per content hash (Verilator:
an executable clocked by a bare C++ loop; Icarus: a vvp file), runs it there and turns
its `results.txt` into the same stats as the cocotb bench (sim/testbench.py).  No Python
runs per cycle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import spec
from ..atomic import atomic_file
from ..errors import SmartquantError
from ..sw.image.trace import Trace
from . import fast_verilog
from .fast_verilog import CONFIG_FIELDS, HARNESS, ICARUS_TOP, Capacity
from .host import BusCounters, hang_report
from .build_cache import build_root, cached_build, is_built, mark_used
from .runner import put_verilator_on_path, without_source_locations
from .scoreboard import Mismatch, Scoreboard
from .testbench import BenchConfig, counter_disagreement, region_writes, summarize

#: C++ optimisation of the harness build (SMARTQUANT_FAST_OPT overrides; docs/COVERIFY.md has the measurement)
DEFAULT_OPT = "-O1"
RUNTIME_OPT = "-O2"                #: Verilator's runtime library (verilated.cpp: $fread, $fwrite)
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-WIDTH", "-Wno-MULTIDRIVEN"]
CHANNELS = ("drs", "ndr")

MAIN_CPP = """
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include "Vsq_harness.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

// the bare clock loop: sq_harness ends the run with $finish.  The first eval runs the
// initial blocks (the run files' $fread); stderr gets 'sq_timing LOAD_S LOOP_S' (seconds).
// A waves build (--trace) run as 'sq_harness FROM TO' dumps clock cycles FROM..TO to
// waves.vcd, cycle c rising at time 2c-1 (as sq_icarus_tb)
int main(int argc, char** argv) {
    using clock = std::chrono::steady_clock;
    const std::unique_ptr<VerilatedContext> context{new VerilatedContext};
    context->commandArgs(argc, argv);
#if VM_TRACE
    const long dump_from = argc > 2 ? std::atol(argv[1]) : 1, dump_to = argc > 2 ? std::atol(argv[2]) : 0;
    context->traceEverOn(true);
#endif
    const std::unique_ptr<Vsq_harness> top{new Vsq_harness{context.get()}};
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> vcd;
    if (dump_from <= dump_to) {
        vcd.reset(new VerilatedVcdC);
        top->trace(vcd.get(), 99);
        vcd->open("waves.vcd");
    }
#endif
    const auto started = clock::now();
    top->clk = 0;
    top->eval();
    const auto loaded = clock::now();
    for (long cycle = 1; !context->gotFinish(); ++cycle) {
        top->clk = 1;
        top->eval();
#if VM_TRACE
        if (vcd && cycle >= dump_from && cycle <= dump_to) vcd->dump(static_cast<uint64_t>(2 * cycle - 1));
#endif
        top->clk = 0;
        top->eval();
#if VM_TRACE
        if (vcd && cycle >= dump_from && cycle <= dump_to) vcd->dump(static_cast<uint64_t>(2 * cycle));
#endif
    }
    const auto ended = clock::now();
    top->final();
#if VM_TRACE
    if (vcd) vcd->close();
#endif
    std::fprintf(stderr, "sq_timing %.6f %.6f\\n", std::chrono::duration<double>(loaded - started).count(),
                 std::chrono::duration<double>(ended - loaded).count());
    return 0;
}
"""


def optimisation() -> str:
    return os.environ.get("SMARTQUANT_FAST_OPT", DEFAULT_OPT)


def build_harness(simulator: str, design: str, capacity: Capacity, waves: bool = False) -> tuple[Path, float]:
    """(program to run in a run directory, build seconds: 0 when cached) for `design` wrapped in
    the harness with at least `capacity`, built once per content hash under build_root(): any
    cached build of the same content whose memories hold `capacity` serves (the smallest).
    `waves`: a Verilator build with tracing (Icarus dumps without a build of its own)."""
    design = without_source_locations(design)
    waves = waves and simulator == "verilator"
    opt = optimisation() if simulator == "verilator" else ""
    template = fast_verilog.harness_verilog(design, Capacity.fitting(0, 0, 0, 0))
    key = "\0".join([simulator, opt, RUNTIME_OPT, design, template, MAIN_CPP, fast_verilog.ICARUS_TOP_VERILOG,
                     str(waves)])
    family = f"fast-{simulator}-{hashlib.sha256(key.encode()).hexdigest()[:16]}{'-waves' if waves else ''}"
    cached = _covering_build(family, capacity)
    if cached is not None:
        mark_used(cached)
        return _program(cached, simulator), 0.0

    def make(build_dir: Path) -> None:
        (build_dir / "smartquant_top.v").write_text(design)
        (build_dir / "harness.v").write_text(fast_verilog.harness_verilog(design, capacity))
        if simulator == "verilator":
            _build_verilator(build_dir, opt, waves)
        elif simulator == "icarus":
            _build_icarus(build_dir)
        else:
            raise SmartquantError(f"--harness fast: simulator {simulator!r} is not verilator or icarus")

    build_dir = build_root() / f"{family}-{capacity.label()}"
    started = time.perf_counter()
    made = cached_build(build_dir, make)
    return _program(build_dir, simulator), time.perf_counter() - started if made else 0.0


def _program(build_dir: Path, simulator: str) -> Path:
    return build_dir / ("sq_harness" if simulator == "verilator" else "sq_harness.vvp")


def _covering_build(family: str, capacity: Capacity) -> Path | None:
    """The smallest finished build of `family` whose memories hold `capacity`, if any."""
    builds = [(Capacity.from_label(d.name[len(family) + 1:]), d)
              for d in build_root().glob(f"{family}-*") if is_built(d)]
    fitting = [(c.words(), d) for c, d in builds if c is not None and c.holds(capacity)]
    return min(fitting)[1] if fitting else None


def _run_build(command: list[str], build_dir: Path, env: dict | None = None) -> None:
    log = build_dir / "build.log"
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=build_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise SmartquantError(f"fast harness build failed ({command[0]}); log tail:\n{tail}")


def _build_verilator(build_dir: Path, opt: str, waves: bool) -> None:
    build_verilator_program(build_dir, HARNESS, ["harness.v", "smartquant_top.v"], MAIN_CPP, opt,
                            ["--trace"] if waves else [])


def build_verilator_program(build_dir: Path, toplevel: str, sources: list[str], main_cpp: str, opt: str,
                            extra_args: list[str] = ()) -> Path:
    """Verilate `sources` (in `build_dir`) with top module `toplevel` and link `main_cpp`
    into the executable `build_dir/toplevel`: the model's C++ at `opt` (-O0, -O2, ...),
    Verilator's runtime (small; its `$fread` loads the run files) always at -O2."""
    put_verilator_on_path()
    (build_dir / "main.cpp").write_text(main_cpp)
    env = dict(os.environ,
               MAKEFLAGS=f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={opt} OPT_SLOW=-O0 OPT_GLOBAL={RUNTIME_OPT}")
    _run_build(["verilator", "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 1), *VERILATOR_ARGS, *extra_args,
                "--top-module", toplevel, "--Mdir", "obj", "-o", f"../{toplevel}", *sources, "main.cpp"],
               build_dir, env)
    return build_dir / toplevel


def _build_icarus(build_dir: Path) -> None:
    if shutil.which("iverilog") is None:
        raise SmartquantError("icarus: iverilog is not installed (apt-get install iverilog)")
    (build_dir / "icarus_top.v").write_text(fast_verilog.ICARUS_TOP_VERILOG)
    _run_build(["iverilog", "-g2005", "-s", ICARUS_TOP, "-o", "sq_harness.vvp",
                "harness.v", "smartquant_top.v", "icarus_top.v"], build_dir)


# --- run files -------------------------------------------------------------------

def _write_words(path: Path, values, word_bytes: int) -> None:
    """Unsigned `values` as `word_bytes`-byte words, most significant byte first (`$fread` order)."""
    wide = [int(v).to_bytes(word_bytes, "big") for v in values]
    path.write_bytes(b"".join(wide))


def _write_rows(path: Path, rows: np.ndarray) -> None:
    """Rows of u8 (row byte 0 the least significant of its word) as `$fread` words."""
    np.ascontiguousarray(rows[:, ::-1]).tofile(path)


def csr_programme(trace: Trace) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(every CSR write in order, (first write, count) per segment): the first segment also
    sets CSR_DRAM_LINES and clears the counters, as the cocotb bench does."""
    writes, spans = [], []
    for number, segment in enumerate(trace.segments):
        first = len(writes)
        if number == 0:
            writes += [(spec.CSR_DRAM_LINES, trace.dram_bytes // spec.LINE_BYTES), (spec.CSR_COUNTER_CLEAR, 1)]
        writes += region_writes(segment.regions)
        spans.append((first, len(writes) - first))
    return writes, spans


def stall_threshold(stall: float) -> int:
    """The per-cycle draw (16 bits) below which a stream pauses: `stall` in 1/65536 steps."""
    return round(stall * 65536)


def write_run_files(trace: Trace, config: BenchConfig, dram: np.ndarray, beat_bytes: int,
                    run_dir: Path, after_mismatch: int) -> Capacity:
    """The harness's run files (fast_verilog.RUN_FILES) for `trace` in `run_dir`, the run stopping
    `after_mismatch` cycles after the first mismatch; the capacity they need."""
    writes, spans = csr_programme(trace)
    dram_lines = trace.dram_bytes // spec.LINE_BYTES
    capacity = Capacity.fitting(len(trace), len(trace.segments), len(writes), dram_lines)
    seeds = random.Random(config.seed)
    values = {"segments": len(trace.segments), "requests": len(trace), "dram_lines": dram_lines,
              "stall_threshold": stall_threshold(config.stall), "read_latency": config.read_latency,
              "max_in_flight": config.max_in_flight, "watchdog_cycles": config.watchdog_cycles,
              "cycles_after_mismatch": after_mismatch, "csr_writes": len(writes)}
    config_words = [values[name] if name in values else seeds.getrandbits(64) for name in CONFIG_FIELDS]
    _write_words(run_dir / "config.bin", config_words, 8)
    requests = ((trace.poison.astype(np.uint64) << np.uint64(49)) | (trace.opcode.astype(np.uint64) << np.uint64(48))
                | (trace.tag.astype(np.uint64) << np.uint64(40)) | trace.addr.astype(np.uint64))
    requests.astype(">u8").tofile(run_dir / "requests.bin")
    _write_rows(run_dir / "lines.bin", trace.line)
    _write_words(run_dir / "segments.bin",
                 [(first << 96) | (count << 64) | (s.start << 32) | s.stop
                  for s, (first, count) in zip(trace.segments, spans)], 16)
    _write_words(run_dir / "csr.bin", [(addr << 32) | value for addr, value in writes], 8)
    _write_rows(run_dir / "dram.bin", dram.reshape(-1, beat_bytes))
    errors = np.zeros(dram_lines, np.uint8)
    errors[list(trace.dram_errors)] = 1
    errors.tofile(run_dir / "dram_errors.bin")
    return capacity


def initial_dram(trace: Trace, seed: int) -> np.ndarray:
    """The DRAM at the start: the image (back door), or random bytes when the trace loads
    it through the host (as the cocotb bench does), so a write that did not land is caught."""
    if trace.settings.get("load_via_host"):
        return np.frombuffer(random.Random(seed + 1).randbytes(trace.dram_bytes), np.uint8)
    return trace.load_image().dram


# --- results ---------------------------------------------------------------------

@dataclasses.dataclass
class Results:
    """What `results.txt` holds, parsed."""
    values: dict[str, int]
    counters: dict[str, int]
    mismatches: list[tuple[int, ...]]        #: (kind, ndr, tag, index, cycle, poison, data)
    pending: list[tuple[int, int]]           #: (request index, accept cycle) still outstanding

    @classmethod
    def parse(cls, text: str) -> "Results":
        values, counters, mismatches, pending = {}, {}, [], []
        for line in text.splitlines():
            key, *fields = line.split()
            if key == "counter":
                counters[spec.COUNTERS[int(fields[0]) // 2]] = counters.get(spec.COUNTERS[int(fields[0]) // 2], 0) \
                    | int(fields[1]) << (32 * (int(fields[0]) % 2))
            elif key == "mismatch":
                mismatches.append(tuple(int(f) for f in fields[:-1]) + (int(fields[-1], 16),))
            elif key == "pending":
                pending.append((int(fields[0]), int(fields[1])))
            elif fields:
                values[key] = int(fields[0])
        if "end" not in text.split():
            raise SmartquantError("the fast harness ended without complete results")
        return cls(values, counters, mismatches, pending)


class HarnessScoreboard:
    """The checker's totals in the shape `testbench.summarize` reads; each kept mismatch is
    replayed through a `Scoreboard` so its text is the cocotb bench's."""

    def __init__(self, trace: Trace, results: Results):
        v = results.values
        self.compared, self.poisoned = v["compared"], v["poisoned"]
        self._latency = {"mean": v["latency_sum"] / max(v["compared"], 1),
                         "min": v["latency_min"] if v["compared"] else 0, "max": v["latency_max"]}
        self.mismatches = [self._describe(trace, *m) for m in results.mismatches]
        self.mismatches += [Mismatch(-1, 0, "")] * (v["mismatches"] - len(self.mismatches))

    @staticmethod
    def _describe(trace, kind, ndr, tag, index, cycle, poison, data) -> Mismatch:
        scoreboard = Scoreboard(trace)
        if kind != fast_verilog.MISMATCH_UNEXPECTED_TAG:
            scoreboard.accepted(index, 0)
        line = None if ndr else data.to_bytes(spec.LINE_BYTES, "little")
        scoreboard.responded(CHANNELS[ndr], tag, poison, line, cycle)
        if scoreboard.first_mismatch is None:       # the two checkers disagree: name what the HDL saw
            return Mismatch(index, cycle, f"cycle {cycle}: {trace.describe(index)}: the harness reports "
                                          f"mismatch kind {kind}, the scoreboard none")
        return scoreboard.first_mismatch

    @property
    def first_mismatch(self) -> Mismatch | None:
        return self.mismatches[0] if self.mismatches else None

    def latency_summary(self) -> dict:
        return self._latency


def stats_from_results(trace: Trace, config: BenchConfig, results: Results, beat_bytes: int, wall_s: float) -> dict:
    """The cocotb bench's stats (testbench.summarize) from the harness's results."""
    v = results.values
    scoreboard = HarnessScoreboard(trace, results)
    bus = BusCounters(beat_bytes=beat_bytes, cycles=v["cycles"], read_beats=v["read_beats"],
                      read_bursts=v["read_bursts"], write_beats=v["write_beats"])
    error = None
    if v["hang"]:
        error = hang_report(trace, config.watchdog_cycles, v["cycles"], results.pending, v["stop"] - v["next"])
    elif scoreboard.first_mismatch:
        error = scoreboard.first_mismatch.text
    else:
        error = counter_disagreement(results.counters, scoreboard, bus.bytes_read)
    return summarize(config, trace, scoreboard, bus, results.counters, wall_s, error)


def run_trace_fast(trace: Trace, config: BenchConfig, simulator: str, design: str, waves: str | None = None,
                   waves_around: int | None = None, timeout_s: float | None = None) -> dict:
    """Replay a loaded trace in the fast harness around `design` (Verilog text); the bench's stats
    plus `harness`, `build_s` (0 when cached), `prepare_s` (writing the run files) and, from
    Verilator, `load_s`, `loop_s`, `loop_cycles_per_s` (loop_timing).

    `waves`: copy the waveform here (VCD from Verilator, FST from Icarus), of the whole run, or
    with `waves_around` N only clock cycles first mismatch (or watchdog) -N..+N: the run is
    replayed once more, same seed, on a tracing build, dumping only that window; nothing is
    written when the run passes."""
    beat_bytes = fast_verilog.port_widths(design)["axi__rdata"] // 8
    after_mismatch = max(config.host_settings().cycles_after_mismatch, waves_around or 0)
    with tempfile.TemporaryDirectory(prefix="smartquant-fast-") as run_dir:
        run_dir = Path(run_dir)
        started = time.perf_counter()
        capacity = write_run_files(trace, config, initial_dram(trace, config.seed), beat_bytes, run_dir,
                                   after_mismatch)
        prepare_s = time.perf_counter() - started
        whole = (1, FOREVER) if waves and waves_around is None else None
        program, build_s = build_harness(simulator, design, capacity, waves=whole is not None)
        results, wall_s, stderr = _run(program, simulator, run_dir, whole, timeout_s)
        window = whole or (waves and _window_around(results, waves_around))
        if window and not whole:
            program, waves_build_s = build_harness(simulator, design, capacity, waves=True)
            build_s += waves_build_s
            again = _run(program, simulator, run_dir, window, timeout_s)[0]
            if again.values != results.values:
                raise SmartquantError("the waveform re-run did not repeat the run (a nondeterministic harness)")
        if window:
            with atomic_file(waves) as partial:
                shutil.copyfile(run_dir / ("waves.vcd" if simulator == "verilator" else "waves.fst"), partial)
    stats = stats_from_results(trace, config, results, beat_bytes, wall_s)
    stats.update(harness="fast", build_s=build_s, prepare_s=prepare_s, **loop_timing(stderr, results))
    if window:
        stats.update(waves=waves, waves_cycles=[window[0], min(window[1], results.values["clock_cycles"])])
    return stats


FOREVER = 1 << 62       #: the last clock cycle of an unbounded dump window


def _window_around(results: Results, cycles: int) -> tuple[int, int] | None:
    """Clock cycles `cycles` either side of the first mismatch, or before the watchdog fired;
    None when the run passed."""
    v = results.values
    if v["mismatches"]:
        edge = v["first_mismatch_clock"] + 1    # the checker reads the cycle count before the edge counts it
        return max(1, edge - cycles), edge + cycles
    if v["hang"]:
        return max(1, v["clock_cycles"] - cycles), v["clock_cycles"]
    return None


def _run(program: Path, simulator: str, run_dir: Path, dump: tuple[int, int] | None,
         timeout_s: float | None) -> tuple[Results, float, str]:
    """(results, wall seconds, stderr) of one run of `program` in `run_dir`, dumping clock
    cycles `dump` (first, last) when given."""
    if simulator == "verilator":
        command = [str(program), *map(str, dump or ())]
    else:
        command = ["vvp", "-n", str(program)] + (["-fst", f"+dump_from={dump[0]}", f"+dump_to={dump[1]}"]
                                                 if dump else [])
    results_file = run_dir / "results.txt"
    results_file.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SmartquantError(f"the fast harness ran past {timeout_s} s") from None
    wall_s = time.perf_counter() - started
    if done.returncode or not results_file.exists():
        tail = (done.stdout + done.stderr)[-2000:]
        raise SmartquantError(f"the fast harness ended without results (exit {done.returncode}); "
                              f"output tail:\n{tail}")
    return Results.parse(results_file.read_text()), wall_s, done.stderr


def loop_timing(stderr: str, results: Results) -> dict:
    """From the Verilator program's `sq_timing` line: `load_s` (the run files read), `loop_s`
    (the clock loop) and `loop_cycles_per_s` (every clock cycle over loop_s); {} for Icarus."""
    for line in stderr.splitlines():
        if line.startswith("sq_timing "):
            load_s, loop_s = (float(v) for v in line.split()[1:])
            return {"load_s": load_s, "loop_s": loop_s,
                    "loop_cycles_per_s": results.values["clock_cycles"] / max(loop_s, 1e-9)}
    return {}
