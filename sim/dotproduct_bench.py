"""The cocotb test that streams integer (weight, input) beats through `hw.dotproduct`
and records every group result (run it through `smartquant.sim.dotproduct_run`).

Environment: SMARTQUANT_DOTPRODUCT, a JSON object with `beats` (a .npy file of
(n, 2) int64 weight/input pairs), `results` (the JSON file written at the end:
a list of [sum, inner_overflow, outer_overflow] per group) and the unit's
`weight_bits`, `input_bits` and `outer_bits`.
"""

from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

ENV = "SMARTQUANT_DOTPRODUCT"


def pack_beat(weight: int, act: int, weight_bits: int, input_bits: int) -> int:
    """Payload bits: weight (two's complement) low, input above it."""
    return (weight & ((1 << weight_bits) - 1)) | ((act & ((1 << input_bits) - 1)) << weight_bits)


def unpack_result(word: int, outer_bits: int) -> list[int]:
    total = word & ((1 << outer_bits) - 1)
    if total >> (outer_bits - 1):
        total -= 1 << outer_bits
    return [total, (word >> outer_bits) & 1, (word >> (outer_bits + 1)) & 1]


@cocotb.test()
async def stream_beats(dut):
    """One beat per cycle (the sink is always ready); results sampled at each falling edge."""
    config = json.loads(os.environ[ENV])
    beats = np.load(config["beats"])
    wb, nb, ob = config["weight_bits"], config["input_bits"], config["outer_bits"]
    cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
    dut.rst.value = 1
    dut.beats__valid.value = 0
    dut.result__ready.value = 1
    await ClockCycles(dut.clk, 3)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    results = []
    for weight, act in beats.tolist():
        dut.beats__valid.value = 1
        dut.beats__payload.value = pack_beat(weight, act, wb, nb)
        await FallingEdge(dut.clk)
        assert dut.beats__ready.value == 1, "the unit stalled with its sink ready"
        if dut.result__valid.value:
            results.append(unpack_result(int(dut.result__payload.value), ob))
    dut.beats__valid.value = 0
    for _ in range(3):
        await FallingEdge(dut.clk)
        if dut.result__valid.value:
            results.append(unpack_result(int(dut.result__payload.value), ob))
    with open(config["results"], "w") as out:
        json.dump(results, out)
