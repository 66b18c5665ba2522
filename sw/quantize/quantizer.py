"""Nested ("any-precision") quantization of linear-layer weights into 8-bit codes.

One stored code q per weight, per group of G consecutive weights along `in` a scale s
(fp16, bf16 or power of two) and a zero point z (0..255; symmetric formats fix 128).
Every k-bit view reads the top k bits of q and reconstructs `s * (r - z)` with
`r = view_code(q, k)` (the middle of q's k-bit bucket, DESIGN.md section 2), so a
quantizer must choose q, s, z that serve all the views a policy uses.

Algorithms, one small class each, all vectorised across the groups of a chunk of rows:
- `NestedRTN`: per-group min/max affine round-to-nearest (as the RTN baseline of
  GPTQ, Frantar et al. 2022, `Quantizer.find_params` with `mse=False`), on the 8-bit grid;
- `NestedMSEClip`: GPTQ's clipping search (`Quantizer.find_params` with `mse=True`:
  shrink the range by p, keep the p with the least error) with the error summed
  over the reconstructions of the views the caller names, not only k = 8;
- `DedicatedRTN`: a separate k-bit RTN per k (what nesting is compared against).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
from tqdm import tqdm

from ...errors import SmartquantError
from ...spec import CODE_BITS, DEFAULT_GROUP_SIZE, GROUP_SIZES, ScaleFormat
from ..fpformat import SCALE_LIMITS, scale_to_bits, scale_value
from ..codes import view_code

CODE_LEVELS = (1 << CODE_BITS) - 1      #: largest stored code (255)


@dataclasses.dataclass(frozen=True)
class StoreFormat:
    """How a tensor is stored: group size G (weights), symmetric (z = 128) or not, scale encoding."""
    group_size: int = DEFAULT_GROUP_SIZE
    symmetric: bool = False
    scale_format: ScaleFormat = ScaleFormat.FP16

    def __post_init__(self):
        if self.group_size not in GROUP_SIZES:
            raise SmartquantError(f"group size {self.group_size} not one of {GROUP_SIZES}")


@dataclasses.dataclass
class QuantizedTensor:
    """Codes and group metadata of one weight W[out, in], `in` zero-padded to a multiple of G."""
    codes: np.ndarray            #: uint8 (out, padded_in)
    scale_bits: np.ndarray       #: uint16 (out, padded_in // G), encoded per scale_format
    zeros: np.ndarray            #: uint8 (out, padded_in // G)
    group_size: int
    symmetric: bool
    scale_format: ScaleFormat
    shape: tuple[int, int]       #: (out, in) before padding

    @property
    def padded_in(self) -> int:
        return self.codes.shape[1]

    def dequantize(self, k: int, rows: slice = slice(None)) -> np.ndarray:
        """(out, in) float64 `s * (r - z)` of the k-bit view, exact (no output rounding);
        only the given rows when `rows` is set."""
        codes = self.codes[rows]
        return _reconstruct(group_view(codes, self.group_size), k,
                            scale_value(self.scale_bits[rows], self.scale_format).reshape(-1, 1),
                            self.zeros[rows].reshape(-1, 1).astype(np.float64)
                            ).reshape(codes.shape)[:, :self.shape[1]]


#: weights the quantizers handle at once: rows are processed in chunks of about this many
#: weights, which bounds their float64 temporaries (a few dozen bytes per weight of a chunk)
CHUNK_WEIGHTS = 1 << 18


def row_chunks(shape: tuple[int, int], chunk_weights: int = CHUNK_WEIGHTS) -> list[slice]:
    """Row slices of an (out, in) matrix, each about `chunk_weights` weights (at least one row)."""
    rows, cols = shape
    step = max(1, chunk_weights // max(cols, 1))
    return [slice(first, min(first + step, rows)) for first in range(0, rows, step)]


def chunk_progress(chunks: list[slice], label: str | None):
    """`chunks` with a bar labelled `label` on stderr (when there are several chunks, a label
    and stderr is a terminal)."""
    return tqdm(chunks, desc=label, unit="chunk", leave=False, file=sys.stderr,
                disable=True if label is None or len(chunks) < 2 else None)


def check_values(weight) -> np.ndarray:
    """`weight` as an array if it is 2-D, has values and all are finite; else a SmartquantError."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise SmartquantError(f"weights must be 2-D (out, in), got shape {weight.shape}")
    if weight.size == 0:
        raise SmartquantError(f"weights have no values (shape {weight.shape})")
    bad = sum(int(np.count_nonzero(~np.isfinite(weight[rows]))) for rows in row_chunks(weight.shape))
    if bad:
        raise SmartquantError(f"{bad} of {weight.size} weights are NaN or infinite")
    return weight


def pad_columns(weight: np.ndarray, group_size: int) -> np.ndarray:
    """float64 copy of a 2-D weight with `in` zero-padded to a multiple of `group_size`."""
    weight = check_values(weight)
    out, cols = weight.shape
    padded = np.zeros((out, -(-cols // group_size) * group_size), dtype=np.float64)
    padded[:, :cols] = weight
    return padded


def group_view(matrix: np.ndarray, group_size: int) -> np.ndarray:
    """(groups, G) view of an (out, padded_in) matrix: groups in row-major (flattened) order."""
    return matrix.reshape(-1, group_size)


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """Relative Frobenius error ||approx - exact||_F / ||exact||_F (0 for an all-zero exact)."""
    norm = float(np.linalg.norm(exact))
    return float(np.linalg.norm(np.asarray(approx, np.float64) - exact)) / norm if norm else 0.0


def range_scale(groups: np.ndarray, levels: int, fmt: StoreFormat, shrink=1.0) -> tuple[np.ndarray, np.ndarray]:
    """Unrounded min/max scale per group and the range's low end (asymmetric; 0 if symmetric).

    Asymmetric: range [min(w, 0), max(w, 0)] * shrink, `s = range / levels`.
    Symmetric: `s = shrink * max|w| / (z - 1)` with `z = (levels + 1) / 2`."""
    if fmt.symmetric:
        zero_point = (levels + 1) // 2
        return shrink * np.abs(groups).max(axis=1) / max(zero_point - 1, 1), np.zeros(groups.shape[0])
    lo = shrink * np.minimum(groups.min(axis=1), 0.0)
    hi = shrink * np.maximum(groups.max(axis=1), 0.0)
    return (hi - lo) / levels, lo


def minmax_params(groups: np.ndarray, levels: int, fmt: StoreFormat, shrink=1.0):
    """Stored (scale bits, scale value, zero) per group for an affine grid of codes 0..levels.

    The scale is `range_scale`'s, rounded to the scale format; asymmetric `z = round(-lo / s)`
    with the *stored* s, symmetric `z = (levels + 1) / 2`.  All-zero groups get s = 0.
    A scale beyond the format's range is stored as the format rounds it (0, inf or a
    clamped power of two): `check_scale_range` refuses such weights first.
    """
    scale, lo = range_scale(groups, levels, fmt, shrink)
    bits = scale_to_bits(scale, fmt.scale_format)
    stored = scale_value(bits, fmt.scale_format)
    if fmt.symmetric:
        zero = np.full(groups.shape[0], (levels + 1) // 2, dtype=np.float64)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            # an all-zero group has s = 0 and reads 0 whatever z is: take the middle code
            zero = np.where(stored > 0, np.clip(np.rint(-lo / stored), 0, levels), (levels + 1) // 2)
    return bits, stored, zero


def _fitting_format(low: float, high: float, current: ScaleFormat) -> str:
    """Advice naming the first other scale format whose range holds scales low..high."""
    for candidate, (smallest, largest) in SCALE_LIMITS.items():
        if candidate != current and smallest / 2 < low and high <= largest:
            return f"use --scale {candidate.name.lower()}"
    return "no scale format holds them; rescale the weights"


def check_scale_range(weight, fmt: StoreFormat, levels: int = CODE_LEVELS) -> np.ndarray:
    """`check_values(weight)`, refusing weights whose groups need scales the format cannot hold.

    A group with a nonzero weight needs its min/max scale s (`range_scale`, p = 1).  It is
    an error if s exceeds the format's largest scale (fp16 would store inf, pow2 would
    clamp and clip the range) or is at most half its smallest positive scale (fp16 and
    bf16 would store 0, an all-zero group; pow2 would clamp to a grid over 2x too coarse).
    All-zero groups need no scale and are fine.  The message names the scale format that
    would hold every group's scale.
    """
    weight = check_values(weight)
    smallest, largest = SCALE_LIMITS[ScaleFormat(fmt.scale_format)]
    scales = np.concatenate([range_scale(group_view(pad_columns(weight[rows], fmt.group_size), fmt.group_size),
                                         levels, fmt)[0] for rows in row_chunks(weight.shape)])
    needed = scales[scales > 0]
    name = ScaleFormat(fmt.scale_format).name.lower()
    over, under = needed[needed > largest], needed[needed <= smallest / 2]
    advice = _fitting_format(needed.min(), needed.max(), fmt.scale_format) if needed.size else ""
    if over.size:
        raise SmartquantError(f"{over.size} of {scales.size} groups need scales up to {over.max():.1e}, "
                              f"which overflow {name} (largest {largest:.1e}); {advice}")
    if under.size:
        raise SmartquantError(f"{under.size} of {scales.size} groups need scales down to {under.min():.1e}, "
                              f"which underflow {name} (smallest {smallest:.1e}); {advice}")
    return weight


def encode(groups: np.ndarray, scale: np.ndarray, zero: np.ndarray, levels: int = CODE_LEVELS) -> np.ndarray:
    """Codes `clip(round(w / s) + z, 0, levels)` per group (z where s = 0), as float64."""
    scale, zero = scale.reshape(-1, 1), zero.reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.clip(np.rint(groups / scale) + zero, 0, levels)
    return np.where(scale > 0, codes, zero)


def _reconstruct(codes: np.ndarray, k: int, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """s * (view_code(q, k) - z), float64, shape of codes (scale and zero broadcast per group)."""
    return scale * (view_code(codes, k) - zero)


class GroupQuantizer:
    """Quantizes a weight a chunk of rows at a time (`group_params` of each chunk's groups,
    about `chunk_weights` weights): peak memory follows the chunk, not the tensor, and
    every group's result is the same whatever the chunk size."""

    def __init__(self, fmt: StoreFormat = StoreFormat(), chunk_weights: int = CHUNK_WEIGHTS):
        self.fmt, self.chunk_weights = fmt, chunk_weights

    def group_params(self, groups: np.ndarray):
        """(scale bits, stored scale, zero) per group of a (groups, G) float64 array."""
        raise NotImplementedError

    def encode_groups(self, groups: np.ndarray, stored: np.ndarray, zero: np.ndarray) -> np.ndarray:
        """Codes (float64) of a (groups, G) array with its stored scales and zeros: round to nearest."""
        return encode(groups, stored, zero)

    def quantize(self, weight: np.ndarray, progress: str | None = None) -> QuantizedTensor:
        """Codes and metadata of `weight`; `progress` labels a bar on stderr over its row
        chunks (shown when there are several and stderr is a terminal)."""
        weight = check_scale_range(weight, self.fmt)
        size = self.fmt.group_size
        out, cols = weight.shape
        padded_in = -(-cols // size) * size
        codes = np.empty((out, padded_in), np.uint8)
        bits = np.empty((out, padded_in // size), np.uint16)
        zeros = np.empty((out, padded_in // size), np.uint8)
        for rows in chunk_progress(row_chunks(weight.shape, self.chunk_weights), progress):
            groups = group_view(pad_columns(weight[rows], size), size)
            chunk_bits, stored, zero = self.group_params(groups)
            codes[rows] = self.encode_groups(groups, stored, zero).astype(np.uint8).reshape(-1, padded_in)
            bits[rows] = chunk_bits.reshape(-1, padded_in // size)
            zeros[rows] = zero.reshape(-1, padded_in // size)
        return QuantizedTensor(codes=codes, scale_bits=bits, zeros=zeros, group_size=size,
                               symmetric=self.fmt.symmetric, scale_format=ScaleFormat(self.fmt.scale_format),
                               shape=(out, cols))


class NestedRTN(GroupQuantizer):
    """Round to nearest on the 8-bit grid with per-group min/max scales (stored scale used for codes)."""

    def group_params(self, groups: np.ndarray):
        return minmax_params(groups, CODE_LEVELS, self.fmt)


#: default clipping grid: range multipliers p (GPTQ searches 1 - i/100 down to 0.2; views
#: below 8 bits never reach the range ends, so a slight widening can pay off too)
DEFAULT_SHRINK_GRID = tuple(np.round(np.arange(0.50, 1.101, 0.02), 2))


class NestedMSEClip(GroupQuantizer):
    """Per-group clipping search minimising the summed squared error of the named views.

    For each range multiplier p of the grid: min/max parameters of the shrunk range,
    codes with the stored scale, error `sum_k b^(k-8) ||s (r_k - z) - w||^2` over the
    views k; each group keeps its best p (a p > 1 whose scale overflows the format is
    never kept).  The view weight base b balances the views:
    b = 1 is the plain sum (the lowest view decides nearly alone, since a k-bit grid's
    squared error scales as 4^-k), b = 4 weighs every view's *relative* error equally
    (and lands close to plain min/max); the default b = 2 sits between.
    """

    def __init__(self, fmt: StoreFormat = StoreFormat(), views=(3, 4, 8), grid=DEFAULT_SHRINK_GRID,
                 weight_base: float = 2.0, chunk_weights: int = CHUNK_WEIGHTS):
        if not views or any(not 1 <= k <= CODE_BITS for k in views):
            raise SmartquantError(f"views {views} must be bit widths in 1..{CODE_BITS}")
        super().__init__(fmt, chunk_weights)
        self.views, self.grid, self.weight_base = tuple(views), tuple(grid), weight_base

    def view_error(self, groups: np.ndarray, stored: np.ndarray, zero: np.ndarray) -> np.ndarray:
        """Weighted summed squared error over the views, per group (float64; inf or NaN
        where the stored scale overflowed, which no comparison prefers)."""
        codes = encode(groups, stored, zero).astype(np.uint8)
        scale, zero = stored.reshape(-1, 1), zero.reshape(-1, 1)
        with np.errstate(invalid="ignore"):
            return sum(self.weight_base ** (k - CODE_BITS)
                       * np.square(_reconstruct(codes, k, scale, zero) - groups).sum(axis=1)
                       for k in self.views)

    def group_params(self, groups: np.ndarray):
        best = None
        for shrink in self.grid:
            bits, stored, zero = minmax_params(groups, CODE_LEVELS, self.fmt, shrink)
            error = self.view_error(groups, stored, zero)
            if best is None:
                best = [error, bits, stored, zero]
                continue
            better = error < best[0]
            for i, new in enumerate((error, bits, stored, zero)):
                best[i] = np.where(better, new, best[i])
        return tuple(best[1:])


class DedicatedRTN:
    """A plain k-bit min/max RTN (codes 0..2^k - 1, own scale per k): the no-nesting baseline."""

    def __init__(self, k: int, fmt: StoreFormat = StoreFormat()):
        if not 1 <= k <= CODE_BITS:
            raise SmartquantError(f"bits k={k} outside 1..{CODE_BITS}")
        self.k, self.fmt = k, fmt

    def fake_quantize(self, weight: np.ndarray) -> np.ndarray:
        """(out, in) float64 reconstruction `s * (c - z)` of the k-bit codes."""
        levels = (1 << self.k) - 1
        check_scale_range(weight, self.fmt, levels)
        padded = pad_columns(weight, self.fmt.group_size)
        groups = group_view(padded, self.fmt.group_size)
        _, stored, zero = minmax_params(groups, levels, self.fmt)
        codes = encode(groups, stored, zero, levels)
        values = stored.reshape(-1, 1) * (codes - zero.reshape(-1, 1))
        return values.reshape(padded.shape)[:, :np.shape(weight)[1]]

