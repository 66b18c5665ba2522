"""The AXE guarantee in RTL: hw.dotproduct under cocotb (Verilator) on worst-case inputs
shows no overflow on AXE-GPTQ codes and flags the overflows of unconstrained codes."""

import numpy as np
import torch

from smartquant.sim.dotproduct_run import run_dotproduct
from smartquant.sw.quantize.accumulator_model import accumulate_group
from smartquant.sw.quantize.axe import (AccumulatorSpec, integer_weights, tile_extremes, worst_case_check,
                               worst_case_inputs)
from smartquant.sw.quantize.gptq import GPTQ
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat

VIEWS = (4, 8)
SPEC = AccumulatorSpec(accumulator_bits=14, input_bits=4, signed_inputs=False, tile=64)
GRID = NestedRTN(StoreFormat(group_size=128, symmetric=True))


def worst_case_beats(q):
    """(weights, inputs): for every view and channel, the maximising then the minimising inputs."""
    weights, inputs = [], []
    for k in VIEWS:
        v = integer_weights(q, k)
        for maximise in (True, False):
            weights.append(v)
            inputs.append(worst_case_inputs(v, SPEC, maximise))
    return np.concatenate(weights).reshape(-1), np.concatenate(inputs).reshape(-1)


def test_rtl_worst_case_overflow_axe_vs_unconstrained():
    rng = np.random.default_rng(7)
    rows, cols = 6, 256
    x = rng.standard_normal((512, cols))
    w = rng.standard_normal((rows, cols)) * 0.1
    gptq = GPTQ(cols)
    gptq.add_batch(torch.from_numpy(x))
    axe_q = gptq.quantize(w, views=VIEWS, grid=GRID, accumulator=SPEC)
    rtn_q = GRID.quantize(w)
    assert worst_case_check(axe_q, SPEC, VIEWS).ok
    assert not worst_case_check(rtn_q, SPEC, VIEWS).ok

    axe_w, axe_x = worst_case_beats(axe_q)
    rtn_w, rtn_x = worst_case_beats(rtn_q)
    params = dict(accumulator_bits=SPEC.accumulator_bits, input_bits=SPEC.input_bits,
                  signed_inputs=False, tile=64, tiles_per_group=2)
    got = run_dotproduct(np.concatenate([axe_w, rtn_w]), np.concatenate([axe_x, rtn_x]), **params)
    groups = len(axe_w) // 128
    axe_got, rtn_got = got[:groups], got[groups:]

    assert not any(inner or outer for _, inner, outer in axe_got)
    # no overflow: the unit's sums are the exact worst cases of each group
    exact = []
    for k in VIEWS:
        high, low = tile_extremes(integer_weights(axe_q, k), SPEC, 64)
        exact += [high.reshape(rows, -1, 2).sum(-1).reshape(-1), low.reshape(rows, -1, 2).sum(-1).reshape(-1)]
    assert [s for s, _, _ in axe_got] == np.concatenate(exact).tolist()

    want = [accumulate_group(rtn_w[i:i + 128], rtn_x[i:i + 128], SPEC.accumulator_bits, 64,
                             SPEC.accumulator_bits + 1) for i in range(0, len(rtn_w), 128)]
    assert rtn_got == want
    assert any(inner for _, inner, _ in rtn_got)
