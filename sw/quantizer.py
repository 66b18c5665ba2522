"""Nested ("any-precision") quantization of linear-layer weights into 8-bit codes.

One stored code q per weight, per group of G consecutive weights along `in` a scale s
(fp16, bf16 or power of two) and a zero point z (0..255; symmetric formats fix 128).
Every k-bit view reads the top k bits of q and reconstructs `s * (r - z)` with
`r = view_code(q, k)` (the middle of q's k-bit bucket, DESIGN.md section 2), so a
quantizer must choose q, s, z that serve all the views a policy uses.

Algorithms, one small class each, all vectorised across groups:
- `NestedRTN`: per-group min/max affine round-to-nearest (as the RTN baseline of
  GPTQ, Frantar et al. 2022, `Quantizer.find_params` with `mse=False`), on the 8-bit grid;
- `NestedMSEClip`: GPTQ's clipping search (`Quantizer.find_params` with `mse=True`:
  shrink the range by p, keep the p with the least error) with the error summed
  over the reconstructions of the views the caller names, not only k = 8;
- `DedicatedRTN`: a separate k-bit RTN per k (what nesting is compared against).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import SmartquantError
from ..spec import CODE_BITS, DEFAULT_GROUP_SIZE, GROUP_SIZES, ScaleFormat
from .fpformat import scale_to_bits, scale_value
from .golden import view_code

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

    def dequantize(self, k: int) -> np.ndarray:
        """(out, in) float64 `s * (r - z)` of the k-bit view, exact (no output rounding)."""
        return _reconstruct(group_view(self.codes, self.group_size), k,
                            scale_value(self.scale_bits, self.scale_format).reshape(-1, 1),
                            self.zeros.reshape(-1, 1).astype(np.float64)
                            ).reshape(self.codes.shape)[:, :self.shape[1]]


def pad_columns(weight: np.ndarray, group_size: int) -> np.ndarray:
    """float64 copy of a 2-D weight with `in` zero-padded to a multiple of `group_size`."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise SmartquantError(f"weights must be 2-D (out, in), got shape {weight.shape}")
    if not np.isfinite(weight).all():
        raise SmartquantError("weights contain NaN or infinity")
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


def minmax_params(groups: np.ndarray, levels: int, fmt: StoreFormat, shrink=1.0):
    """Stored (scale bits, scale value, zero) per group for an affine grid of codes 0..levels.

    Asymmetric: range [min(w, 0), max(w, 0)] * shrink, `s = range / levels`,
    `z = round(-lo / s)` with the *stored* s.  Symmetric: `z = (levels + 1) / 2`,
    `s = shrink * max|w| / (z - 1)`.  All-zero groups get s = 0.
    """
    if fmt.symmetric:
        zero_point = (levels + 1) // 2
        scale = shrink * np.abs(groups).max(axis=1) / max(zero_point - 1, 1)
    else:
        lo = shrink * np.minimum(groups.min(axis=1), 0.0)
        hi = shrink * np.maximum(groups.max(axis=1), 0.0)
        scale = (hi - lo) / levels
    bits = scale_to_bits(scale, fmt.scale_format)
    stored = scale_value(bits, fmt.scale_format)
    if not np.isfinite(stored).all():
        raise SmartquantError(f"weights too large for {fmt.scale_format.name.lower()} scales "
                              f"(|w| up to {np.abs(groups).max():.3g}); use bf16 scales")
    if fmt.symmetric:
        zero = np.full(groups.shape[0], zero_point, dtype=np.float64)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            # an all-zero group has s = 0 and reads 0 whatever z is: take the middle code
            zero = np.where(stored > 0, np.clip(np.rint(-lo / stored), 0, levels), (levels + 1) // 2)
    return bits, stored, zero


def encode(groups: np.ndarray, scale: np.ndarray, zero: np.ndarray, levels: int = CODE_LEVELS) -> np.ndarray:
    """Codes `clip(round(w / s) + z, 0, levels)` per group (z where s = 0), as float64."""
    scale, zero = scale.reshape(-1, 1), zero.reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.clip(np.rint(groups / scale) + zero, 0, levels)
    return np.where(scale > 0, codes, zero)


def _reconstruct(codes: np.ndarray, k: int, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """s * (view_code(q, k) - z), float64, shape of codes (scale and zero broadcast per group)."""
    return scale * (view_code(codes, k) - zero)


def _quantized(weight, padded, fmt: StoreFormat, bits, stored, zero) -> QuantizedTensor:
    groups = group_view(padded, fmt.group_size)
    codes = encode(groups, stored, zero).astype(np.uint8).reshape(padded.shape)
    per_row = padded.shape[1] // fmt.group_size
    return QuantizedTensor(codes=codes, scale_bits=bits.reshape(-1, per_row).astype(np.uint16),
                           zeros=zero.reshape(-1, per_row).astype(np.uint8), group_size=fmt.group_size,
                           symmetric=fmt.symmetric, scale_format=ScaleFormat(fmt.scale_format),
                           shape=tuple(np.shape(weight)))


class NestedRTN:
    """Round to nearest on the 8-bit grid with per-group min/max scales (stored scale used for codes)."""

    def __init__(self, fmt: StoreFormat = StoreFormat()):
        self.fmt = fmt

    def quantize(self, weight: np.ndarray) -> QuantizedTensor:
        padded = pad_columns(weight, self.fmt.group_size)
        bits, stored, zero = minmax_params(group_view(padded, self.fmt.group_size), CODE_LEVELS, self.fmt)
        return _quantized(weight, padded, self.fmt, bits, stored, zero)


#: default clipping grid: range multipliers p (GPTQ searches 1 - i/100 down to 0.2; views
#: below 8 bits never reach the range ends, so a slight widening can pay off too)
DEFAULT_SHRINK_GRID = tuple(np.round(np.arange(0.50, 1.101, 0.02), 2))


class NestedMSEClip:
    """Per-group clipping search minimising the summed squared error of the named views.

    For each range multiplier p of the grid: min/max parameters of the shrunk range,
    codes with the stored scale, error `sum_k b^(k-8) ||s (r_k - z) - w||^2` over the
    views k; each group keeps its best p.  The view weight base b balances the views:
    b = 1 is the plain sum (the lowest view decides nearly alone, since a k-bit grid's
    squared error scales as 4^-k), b = 4 weighs every view's *relative* error equally
    (and lands close to plain min/max); the default b = 2 sits between.
    """

    def __init__(self, fmt: StoreFormat = StoreFormat(), views=(3, 4, 8), grid=DEFAULT_SHRINK_GRID,
                 weight_base: float = 2.0):
        if not views or any(not 1 <= k <= CODE_BITS for k in views):
            raise SmartquantError(f"views {views} must be bit widths in 1..{CODE_BITS}")
        self.fmt, self.views, self.grid, self.weight_base = fmt, tuple(views), tuple(grid), weight_base

    def view_error(self, groups: np.ndarray, stored: np.ndarray, zero: np.ndarray) -> np.ndarray:
        """Weighted summed squared error over the views, per group (float64)."""
        codes = encode(groups, stored, zero).astype(np.uint8)
        scale, zero = stored.reshape(-1, 1), zero.reshape(-1, 1)
        return sum(self.weight_base ** (k - CODE_BITS)
                   * np.square(_reconstruct(codes, k, scale, zero) - groups).sum(axis=1)
                   for k in self.views)

    def quantize(self, weight: np.ndarray) -> QuantizedTensor:
        padded = pad_columns(weight, self.fmt.group_size)
        groups = group_view(padded, self.fmt.group_size)
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
        return _quantized(weight, padded, self.fmt, *best[1:])


class DedicatedRTN:
    """A plain k-bit min/max RTN (codes 0..2^k - 1, own scale per k): the no-nesting baseline."""

    def __init__(self, k: int, fmt: StoreFormat = StoreFormat()):
        if not 1 <= k <= CODE_BITS:
            raise SmartquantError(f"bits k={k} outside 1..{CODE_BITS}")
        self.k, self.fmt = k, fmt

    def fake_quantize(self, weight: np.ndarray) -> np.ndarray:
        """(out, in) float64 reconstruction `s * (c - z)` of the k-bit codes."""
        levels = (1 << self.k) - 1
        padded = pad_columns(weight, self.fmt.group_size)
        groups = group_view(padded, self.fmt.group_size)
        _, stored, zero = minmax_params(groups, levels, self.fmt)
        codes = encode(groups, stored, zero, levels)
        values = stored.reshape(-1, 1) * (codes - zero.reshape(-1, 1))
        return values.reshape(padded.shape)[:, :np.shape(weight)[1]]

