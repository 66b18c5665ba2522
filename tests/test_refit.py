"""Per-view affine refit (sw/quantize/refit.py): the least-squares line per group, codes fixed."""

import numpy as np
import pytest

from smartquant.sw.codes import view_code
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat
from smartquant.sw.quantize.refit import refit_view


@pytest.fixture
def weight():
    rng = np.random.default_rng(0)
    return rng.standard_t(3, (12, 100)) * 0.05          # heavy tails; in=100 pads to 128


@pytest.mark.parametrize("k", [2, 3, 4])
def test_refit_never_loses_to_the_shared_scale(weight, k):
    qt = NestedRTN(StoreFormat(group_size=32)).quantize(weight)
    shared = np.square(qt.dequantize(k) - weight).sum()
    refit = np.square(refit_view(qt, weight, k) - weight).sum()
    assert refit < 0.97 * shared


def test_refit_is_the_least_squares_line_of_each_group(weight):
    qt = NestedRTN(StoreFormat(group_size=32)).quantize(weight)
    values = refit_view(qt, weight, 3)
    for row, cols in ((0, slice(0, 32)), (5, slice(64, 96)), (11, slice(96, 100))):   # the last: 4 real inputs
        r = view_code(qt.codes[row, cols], 3).astype(np.float64)
        slope, offset = np.polyfit(r, weight[row, cols], 1)
        np.testing.assert_allclose(values[row, cols], slope * r + offset, rtol=2e-3, atol=2e-4)


def test_a_group_in_one_bucket_keeps_its_scale():
    weight = np.full((1, 32), 0.02)
    weight[0, 0] = -1.0                                   # the range is set by one weight ...
    qt = NestedRTN(StoreFormat(group_size=32)).quantize(weight)
    r = view_code(qt.codes, 1)
    assert len(np.unique(r[0, 1:])) == 1 and len(np.unique(r[0])) == 2
    one_bucket = np.full((1, 32), 0.02)                   # ... a group whose codes share a bucket
    qt.codes[:] = qt.codes[0, 1]
    values = refit_view(qt, one_bucket, 1)
    np.testing.assert_allclose(values, one_bucket, atol=2e-5)
