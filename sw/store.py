"""Quantize a source's weights into an image (the `quantize` command's work)."""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..spec import CODE_BITS
from .image import Image
from .quantizer import relative_error


def padding_note(name: str, shape, group_size: int) -> str | None:
    """The warning for a weight whose `in` is not a multiple of G (it gets zero-padded), else None."""
    cols = shape[1]
    if cols % group_size == 0:
        return None
    return (f"tensor {name!r}: in={cols} is not a multiple of group size {group_size}; "
            f"zero-padded to {-(-cols // group_size) * group_size}")


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def quantize_model(weights: dict[str, np.ndarray], quantizer, side: dict | None = None,
                   info: dict | None = None, warn: Callable[[str], None] = _warn_stderr) -> Image:
    """Quantize every weight (in order) with `quantizer`; record its relative error per k (1..8)."""
    tensors, errors, norms = [], {}, {}
    for name, weight in tqdm(weights.items(), desc="quantize", unit="tensor", disable=None, file=sys.stderr):
        note = padding_note(name, np.shape(weight), quantizer.fmt.group_size)
        if note:
            warn(note)
        qt = quantizer.quantize(weight)
        exact = np.asarray(weight, dtype=np.float64)
        errors[name] = {k: relative_error(qt.dequantize(k), exact) for k in range(1, CODE_BITS + 1)}
        norms[name] = float(np.linalg.norm(exact))
        tensors.append((name, qt))
    return Image.build(tensors, side=side, rel_errors=errors, norms=norms, info=info)
