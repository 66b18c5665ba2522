"""Per-view affine refit: with the stored codes fixed, a least-squares (scale, offset) per
group for one view k moves that view's levels toward where the weights are.

The k-bit view of a group reads `s (r - z)` with one (s, z) shared by every view.  The
refit of view k instead reads `a (r - 128) + c`, with the line the least-squares fit of
the group's weights w on its view codes r (r = `view_code(q, k)`; padding columns
excluded); a group whose codes all fall in one bucket keeps a = s and takes the mean
residual as c.  Both a and c are rounded to binary16, as a per-view metadata slot would
store them (c is centred on code 128, so it is of the weights' size and fp16 holds it
to 2^-11 of that).
(A measurement: the store does not hold per-view metadata; docs/PTQ.md, "Per-view refit".)
"""

from __future__ import annotations

import numpy as np

from ..codes import view_code
from ..fpformat import scale_value
from .quantizer import QuantizedTensor, group_view, pad_columns

CENTRE = 128.0      #: the code the refit's offset c is the value of


def _fp16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).astype(np.float64)


def refit_view(qt: QuantizedTensor, weight, k: int) -> np.ndarray:
    """(out, in) float64 values `a (r - 128) + c` of view k, (a, c) fitted per group to `weight`
    (the source of `qt`, shape (out, in))."""
    g = qt.group_size
    w = group_view(pad_columns(weight, g), g)
    real = np.zeros(qt.codes.shape, dtype=bool)
    real[:, :qt.shape[1]] = True
    mask = group_view(real, g).astype(np.float64)
    r = group_view(view_code(qt.codes, k).astype(np.float64), g)
    s = scale_value(qt.scale_bits, qt.scale_format).reshape(-1)
    z = qt.zeros.reshape(-1).astype(np.float64)
    count = np.maximum(mask.sum(1), 1.0)
    r_mean, w_mean = (mask * r).sum(1) / count, (mask * w).sum(1) / count
    dr = mask * (r - r_mean[:, None])
    spread = (dr * dr).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(spread > 0, (dr * (w - w_mean[:, None])).sum(1) / spread, s)
    centre = np.where(mask.sum(1) > 0, w_mean - slope * (r_mean - CENTRE), s * (CENTRE - z))
    values = _fp16(slope)[:, None] * (r - CENTRE) + _fp16(centre)[:, None]
    return values.reshape(qt.codes.shape)[:, :qt.shape[1]]
