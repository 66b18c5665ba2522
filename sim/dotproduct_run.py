"""Build `hw.dotproduct` for Verilator or Icarus (cached like `sim.runner`) and stream
integer beats through it with the cocotb bench `sim.dotproduct_bench`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SmartquantError
from ..hw.dotproduct import DotProductUnit, generate_verilog
from .dotproduct_bench import ENV
from .runner import build

TOPLEVEL = "dotproduct"


def run_dotproduct(weights, inputs, simulator: str = "verilator", **unit_params) -> list[tuple[int, bool, bool]]:
    """Stream weights[i], inputs[i] (1-D int arrays, whole groups) through a
    DotProductUnit(**unit_params); return (sum, inner_overflow, outer_overflow) per group."""
    unit = DotProductUnit(**unit_params)
    weights = np.asarray(weights, dtype=np.int64).reshape(-1)
    inputs = np.asarray(inputs, dtype=np.int64).reshape(-1)
    group = unit.tile * unit.tiles_per_group
    if weights.shape != inputs.shape or len(weights) % group:
        raise SmartquantError(f"beats must be whole groups of {group} weight/input pairs")
    verilog = generate_verilog(unit, TOPLEVEL)
    runner, build_dir = build(simulator, verilog, toplevel=TOPLEVEL)
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
