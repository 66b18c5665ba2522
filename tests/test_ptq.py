"""GPTQ / GPFQ on the nested store and the AXE accumulator guarantee (sw/quantize/gptq.py,
sw/quantize/gpfq.py, sw/quantize/axe.py)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from smartquant.errors import SmartquantError
from smartquant.sw.quantize.axe import (AccumulatorSpec, integer_weights, narrowest_accumulator,
                               outer_accumulator_bits, tile_extremes, worst_case_check,
                               worst_case_inputs)
from smartquant.sw.codes import view_code
from smartquant.sw.quantize.gpfq import GPFQ
from smartquant.sw.quantize.gptq import GPTQ
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat

SYM = NestedRTN(StoreFormat(group_size=32, symmetric=True))
ASYM = NestedRTN(StoreFormat(group_size=32, symmetric=False))


def layer(rows, cols, seed, samples=256):
    """Correlated calibration inputs (with a non-zero mean) and Gaussian weights."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, cols)) @ rng.standard_normal((cols, cols)) * 0.3 + rng.standard_normal(cols)
    return x, rng.standard_normal((rows, cols)) * 0.05


def fitted(cls, x):
    q = cls(x.shape[1])
    q.add_batch(torch.from_numpy(x))
    return q


def output_error(q, k, w, x):
    return float(np.mean((x @ (q.dequantize(k) - w).T) ** 2))


@pytest.mark.parametrize("cls", [GPTQ, GPFQ])
@pytest.mark.parametrize("grid", [SYM, ASYM])
@pytest.mark.parametrize("k,act_order", [(8, False), (4, True), (3, False)])
def test_reduces_layer_output_error_against_rtn(cls, grid, k, act_order):
    x, w = layer(48, 96, seed=k)
    q = fitted(cls, x).quantize(w, views=(k,), grid=grid, act_order=act_order)
    rtn = grid.quantize(w)
    assert q.scale_bits.tolist() == rtn.scale_bits.tolist()     # same grid, better codes
    assert output_error(q, k, w, x) < 0.9 * output_error(rtn, k, w, x)


def test_nested_views_start_with_the_dedicated_lowest_view():
    x, w = layer(32, 64, seed=1)
    gptq = fitted(GPTQ, x)
    nested = gptq.quantize(w, views=(4, 8), grid=ASYM)
    dedicated4 = gptq.quantize(w, views=(4,), grid=ASYM)
    assert (view_code(nested.codes, 4) == view_code(dedicated4.codes, 4)).all()
    # the refinement pass fills the lower planes: view 8 gets better than view 4
    assert output_error(nested, 8, w, x) < 0.5 * output_error(dedicated4, 8, w, x)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8), signed_inputs=st.booleans(),
       tile=st.sampled_from([8, 16, 32]), views=st.sampled_from([(8,), (4,), (3, 8), (2, 4, 8)]),
       slack=st.integers(0, 4), soft=st.booleans(), act_order=st.booleans(),
       cls=st.sampled_from([GPTQ, GPFQ]))
def test_axe_worst_case_property_on_random_layers(seed, n, signed_inputs, tile, views, slack,
                                                   soft, act_order, cls):
    x, w = layer(8, 64, seed, samples=96)
    p = narrowest_accumulator(n, signed_inputs, tile, views) + slack
    spec = AccumulatorSpec(p, n, signed_inputs, tile)
    q = fitted(cls, x).quantize(w, views=views, grid=SYM, accumulator=spec, soft=soft, act_order=act_order)
    report = worst_case_check(q, spec, views)
    assert report.ok, report.per_view
    outer = outer_accumulator_bits(spec, SYM.fmt.group_size // tile)
    assert all(r["outer_bits"] <= outer for r in report.per_view.values())
    if slack == 0 and views[0] < 8:   # the narrowest accumulator really is the narrowest
        with pytest.raises(SmartquantError, match="too small"):
            fitted(cls, x).quantize(w, views=views, grid=SYM,
                                    accumulator=AccumulatorSpec(p - 1, n, signed_inputs, tile))


def test_worst_case_inputs_reach_the_extremes():
    rng = np.random.default_rng(3)
    q = SYM.quantize(rng.standard_normal((5, 64)))
    spec = AccumulatorSpec(20, 6, signed_inputs=True, tile=16)
    v = integer_weights(q, 4)
    high, low = tile_extremes(v, spec, 16)
    for maximise, extreme in ((True, high), (False, low)):
        x = worst_case_inputs(v, spec, maximise)
        assert ((v * x).reshape(5, -1, 16).sum(-1) == extreme).all()
    x = rng.integers(*spec.input_range(), size=(1000, 64), endpoint=True)
    sums = (v[None] * x[:, None]).reshape(1000, 5, -1, 16).sum(-1)
    assert (sums <= high).all() and (sums >= low).all()


def test_unconstrained_codes_fail_the_check():
    x, w = layer(8, 64, seed=5)
    spec = AccumulatorSpec(14, 8, tile=32)
    assert not worst_case_check(fitted(GPTQ, x).quantize(w, grid=SYM), spec, (8,)).ok


@pytest.mark.parametrize("kwargs,message", [
    (dict(accumulator_bits=8, input_bits=8), "too small for any non-zero weight"),
    (dict(accumulator_bits=16, input_bits=0), "input width"),
    (dict(accumulator_bits=16, input_bits=33), "input width"),
    (dict(accumulator_bits=1, input_bits=4), "accumulator width"),
])
def test_bad_accumulator_specs(kwargs, message):
    with pytest.raises(SmartquantError, match=message):
        AccumulatorSpec(**kwargs)


@pytest.mark.parametrize("spec,grid,views,message", [
    (AccumulatorSpec(20, 4, tile=40), SYM, (8,), "does not divide the input size"),
    (AccumulatorSpec(20, 4, tile=48), SYM, (8,), "spans several scale groups"),
    (AccumulatorSpec(20, 4, tile=32), ASYM, (8,), "symmetric"),
    (AccumulatorSpec(9, 4, tile=32), SYM, (3,), "too small for the 3-bit view"),
])
def test_bad_axe_parameters(spec, grid, views, message):
    x, w = layer(4, 96, seed=0)
    with pytest.raises(SmartquantError, match=message):
        fitted(GPTQ, x).quantize(w, views=views, grid=grid, accumulator=spec)


def test_bad_calibration_and_views():
    gptq = GPTQ(16)
    with pytest.raises(SmartquantError, match="no calibration"):
        gptq.quantize(np.zeros((2, 16)))
    with pytest.raises(SmartquantError, match="features"):
        gptq.add_batch(torch.zeros(3, 8))
    gptq.add_batch(torch.randn(4, 16))
    with pytest.raises(SmartquantError, match="views"):
        gptq.quantize(np.zeros((2, 16)), views=(9,))
    with pytest.raises(SmartquantError, match="does not match"):
        gptq.quantize(np.zeros((2, 8)))
