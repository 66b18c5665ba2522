"""Golden traces: the host request sequence a workload issues and every expected
response line, computed by the software golden model (docs/COVERIFY.md).

A trace is a directory:

- `trace.json`: format name, `version`, the image (a path, relative to the trace
  directory or absolute), the DRAM size in bytes, the settings it was made with,
  `dram_errors` (DRAM lines whose reads answer AXI SLVERR, sw/image/dram_errors.py),
  and `segments`: each a region table (at most `spec.MAX_REGIONS` entries, programmed
  into the CSRs before the segment) and the half-open request range it covers.
- `requests.npz`: one row per host request, in issue order: `opcode` (u8),
  `tag` (u8), `addr` (u64 host line address), `line` (u8[64]: the write payload of a
  MemWr, the expected data of a MemRd) and `poison` (u8: the expected poison bit of
  the response, DRS for reads, NDR for writes).  Data of a poisoned read is not compared.

No `hw` or `sim` import here: a trace is made from the software model alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ... import spec
from ...atomic import atomic_dir
from ...errors import SmartquantError
from ...spec import LINE_BYTES, Opcode, View
from . import golden
from .dram_errors import Sources, pick_error_lines, response_sources
from .image import Image
from .plan import plan_requests
from .validate import TRACE_FORMAT, TRACE_VERSION, check_trace_json, load_requests

#: orders without a parameter; `streams:S` and `window:W` take one (`parse_order`)
ORDERS = ("sequential", "strided", "random")
PARAMETER_ORDERS = ("streams", "window")
#: kinds of bad request `--errors` mixes in, used in turn
ERROR_KINDS = ("unmapped", "past_end", "write_quantized", "int8_asymmetric", "bad_k")
TAGS = 1 << spec.TAG_BITS
QUANTIZED_VIEWS = (View.PACKED, View.INT8, View.FP16, View.BF16)


@dataclasses.dataclass
class Segment:
    """Requests [start, stop) served with `regions` programmed into the region table."""
    regions: list[dict]
    start: int
    stop: int


@dataclasses.dataclass
class Trace:
    """An in-memory trace; arrays are indexed by request number."""
    image_path: Path
    dram_bytes: int
    settings: dict
    segments: list[Segment]
    opcode: np.ndarray          #: u8[n]
    tag: np.ndarray             #: u8[n]
    addr: np.ndarray            #: u64[n] host line addresses
    line: np.ndarray            #: u8[n, 64] write payload or expected read data
    poison: np.ndarray          #: u8[n] expected poison
    dram_errors: list[int] = dataclasses.field(default_factory=list)   #: DRAM lines answering SLVERR

    def __len__(self) -> int:
        return len(self.opcode)

    def load_image(self) -> Image:
        return Image.load(self.image_path)

    def describe(self, index: int) -> str:
        """'tag 5 MemRd addr 0x3400000012 (fp16 k=4 offset 18)' for request `index`."""
        addr = int(self.addr[index])
        view, k, offset = spec.split_host_line_address(addr)
        view_name = View(view).name.lower() if view in View._value2member_map_ else f"view{view}"
        op = "MemWr" if self.opcode[index] == Opcode.MEM_WR else "MemRd"
        return (f"request {index} tag {int(self.tag[index])} {op} addr {addr:#x} "
                f"({view_name} k={k} offset {offset})")


# --- views ----------------------------------------------------------------------

def parse_views(text: str) -> list[tuple[View, int]]:
    """'fp16:4,packed:3,raw' -> [(View.FP16, 4), (View.PACKED, 3), (View.RAW, 0)]."""
    views = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, bits = item.partition(":")
        try:
            view = View[name.upper()]
        except KeyError:
            raise SmartquantError(f"unknown view {name!r} (one of "
                                  f"{', '.join(v.name.lower() for v in View)})") from None
        if view == View.RAW:
            views.append((view, 0))
            continue
        try:
            k = int(bits)
        except ValueError:
            raise SmartquantError(f"view {item!r} needs bits, e.g. {name}:4") from None
        if not 1 <= k <= spec.CODE_BITS:
            raise SmartquantError(f"bits {k} in view {item!r} outside 1..{spec.CODE_BITS}")
        views.append((view, k))
    if not views:
        raise SmartquantError("no views given")
    return views


def view_label(view: View, k: int) -> str:
    return "raw" if view == View.RAW else f"{View(view).name.lower()}:{k}"


def all_views(image: Image) -> list[tuple[View, int]]:
    """Every (view, k) `image` serves: each quantized view at each k it was quantized for (its
    info's `views`), else at every k 1..CODE_BITS."""
    ks = sorted({k for k in image.info.get("views", ()) if isinstance(k, int) and 1 <= k <= spec.CODE_BITS})
    return [(view, k) for view in QUANTIZED_VIEWS for k in ks or range(1, spec.CODE_BITS + 1)]


def readable_tensors(image: Image, names: list[str], view: View) -> list[str]:
    """Those of `names` a trace reads in `view`: all but the asymmetric ones in int8 (a bad
    request there, which `--errors` covers as kind int8_asymmetric)."""
    return [n for n in names if view != View.INT8 or image.entry(n).symmetric]


def region_of(entry) -> dict:
    """The region-table row of a tensor (what the CSRs are programmed with)."""
    return {"name": entry.name, "plane_base": int(entry.plane_base), "meta_base": int(entry.meta_base),
            "blocks": int(entry.blocks), "meta_lines": int(entry.meta_lines),
            "group_size": int(entry.group_size), "symmetric": bool(entry.symmetric),
            "scale_format": int(entry.scale_format), "codebook_base": entry.codebook_base}


def _first_view_offset(region: dict, view: View, k: int) -> int:
    return (region["plane_base"] // spec.PLANES) * spec.lines_per_block(view, k)


def _tensor_lines(image: Image, region: dict, view: View, k: int):
    """(host addresses, expected lines) of a whole tensor in one view, in line order."""
    if view == View.RAW:
        first = [(region["plane_base"], region["blocks"] * spec.PLANES),
                 (region["meta_base"], region["meta_lines"])]
        addrs = np.concatenate([np.arange(b, b + n, dtype=np.uint64) for b, n in first])
        lines = image.dram.reshape(-1, LINE_BYTES)[addrs.astype(np.int64)]
        return addrs, lines
    if view == View.INT8 and not region["symmetric"]:
        raise SmartquantError(f"int8 view of asymmetric tensor {region['name']} "
                              f"(use --errors to test it as a bad request)")
    data = np.frombuffer(golden.read_view(image, region["name"], view, k), dtype=np.uint8)
    count = region["blocks"] * spec.lines_per_block(view, k)
    if data.size != count * LINE_BYTES:
        raise SmartquantError(f"golden read_view of {region['name']} gave {data.size} bytes, "
                              f"expected {count} lines")
    base = spec.host_line_address(view, k, _first_view_offset(region, view, k))
    return base + np.arange(count, dtype=np.uint64), data.reshape(count, LINE_BYTES)


# --- orders ---------------------------------------------------------------------

def parse_order(text: str) -> tuple[str, int]:
    """'random' -> ('random', 0); 'streams:4' -> ('streams', 4); 'window:128' -> ('window', 128).
    `streams:S`: S hosts each read their own contiguous range of the lines, round robin;
    `window:W`: a random order inside each window of W blocks."""
    name, colon, value = text.partition(":")
    if name in ORDERS and not colon:
        return name, 0
    if name not in PARAMETER_ORDERS:
        raise SmartquantError(f"unknown order {text!r} (one of {', '.join(ORDERS)}, streams:S, window:W)")
    try:
        count = int(value)
    except ValueError:
        raise SmartquantError(f"order {text!r} needs a whole number, e.g. {name}:4") from None
    if count < 1:
        raise SmartquantError(f"order {text!r}: {'S' if name == 'streams' else 'W'} must be >= 1")
    return name, count


def interleaved_streams(count: int, streams: int) -> np.ndarray:
    """The permutation of `count` lines read by `streams` hosts, each its own contiguous range
    (near-equal lengths, `np.array_split`), one line of each in turn; a finished stream drops out."""
    ranges = np.array_split(np.arange(count), streams)
    table = np.full((streams, max(len(r) for r in ranges)), -1)
    for row, lines in zip(table, ranges):
        row[:len(lines)] = lines
    order = table.T.reshape(-1)
    return order[order >= 0]


def windowed_shuffle(count: int, window_lines: int, rng: np.random.Generator) -> np.ndarray:
    """The permutation of `count` lines that shuffles each run of `window_lines` lines in place."""
    windows = [start + rng.permutation(min(window_lines, count - start)) for start in range(0, count, window_lines)]
    return np.concatenate(windows) if windows else np.arange(0)


def _strided(count: int, lines_per_block: int) -> np.ndarray:
    """Line j of every block, then line j+1 of every block: no output line reuses a fetch."""
    return np.arange(count).reshape(-1, lines_per_block).T.reshape(-1)


# --- bad requests ---------------------------------------------------------------

def _covered(regions: list[dict], block: int) -> bool:
    return any(r["plane_base"] // spec.PLANES <= block < r["plane_base"] // spec.PLANES + r["blocks"]
               for r in regions)


def _bad_request(kind: str, image: Image, regions: list[dict], dram_lines: int,
                 rng: np.random.Generator):
    """(opcode, addr, write payload) of one bad request, or None if `kind` does not
    apply to these regions.  Every choice is unmapped in the whole image as well."""
    region = regions[rng.integers(len(regions))]
    first_block = region["plane_base"] // spec.PLANES
    view = View(rng.choice([View.PACKED, View.FP16, View.BF16]))
    k = int(rng.integers(1, spec.CODE_BITS + 1))
    lpb = spec.lines_per_block(view, k)
    line_in_block = int(rng.integers(lpb))
    all_regions = [region_of(e) for e in image.entries]
    if kind == "unmapped":
        block = dram_lines // spec.PLANES + 1 + int(rng.integers(1024))
    elif kind == "past_end":
        candidates = [r for r in regions
                      if not _covered(all_regions, r["plane_base"] // spec.PLANES + r["blocks"])]
        if not candidates:
            return None
        region = candidates[rng.integers(len(candidates))]
        block = region["plane_base"] // spec.PLANES + region["blocks"]
    elif kind == "write_quantized":
        block = first_block + int(rng.integers(region["blocks"]))
        payload = rng.integers(0, 256, LINE_BYTES, dtype=np.uint8)
        return Opcode.MEM_WR, spec.host_line_address(view, k, block * lpb + line_in_block), payload
    elif kind == "int8_asymmetric":
        asymmetric = [r for r in regions if not r["symmetric"]]
        if not asymmetric:
            return None
        region = asymmetric[rng.integers(len(asymmetric))]
        view, k, lpb = View.INT8, int(rng.integers(1, spec.CODE_BITS + 1)), 8
        block = region["plane_base"] // spec.PLANES + int(rng.integers(region["blocks"]))
        line_in_block = int(rng.integers(lpb))
    elif kind == "bad_k":
        k = int(rng.choice([0] + list(range(spec.CODE_BITS + 1, 1 << spec.K_BITS))))
        offset = (first_block + int(rng.integers(region["blocks"]))) * 16 + int(rng.integers(16))
        return Opcode.MEM_RD, (int(view) << spec.VIEW_SHIFT) | (k << spec.K_SHIFT) | offset, None
    else:
        raise ValueError(kind)
    return Opcode.MEM_RD, spec.host_line_address(view, k, block * lpb + line_in_block), None


# --- generator ------------------------------------------------------------------

def make_trace(image: Image, image_path: str | os.PathLike, tensors: list[str] | None,
               views: list[tuple[View, int]], order: str = "sequential", errors: int = 0,
               seed: int = 0, load_via_host: bool = False, int8_symmetric_only: bool = False,
               dram_errors: int = 0) -> Trace:
    """Requests reading every line of each tensor at each view, in `order` (`parse_order`;
    `streams` and `random` across all of a segment's reads, `strided` and `window` within
    each tensor's view), with `errors`
    bad requests mixed in at random places (expected poison) and, with `load_via_host`,
    a prologue writing every DRAM line of the image through the raw view.  `dram_errors`
    DRAM lines the reads are served from answer SLVERR; the responses they poison
    (sw/image/dram_errors.py) expect poison and zero data.  Tensors are
    served in segments of at most spec.MAX_REGIONS regions.  An int8 view of an
    asymmetric tensor is an error, or skipped with `int8_symmetric_only`."""
    order_name, order_count = parse_order(order)
    by_name = {e.name: e for e in image.entries}
    names = list(tensors) if tensors else list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SmartquantError(f"unknown tensor {unknown[0]!r} (image has {len(by_name)} tensors)")
    if errors < 0 or dram_errors < 0:
        raise SmartquantError("--errors and --dram-errors must be >= 0")
    rng = np.random.default_rng(seed)
    dram_lines = image.dram.size // LINE_BYTES
    columns = []            # (opcode, addr, line, poison) arrays, in issue order
    segments, count = [], 0
    chunks = [names[i:i + spec.MAX_REGIONS] for i in range(0, len(names), spec.MAX_REGIONS)]
    for chunk_index, chunk in enumerate(chunks):
        regions = [region_of(by_name[n]) for n in chunk]
        start = count
        if load_via_host and chunk_index == 0:
            columns.append((np.full(dram_lines, Opcode.MEM_WR, np.uint8),
                            spec.host_line_address(View.RAW, 0, 0) + np.arange(dram_lines, dtype=np.uint64),
                            image.dram.reshape(dram_lines, LINE_BYTES), np.zeros(dram_lines, np.uint8)))
            count += dram_lines
        reads = []
        for region in regions:
            for view, k in views:
                if view == View.INT8 and int8_symmetric_only and not region["symmetric"]:
                    continue
                addr, data = _tensor_lines(image, region, view, k)
                lines_per_block = spec.PLANES if view == View.RAW else spec.lines_per_block(view, k)
                if order_name == "strided" and view != View.RAW:
                    perm = _strided(len(addr), lines_per_block)
                    addr, data = addr[perm], data[perm]
                elif order_name == "window":
                    perm = windowed_shuffle(len(addr), order_count * lines_per_block, rng)
                    addr, data = addr[perm], data[perm]
                reads.append((addr, data))
        addr = np.concatenate([a for a, _ in reads])
        data = np.concatenate([d for _, d in reads])
        if order_name in ("random", "streams"):
            perm = (rng.permutation(len(addr)) if order_name == "random"
                    else interleaved_streams(len(addr), order_count))
            addr, data = addr[perm], data[perm]
        opcode = np.full(len(addr), Opcode.MEM_RD, np.uint8)
        poison = np.zeros(len(addr), np.uint8)
        chunk_errors = errors // len(chunks) + (chunk_index < errors % len(chunks))
        if chunk_errors:
            bad = [_make_bad(ERROR_KINDS[i % len(ERROR_KINDS)], image, regions, dram_lines, rng)
                   for i in range(chunk_errors)]
            places = np.sort(rng.integers(0, len(addr) + 1, len(bad)))
            opcode = np.insert(opcode, places, [b[0] for b in bad])
            addr = np.insert(addr, places, np.array([b[1] for b in bad], np.uint64))
            data = np.insert(data, places, np.stack([b[2] for b in bad]), axis=0)
            poison = np.insert(poison, places, 1)
        columns.append((opcode, addr, data, poison))
        count += len(addr)
        segments.append(Segment(regions, start, count))

    settings = {"tensors": names, "views": [view_label(v, k) for v, k in views], "order": order,
                "errors": errors, "seed": seed, "load_via_host": load_via_host,
                "int8_symmetric_only": int8_symmetric_only, "dram_errors": dram_errors}
    opcode, addr, line, poison = (np.concatenate(c) for c in zip(*columns))
    trace = Trace(Path(image_path), int(image.dram.size), settings, segments, opcode,
                  (np.arange(count) % TAGS).astype(np.uint8), addr, line, poison)
    if dram_errors:         # drawn last, so the requests are those of the trace without them
        sources = trace_sources(trace)
        expect_dram_errors(trace, pick_error_lines(sources, dram_errors, rng), sources)
    return trace


def trace_sources(trace: Trace) -> Sources:
    """The DRAM lines each response of `trace` (without DRAM errors yet) is served from."""
    return response_sources(trace.segments, trace.opcode, trace.addr, trace.poison)


def expect_dram_errors(trace: Trace, error_lines: list[int], sources: Sources) -> None:
    """Make reads of `error_lines` answer SLVERR in `trace` (which has no DRAM errors yet;
    `sources` = trace_sources(trace)): the responses they poison expect poison, zero data."""
    if trace.dram_errors:
        raise ValueError("the trace already has DRAM errors")
    failed = sources.poisoned(error_lines)
    trace.poison = trace.poison | failed.astype(np.uint8)
    trace.line = trace.line.copy()
    trace.line[failed] = 0
    trace.dram_errors = sorted(int(v) for v in error_lines)


def plan_trace(image: Image, image_path: str | os.PathLike, plan, view: View = View.FP16) -> Trace:
    """The requests a host issues to fetch a precision plan's weights (sw/image/plan.py) in `view`,
    in plan order, with the golden response of each: what the device sees during inference."""
    names = list(dict.fromkeys(p.tensor for p in plan))
    if not names or len(names) > spec.MAX_REGIONS:
        raise SmartquantError(f"a plan trace needs 1..{spec.MAX_REGIONS} tensors, the plan has {len(names)}")
    addr = np.array(plan_requests(image, plan, view), dtype=np.uint64)
    line = np.stack([np.frombuffer(golden.response_line(image, int(a))[0], np.uint8) for a in addr])
    settings = {"plan": [p.to_json() for p in plan], "view": View(view).name.lower()}
    return Trace(Path(image_path), int(image.dram.size), settings,
                 [Segment([region_of(image.entry(n)) for n in names], 0, len(addr))],
                 np.full(len(addr), Opcode.MEM_RD, np.uint8), (np.arange(len(addr)) % TAGS).astype(np.uint8),
                 addr, line, np.zeros(len(addr), np.uint8))


def _make_bad(kind, image, regions, dram_lines, rng):
    """A bad request of `kind` (or of the first kind that applies) with its expected line;
    checks that the golden model also answers poison for a bad read."""
    for candidate in (kind,) + ERROR_KINDS:
        made = _bad_request(candidate, image, regions, dram_lines, rng)
        if made is not None:
            break
    opcode, addr, payload = made
    if opcode == Opcode.MEM_RD:
        _, poison = golden.response_line(image, addr)
        if not poison:
            raise SmartquantError(f"golden model answers bad request {addr:#x} ({candidate}) "
                                  f"without poison")
        payload = np.zeros(LINE_BYTES, np.uint8)
    return opcode, addr, payload


# --- files ----------------------------------------------------------------------

def save_trace(trace: Trace, path: str | os.PathLike, embed_image: bool = False) -> None:
    """Write `trace` as a trace directory (atomically); `embed_image` copies the image in."""
    path = Path(path)
    with atomic_dir(path, "trace") as tmp:
        if embed_image:
            trace.load_image().save(tmp / "image")
            image_ref = "image"
        else:
            image_ref = os.path.relpath(trace.image_path.resolve(), path.resolve())
        meta = {"format": TRACE_FORMAT, "version": TRACE_VERSION, "image": image_ref,
                "dram_bytes": trace.dram_bytes, "requests": len(trace),
                "settings": trace.settings, "dram_errors": trace.dram_errors,
                "segments": [dataclasses.asdict(s) for s in trace.segments]}
        (tmp / "trace.json").write_text(json.dumps(meta, indent=2) + "\n")
        np.savez(tmp / "requests.npz", opcode=trace.opcode, tag=trace.tag, addr=trace.addr,
                 line=trace.line, poison=trace.poison)
    if embed_image:
        trace.image_path = path / "image"


def load_trace(path: str | os.PathLike) -> Trace:
    """Read a trace directory, every field checked first (sw/image/validate.py); a one-line
    SmartquantError on anything malformed."""
    path = Path(path)
    try:
        meta = json.loads((path / "trace.json").read_text())
    except FileNotFoundError:
        raise SmartquantError(f"{path}: no trace.json (not a trace directory)") from None
    except (OSError, ValueError, RecursionError) as exc:    # ValueError: JSONDecodeError, UnicodeDecodeError
        raise SmartquantError(f"{path}/trace.json unreadable: {exc}") from None
    check_trace_json(meta, path / "trace.json")
    columns = load_requests(path / "requests.npz", meta["requests"])
    image_path = Path(meta["image"])
    if not image_path.is_absolute():
        image_path = path / image_path
    return Trace(image_path, meta["dram_bytes"], meta["settings"],
                 [Segment(**s) for s in meta["segments"]], **columns,
                 dram_errors=list(meta.get("dram_errors", [])))
