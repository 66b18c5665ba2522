"""fp16 / bf16 rounding from float64, bit-exact against numpy (binary16) and torch (bfloat16)."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from smartquant.spec import ScaleFormat
from smartquant.sw.fpformat import (bf16_bits, bf16_value, fp16_bits, fp16_value,
                                    scale_to_bits, scale_value)

ALL_BITS = np.arange(1 << 16, dtype=np.uint16)


def numpy_fp16_bits(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float64).astype(np.float16).view(np.uint16)


def torch_bf16_bits(x32):
    return torch.from_numpy(np.asarray(x32, np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def neighbours(values):
    """Each value, the midpoints to its float64 neighbours' grid (ties) and one float64 ulp either side."""
    v = values[np.isfinite(values)]
    return np.concatenate([v, np.nextafter(v, np.inf), np.nextafter(v, -np.inf)])


def test_fp16_every_pattern_round_trips_like_numpy():
    values = fp16_value(ALL_BITS)
    np.testing.assert_array_equal(values, ALL_BITS.view(np.float16).astype(np.float64))
    np.testing.assert_array_equal(fp16_bits(values), ALL_BITS)   # NaN payloads kept too


def test_bf16_every_pattern_round_trips_like_torch():
    values = bf16_value(ALL_BITS)
    torch_values = torch.from_numpy(ALL_BITS.view(np.int16).copy()).view(torch.bfloat16).to(torch.float64).numpy()
    np.testing.assert_array_equal(values, torch_values)
    finite_or_inf = ~np.isnan(values)
    np.testing.assert_array_equal(bf16_bits(values)[finite_or_inf], ALL_BITS[finite_or_inf])
    assert np.isnan(bf16_value(bf16_bits(values[~finite_or_inf]))).all()


def test_fp16_ties_and_ulp_neighbours_match_numpy():
    grid = fp16_value(ALL_BITS[:0x7C00])                        # every finite non-negative fp16
    ties = (grid[:-1] + grid[1:]) / 2                               # exact in float64
    x = np.concatenate([neighbours(ties), neighbours(grid)])
    x = np.concatenate([x, -x])
    np.testing.assert_array_equal(fp16_bits(x), numpy_fp16_bits(x))


def test_bf16_ties_and_neighbours_match_torch():
    grid = bf16_value(ALL_BITS[:0x7F80])
    ties = (grid[:-1] + grid[1:]) / 2                               # exact in float32
    x32 = np.concatenate([ties, grid]).astype(np.float32)
    x32 = np.concatenate([x32, np.nextafter(x32, np.float32(np.inf)), np.nextafter(x32, np.float32(-np.inf))])
    x32 = np.concatenate([x32, -x32])
    np.testing.assert_array_equal(bf16_bits(x32.astype(np.float64)), torch_bf16_bits(x32))


@pytest.mark.parametrize("value, expected", [
    (65504.0, 0x7BFF),                 # max
    (65519.99, 0x7BFF),                # just under the overflow threshold
    (65520.0, 0x7C00),                 # max + half ulp: tie to even = infinity
    (1e300, 0x7C00),
    (-np.inf, 0xFC00),
    (2.0 ** -24, 0x0001),              # smallest subnormal
    (2.0 ** -25, 0x0000),              # half of it: tie to even = zero
    (2.0 ** -25 * (1 + 2 ** -40), 0x0001),
    (3 * 2.0 ** -25, 0x0002),          # 1.5 subnormal ulps: tie to even = 2
    (2.0 ** -14 - 2.0 ** -25, 0x0400), # rounds up from the largest subnormal into the smallest normal
    (-0.0, 0x8000),
    (1 + 2.0 ** -11, 0x3C00),          # tie to even (down)
    (1 + 3 * 2.0 ** -11, 0x3C02),      # tie to even (up)
    (5e-324, 0x0000),                  # float64 subnormal
])
def test_fp16_edge_cases(value, expected):
    assert int(fp16_bits(np.float64(value))) == expected
    assert int(fp16_bits(np.float64(value))) == int(numpy_fp16_bits(value))


BF16_MAX = float(bf16_value(np.uint16(0x7F7F)))
BF16_HALF_ULP_AT_MAX = 2.0 ** 119


@pytest.mark.parametrize("value, expected", [
    (BF16_MAX, 0x7F7F),
    (BF16_MAX + BF16_HALF_ULP_AT_MAX - 2.0 ** 104, 0x7F7F),   # one float32 ulp under the threshold
    (BF16_MAX + BF16_HALF_ULP_AT_MAX, 0x7F80),                # threshold: tie to even = infinity
    (2.0 ** -133, 0x0001),             # smallest subnormal
    (2.0 ** -134, 0x0000),             # tie to even = zero
    (3 * 2.0 ** -134, 0x0002),
    (1 + 2.0 ** -8, 0x3F80),           # tie to even (down)
    (1 + 3 * 2.0 ** -8, 0x3F82),       # tie to even (up)
])
def test_bf16_edge_cases(value, expected):
    assert float(np.float32(value)) == value
    assert int(bf16_bits(np.float64(value))) == expected
    assert int(torch_bf16_bits([value])[0]) == expected


def test_bf16_rounds_once_from_float64():
    # 1 + 2**-8 + 2**-40 is just above a tie: float32 rounding first would make it a tie (to even: 1.0)
    assert int(bf16_bits(np.float64(1 + 2.0 ** -8 + 2.0 ** -40))) == 0x3F81


def test_nan_stays_nan():
    assert np.isnan(fp16_value(fp16_bits(np.nan)))
    assert np.isnan(bf16_value(bf16_bits(np.nan)))


@given(st.floats(allow_nan=False, width=64))
def test_fp16_matches_numpy_anywhere(x):
    assert int(fp16_bits(np.float64(x))) == int(numpy_fp16_bits(x))


@given(st.floats(allow_nan=False, width=32))
def test_bf16_matches_torch_anywhere(x):
    assert int(bf16_bits(np.float64(x))) == int(torch_bf16_bits([x])[0])


@pytest.mark.parametrize("fmt", list(ScaleFormat))
def test_scale_round_trip_is_close_and_pow2_never_clips(fmt):
    s = np.exp2(np.random.default_rng(0).uniform(-13, 14, 1000))
    back = scale_value(scale_to_bits(s, fmt), fmt)
    if fmt == ScaleFormat.POW2:
        assert (back >= s).all() and (back < 2 * s).all()
        assert (scale_to_bits(s, fmt) & 0x03FF == 0).all()
    else:
        np.testing.assert_allclose(back, s, rtol=2.0 ** -8)
    assert scale_to_bits(np.zeros(3), fmt).tolist() == [0, 0, 0]


def test_pow2_scale_reads_mantissa_as_zero():
    assert float(scale_value(np.uint16(0x3C00 | 0x3FF), ScaleFormat.POW2)) == 1.0
