"""Nested quantizers: view errors, stored-scale codes, formats, clipping search, dedicated baseline."""

import numpy as np
import pytest

from smartquant.errors import SmartquantError
from smartquant.spec import ScaleFormat
from smartquant.sw.fpformat import scale_value
from smartquant.sw.quantize.quantizer import (DedicatedRTN, NestedMSEClip, NestedRTN, StoreFormat,
                                     relative_error)


@pytest.fixture(scope="module")
def weight():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 256)) * 0.04
    w[rng.random(w.shape) < 0.005] *= 15          # outliers make clipping worthwhile
    return w.astype(np.float32)


FORMATS = [StoreFormat(g, sym, fmt) for g, sym, fmt in
           [(128, False, ScaleFormat.FP16), (32, True, ScaleFormat.BF16), (64, False, ScaleFormat.POW2),
            (256, True, ScaleFormat.POW2)]]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("algorithm", [NestedRTN, NestedMSEClip])
def test_error_decreases_with_k(weight, fmt, algorithm):
    qt = algorithm(fmt).quantize(weight)
    errors = [relative_error(qt.dequantize(k), weight) for k in range(1, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_codes_use_the_stored_scale(weight, fmt):
    qt = NestedRTN(fmt).quantize(weight)
    scale = scale_value(qt.scale_bits, fmt.scale_format).reshape(-1, 1)
    zero = qt.zeros.reshape(-1, 1).astype(float)
    groups = weight.astype(float).reshape(-1, fmt.group_size)
    expected = np.clip(np.rint(groups / scale) + zero, 0, 255)
    np.testing.assert_array_equal(qt.codes.reshape(-1, fmt.group_size), expected)
    if fmt.symmetric:
        assert (qt.zeros == 128).all()
    if fmt.scale_format == ScaleFormat.POW2:
        assert (qt.scale_bits & 0x03FF == 0).all()


def test_padding_columns_are_zero_and_excluded(tiny_weights):
    w = tiny_weights["sym_bf16_g64"]                     # in = 200, G = 64 -> 256
    qt = NestedRTN(StoreFormat(64, True, ScaleFormat.BF16)).quantize(w)
    assert qt.codes.shape == (5, 256) and qt.dequantize(8).shape == (5, 200)
    assert (qt.codes[:, 200:] == 128).all()               # zero reconstructs from z = 128


def test_all_zero_group_reads_zero_in_every_view():
    w = np.zeros((2, 64), np.float32)
    w[1] = np.linspace(-1, 1, 64)
    qt = NestedRTN(StoreFormat(32)).quantize(w)
    assert (qt.scale_bits[0] == 0).all()
    for k in range(1, 9):
        assert (qt.dequantize(k)[0] == 0).all()


def test_mse_clip_beats_rtn_on_the_views_it_optimises(weight):
    rtn = NestedRTN().quantize(weight)
    for views in [(3,), (2, 3), (3, 4, 8)]:
        mse = NestedMSEClip(views=views, weight_base=1.0).quantize(weight)

        def summed(qt):
            return sum(np.square(qt.dequantize(k) - weight).sum() for k in views)
        assert summed(mse) < summed(rtn), views
    # the default weighting never does worse than min/max on its own objective (p = 1 is in the grid)
    clip = NestedMSEClip(views=(3, 4, 8))
    groups = weight.astype(float).reshape(-1, 128)

    def objective(qt):
        return clip.view_error(groups, scale_value(qt.scale_bits, qt.scale_format).reshape(-1),
                               qt.zeros.reshape(-1).astype(float)).sum()
    assert objective(clip.quantize(weight)) < objective(rtn)


def test_nested_rtn_equals_dedicated_8_bit_rtn(weight):
    np.testing.assert_array_equal(NestedRTN().quantize(weight).dequantize(8), DedicatedRTN(8).fake_quantize(weight))
    errors = [relative_error(DedicatedRTN(k).fake_quantize(weight), weight) for k in range(2, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:]))


@pytest.mark.parametrize("weight, message", [
    (np.zeros(8), "2-D"),
    (np.full((2, 32), np.nan), "NaN"),
    (np.full((2, 32), 1e8), "overflow fp16.*use --scale bf16"),
])
def test_bad_weights_are_errors(weight, message):
    with pytest.raises(SmartquantError, match=message):
        NestedRTN().quantize(weight)


def test_bf16_scales_take_large_weights():
    w = np.full((2, 128), 1e8)
    assert relative_error(NestedRTN(StoreFormat(scale_format=ScaleFormat.BF16)).quantize(w).dequantize(8), w) < 0.01


def test_bad_settings_are_errors():
    with pytest.raises(SmartquantError, match="group size 48"):
        StoreFormat(48)
    with pytest.raises(SmartquantError, match="views"):
        NestedMSEClip(views=(0, 4))
    with pytest.raises(SmartquantError, match="outside 1..8"):
        DedicatedRTN(9)
