"""16-bit floating-point encodings (binary16, bfloat16) from float64, rounded once.

Rounding is IEEE round-to-nearest-even straight from the float64 value (no
double rounding through float32): subnormal results are rounded on the
subnormal grid, results at or above the overflow threshold (max + half an ulp,
rounded to even) become infinity, and NaN stays NaN (its top payload bits are
kept, as numpy does; torch instead returns the canonical 0x7FC0 for bfloat16).  Also the scale-field codecs of the metadata
(`scale_to_bits` / `scale_value`, DESIGN.md section 3).
"""

from __future__ import annotations

import numpy as np

from ..spec import ScaleFormat

_F64_MANTISSA = 52
_F64_BIAS = 1023


def _round_float64(x, exponent_bits: int, mantissa_bits: int) -> np.ndarray:
    """Bits of the nearest-even `1 + exponent_bits + mantissa_bits`-bit float to `x`."""
    x = np.asarray(x, dtype=np.float64)
    bits = np.ascontiguousarray(x).reshape(-1).view(np.uint64).astype(np.int64).reshape(x.shape)
    sign = (bits >> 63) & 1
    exponent = (bits >> _F64_MANTISSA) & 0x7FF
    fraction = bits & ((1 << _F64_MANTISSA) - 1)

    bias = (1 << (exponent_bits - 1)) - 1
    min_exponent = 1 - bias                       # unbiased exponent of the smallest normal
    inf_bits = ((1 << exponent_bits) - 1) << mantissa_bits

    # value = significand * 2**(unbiased - 52) for every finite double
    significand = np.where(exponent > 0, fraction | (1 << _F64_MANTISSA), fraction)
    unbiased = np.where(exponent > 0, exponent - _F64_BIAS, 1 - _F64_BIAS)
    # bits dropped: 52 - m on the normal grid, more below the smallest normal
    shift = (_F64_MANTISSA - mantissa_bits) + np.maximum(min_exponent - unbiased, 0)
    shift = np.minimum(shift, 62)                 # larger shifts round to zero all the same
    kept = significand >> shift
    remainder = significand & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    round_up = (remainder > half) | ((remainder == half) & ((kept & 1) == 1))
    kept = kept + round_up
    # normal: biased exponent above the implicit bit; a carry out of the mantissa
    # moves to the next exponent by plain addition (subnormals have exponent field 0)
    is_normal = unbiased >= min_exponent
    magnitude = np.where(is_normal,
                         ((np.maximum(unbiased, min_exponent) + bias - 1) << mantissa_bits) + kept,
                         kept)
    magnitude = np.minimum(magnitude, inf_bits)   # overflow -> infinity

    is_special = exponent == 0x7FF
    nan_payload = fraction >> (_F64_MANTISSA - mantissa_bits)
    nan_payload = np.where(nan_payload == 0, 1 << (mantissa_bits - 1), nan_payload)
    special = np.where(fraction == 0, inf_bits, inf_bits | nan_payload)
    magnitude = np.where(is_special, special, magnitude)
    return ((sign << (exponent_bits + mantissa_bits)) | magnitude).astype(np.uint16)


def fp16_bits(x) -> np.ndarray:
    """IEEE binary16 bits (uint16) of float64 values, round to nearest even."""
    return _round_float64(x, 5, 10)


def bf16_bits(x) -> np.ndarray:
    """bfloat16 bits (uint16) of float64 values, round to nearest even."""
    return _round_float64(x, 8, 7)


def fp16_value(bits) -> np.ndarray:
    """float64 values of binary16 bits (exact)."""
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(np.float64)


def bf16_value(bits) -> np.ndarray:
    """float64 values of bfloat16 bits (exact; a signalling NaN comes back quiet)."""
    wide = np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16
    with np.errstate(invalid="ignore"):
        return wide.view(np.float32).astype(np.float64)


#: binary16 exponent field; a POW2 scale is these bits alone (mantissa read as zero)
POW2_EXPONENT_MASK = 0x7C00
#: smallest and largest power-of-two scale exponents (binary16 normals)
POW2_MIN_EXPONENT, POW2_MAX_EXPONENT = -14, 15


#: (smallest positive, largest finite) scale of each scale format
SCALE_LIMITS = {ScaleFormat.FP16: (2.0 ** -24, 65504.0),
                ScaleFormat.BF16: (2.0 ** -133, (2 - 2.0 ** -7) * 2.0 ** 127),
                ScaleFormat.POW2: (2.0 ** POW2_MIN_EXPONENT, 2.0 ** POW2_MAX_EXPONENT)}


def scale_value(bits, scale_format: ScaleFormat) -> np.ndarray:
    """float64 scale of metadata scale bits.  POW2 ignores the mantissa bits."""
    scale_format = ScaleFormat(scale_format)
    if scale_format == ScaleFormat.FP16:
        return fp16_value(bits)
    if scale_format == ScaleFormat.BF16:
        return bf16_value(bits)
    return fp16_value(np.asarray(bits, dtype=np.uint16) & np.uint16(0x8000 | POW2_EXPONENT_MASK))


def scale_to_bits(scale, scale_format: ScaleFormat) -> np.ndarray:
    """Metadata bits of non-negative float64 scales.

    FP16/BF16 round to nearest even; POW2 takes the smallest power of two that is
    >= the scale (so min/max ranges are never clipped), clamped to 2**-14..2**15;
    a zero scale stays zero in every format.
    """
    scale = np.asarray(scale, dtype=np.float64)
    scale_format = ScaleFormat(scale_format)
    if scale_format == ScaleFormat.FP16:
        return fp16_bits(scale)
    if scale_format == ScaleFormat.BF16:
        return bf16_bits(scale)
    with np.errstate(divide="ignore"):
        exponent = np.ceil(np.log2(np.where(scale > 0, scale, 1.0)))
    exponent = np.clip(exponent, POW2_MIN_EXPONENT, POW2_MAX_EXPONENT)
    return np.where(scale > 0, fp16_bits(np.exp2(exponent)), 0).astype(np.uint16)
