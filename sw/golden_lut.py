"""Images with table-lookup (codebook) regions, and their golden decoder (docs/RECIPES.md).

Layout: `image.Image.build` lays every tensor out as usual (a codebook tensor's zero
bytes are 0); the 16-line table set of each codebook tensor follows, in manifest order,
after the last tensor, starting at a multiple of 16 lines.  The manifest records them
in `info["codebooks"]`: tensor name -> first DRAM line of its table set.

Views of a LUT region: raw and packed as for every region; int8 poisoned (a LUT region
is not symmetric); fp16 / bf16: `s * table_k[c]` (c = q >> (8-k), table entry
`(1 << k) | c` of the set, binary16) computed exactly and rounded once to nearest even,
NaN canonical (0x7E00 / 0x7FC0), as the affine views.  Everything else answers as
`golden.response_line` does.
"""

from __future__ import annotations

import numpy as np

from ..errors import SmartquantError
from ..spec import (BLOCK_WEIGHTS, CODEBOOK_ENTRIES, CODEBOOK_LINES, CODE_BITS, LINE_BYTES, PLANES, View,
                    lines_per_block, lut_config_bits, region_config_word, split_host_line_address)
from . import golden
from .codebook import codebook_values
from .fpformat import bf16_bits, fp16_bits, fp16_value, scale_value
from .image import Image, TensorEntry, unpack_metadata, unpack_planes

CODEBOOKS_KEY = "codebooks"


def build(tensors, side=None, rel_errors=None, norms=None, info=None) -> Image:
    """`Image.build` over affine (`QuantizedTensor`) and codebook (`CodebookTensor`) tensors,
    with the codebook tensors' table sets appended and listed in `info["codebooks"]`."""
    tensors = list(tensors)
    image = Image.build(tensors, side=side, rel_errors=rel_errors, norms=norms, info=info)
    tables = [(name, t.table_bits) for name, t in tensors if hasattr(t, "table_bits")]
    if not tables:
        return image
    first = -(-image.dram_lines // CODEBOOK_LINES) * CODEBOOK_LINES
    chunks = [image.dram, np.zeros((first - image.dram_lines) * LINE_BYTES, np.uint8)]
    bases = {}
    for i, (name, bits) in enumerate(tables):
        bases[name] = first + i * CODEBOOK_LINES
        chunks.append(np.asarray(bits, dtype="<u2").reshape(CODEBOOK_ENTRIES).view(np.uint8))
    image.dram = np.concatenate(chunks)
    image.info = {**image.info, CODEBOOKS_KEY: bases}
    return image


def codebook_base(image: Image, name: str) -> int | None:
    """First DRAM line of tensor `name`'s table set, or None for an affine tensor."""
    base = image.info.get(CODEBOOKS_KEY, {}).get(name)
    if base is None:
        return None
    if not isinstance(base, int) or base % CODEBOOK_LINES or base + CODEBOOK_LINES > image.dram_lines:
        raise SmartquantError(f"manifest codebook of {name!r} at line {base!r} is misaligned or outside dram.bin")
    return base


def table_bits(image: Image, name: str) -> np.ndarray:
    """The uint16 [512] table set of codebook tensor `name`, read from DRAM."""
    base = codebook_base(image, name)
    if base is None:
        raise SmartquantError(f"tensor {name!r} has no codebook")
    return image.lines(base, CODEBOOK_LINES).reshape(-1).view("<u2").astype(np.uint16)


def round_view(values: np.ndarray, view: View) -> np.ndarray:
    """uint16 fp16/bf16 bits of exact float64 values, nearest even, NaN canonical."""
    bits = fp16_bits(values) if view == View.FP16 else bf16_bits(values)
    bits[np.isnan(values)] = golden.CANONICAL_NAN[view]
    return bits


def lut_result_bits(entry_bits, scale_bits, scale_format, view: View) -> np.ndarray:
    """uint16 results of one LUT lane: binary16 entries times scales, rounded once to `view`."""
    with np.errstate(invalid="ignore"):
        values = fp16_value(entry_bits) * scale_value(scale_bits, scale_format)
    return round_view(values, View(view))


def _decode_blocks(image: Image, entry: TensorEntry, view: View, k: int, first: int, count: int) -> bytes:
    """fp16/bf16 lines of blocks [first, first+count) of LUT tensor `entry`."""
    planes = image.lines(entry.plane_base + first * PLANES, count * PLANES)
    codes = unpack_planes(planes, k)
    scale_bits, _ = unpack_metadata(image.lines(entry.meta_base, entry.meta_lines).tobytes(), entry.groups)
    per_block = BLOCK_WEIGHTS // entry.group_size
    values = codebook_values(codes, scale_bits[first * per_block:(first + count) * per_block],
                             entry.scale_format, table_bits(image, entry.name), entry.group_size, k)
    return round_view(values, view).astype("<u2").tobytes()


def response_line(image: Image, host_line_addr: int) -> tuple[bytes, bool]:
    """(64 data bytes, poison) the device answers, LUT regions included."""
    view, k, offset = split_host_line_address(host_line_addr)
    if view in (View.FP16, View.BF16) and 1 <= k <= PLANES:
        block, line = divmod(offset, lines_per_block(View(view), k))
        entry = next((e for e in image.entries
                      if e.plane_base // PLANES <= block < e.plane_base // PLANES + e.blocks), None)
        if entry is not None and codebook_base(image, entry.name) is not None:
            data = _decode_blocks(image, entry, View(view), k, block - entry.plane_base // PLANES, 1)
            return data[line * LINE_BYTES:(line + 1) * LINE_BYTES], False
    return golden.response_line(image, host_line_addr)


def read_view(image: Image, name: str, view: View, k: int) -> bytes:
    """Every line of tensor `name` in a quantized view at k bits (LUT or affine)."""
    entry = image.entry(name)
    if codebook_base(image, name) is None or View(view) not in (View.FP16, View.BF16):
        return golden.read_view(image, name, view, k)
    if not 1 <= k <= CODE_BITS:
        raise SmartquantError(f"bits k={k} outside 1..{CODE_BITS}")
    return _decode_blocks(image, entry, View(view), k, 0, entry.blocks)


def tensor_values(image: Image, name: str, k: int) -> np.ndarray:
    """(out, in) float32 values of the fp16 view of `name` at k bits (LUT or affine)."""
    entry = image.entry(name)
    values = np.frombuffer(read_view(image, name, View.FP16, k), dtype="<u2").view(np.float16).astype(np.float32)
    out, cols = entry.shape
    return values[:out * entry.padded_in].reshape(out, entry.padded_in)[:, :cols].copy()


def region_config(image: Image, entry: TensorEntry) -> int:
    """The REGION_CONFIG word of `entry`, with the LUT bits of a codebook tensor."""
    word = region_config_word(entry.group_size, entry.symmetric, entry.scale_format)
    base = codebook_base(image, entry.name)
    return word if base is None else word | lut_config_bits(base)


def codebooks(image: Image) -> dict[str, int]:
    """Codebook tensor name -> first line of its table set, in manifest order."""
    return {e.name: codebook_base(image, e.name) for e in image.entries if codebook_base(image, e.name) is not None}
