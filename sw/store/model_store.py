"""Quantize a source's weights into an image, and summarise an image (the work of the
`quantize` and `inspect` commands)."""

from __future__ import annotations

import math
import sys
from typing import Callable

import numpy as np
from tqdm import tqdm

from ...errors import SmartquantError, about_tensor
from ...spec import CODE_BITS, LINE_BYTES
from ..image.image import Image, TensorEntry
from ..quantize.quantizer import QuantizedTensor, check_scale_range, chunk_progress, row_chunks
from ..quantize.rotation import Rotation
from .methods import MethodSettings, load_calibration_for, make_quantizer, rotate_calibration
from .rotated import rotated_source
from .sources import load_source


def padding_note(name: str, shape, group_size: int) -> str | None:
    """The warning for a weight whose `in` is not a multiple of G (it gets zero-padded), else None."""
    cols = shape[1]
    if cols % group_size == 0:
        return None
    return (f"tensor {name!r}: in={cols} is not a multiple of group size {group_size}; "
            f"zero-padded to {-(-cols // group_size) * group_size}")


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def view_errors(weight: np.ndarray, qt: QuantizedTensor,
                progress: str | None = None) -> tuple[dict[int, float], float]:
    """Relative Frobenius error ||W_k - W||_F / ||W||_F of every view k (1..8) and ||W||_F,
    summed in float64 a chunk of rows at a time (errors 0 for an all-zero W); `progress`
    labels a bar over the chunks."""
    squared, norm2 = dict.fromkeys(range(1, CODE_BITS + 1), 0.0), 0.0
    for rows in chunk_progress(row_chunks(np.shape(weight)), progress):
        exact = np.asarray(weight[rows], dtype=np.float64)
        norm2 += float(np.einsum("ij,ij->", exact, exact))
        for k in squared:
            diff = qt.dequantize(k, rows) - exact
            squared[k] += float(np.einsum("ij,ij->", diff, diff))
    norm = norm2 ** 0.5
    return {k: (value ** 0.5 / norm if norm else 0.0) for k, value in squared.items()}, norm


def quantize_model(weights: dict[str, np.ndarray], quantizer, side: dict | None = None,
                   info: dict | None = None, warn: Callable[[str], None] = _warn_stderr,
                   rotations: dict[str, Rotation] | None = None) -> Image:
    """Quantize every weight (in order) with `quantizer` (a grid quantizer's `quantize`, or
    `quantize_named(name, weight)` of a calibrated one); record its relative error per k (1..8).
    `weights` named in `rotations` are already rotated (W·H); the image declares their H.

    Every weight's scale range is checked before the first is quantized; errors name the tensor.
    Progress goes to stderr: a bar over the tensors, and one over the row chunks of a large tensor."""
    for name, weight in weights.items():
        with about_tensor(name):
            check_scale_range(weight, quantizer.fmt)
    tensors, errors, norms = [], {}, {}
    for name, weight in tqdm(weights.items(), desc="quantize", unit="tensor", disable=None, file=sys.stderr):
        note = padding_note(name, np.shape(weight), quantizer.fmt.group_size)
        if note:
            warn(note)
        with about_tensor(name):
            named = getattr(quantizer, "quantize_named", None)
            qt = named(name, weight) if named else quantizer.quantize(weight, progress=name)
        errors[name], norms[name] = view_errors(weight, qt, progress=f"{name} (errors)")
        tensors.append((name, qt))
    return Image.build(tensors, side=side, rel_errors=errors, norms=norms, info=info, rotations=rotations)


def parse_views(text: str) -> tuple[int, ...]:
    """`"3,4,8"` -> (3, 4, 8); each a bit width in 1..8."""
    try:
        views = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise SmartquantError(f"views {text!r} must be comma-separated bit widths, e.g. 3,4,8") from None
    if not views or not all(1 <= k <= CODE_BITS for k in views):
        raise SmartquantError(f"views {text!r}: every bit width must be in 1..{CODE_BITS}")
    return views


def quantize_source(spec: str, settings: MethodSettings = MethodSettings(), calibration: int | None = None,
                    calibration_inputs: str | None = None, warn: Callable[[str], None] = _warn_stderr,
                    rotate: str | None = None, sequential: bool = False) -> Image:
    """Load `spec` (`minilm` or a .safetensors path) and quantize its weights into an image
    by `settings.method` (rotated first when `rotate` is `hadamard[:SEED]`, `sw/store/rotated.py`);
    `calibration` (minilm sentences) or `calibration_inputs` (a file for a .safetensors
    source) feed the PTQ methods, rotated with their weights; `sequential` calibrates each
    layer behind the already-quantized ones (`sequential_store.py`).  Every check runs before any work."""
    plain = load_source(spec)
    settings.check_feasible(plain.weights)
    data, calibration_info = load_calibration_for(spec, settings, plain.weights, calibration, calibration_inputs,
                                                  sequential)
    source = rotated_source(plain, rotate)
    inputs = rotate_calibration(data, source.rotations)
    if sequential:
        from .sequential_store import minilm_sequential_quantizer
        quantizer = minilm_sequential_quantizer(settings, inputs, calibration, plain, source)
    else:
        quantizer = make_quantizer(settings, inputs)
    fmt = settings.fmt
    info = {"source": source.name, "quantizer": type(quantizer).__name__, **settings.info(),
            "group_size": fmt.group_size, "symmetric": fmt.symmetric, "scale_format": fmt.scale_format.name.lower()}
    if calibration_info is not None:
        info["calibration"] = calibration_info
    return quantize_model(source.weights, quantizer, side=source.side, info=info, warn=warn,
                          rotations=source.rotations)


def bytes_read(entry: TensorEntry, k: int) -> int:
    """DRAM bytes a sequential read of `entry` at k bits fetches: k plane lines per block plus its metadata."""
    return (entry.blocks * k + entry.meta_lines) * LINE_BYTES


def metadata_bits_per_weight(entry: TensorEntry) -> float:
    """Metadata lines' bits per real weight of `entry`."""
    return entry.meta_lines * LINE_BYTES * 8 / entry.weights


def summarize(image: Image) -> dict:
    """Per-tensor and whole-image figures for `inspect`: sizes, format (`/H<block>` for a
    rotated tensor), bytes read per k, metadata overhead, relative Frobenius error per k
    (recorded at quantize time; None if absent)."""
    ks = range(1, CODE_BITS + 1)
    tensors = [{"name": e.name, "shape": list(e.shape), "group_size": e.group_size,
                "format": ("sym" if e.symmetric else "asym") + "/" + e.scale_format.name.lower()
                + ("" if e.rotation is None else f"/H{e.rotation.block}"),
                "rotation": None if e.rotation is None else e.rotation.to_json(),
                "blocks": e.blocks, "metadata_bits_per_weight": metadata_bits_per_weight(e),
                "bytes_read": {k: bytes_read(e, k) for k in ks},
                "rel_error": None if e.rel_error is None else {k: e.rel_error[k] for k in ks}}
               for e in image.entries]
    weights = sum(e.weights for e in image.entries)
    with_error = [e for e in image.entries if e.rel_error is not None and e.norm is not None]
    total_norm = math.hypot(*(e.norm for e in with_error))     # hypot: no overflow for huge recorded norms

    def overall_error(k):
        if len(with_error) != len(image.entries) or not total_norm:
            return None
        return math.hypot(*(e.rel_error[k] * e.norm for e in with_error)) / total_norm
    per_k = [{"k": k, "bytes_read": sum(bytes_read(e, k) for e in image.entries),
              "bits_per_weight": sum(bytes_read(e, k) for e in image.entries) * 8 / weights if weights else 0.0,
              "rel_error": overall_error(k)} for k in ks]
    return {"info": image.info, "tensors": tensors, "weights": weights, "dram_bytes": int(image.dram.size),
            "side_tensors": len(image.side),
            "metadata_bits_per_weight": sum(e.meta_lines for e in image.entries) * LINE_BYTES * 8 / weights
            if weights else 0.0, "per_k": per_k}
