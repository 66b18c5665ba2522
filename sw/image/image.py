"""The memory image: what the device DRAM holds, plus the manifest that maps it.

Layout (DESIGN.md section 3, docs/FORMATS.md): tensors in manifest order, each
as its bit-planes (block b = 8 lines at `plane_base + 8*b`, line j = bit-plane
7-j, weight i = bit i%8 of byte i//8) followed by its metadata (4 bytes per
group: scale bits little-endian, zero u8, reserved 0; 16 groups per line); the
next tensor's planes start at the next multiple of 8 lines.  Codebook (table-lookup)
tensors also have a table set: CODEBOOK_LINES lines of binary16 entries (entry of view k
code c at index `(1 << k) | c`); the table sets follow the last tensor, 16-line aligned,
in manifest order, and each entry records its first line in `codebook_base`
(docs/RECIPES.md, "LUT region storage format").  On disk an image
is a directory: `manifest.json`, `dram.bin` (byte 0 = device address 0) and,
when there is side data (tensors not in the store), `side.safetensors`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ...atomic import atomic_dir
from ...errors import SmartquantError
from ...spec import (BLOCK_WEIGHTS, CODEBOOK_ENTRIES, CODEBOOK_LINES, GROUP_SIZES, GROUPS_PER_META_LINE, LINE_BYTES,
                    META_BYTES_PER_GROUP, PLANES, SYMMETRIC_ZERO, ScaleFormat)
from ..quantize.rotation import Rotation
from .validate import IMAGE_FORMAT, IMAGE_VERSION, check_manifest, check_side

if TYPE_CHECKING:
    from ..quantize.quantizer import QuantizedTensor

FORMAT_NAME = IMAGE_FORMAT
FORMAT_VERSION = IMAGE_VERSION
MANIFEST = "manifest.json"
DRAM_FILE = "dram.bin"
SIDE_FILE = "side.safetensors"
#: code and zero point of the tail padding that fills a tensor's last block (its scale is 0,
#: so every dequantized view reads 0.0 there and the int8 view reads 0 at k=8)
PAD_CODE = SYMMETRIC_ZERO


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One stored tensor: where its planes and metadata are (DRAM *line* addresses)."""
    name: str
    shape: tuple[int, int]          #: (out, in) of the source weight
    padded_in: int                  #: `in` rounded up to a multiple of group_size
    group_size: int                 #: weights per scale (G)
    symmetric: bool                 #: zero point fixed at 128; the int8 view is allowed
    scale_format: ScaleFormat
    plane_base: int                 #: first plane line (multiple of 8)
    meta_base: int                  #: first metadata line
    blocks: int                     #: 512-weight blocks
    meta_lines: int                 #: ceil(groups / 16)
    rel_error: dict[int, float] | None = None   #: k -> ||W_k - W||_F / ||W||_F at quantize time
    norm: float | None = None                   #: ||W||_F of the source weight
    codebook_base: int | None = None            #: first line of the table set (LUT tensor), else None
    rotation: Rotation | None = None            #: the store holds W·H; the host applies H to the inputs

    @property
    def groups(self) -> int:
        """Groups of all blocks, padding included (metadata slots written)."""
        return self.blocks * BLOCK_WEIGHTS // self.group_size

    @property
    def weights(self) -> int:
        """Real (unpadded) weights."""
        return self.shape[0] * self.shape[1]

    def to_json(self) -> dict:
        out = {"name": self.name, "shape": list(self.shape), "padded_in": self.padded_in,
               "group_size": self.group_size, "symmetric": self.symmetric,
               "scale_format": self.scale_format.name.lower(), "plane_base": self.plane_base,
               "meta_base": self.meta_base, "blocks": self.blocks, "meta_lines": self.meta_lines}
        if self.rel_error is not None:
            out["rel_error"] = {str(k): v for k, v in sorted(self.rel_error.items())}
        if self.norm is not None:
            out["norm"] = self.norm
        if self.codebook_base is not None:
            out["codebook_base"] = self.codebook_base
        if self.rotation is not None:
            out["rotation"] = self.rotation.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict) -> "TensorEntry":
        """The entry of a manifest row that `validate.check_manifest` accepted."""
        rel = d.get("rel_error")
        return cls(name=d["name"], shape=tuple(d["shape"]), padded_in=d["padded_in"], group_size=d["group_size"],
                   symmetric=d["symmetric"], scale_format=ScaleFormat[d["scale_format"].upper()],
                   plane_base=d["plane_base"], meta_base=d["meta_base"], blocks=d["blocks"],
                   meta_lines=d["meta_lines"],
                   rel_error=None if rel is None else {int(k): float(v) for k, v in rel.items()},
                   norm=None if d.get("norm") is None else float(d["norm"]),
                   codebook_base=d.get("codebook_base"),
                   rotation=None if d.get("rotation") is None else Rotation.from_json(d["rotation"]))


# --- bit-planes ------------------------------------------------------------------

#: blocks `pack_planes` transposes at once (its temporaries take 16 bytes per weight)
PACK_CHUNK_BLOCKS = 1 << 11


def pack_planes(codes) -> bytes:
    """Bit-planes of 8-bit codes (length a multiple of 512): per block 8 lines, MSB plane first."""
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1, BLOCK_WEIGHTS)
    pieces = []
    for first in range(0, codes.shape[0], PACK_CHUNK_BLOCKS):
        bits = np.unpackbits(codes[first:first + PACK_CHUNK_BLOCKS, :, None], axis=2)   # (blocks, 512, 8): bit 7 first
        pieces.append(np.packbits(bits.transpose(0, 2, 1), axis=2, bitorder="little").tobytes())
    return b"".join(pieces)


def unpack_planes(planes, k: int = PLANES) -> np.ndarray:
    """Codes (uint8, 512 per block) from bit-planes; only the top `k` planes are read, the rest are 0."""
    lines = np.frombuffer(bytes(planes) if not isinstance(planes, np.ndarray) else planes.tobytes(),
                          dtype=np.uint8).reshape(-1, PLANES, LINE_BYTES)
    bits = np.unpackbits(lines[:, :k], axis=2, bitorder="little")   # (blocks, k, 512)
    if k < PLANES:
        bits = np.concatenate([bits, np.zeros((bits.shape[0], PLANES - k, BLOCK_WEIGHTS), np.uint8)], axis=1)
    return np.packbits(bits.transpose(0, 2, 1), axis=2).reshape(-1)


def pack_metadata(scale_bits, zeros, groups: int) -> bytes:
    """Metadata lines for `groups` slots: 4 bytes each (scale LE, zero, 0), zero-filled to whole lines."""
    lines = -(-groups // GROUPS_PER_META_LINE)
    meta = np.zeros((lines * GROUPS_PER_META_LINE, META_BYTES_PER_GROUP), dtype=np.uint8)
    scale_bits = np.asarray(scale_bits, dtype=np.uint16).reshape(-1)
    n = scale_bits.size
    meta[:n, 0] = scale_bits & 0xFF
    meta[:n, 1] = scale_bits >> 8
    meta[:n, 2] = np.asarray(zeros, dtype=np.uint8).reshape(-1)
    return meta.tobytes()


def unpack_metadata(meta, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale bits uint16, zeros uint8) of the first `groups` metadata slots."""
    slots = np.frombuffer(bytes(meta), dtype=np.uint8).reshape(-1, META_BYTES_PER_GROUP)[:groups]
    return (slots[:, 0].astype(np.uint16) | (slots[:, 1].astype(np.uint16) << 8)), slots[:, 2].copy()


# --- the image -------------------------------------------------------------------------

def _align(line: int, to: int = PLANES) -> int:
    return -(-line // to) * to


@dataclasses.dataclass
class Image:
    """Device DRAM contents, the manifest entries that map it, and side data."""
    entries: list[TensorEntry]
    dram: np.ndarray                                    #: uint8, a whole number of lines
    side: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)   #: provenance (source, quantizer)

    @property
    def dram_lines(self) -> int:
        return self.dram.size // LINE_BYTES

    def entry(self, name: str) -> TensorEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise SmartquantError(f"unknown tensor {name!r} (image has {len(self.entries)} tensors, "
                              f"e.g. {', '.join(e.name for e in self.entries[:3])})")

    def lines(self, first: int, count: int) -> np.ndarray:
        """DRAM lines [first, first+count) as a (count, 64) uint8 view."""
        return self.dram[first * LINE_BYTES:(first + count) * LINE_BYTES].reshape(count, LINE_BYTES)

    def table_bits(self, entry: TensorEntry) -> np.ndarray:
        """The uint16 [512] table set of LUT tensor `entry`, read from DRAM."""
        if entry.codebook_base is None:
            raise SmartquantError(f"tensor {entry.name!r} has no codebook")
        return self.lines(entry.codebook_base, CODEBOOK_LINES).reshape(-1).view("<u2").astype(np.uint16)

    @classmethod
    def build(cls, tensors: Iterable[tuple[str, "QuantizedTensor"]], side: dict | None = None,
              rel_errors: dict[str, dict[int, float]] | None = None, norms: dict[str, float] | None = None,
              info: dict | None = None, rotations: dict[str, Rotation] | None = None) -> "Image":
        """Lay quantized tensors out in DRAM in the given order (planes, then metadata, 8-line aligned).

        `rel_errors` (name -> k -> relative error) and `norms` (name -> ||W||_F) are recorded
        in the manifest for `inspect`; `rotations` (name -> H) declares the tensors stored as W·H.
        Tensors with a `table_bits` array (codebook tensors, `sw.codebook.CodebookTensor`) get
        their table set after the last tensor."""
        entries, chunks, line = [], [], 0
        tensors = list(tensors)
        rel_errors, norms, rotations = rel_errors or {}, norms or {}, rotations or {}
        for name, qt in tensors:
            if any(e.name == name for e in entries):
                raise SmartquantError(f"tensor {name!r} appears twice")
            if name in rotations and rotations[name].size != qt.shape[1]:
                raise SmartquantError(f"tensor {name!r}: rotation of size {rotations[name].size} "
                                      f"does not match in={qt.shape[1]}")
            if qt.group_size not in GROUP_SIZES:
                raise SmartquantError(f"tensor {name!r}: group size {qt.group_size} not one of {GROUP_SIZES}")
            flat = qt.codes.reshape(-1)
            blocks = -(-flat.size // BLOCK_WEIGHTS)
            groups = blocks * BLOCK_WEIGHTS // qt.group_size
            padded = np.full(blocks * BLOCK_WEIGHTS, PAD_CODE, dtype=np.uint8)
            padded[:flat.size] = flat
            scales = np.zeros(groups, np.uint16)
            zeros = np.full(groups, PAD_CODE, np.uint8)
            scales[:qt.scale_bits.size] = qt.scale_bits.reshape(-1)
            zeros[:qt.zeros.size] = qt.zeros.reshape(-1)
            planes, meta = pack_planes(padded), pack_metadata(scales, zeros, groups)
            entry = TensorEntry(name=name, shape=tuple(qt.shape), padded_in=qt.codes.shape[1],
                                group_size=qt.group_size, symmetric=qt.symmetric,
                                scale_format=ScaleFormat(qt.scale_format), plane_base=line,
                                meta_base=line + blocks * PLANES, blocks=blocks,
                                meta_lines=len(meta) // LINE_BYTES, rel_error=rel_errors.get(name),
                                norm=norms.get(name), rotation=rotations.get(name))
            entries.append(entry)
            chunks += [planes, meta]
            end = entry.meta_base + entry.meta_lines
            line = _align(end)
            chunks.append(bytes((line - end) * LINE_BYTES))
        tables = [(i, qt.table_bits) for i, (_, qt) in enumerate(tensors) if hasattr(qt, "table_bits")]
        if tables:
            first = _align(line, CODEBOOK_LINES)
            chunks.append(bytes((first - line) * LINE_BYTES))
            for n, (i, bits) in enumerate(tables):
                entries[i] = dataclasses.replace(entries[i], codebook_base=first + n * CODEBOOK_LINES)
                chunks.append(np.asarray(bits, dtype="<u2").reshape(CODEBOOK_ENTRIES).tobytes())
        dram = np.concatenate([np.frombuffer(chunk, dtype=np.uint8) for chunk in chunks] or [np.zeros(0, np.uint8)])
        return cls(entries=entries, dram=dram, side=dict(side or {}), info=dict(info or {}))

    def manifest(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "line_bytes": LINE_BYTES,
                "dram_lines": self.dram_lines, "info": self.info,
                "tensors": [e.to_json() for e in self.entries], "side": sorted(self.side)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the image directory atomically (replacing only an earlier image at `path`)."""
        path = Path(path)
        with atomic_dir(path, "image") as tmp:
            (tmp / MANIFEST).write_text(json.dumps(self.manifest(), indent=1) + "\n")
            self.dram.tofile(tmp / DRAM_FILE)
            if self.side:
                from safetensors.numpy import save_file
                save_file({k: np.ascontiguousarray(v) for k, v in self.side.items()}, str(tmp / SIDE_FILE))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Image":
        """Read an image directory, every field checked first (sw/image/validate.py); any
        inconsistency is a one-line SmartquantError."""
        path = Path(path)
        manifest = _read_manifest(path)
        dram_path = path / DRAM_FILE
        if not dram_path.is_file():
            raise SmartquantError(f"{dram_path}: missing (every image has a dram.bin)")
        rows = check_manifest(manifest, dram_path.stat().st_size, path / MANIFEST)
        entries = [TensorEntry.from_json(row) for row in rows]
        dram = np.fromfile(dram_path, dtype=np.uint8)
        side = {}
        if manifest.get("side"):
            from safetensors.numpy import load_file
            try:
                side = load_file(str(path / SIDE_FILE))
            except Exception as exc:  # safetensors raises several types for a bad file
                raise SmartquantError(f"{path / SIDE_FILE}: unreadable side data ({exc})") from None
            check_side(manifest["side"], side, path / SIDE_FILE)
        return cls(entries=entries, dram=dram, side=side, info=manifest.get("info", {}))


def _read_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise SmartquantError(f"{path}: not an image (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:   # ValueError: JSONDecodeError
        raise SmartquantError(f"{manifest_path}: unreadable manifest ({exc})") from None
    return manifest
