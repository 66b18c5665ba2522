"""The golden decoder: what the device must answer, as a pure function of DRAM and manifest.

Views (DESIGN.md sections 2 and 4, docs/FORMATS.md):
- k-bit view code: `c = q >> (8-k)`, `r = (c << (8-k)) | (1 << (7-k))` for k < 8, `r = q` at k = 8;
- packed k: line j of a block is plane line j (j < k);
- int8 k (symmetric regions only): line j holds weights 64j..64j+63 as int8 `r - 128`;
- fp16 k / bf16 k: line j holds weights 32j..32j+31, each `s * (r - z)` computed exactly
  (float64) and rounded once to nearest even, little-endian 2 bytes; a NaN result
  (NaN scale, or infinite scale times 0) is the canonical quiet NaN 0x7E00 / 0x7FC0.
The zero point is always the stored zero byte (symmetric quantizers store 128).
Table-lookup (LUT) tensors (`TensorEntry.codebook_base` set; docs/RECIPES.md): fp16 / bf16
answer `s * table_k[c]` (table entry `(1 << k) | c` of the tensor's table set, binary16)
computed exactly and rounded once the same way; packed as any tensor; int8 is poison.
A bad address answers 64 zero bytes with poison set.
"""

from __future__ import annotations

import numpy as np

from ...errors import SmartquantError
from ...spec import (BLOCK_WEIGHTS, LINE_BYTES, PLANES, SYMMETRIC_ZERO, View, lines_per_block,
                    split_host_line_address)
from ..codes import codebook_values, view_code
from ..fpformat import bf16_bits, fp16_bits, fp16_value, scale_value
from .image import Image, TensorEntry, unpack_metadata, unpack_planes

POISON = (bytes(LINE_BYTES), True)
#: canonical quiet NaN of each dequantized view
CANONICAL_NAN = {View.FP16: 0x7E00, View.BF16: 0x7FC0}
QUANTIZED_VIEWS = (View.PACKED, View.INT8, View.FP16, View.BF16)


def has_int8_view(entry: TensorEntry) -> bool:
    """Symmetric affine tensors have an int8 view; asymmetric and LUT tensors answer poison."""
    return entry.symmetric and entry.codebook_base is None


def round_view(values: np.ndarray, view: View) -> np.ndarray:
    """uint16 fp16 / bf16 bits of exact float64 values, nearest even, NaN canonical."""
    bits = fp16_bits(values) if view == View.FP16 else bf16_bits(values)
    bits[np.isnan(values)] = CANONICAL_NAN[view]
    return bits


def lut_result_bits(entry_bits, scale_bits, scale_format, view: View) -> np.ndarray:
    """uint16 results of one table-lookup lane: binary16 entries times scales, rounded once to `view`."""
    with np.errstate(invalid="ignore"):
        values = fp16_value(entry_bits) * scale_value(scale_bits, scale_format)
    return round_view(values, View(view))


def _group_metadata(image: Image, entry: TensorEntry) -> tuple[np.ndarray, np.ndarray]:
    """(scale float64, zero float64) of every group of `entry`, read from DRAM."""
    scale_bits, zeros = unpack_metadata(image.lines(entry.meta_base, entry.meta_lines).tobytes(), entry.groups)
    return scale_value(scale_bits, entry.scale_format), zeros.astype(np.float64)


def _decode_blocks(image: Image, entry: TensorEntry, view: View, k: int, first: int, count: int) -> bytes:
    """All response lines of blocks [first, first+count) of `entry` in `view` at `k` bits."""
    planes = image.lines(entry.plane_base + first * PLANES, count * PLANES)
    if view == View.PACKED:
        return planes.reshape(count, PLANES, LINE_BYTES)[:, :k].tobytes()
    r = view_code(unpack_planes(planes, k), k)
    if view == View.INT8:
        return (r.astype(np.int16) - SYMMETRIC_ZERO).astype(np.int8).tobytes()
    per_block = BLOCK_WEIGHTS // entry.group_size
    groups = slice(first * per_block, (first + count) * per_block)
    if entry.codebook_base is not None:
        scale_bits, _ = unpack_metadata(image.lines(entry.meta_base, entry.meta_lines).tobytes(), entry.groups)
        values = codebook_values(unpack_planes(planes, k), scale_bits[groups], entry.scale_format,
                                 image.table_bits(entry), entry.group_size, k)
    else:
        scale, zero = _group_metadata(image, entry)
        with np.errstate(invalid="ignore"):
            values = np.repeat(scale[groups], entry.group_size) * (r - np.repeat(zero[groups], entry.group_size))
    return round_view(values, view).astype("<u2").tobytes()


def _entry_of_block(image: Image, block: int) -> TensorEntry | None:
    """The entry whose planes hold global block `block` (DRAM lines 8*block..8*block+7)."""
    for e in image.entries:
        if e.plane_base // PLANES <= block < e.plane_base // PLANES + e.blocks:
            return e
    return None


def response_line(image: Image, host_line_addr: int) -> tuple[bytes, bool]:
    """(64 data bytes, poison) the device answers to a read of host line `host_line_addr`."""
    view, k, offset = split_host_line_address(host_line_addr)
    if view == View.RAW:
        if offset >= image.dram_lines:
            return POISON
        return image.lines(offset, 1).tobytes(), False
    if view not in QUANTIZED_VIEWS or not 1 <= k <= PLANES:
        return POISON
    view = View(view)
    per_block = lines_per_block(view, k)
    block, line = divmod(offset, per_block)
    entry = _entry_of_block(image, block)
    if entry is None or (view == View.INT8 and not has_int8_view(entry)):
        return POISON
    data = _decode_blocks(image, entry, view, k, block - entry.plane_base // PLANES, 1)
    return data[line * LINE_BYTES:(line + 1) * LINE_BYTES], False


def read_view(image: Image, name: str, view: View, k: int) -> bytes:
    """Every line of tensor `name` in a quantized `view` at `k` bits, in view-offset order."""
    entry = image.entry(name)
    view = _check_view(view, k)
    if view == View.INT8 and not has_int8_view(entry):
        raise SmartquantError(f"tensor {name!r} is asymmetric or a table-lookup tensor: it has no int8 view")
    return _decode_blocks(image, entry, view, k, 0, entry.blocks)


def tensor_values(image: Image, name: str, k: int, view: View = View.FP16) -> np.ndarray:
    """The (out, in) float32 values the host gets reading `name` in the fp16 or bf16 view at `k` bits."""
    if View(view) not in (View.FP16, View.BF16):
        raise SmartquantError(f"tensor values come from the fp16 or bf16 view, not {View(view).name.lower()}")
    entry = image.entry(name)
    bits = np.frombuffer(read_view(image, name, view, k), dtype="<u2")
    if view == View.FP16:
        values = bits.view(np.float16).astype(np.float32)
    else:
        values = (bits.astype(np.uint32) << 16).view(np.float32)
    out, cols = entry.shape
    return values[:out * entry.padded_in].reshape(out, entry.padded_in)[:, :cols].copy()


def view_array(image: Image, name: str, view: View, k: int) -> np.ndarray:
    """Tensor `name` in a quantized view as an array: packed -> uint8 (blocks, k, 64) plane lines;
    int8 -> int8 (out, in); fp16 -> float16 (out, in); bf16 -> float32 (out, in), exact values."""
    view = _check_view(view, k)
    if view in (View.FP16, View.BF16):
        values = tensor_values(image, name, k, view)
        return values.astype(np.float16) if view == View.FP16 else values
    entry = image.entry(name)
    data = np.frombuffer(read_view(image, name, view, k), dtype=np.uint8 if view == View.PACKED else np.int8)
    if view == View.PACKED:
        return data.reshape(entry.blocks, k, LINE_BYTES).copy()
    out, cols = entry.shape
    return data[:out * entry.padded_in].reshape(out, entry.padded_in)[:, :cols].copy()


def view_offset(entry: TensorEntry, view: View, k: int, block: int = 0, line: int = 0) -> int:
    """Host view offset of `line` of `block` of `entry` (spec.host_line_address takes it)."""
    return (entry.plane_base // PLANES + block) * lines_per_block(view, k) + line


def region_table(image: Image) -> list[dict]:
    """The entries as region-table rows (what the CSRs hold per tensor)."""
    return [{"name": e.name, "plane_base": e.plane_base, "meta_base": e.meta_base, "blocks": e.blocks,
             "group_size": e.group_size, "symmetric": e.symmetric, "scale_format": int(e.scale_format),
             "codebook_base": e.codebook_base}
            for e in image.entries]


def _check_view(view, k: int) -> View:
    try:
        view = View(view)
    except ValueError:
        raise SmartquantError(f"unknown view {view!r}") from None
    if view not in QUANTIZED_VIEWS:
        raise SmartquantError("the raw view has no per-tensor read (read image.dram)")
    if not 1 <= k <= PLANES:
        raise SmartquantError(f"bits k={k} outside 1..{PLANES}")
    return view
