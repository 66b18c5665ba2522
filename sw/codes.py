"""What a stored 8-bit code means at k bits: the view code r of the affine views and the
table entry of a table-lookup (LUT) tensor (DESIGN.md section 2, docs/RECIPES.md).
Read by the quantizers and by the golden decoder alike."""

from __future__ import annotations

import numpy as np

from ..errors import SmartquantError
from ..spec import CODE_BITS, PLANES, codebook_index
from .fpformat import fp16_value, scale_value


def view_code(q, k: int) -> np.ndarray:
    """Reconstruction code r (uint8) of 8-bit codes q seen at k bits: the middle of q's k-bit bucket."""
    if not 1 <= k <= PLANES:
        raise ValueError(f"k={k} outside 1..{PLANES}")
    q = np.asarray(q, dtype=np.uint8)
    if k == PLANES:
        return q.copy()
    return (q & np.uint8((0xFF << (PLANES - k)) & 0xFF)) | np.uint8(1 << (PLANES - 1 - k))


def codebook_values(codes, scale_bits, scale_format, table_bits, group_size: int, k: int) -> np.ndarray:
    """float64 `s * table_k[q >> (8-k)]` of codes (any shape whose size is a multiple of G,
    groups in flattened order), with the scales per group.  The product is exact."""
    if not 1 <= k <= CODE_BITS:
        raise SmartquantError(f"bits k={k} outside 1..{CODE_BITS}")
    codes = np.asarray(codes, dtype=np.uint8)
    entries = fp16_value(np.asarray(table_bits, dtype=np.uint16))[codebook_index(k, (codes >> (CODE_BITS - k)).astype(np.int64))]
    scale = scale_value(np.asarray(scale_bits).reshape(-1), scale_format)
    with np.errstate(invalid="ignore"):
        return (entries.reshape(-1, group_size) * scale.reshape(-1, 1)).reshape(codes.shape)
