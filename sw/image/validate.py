"""Field rules of the on-disk formats, checked before anything in a file is used.

An image directory (docs/FORMATS.md section 3) is checked by `check_manifest`
(manifest.json against the size of dram.bin) and `check_side` (the side tensors it
lists against side.safetensors); a trace directory (docs/COVERIFY.md) by
`check_trace_json` and `load_requests` (requests.npz).  Every failure is one
SmartquantError line naming the file, the tensor, segment or request, and the field.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ... import spec
from ...errors import SmartquantError
from ..quantize.accumulator_model import MAX_ACCUMULATOR_BITS, MAX_INPUT_BITS
from ..quantize.rotation import ROTATION_KINDS, SEED_LIMIT, SIGN_RULE, is_hadamard_order
from ...spec import (BLOCK_WEIGHTS, CODEBOOK_LINES, CODE_BITS, GROUP_SIZES, GROUPS_PER_META_LINE, LINE_BYTES, PLANES,
                    ScaleFormat)

IMAGE_FORMAT = "smartquant-image"
IMAGE_VERSION = 1
TRACE_FORMAT = "smartquant-trace"
TRACE_VERSION = 1
#: info key under which images written before `codebook_base` listed their table sets
LEGACY_CODEBOOKS_KEY = "codebooks"

#: DRAM lines a device addresses at most (the raw view's 32-bit offset, CSR_DRAM_LINES)
MAX_DRAM_LINES = 1 << spec.OFFSET_BITS
#: first line a LUT region's table set cannot start at (REGION_CONFIG's codebook field)
CODEBOOK_LINE_LIMIT = CODEBOOK_LINES << spec.CFG_CODEBOOK_BITS
SCALE_FORMAT_NAMES = tuple(f.name.lower() for f in ScaleFormat)
#: k -> relative error keys of a manifest's `rel_error`, as the writer spells them
REL_ERROR_KEYS = tuple(str(k) for k in range(1, CODE_BITS + 1))

MANIFEST_FIELDS = ("format", "version", "line_bytes", "dram_lines", "tensors")
MANIFEST_OPTIONAL = ("info", "side")
#: fields an image tensor entry and a trace region row share (the region-table row)
REGION_FIELDS = ("name", "plane_base", "meta_base", "blocks", "meta_lines", "group_size", "symmetric",
                 "scale_format")
ENTRY_FIELDS = REGION_FIELDS + ("shape", "padded_in")
ENTRY_OPTIONAL = ("rel_error", "norm", "codebook_base", "rotation")
ROTATION_FIELDS = ("kind", "size", "block", "seed", "signs")
REGION_OPTIONAL = ("codebook_base",)
TRACE_FIELDS = ("format", "version", "image", "dram_bytes", "requests", "settings", "segments")
TRACE_OPTIONAL = ("dram_errors",)
SEGMENT_FIELDS = ("regions", "start", "stop")
#: info.accumulator of an AXE image: P, N, signed inputs, tile (null = the group), guaranteed views
ACCUMULATOR_FIELDS = ("bits", "input_bits", "signed_inputs", "tile", "views")
#: requests.npz columns: (dtype, shape after the request count)
REQUEST_COLUMNS = {"opcode": (np.dtype(np.uint8), ()), "tag": (np.dtype(np.uint8), ()),
                   "addr": (np.dtype(np.uint64), ()), "line": (np.dtype(np.uint8), (LINE_BYTES,)),
                   "poison": (np.dtype(np.uint8), ())}


def _fail(where: str, message: str):
    raise SmartquantError(f"{where}: {message}")


def _show(value) -> str:
    """A value as it would read in the file, cut to one short line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields(value, where: str, required, optional=()) -> dict:
    """`value` as a JSON object holding every `required` field and no field outside `optional`."""
    if not isinstance(value, dict):
        _fail(where, f"must be a JSON object, not {_show(value)}")
    for key in required:
        if key not in value:
            _fail(where, f"field {key!r} is missing")
    unknown = [k for k in value if k not in required and k not in optional]
    if unknown:
        _fail(where, f"unknown field {_show(unknown[0])}")
    return value


def _int(value, where: str, field: str, low: int = 0, high: int | None = None) -> int:
    """A JSON integer (not a bool, not 1.0) in [low, high)."""
    if type(value) is not int:
        _fail(where, f"{field} must be an integer, not {_show(value)}")
    if value < low or (high is not None and value >= high):
        bound = f"in {low}..{high - 1}" if high is not None else f">= {low}"
        _fail(where, f"{field} {value} must be {bound}")
    return value


def _bool(value, where: str, field: str) -> bool:
    if type(value) is not bool:
        _fail(where, f"{field} must be true or false, not {_show(value)}")
    return value


def _exact(value, want, where: str, field: str, problem: str) -> None:
    """`value` is `want` with the same JSON type (1.0 and true are not 1)."""
    if type(value) is not type(want) or value != want:
        _fail(where, f"{problem} {field} {_show(value)} (this tool reads {want!r})")


def _finite(value, where: str, field: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        _fail(where, f"{field} must be a finite number >= 0, not {_show(value)}")
    return float(value)


def _names(value, where: str, field: str) -> list[str]:
    """A JSON list of distinct non-empty strings."""
    if not isinstance(value, list):
        _fail(where, f"{field} must be a list of names, not {_show(value)}")
    seen = set()
    for name in value:
        if type(name) is not str or not name:
            _fail(where, f"{field} holds {_show(name)}, not a non-empty string")
        if name in seen:
            _fail(where, f"{field} lists {name!r} twice")
        seen.add(name)
    return value


def _row_label(row, index: int, kind: str) -> str:
    """"tensor 'w1'" for a row with a usable name, else "tensor #3"."""
    name = row.get("name") if isinstance(row, dict) else None
    return f"{kind} {_show(name)}" if type(name) is str and name else f"{kind} #{index}"


# --- region rows (image tensor entries and trace region tables) ----------------------------

def _region_spans(row: dict, where: str, lines: int) -> list[tuple[str, int, int]]:
    """Check the region-table fields of `row`; its (part, first line, line count) spans,
    each inside [0, lines)."""
    group = row["group_size"]
    if type(group) is not int or group not in GROUP_SIZES:
        _fail(where, f"group_size {_show(group)} is not one of {', '.join(map(str, GROUP_SIZES))}")
    _bool(row["symmetric"], where, "symmetric")
    plane_base = _int(row["plane_base"], where, "plane_base")
    if plane_base % PLANES:
        _fail(where, f"plane_base {plane_base} is misaligned (not a multiple of {PLANES} lines)")
    meta_base = _int(row["meta_base"], where, "meta_base")
    blocks = _int(row["blocks"], where, "blocks")
    meta_lines = _int(row["meta_lines"], where, "meta_lines")
    groups = blocks * BLOCK_WEIGHTS // group
    if meta_lines != -(-groups // GROUPS_PER_META_LINE):
        _fail(where, f"meta_lines {meta_lines} is not ceil({groups} groups / {GROUPS_PER_META_LINE}) = "
                     f"{-(-groups // GROUPS_PER_META_LINE)}")
    spans = [("planes", plane_base, blocks * PLANES), ("metadata", meta_base, meta_lines)]
    codebook_base = row.get("codebook_base")
    if codebook_base is not None:
        _int(codebook_base, where, "codebook_base", high=CODEBOOK_LINE_LIMIT)
        if codebook_base % CODEBOOK_LINES:
            _fail(where, f"codebook_base {codebook_base} is misaligned (not a multiple of {CODEBOOK_LINES} lines)")
        spans.append(("codebook", codebook_base, CODEBOOK_LINES))
    for part, first, count in spans:
        if first + count > lines:
            _fail(where, f"{part} (lines {first}..{first + count - 1}) lie outside the {lines} DRAM lines")
    return spans


def _check_disjoint(owned: list[tuple[str, list[tuple[str, int, int]]]], where: str) -> None:
    """No two spans of the (label, spans) rows share a DRAM line."""
    spans = sorted((first, count, label, part) for label, parts in owned for part, first, count in parts if count)
    reach = None        # (end, label, part) of the span reaching furthest so far
    for first, count, label, part in spans:
        if reach is not None and first < reach[0]:
            _fail(where, f"{label} {part} (from line {first}) overlaps {reach[1]} {reach[2]} "
                         f"(up to line {reach[0] - 1})")
        if reach is None or first + count > reach[0]:
            reach = (first + count, label, part)


def _check_unique(rows: list, kind: str, where: str) -> None:
    seen = set()
    for row in rows:
        if row["name"] in seen:
            _fail(where, f"two {kind}s are named {row['name']!r}")
        seen.add(row["name"])


def _check_name(row: dict, where: str) -> None:
    if type(row["name"]) is not str or not row["name"]:
        _fail(where, f"name must be a non-empty string, not {_show(row['name'])}")


# --- images ----------------------------------------------------------------------------

def _check_entry(entry: dict, where: str, lines: int) -> list[tuple[str, int, int]]:
    """Check one manifest tensor entry; its DRAM spans."""
    _check_name(entry, where)
    shape = entry["shape"]
    if not isinstance(shape, list) or len(shape) != 2 or any(type(v) is not int or v <= 0 for v in shape):
        _fail(where, f"shape must be [out, in], two positive integers, not {_show(shape)}")
    spans = _region_spans(entry, where, lines)
    out, cols = shape
    group = entry["group_size"]
    padded_in = _int(entry["padded_in"], where, "padded_in", low=1)
    if padded_in != -(-cols // group) * group:
        _fail(where, f"padded_in {padded_in} is not in={cols} rounded up to a multiple of group_size "
                     f"{group} ({-(-cols // group) * group})")
    blocks = -(-out * padded_in // BLOCK_WEIGHTS)
    if entry["blocks"] != blocks:
        _fail(where, f"blocks {entry['blocks']} is not ceil({out} x {padded_in} / {BLOCK_WEIGHTS}) = {blocks}")
    if entry["scale_format"] not in SCALE_FORMAT_NAMES:
        _fail(where, f"scale_format {_show(entry['scale_format'])} is not one of {', '.join(SCALE_FORMAT_NAMES)}")
    rel_error = entry.get("rel_error")
    if rel_error is not None:
        if not isinstance(rel_error, dict) or sorted(rel_error) != sorted(REL_ERROR_KEYS):
            _fail(where, f"rel_error must map each k of {REL_ERROR_KEYS[0]}..{REL_ERROR_KEYS[-1]} to a number, "
                         f"not {_show(rel_error)}")
        for k, value in rel_error.items():
            _finite(value, where, f"rel_error[{k}]")
    if entry.get("norm") is not None:
        _finite(entry["norm"], where, "norm")
    if entry.get("rotation") is not None:
        check_rotation(entry["rotation"], where, cols)
    return spans


def check_rotation(rotation, where: str, cols: int) -> None:
    """A tensor's `rotation` (docs/FORMATS.md, "Rotation") over its `cols` inputs."""
    _fields(rotation, f"{where}: rotation", ROTATION_FIELDS)
    if rotation["kind"] not in ROTATION_KINDS:
        _fail(where, f"rotation kind {_show(rotation['kind'])} is not one of {', '.join(ROTATION_KINDS)}")
    if rotation["signs"] != SIGN_RULE:
        _fail(where, f"rotation signs {_show(rotation['signs'])} is not {SIGN_RULE!r}")
    if type(rotation["size"]) is not int or rotation["size"] != cols:
        _fail(where, f"rotation size {_show(rotation['size'])} is not the tensor's in={cols}")
    block = _int(rotation["block"], where, "rotation block", low=2, high=cols + 1)
    if not is_hadamard_order(block) or cols % block:
        _fail(where, f"rotation block {block} is not 2^a or 12*2^a dividing in={cols}")
    _int(rotation["seed"], where, "rotation seed", high=SEED_LIMIT)


def _legacy_codebooks(info: dict, names: list, where: str) -> dict:
    """info["codebooks"] (name -> first table line) of images written before `codebook_base`."""
    legacy = info.get(LEGACY_CODEBOOKS_KEY, {})
    if not isinstance(legacy, dict):
        _fail(where, f"info.{LEGACY_CODEBOOKS_KEY} must map tensor names to lines, not {_show(legacy)}")
    for name, base in legacy.items():
        if name not in names:
            _fail(where, f"info.{LEGACY_CODEBOOKS_KEY} names {_show(name)}, which is no tensor")
        if base is not None:
            _int(base, where, f"info.{LEGACY_CODEBOOKS_KEY}[{name!r}]")
    return {name: base for name, base in legacy.items() if base is not None}


def _views(value, where: str, field: str) -> list[int]:
    """A non-empty JSON list of distinct bit widths 1..8."""
    if not isinstance(value, list) or not value:
        _fail(where, f"{field} must be a non-empty list of bit widths, not {_show(value)}")
    for k in value:
        _int(k, where, f"{field} entry", low=1, high=CODE_BITS + 1)
    if len(set(value)) != len(value):
        _fail(where, f"{field} {_show(value)} lists a bit width twice")
    return value


def _check_accumulator(acc, entries: list[dict], where: str) -> None:
    """info.accumulator: the AXE guarantee of the image (P, N, signed inputs, tile T, views),
    on symmetric affine tensors whose groups and inputs the tile divides."""
    here = f"{where}: info.accumulator"
    _fields(acc, here, ACCUMULATOR_FIELDS)
    _int(acc["bits"], here, "bits", low=2, high=MAX_ACCUMULATOR_BITS + 1)
    _int(acc["input_bits"], here, "input_bits", low=1, high=MAX_INPUT_BITS + 1)
    if acc["bits"] <= acc["input_bits"]:
        _fail(here, f"bits {acc['bits']} must exceed input_bits {acc['input_bits']}")
    _bool(acc["signed_inputs"], here, "signed_inputs")
    if acc["tile"] is not None:
        _int(acc["tile"], here, "tile", low=1)
    _views(acc["views"], here, "views")
    for entry in entries:
        tile = acc["tile"] or entry["group_size"]
        if not entry["symmetric"] or entry.get("codebook_base") is not None:
            _fail(here, f"tensor {entry['name']!r} is not a symmetric affine tensor: no integer guarantee")
        if entry["group_size"] % tile or entry["padded_in"] % tile:
            _fail(here, f"tile {tile} does not divide tensor {entry['name']!r}'s group size "
                        f"{entry['group_size']} and input size {entry['padded_in']}")


def _check_info(info, entries: list[dict], where: str) -> None:
    """The fields of `info` a reader relies on: views, view_weights, method and accumulator."""
    if not isinstance(info, dict):
        _fail(where, f"info must be a JSON object, not {_show(info)}")
    if info.get("method") is not None and (type(info["method"]) is not str or not info["method"]):
        _fail(where, f"info.method must be a method name, not {_show(info['method'])}")
    views = info.get("views")
    if views is not None:
        _views(views, where, "info.views")
    weights = info.get("view_weights")
    if weights is not None:
        if views is None or not isinstance(weights, list) or len(weights) != len(views):
            _fail(where, f"info.view_weights must give one weight per entry of info.views, not {_show(weights)}")
        for value in weights:
            if _finite(value, where, "info.view_weights entry") == 0:
                _fail(where, "info.view_weights entries must be > 0")
    if info.get("accumulator") is not None:
        _check_accumulator(info["accumulator"], entries, where)


def check_manifest(manifest, dram_bytes: int, where: str | os.PathLike) -> list[dict]:
    """Check a parsed manifest.json against a dram.bin of `dram_bytes` bytes; its tensor
    entries, with table sets listed only in info (older images) moved into `codebook_base`."""
    where = str(where)
    if not isinstance(manifest, dict) or manifest.get("format") != IMAGE_FORMAT:
        _fail(where, f"not a {IMAGE_FORMAT} manifest")
    _exact(manifest.get("version"), IMAGE_VERSION, where, "version", "unsupported image")
    _fields(manifest, where, MANIFEST_FIELDS, MANIFEST_OPTIONAL)
    _exact(manifest["line_bytes"], LINE_BYTES, where, "line_bytes", "unsupported")
    lines = _int(manifest["dram_lines"], where, "dram_lines", high=MAX_DRAM_LINES + 1)
    if dram_bytes < lines * LINE_BYTES:
        _fail(where, f"dram.bin is truncated: {dram_bytes} bytes, dram_lines needs {lines * LINE_BYTES}")
    if dram_bytes > lines * LINE_BYTES:
        _fail(where, f"dram.bin has {dram_bytes} bytes, dram_lines says {lines * LINE_BYTES}")
    info = manifest.get("info", {})
    if not isinstance(info, dict):
        _fail(where, f"info must be a JSON object, not {_show(info)}")
    _names(manifest.get("side", []), where, "side")
    tensors = manifest["tensors"]
    if not isinstance(tensors, list):
        _fail(where, f"tensors must be a list, not {_show(tensors)}")
    owned = []
    for index, entry in enumerate(tensors):
        label = _row_label(entry, index, "tensor")
        entry = _fields(entry, f"{where}: {label}", ENTRY_FIELDS, ENTRY_OPTIONAL)
        owned.append((label, _check_entry(entry, f"{where}: {label}", lines)))
    _check_unique(tensors, "tensor", where)
    legacy = _legacy_codebooks(info, [e["name"] for e in tensors], where)
    entries = [{**e, "codebook_base": legacy[e["name"]]} if e.get("codebook_base") is None and e["name"] in legacy
               else e for e in tensors]
    if legacy:      # the table sets moved in: check them as fields of their entries
        owned = [(f"tensor {e['name']!r}", _region_spans(e, f"{where}: tensor {e['name']!r}", lines))
                 for e in entries]
    _check_disjoint(owned, where)
    _check_info(info, entries, where)
    return entries


def check_side(listed: list[str], stored, where: str | os.PathLike) -> None:
    """The side tensors a manifest lists are exactly those side.safetensors holds."""
    missing = sorted(set(listed) - set(stored))
    extra = sorted(set(stored) - set(listed))
    if missing:
        _fail(str(where), f"lacks side tensor {missing[0]!r} that the manifest lists")
    if extra:
        _fail(str(where), f"holds side tensor {extra[0]!r} that the manifest does not list")


# --- traces ----------------------------------------------------------------------------

def _check_segment(segment, index: int, where: str, lines: int, start: int) -> int:
    """Check segment `index` (it must start at request `start`); its stop."""
    here = f"{where}: segment {index}"
    _fields(segment, here, SEGMENT_FIELDS)
    _int(segment["start"], here, "start")
    if segment["start"] != start:
        _fail(here, f"start {segment['start']} leaves a gap or overlap (the previous segment stops at {start})")
    stop = _int(segment["stop"], here, "stop", low=start)
    regions = segment["regions"]
    if not isinstance(regions, list) or len(regions) > spec.MAX_REGIONS:
        _fail(here, f"regions must be a list of at most {spec.MAX_REGIONS} rows, not {_show(regions)}")
    owned = []
    for number, region in enumerate(regions):
        label = _row_label(region, number, "region")
        row_where = f"{here} {label}"
        _fields(region, row_where, REGION_FIELDS, REGION_OPTIONAL)
        _check_name(region, row_where)
        if type(region["scale_format"]) is not int or region["scale_format"] not in set(ScaleFormat):
            _fail(row_where, f"scale_format {_show(region['scale_format'])} is not one of "
                             f"{', '.join(f'{f.value} ({f.name.lower()})' for f in ScaleFormat)}")
        owned.append((label, _region_spans(region, row_where, lines)))
    _check_unique(regions, "region", here)
    _check_disjoint(owned, here)
    return stop


def check_trace_json(meta, where: str | os.PathLike) -> None:
    """Check a parsed trace.json: fields, DRAM size, injected DRAM errors and segments."""
    where = str(where)
    if not isinstance(meta, dict) or meta.get("format") != TRACE_FORMAT:
        _fail(where, "not a smartquant trace")
    _exact(meta.get("version"), TRACE_VERSION, where, "version", "unsupported trace")
    _fields(meta, where, TRACE_FIELDS, TRACE_OPTIONAL)
    if type(meta["image"]) is not str or not meta["image"]:
        _fail(where, f"image must be a path, not {_show(meta['image'])}")
    dram_bytes = _int(meta["dram_bytes"], where, "dram_bytes", low=1, high=MAX_DRAM_LINES * LINE_BYTES + 1)
    if dram_bytes % LINE_BYTES:
        _fail(where, f"dram_bytes {dram_bytes} is not a multiple of {LINE_BYTES}")
    lines = dram_bytes // LINE_BYTES
    errors = meta.get("dram_errors", [])
    if not isinstance(errors, list):
        _fail(where, f"dram_errors must be a list of DRAM lines, not {_show(errors)}")
    for index, line in enumerate(errors):
        _int(line, where, f"dram_errors[{index}]", high=lines)
    requests = _int(meta["requests"], where, "requests")
    settings = meta["settings"]
    if not isinstance(settings, dict):
        _fail(where, f"settings must be a JSON object, not {_show(settings)}")
    if "load_via_host" in settings:
        _bool(settings["load_via_host"], where, "settings.load_via_host")
    segments = meta["segments"]
    if not isinstance(segments, list):
        _fail(where, f"segments must be a list, not {_show(segments)}")
    stop = 0
    for index, segment in enumerate(segments):
        stop = _check_segment(segment, index, where, lines, stop)
    if stop != requests:
        _fail(where, f"segments cover requests 0..{stop - 1}, not all {requests}")


def _first_bad(ok: np.ndarray) -> int | None:
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else None


def load_requests(path: str | os.PathLike, requests: int) -> dict[str, np.ndarray]:
    """The columns of requests.npz, checked: exactly REQUEST_COLUMNS with their dtypes,
    `requests` rows, opcodes in spec.Opcode, poison 0 or 1, addresses of LINE_ADDR_BITS."""
    where = str(path)
    try:    # a damaged zip raises one of many types (BadZipFile, EOFError, ValueError, OSError, ...)
        arrays = np.load(path, allow_pickle=False)
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with arrays:
            names = sorted(arrays.files)
            columns = {name: arrays[name] for name in names}
    except Exception as exc:    # noqa: BLE001 - every failure of a damaged file is reported the same way
        message = " ".join(str(exc).split())[:120]
        _fail(where, f"unreadable ({type(exc).__name__}: {message})")
    if names != sorted(REQUEST_COLUMNS):
        _fail(where, f"holds arrays {', '.join(names) or 'none'}, not {', '.join(sorted(REQUEST_COLUMNS))}")
    for name, (dtype, tail) in REQUEST_COLUMNS.items():
        column = columns[name]
        if not isinstance(column, np.ndarray):      # NpzFile hands a member without the .npy magic over as bytes
            _fail(where, f"{name} is not a .npy array")
        if column.dtype != dtype or column.shape != (requests,) + tail:
            want = f"{dtype}[{', '.join(map(str, (requests,) + tail))}]"
            _fail(where, f"{name} is {column.dtype}{list(column.shape)}, not {want} "
                         f"(trace.json says {requests} requests)")
    for name, ok, rule in (("opcode", np.isin(columns["opcode"], [int(o) for o in spec.Opcode]),
                            "a spec.Opcode (0 MemRd, 1 MemWr)"),
                           ("poison", columns["poison"] <= 1, "0 or 1"),
                           ("addr", columns["addr"] < (1 << spec.LINE_ADDR_BITS),
                            f"a {spec.LINE_ADDR_BITS}-bit line address")):
        index = _first_bad(ok)
        if index is not None:
            _fail(where, f"request {index}: {name} {int(columns[name][index])} is not {rule}")
    return columns
