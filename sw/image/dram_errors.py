"""Which responses a DRAM read error poisons: the controller's rule, from the request
sequence alone (docs/COVERIFY.md, "DRAM errors").

The controller reads DRAM in bursts into block buffers and answers from them:

- a quantized read (packed, int8, fp16, bf16 view at k bits) is served from the burst of
  its block's top plane lines, DRAM lines `8*block .. 8*block + k'-1`, where k' is the k
  of the read that fetched the burst; fp16 / bf16 reads also from one metadata line,
  `meta_base + (block - first block) * 32 // group_size` of the region;
- a raw read from a one-line burst of its line.

A burst with an error (AXI SLVERR / DECERR) on any beat is failed, and every response
served from a failed burst is poisoned (data zero), counted once as a DRAM error.

Which burst serves a read is the block cache's decision (hw/blocktags.py; `SlotModel`
here applies the same rules): `plane_slots` slots, each holding one burst.  A quantized
read hits a resident slot holding its block with k' >= its k; otherwise it fetches k lines
into the next slot in round-robin order (which then holds the block, and the slot holding
the block with fewer lines, if any, is no longer resident).  A raw read and a table load
(a table-lookup read whose (codebook, k) is not the table loaded last; before the read's
own lookup) take the next slot without making it resident.  A raw write makes the slot
holding its line (within the top k' lines of its block) not resident and forgets the
table.  Bad requests (the decoder's own errors) fetch nothing and change nothing.  A
failed burst stays resident: later hits get its poison until it is replaced.  These
decisions are made in request order, before any fetch, and a slot is not refilled while a
response reusing it is in flight, so the rule does not depend on timing or backpressure.
A metadata line is the same line whether fetched or reused, so metadata slots do not
change the poison.  Writes and table-set (codebook) reads are left out: errors are
injected on read data only, and on lines a table load does not read.

No `hw` or `sim` import here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import SmartquantError
from ...spec import (BLOCK_WEIGHTS, GROUPS_PER_META_LINE, META_SLOTS, PLANE_SLOTS, PLANES, Opcode, View,
                     lines_per_block, split_host_line_address)

FP_VIEWS = (View.FP16, View.BF16)


@dataclasses.dataclass
class Sources:
    """The DRAM lines each request's response is served from, by request number."""
    plane_first: np.ndarray     #: i64[n] first line of its plane burst (-1: none)
    plane_lines: np.ndarray     #: i64[n] lines of that burst (0: none)
    meta_line: np.ndarray       #: i64[n] its metadata line (-1: none)

    def lines(self) -> np.ndarray:
        """Every DRAM line some response is served from, sorted, each once."""
        has = self.plane_lines > 0
        starts, counts = self.plane_first[has], self.plane_lines[has]
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        planes = np.repeat(starts, counts) + within
        return np.unique(np.concatenate([planes, self.meta_line[self.meta_line >= 0]]))

    def poisoned(self, error_lines) -> np.ndarray:
        """bool[n]: the responses served from a burst holding one of `error_lines`."""
        errors = np.unique(np.asarray(list(error_lines), dtype=np.int64))
        if errors.size == 0:
            return np.zeros(len(self.plane_first), bool)
        # the first error line at or after each burst's start, inside the burst?
        at = np.minimum(np.searchsorted(errors, self.plane_first), errors.size - 1)
        plane = ((self.plane_lines > 0) & (errors[at] >= self.plane_first)
                 & (errors[at] < self.plane_first + self.plane_lines))
        return plane | np.isin(self.meta_line, errors)


def _region_holding(regions: list[dict], block: int) -> dict | None:
    """The lowest-numbered region of the table holding `block` (as the decoder picks)."""
    for region in regions:
        first = region["plane_base"] // PLANES
        if first <= block < first + region["blocks"]:
            return region
    return None


def meta_line_of(region: dict, block: int) -> int:
    """The metadata line holding the first group of `block` (a global block number)."""
    in_region = block - region["plane_base"] // PLANES
    return region["meta_base"] + in_region * BLOCK_WEIGHTS // region["group_size"] // GROUPS_PER_META_LINE


class SlotModel:
    """The block cache's lookup (hw/blocktags.py), one request at a time, in order: which
    slot serves it and whether it hit."""

    def __init__(self, plane_slots: int = PLANE_SLOTS, meta_slots: int = META_SLOTS):
        self.plane: list[tuple[int, int] | None] = [None] * plane_slots    #: (block, lines) resident
        self.meta: list[int | None] = [None] * meta_slots                   #: metadata line resident
        self.plane_next = self.meta_next = 0
        self.table = None           #: (codebook, k) loaded last

    def _take_plane(self, resident) -> int:
        slot = self.plane_next
        self.plane[slot] = resident
        self.plane_next = (slot + 1) % len(self.plane)
        return slot

    def plane_lookup(self, block: int, k: int) -> tuple[int, bool]:
        """(slot, hit) of a quantized read of `block` at `k`."""
        for slot, resident in enumerate(self.plane):
            if resident is not None and resident[0] == block and resident[1] >= k:
                return slot, True
        self.plane = [None if resident is not None and resident[0] == block else resident
                      for resident in self.plane]
        return self._take_plane((block, k)), False

    def raw_read(self) -> int:
        return self._take_plane(None)

    def loads_table(self, codebook: int, k: int) -> bool:
        """Whether a table-lookup read must load its table first (taking a slot)."""
        if self.table == (codebook, k):
            return False
        self.table = (codebook, k)
        self._take_plane(None)
        return True

    def meta_lookup(self, line: int) -> tuple[int, bool]:
        if line in self.meta:
            return self.meta.index(line), True
        slot = self.meta_next
        self.meta[slot] = line
        self.meta_next = (slot + 1) % len(self.meta)
        return slot, False

    def invalidate(self) -> None:
        """CSR_CACHE_INVALIDATE: nothing resident, no table (the pointers stay)."""
        self.plane = [None] * len(self.plane)
        self.meta = [None] * len(self.meta)
        self.table = None

    def write(self, line: int) -> None:
        """A raw write of DRAM line `line`."""
        block, place = divmod(line, PLANES)
        self.plane = [None if resident is not None and resident[0] == block and resident[1] > place else resident
                      for resident in self.plane]
        self.meta = [None if resident == line else resident for resident in self.meta]
        self.table = None


def response_sources(segments, opcode: np.ndarray, addr: np.ndarray, bad: np.ndarray,
                     plane_slots: int = PLANE_SLOTS) -> Sources:
    """Walk the requests in order (segments: objects with `regions`, `start`, `stop`), with
    the controller's block cache (`SlotModel`); `bad`: the decoder's errors."""
    n = len(addr)
    plane_first, plane_lines = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    meta_line = np.full(n, -1, np.int64)
    cache = SlotModel(plane_slots)
    for segment in segments:
        for i in range(segment.start, segment.stop):
            if bad[i]:
                continue
            view, k, offset = split_host_line_address(int(addr[i]))
            if opcode[i] == Opcode.MEM_WR:
                cache.write(offset)
                continue
            if view == View.RAW:
                cache.raw_read()
                plane_first[i], plane_lines[i] = offset, 1
                continue
            block = offset // lines_per_block(View(view), k)
            region = _region_holding(segment.regions, block)
            if region is None:
                raise SmartquantError(f"request {i} (block {block}) is in no region of its segment "
                                      f"but not marked as a bad request")
            if view in FP_VIEWS and region.get("codebook_base") is not None:
                cache.loads_table(region["codebook_base"], k)
            slot, _ = cache.plane_lookup(block, k)
            plane_first[i], plane_lines[i] = block * PLANES, cache.plane[slot][1]
            if view in FP_VIEWS:
                meta_line[i] = meta_line_of(region, block)
    return Sources(plane_first, plane_lines, meta_line)


def pick_error_lines(sources: Sources, count: int, rng: np.random.Generator) -> list[int]:
    """`count` distinct DRAM lines that responses are served from, drawn with `rng`, sorted."""
    lines = sources.lines()
    if count > lines.size:
        raise SmartquantError(f"--dram-errors {count}: the trace's reads fetch only {lines.size} DRAM lines")
    return sorted(int(v) for v in rng.choice(lines, size=count, replace=False))
