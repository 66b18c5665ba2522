"""The fast harness: a trace replayed inside the simulation (docs/COVERIFY.md).

`run_trace_fast` writes the trace as `$readmemh` files into a run directory, builds
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
from ..errors import SmartquantError
from ..sw.image.trace import Trace
from . import fast_verilog
from .fast_verilog import CONFIG_FIELDS, HARNESS, ICARUS_TOP, Capacity
from .host import BusCounters, hang_report
from .runner import build_root, locked, put_verilator_on_path, without_source_locations
from .scoreboard import Mismatch, Scoreboard
from .testbench import BenchConfig, counter_disagreement, region_writes, summarize

#: C++ optimisation of the harness build (SMARTQUANT_FAST_OPT overrides; docs/COVERIFY.md has the measurement)
DEFAULT_OPT = "-O0"
RUNTIME_OPT = "-O2"                #: Verilator's runtime library (verilated.cpp: $readmemh, $fwrite)
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-WIDTH", "-Wno-MULTIDRIVEN"]
CHANNELS = ("drs", "ndr")

MAIN_CPP = """
#include <memory>
#include "Vsq_harness.h"
#include "verilated.h"

// the bare clock loop: sq_harness ends the run with $finish
int main(int argc, char** argv) {
    const std::unique_ptr<VerilatedContext> context{new VerilatedContext};
    context->commandArgs(argc, argv);
    const std::unique_ptr<Vsq_harness> top{new Vsq_harness{context.get()}};
    top->clk = 0;
    top->eval();
    while (!context->gotFinish()) {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
    }
    top->final();
    return 0;
}
"""


def optimisation() -> str:
    return os.environ.get("SMARTQUANT_FAST_OPT", DEFAULT_OPT)


def build_harness(simulator: str, design: str, capacity: Capacity) -> tuple[Path, float]:
    """(command to run in a run directory, build seconds: 0 when cached) for `design` wrapped
    in the harness, built once per content hash under build_root()."""
    design = without_source_locations(design)
    harness = fast_verilog.harness_verilog(design, capacity)
    opt = optimisation() if simulator == "verilator" else ""
    key = "\0".join([simulator, opt, RUNTIME_OPT, design, harness, MAIN_CPP, fast_verilog.ICARUS_TOP_VERILOG])
    build_dir = build_root() / f"fast-{simulator}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    program = build_dir / ("sq_harness" if simulator == "verilator" else "sq_harness.vvp")
    started = time.perf_counter()
    with locked(build_root() / f".{build_dir.name}.lock"):
        if (build_dir / ".built").exists():
            return program, 0.0
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "smartquant_top.v").write_text(design)
        (build_dir / "harness.v").write_text(harness)
        if simulator == "verilator":
            _build_verilator(build_dir, opt)
        elif simulator == "icarus":
            _build_icarus(build_dir)
        else:
            raise SmartquantError(f"--harness fast: simulator {simulator!r} is not verilator or icarus")
        (build_dir / ".built").touch()
    return program, time.perf_counter() - started


def _run_build(command: list[str], build_dir: Path, env: dict | None = None) -> None:
    log = build_dir / "build.log"
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=build_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise SmartquantError(f"fast harness build failed ({command[0]}); log tail:\n{tail}")


def _build_verilator(build_dir: Path, opt: str) -> None:
    build_verilator_program(build_dir, HARNESS, ["harness.v", "smartquant_top.v"], MAIN_CPP, opt)


def build_verilator_program(build_dir: Path, toplevel: str, sources: list[str], main_cpp: str, opt: str) -> Path:
    """Verilate `sources` (in `build_dir`) with top module `toplevel` and link `main_cpp`
    into the executable `build_dir/toplevel`: the model's C++ at `opt` (-O0, -O2, ...),
    Verilator's runtime (small; its `$readmemh` loads the run files) always at -O2."""
    put_verilator_on_path()
    (build_dir / "main.cpp").write_text(main_cpp)
    env = dict(os.environ,
               MAKEFLAGS=f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={opt} OPT_SLOW=-O0 OPT_GLOBAL={RUNTIME_OPT}")
    _run_build(["verilator", "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 1), *VERILATOR_ARGS,
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

def _hex_rows(data: np.ndarray) -> str:
    """One hex word per row of u8 `data` (row byte 0 least significant), newline-terminated."""
    if not len(data):
        return ""
    width = data.shape[1] * 2
    text = np.ascontiguousarray(data[:, ::-1]).tobytes().hex()
    return "\n".join(text[i:i + width] for i in range(0, len(text), width)) + "\n"


def _hex_words(values, digits: int) -> str:
    return "".join(f"{int(v):0{digits}x}\n" for v in values)


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
                    run_dir: Path) -> Capacity:
    """The harness's `$readmemh` files for `trace` in `run_dir`; the capacity they need."""
    writes, spans = csr_programme(trace)
    dram_lines = trace.dram_bytes // spec.LINE_BYTES
    capacity = Capacity.fitting(len(trace), len(trace.segments), len(writes), dram_lines)
    seeds = random.Random(config.seed)
    values = {"segments": len(trace.segments), "requests": len(trace), "dram_lines": dram_lines,
              "stall_threshold": stall_threshold(config.stall), "read_latency": config.read_latency,
              "max_in_flight": config.max_in_flight, "watchdog_cycles": config.watchdog_cycles,
              "cycles_after_mismatch": config.host_settings().cycles_after_mismatch, "csr_writes": len(writes)}
    config_words = [values[name] if name in values else seeds.getrandbits(64) for name in CONFIG_FIELDS]
    (run_dir / "config.hex").write_text(_hex_words(config_words, 16))
    requests = ((trace.poison.astype(np.uint64) << np.uint64(49)) | (trace.opcode.astype(np.uint64) << np.uint64(48))
                | (trace.tag.astype(np.uint64) << np.uint64(40)) | trace.addr.astype(np.uint64))
    (run_dir / "requests.hex").write_text(_hex_words(requests.tolist(), 16))
    (run_dir / "lines.hex").write_text(_hex_rows(trace.line))
    (run_dir / "segments.hex").write_text(_hex_words(
        [(first << 96) | (count << 64) | (s.start << 32) | s.stop for s, (first, count) in zip(trace.segments, spans)],
        32))
    (run_dir / "csr.hex").write_text(_hex_words([(addr << 32) | value for addr, value in writes], 16))
    (run_dir / "dram.hex").write_text(_hex_rows(dram.reshape(-1, beat_bytes)))
    errors = np.zeros(dram_lines, np.uint8)
    errors[list(trace.dram_errors)] = 1
    (run_dir / "dram_errors.hex").write_text("\n".join(map(str, errors.tolist())) + "\n")
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


def run_trace_fast(trace: Trace, config: BenchConfig, simulator: str, design: str, timeout_s: float | None = None) -> dict:
    """Replay a loaded trace in the fast harness around `design` (Verilog text); the bench's stats
    plus `harness`, `build_s` (0 when cached) and `prepare_s` (writing the run files)."""
    beat_bytes = fast_verilog.port_widths(design)["axi__rdata"] // 8
    with tempfile.TemporaryDirectory(prefix="smartquant-fast-") as run_dir:
        run_dir = Path(run_dir)
        started = time.perf_counter()
        capacity = write_run_files(trace, config, initial_dram(trace, config.seed), beat_bytes, run_dir)
        prepare_s = time.perf_counter() - started
        program, build_s = build_harness(simulator, design, capacity)
        command = [str(program)] if simulator == "verilator" else ["vvp", "-n", str(program)]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise SmartquantError(f"the fast harness ran past {timeout_s} s") from None
        wall_s = time.perf_counter() - started
        results_file = run_dir / "results.txt"
        if done.returncode or not results_file.exists():
            tail = (done.stdout + done.stderr)[-2000:]
            raise SmartquantError(f"the fast harness ended without results (exit {done.returncode}); "
                                  f"output tail:\n{tail}")
        results = Results.parse(results_file.read_text())
    stats = stats_from_results(trace, config, results, beat_bytes, wall_s)
    stats.update(harness="fast", build_s=build_s, prepare_s=prepare_s)
    return stats
