"""The accumulator guarantee of an AXE image, checked from the image alone (manifest +
dram.bin through the golden decoder's int8 view).

An image quantized with AXE declares `info.accumulator` (docs/FORMATS.md section 3):
P, N, signed inputs, tile T and the views the guarantee covers.  For every tensor and
view k this reads the integers v = r_k - 128 the device serves (padding included), and
per output channel and tile the worst-case dot product with N-bit inputs
(`axe.tile_extremes`), against the P-bit range [-2^(P-1), 2^(P-1) - 1].  Views the
manifest does not name are reported as not guaranteed, whatever their numbers.
"""

from __future__ import annotations

import numpy as np

from ...errors import SmartquantError
from ...spec import CODE_BITS, View
from ..quantize.axe import AccumulatorSpec, tile_extremes
from .golden import read_view
from .image import Image

NOT_GUARANTEED = "not guaranteed"


def declared_accumulator(image: Image) -> tuple[AccumulatorSpec, tuple[int, ...]] | None:
    """(spec, guaranteed views) the image's manifest declares, or None."""
    acc = image.info.get("accumulator")
    if acc is None:
        return None
    spec = AccumulatorSpec(acc["bits"], acc["input_bits"], acc["signed_inputs"], acc["tile"])
    return spec, tuple(acc["views"])


def served_integers(image: Image, name: str, k: int) -> np.ndarray:
    """(out, padded_in) int64 integers v = r_k - 128 of the int8 view, padding included."""
    entry = image.entry(name)
    data = np.frombuffer(read_view(image, name, View.INT8, k), dtype=np.int8)
    return data[:entry.shape[0] * entry.padded_in].reshape(entry.shape[0], entry.padded_in).astype(np.int64)


def accumulator_rows(image: Image) -> list[dict]:
    """One row per view k (1..8): tiles checked, the worst tile's max and min over every
    tensor, the P-bit limit, overflowing tiles and the status ('ok', 'OVERFLOW' or
    'not guaranteed')."""
    declared = declared_accumulator(image)
    if declared is None:
        raise SmartquantError("the image declares no accumulator (it was not quantized with AXE)")
    spec, views = declared
    low_limit, high_limit = spec.accumulator_range()
    rows = []
    for k in range(1, CODE_BITS + 1):
        tiles, overflowing, high, low = 0, 0, None, None
        for entry in image.entries:
            tile = spec.tile_for(entry.padded_in, entry.group_size)
            top, bottom = tile_extremes(served_integers(image, entry.name, k), spec, tile)
            tiles += top.size
            overflowing += int(((top > high_limit) | (bottom < low_limit)).sum())
            high = int(top.max()) if high is None else max(high, int(top.max()))
            low = int(bottom.min()) if low is None else min(low, int(bottom.min()))
        status = NOT_GUARANTEED if k not in views else ("ok" if overflowing == 0 else "OVERFLOW")
        rows.append({"k": k, "guaranteed": k in views, "tiles": tiles, "worst_max": high, "worst_min": low,
                     "limit": high_limit, "overflowing_tiles": overflowing, "status": status})
    return rows
