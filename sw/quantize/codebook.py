"""Nested non-uniform codebooks: one binary16 table per view, fitted by weighted 1-D k-means.

A codebook tensor stores, like every tensor, one 8-bit code q per weight and a scale
s per group of G weights (here s = max|w| of the group, so w / s lies in [-1, 1]);
its k-bit view reads `s * table_k[q >> (8-k)]` (docs/RECIPES.md).  The tables of
the eight views are nested: view k's bucket c is the union of view k+1's buckets
2c and 2c+1, so one stored code serves every view.

Fitting (top-down over "anchor" views a_1 < a_2 < ... < 8): the normalised weights
u = w / s, sorted, are split by weighted 1-D k-means (Lloyd, 1957; in 1-D every
cluster is an interval of the sorted values) into 2**a_1 intervals; each interval
is split again into 2**(a_2 - a_1) by k-means inside it, and so on down to the 256
buckets of view 8.  Every view's table entry is then the weighted mean of its
bucket (the optimal value for that bucket), rounded to binary16.  The weight of
u_ij is its sensitivity h_j s_g^2: with h_j the diagonal of the layer's calibration
Hessian (input second moment, GPTQ Eq. 1), the weighted squared error of u is the
layer's output error of w up to the cross terms.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import SmartquantError
from ...spec import CODE_BITS, CODEBOOK_ENTRIES, ScaleFormat, codebook_index
from ..fpformat import fp16_bits, scale_to_bits, scale_value
from ..codes import codebook_values
from .quantizer import group_view, pad_columns

#: anchors when the caller names no views: the low views a 3-bit recipe serves
DEFAULT_ANCHORS = (3, 4)
LLOYD_ITERATIONS = 40


def kmeans_intervals(values: np.ndarray, cum_weight: np.ndarray, cum_moment: np.ndarray,
                     lo: int, hi: int, clusters: int) -> np.ndarray:
    """Weighted 1-D k-means on the sorted `values[lo:hi]`: `clusters + 1` cut positions.

    `cum_weight` / `cum_moment` are prefix sums (length n + 1) of the weights and of
    weight * value.  Starts from weighted quantiles; Lloyd iterations move the cuts to
    the midpoints between neighbouring centres until they stop changing.  Empty
    clusters keep an empty interval (their cut positions coincide)."""
    total = cum_weight[hi] - cum_weight[lo]
    if hi - lo <= clusters or total <= 0:
        # at most one value per cluster: each value its own interval, the rest empty
        cuts = np.minimum(np.arange(clusters + 1) + lo, hi)
        cuts[-1] = hi
        return cuts
    targets = cum_weight[lo] + total * np.arange(1, clusters) / clusters
    inner = np.searchsorted(cum_weight[lo + 1:hi + 1], targets) + lo + 1
    cuts = np.concatenate([[lo], np.minimum(inner, hi), [hi]])
    centres = None
    for _ in range(LLOYD_ITERATIONS):
        weight = cum_weight[cuts[1:]] - cum_weight[cuts[:-1]]
        moment = cum_moment[cuts[1:]] - cum_moment[cuts[:-1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            fresh = moment / weight
        if centres is None:
            centres = np.where(weight > 0, fresh, values[np.minimum(cuts[:-1], hi - 1)])
        else:
            centres = np.where(weight > 0, fresh, centres)
        centres = np.maximum.accumulate(centres)
        midpoints = (centres[1:] + centres[:-1]) / 2
        new_inner = np.searchsorted(values[lo:hi], midpoints, side="right") + lo
        new_cuts = np.concatenate([[lo], new_inner, [hi]])
        if np.array_equal(new_cuts, cuts):
            break
        cuts = new_cuts
    return cuts


def fit_nested(values: np.ndarray, weights: np.ndarray, anchors=DEFAULT_ANCHORS) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8, table float64[CODEBOOK_ENTRIES]) of 1-D values under a nested codebook.

    `table[codebook_index(k, c)]` is the weighted mean of the values whose code has the
    k-bit prefix c (a neighbour's entry where the bucket is empty)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise SmartquantError("a codebook needs at least one value")
    levels = sorted({int(a) for a in anchors if 1 <= int(a) < CODE_BITS}) + [CODE_BITS]
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_weights = values[order], weights[order]
    # a floor on the weights keeps insensitive (dead-input) values in their nearest bucket
    sorted_weights = sorted_weights + 1e-9 * max(float(sorted_weights.mean()), 1e-300)
    cum_weight = np.concatenate([[0.0], np.cumsum(sorted_weights)])
    cum_moment = np.concatenate([[0.0], np.cumsum(sorted_weights * sorted_values)])

    cuts, level = np.array([0, values.size]), 0
    for anchor in levels:
        split = 1 << (anchor - level)
        cuts = np.concatenate([kmeans_intervals(sorted_values, cum_weight, cum_moment, lo, hi, split)[:-1]
                               for lo, hi in zip(cuts[:-1], cuts[1:])] + [[values.size]])
        level = anchor
    leaf = np.searchsorted(cuts[1:], np.arange(values.size), side="right")
    codes = np.empty(values.size, dtype=np.uint8)
    codes[order] = leaf

    table = np.zeros(CODEBOOK_ENTRIES, dtype=np.float64)
    for k in range(1, CODE_BITS + 1):
        edges = cuts[::1 << (CODE_BITS - k)]
        weight = cum_weight[edges[1:]] - cum_weight[edges[:-1]]
        moment = cum_moment[edges[1:]] - cum_moment[edges[:-1]]
        parent = (table[codebook_index(k - 1, np.arange(1 << k) >> 1)] if k > 1
                  else np.zeros(2))
        with np.errstate(invalid="ignore", divide="ignore"):
            table[codebook_index(k, 0):codebook_index(k, 0) + (1 << k)] = np.where(weight > 0, moment / weight, parent)
    return codes, table


@dataclasses.dataclass
class CodebookTensor:
    """Codes, group scales and the nested table set of one weight W[out, in] (LUT region)."""
    codes: np.ndarray            #: uint8 (out, padded_in)
    scale_bits: np.ndarray       #: uint16 (out, padded_in // G)
    zeros: np.ndarray            #: uint8 (out, padded_in // G), unused by LUT regions (0)
    table_bits: np.ndarray       #: uint16 [CODEBOOK_ENTRIES] binary16 entries, index (1 << k) | c
    group_size: int
    scale_format: ScaleFormat
    shape: tuple[int, int]
    symmetric: bool = False      #: LUT regions have no int8 view

    def dequantize(self, k: int) -> np.ndarray:
        """(out, in) float64 `s * table_k[q >> (8-k)]`, exact (no output rounding)."""
        return codebook_values(self.codes, self.scale_bits, self.scale_format, self.table_bits,
                               self.group_size, k)[:, :self.shape[1]]


class CodebookQuantizer:
    """Group scale s = max|w| (stored format), then a nested codebook over u = w / s fitted
    by weighted k-means with the views `anchors` split directly (docs/RECIPES.md)."""

    def __init__(self, group_size: int, scale_format: ScaleFormat = ScaleFormat.FP16,
                 anchors=DEFAULT_ANCHORS):
        self.group_size, self.scale_format, self.anchors = group_size, ScaleFormat(scale_format), tuple(anchors)

    def quantize(self, weight: np.ndarray, sensitivity: np.ndarray | None = None) -> CodebookTensor:
        """Codes for `weight` (out, in); `sensitivity` (in,) weighs each input column's
        squared error (e.g. the calibration Hessian's diagonal; uniform when None)."""
        padded = pad_columns(weight, self.group_size)
        groups = group_view(padded, self.group_size)
        bits = scale_to_bits(np.abs(groups).max(axis=1), self.scale_format)
        scale = scale_value(bits, self.scale_format)
        if not np.isfinite(scale).all():
            raise SmartquantError(f"weights too large for {self.scale_format.name.lower()} scales; use bf16")
        with np.errstate(invalid="ignore", divide="ignore"):
            units = np.where(scale[:, None] > 0, groups / scale[:, None], 0.0)
        column = np.ones(padded.shape[1])
        if sensitivity is not None:
            column[:np.shape(weight)[1]] = np.asarray(sensitivity, dtype=np.float64)
        column[np.shape(weight)[1]:] = 0.0        # padding: no error to care about
        importance = group_view(np.broadcast_to(column, padded.shape), self.group_size) * np.square(scale)[:, None]
        codes, table = fit_nested(units, importance, self.anchors)
        table_bits = fp16_bits(table)
        table_bits[:codebook_index(1, 0)] = 0    # reserved entries
        return CodebookTensor(codes=codes.reshape(padded.shape), scale_bits=bits.reshape(padded.shape[0], -1),
                              zeros=np.zeros((padded.shape[0], padded.shape[1] // self.group_size), np.uint8),
                              table_bits=table_bits, group_size=self.group_size,
                              scale_format=self.scale_format, shape=tuple(np.shape(weight)))
