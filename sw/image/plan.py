"""A precision plan and what it costs the device.

A plan is a list of `PlanEntry(tensor, row_start, row_stop, k)`: rows
[row_start, row_stop) of the stored tensor are read at k bits.  The store
serves whole 512-weight blocks of the *flattened, padded* tensor (rows of
`padded_in` weights), so a row range must start and end on a block boundary:
`row * padded_in` a multiple of 512 (the tensor's last row may end inside its
last, padded block).  For MiniLM (padded_in 384 or 1536) that means ranges of
a multiple of 4 rows; an attention head (32 rows) is 24 blocks.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from ...errors import SmartquantError
from ...spec import BLOCK_WEIGHTS, GROUPS_PER_META_LINE, LINE_BYTES, PLANES, View, host_line_address, lines_per_block
from .golden import view_offset


@dataclasses.dataclass(frozen=True, order=True)
class PlanEntry:
    """Rows [row_start, row_stop) of `tensor` at `k` bits."""
    tensor: str
    row_start: int
    row_stop: int
    k: int

    def to_json(self) -> list:
        return [self.tensor, self.row_start, self.row_stop, self.k]


Plan = list[PlanEntry]


def entry_blocks(entry, row_start: int, row_stop: int) -> range:
    """Blocks (indices within the tensor) that hold rows [row_start, row_stop)."""
    return range(row_start * entry.padded_in // BLOCK_WEIGHTS,
                 -(-row_stop * entry.padded_in // BLOCK_WEIGHTS))


def check_plan(image, plan: Iterable[PlanEntry], required: Iterable[str] = ()) -> None:
    """Raise SmartquantError unless each entry is block-aligned, in range, 1 <= k <= 8, no two
    entries overlap, and every tensor the plan names (and every `required` one) is covered
    completely."""
    covered: dict[str, list[tuple[int, int]]] = {}
    for p in plan:
        e = image.entry(p.tensor)
        rows = e.shape[0]
        if not 0 <= p.row_start < p.row_stop <= rows:
            raise SmartquantError(f"plan rows {p.row_start}..{p.row_stop} outside {p.tensor!r} (0..{rows})")
        if not 1 <= p.k <= PLANES:
            raise SmartquantError(f"plan k={p.k} for {p.tensor!r} outside 1..{PLANES}")
        for row in (p.row_start, p.row_stop):
            if (row * e.padded_in) % BLOCK_WEIGHTS and row != rows:
                raise SmartquantError(
                    f"plan row {row} of {p.tensor!r} splits a {BLOCK_WEIGHTS}-weight block "
                    f"(row * padded_in {e.padded_in} must be a multiple of {BLOCK_WEIGHTS})")
        covered.setdefault(p.tensor, []).append((p.row_start, p.row_stop))
    for name, ranges in covered.items():
        ranges.sort()
        for (_, stop), (start, _) in zip(ranges, ranges[1:]):
            if start < stop:
                raise SmartquantError(f"plan ranges of {name!r} overlap at row {start}")
    for name in set(covered) | set(required):
        rows = sum(b - a for a, b in covered.get(name, []))
        if rows != image.entry(name).shape[0]:
            raise SmartquantError(f"plan covers {rows} of {image.entry(name).shape[0]} rows of {name!r}")


def plan_requests(image, plan: Iterable[PlanEntry], view: View = View.FP16) -> list[int]:
    """Host line addresses the device sees when the host reads the plan in `view`, in order."""
    addrs = []
    for p in plan:
        e = image.entry(p.tensor)
        per_block = lines_per_block(view, p.k)
        for b in entry_blocks(e, p.row_start, p.row_stop):
            first = view_offset(e, view, p.k, b)
            addrs.extend(host_line_address(view, p.k, first + j) for j in range(per_block))
    return addrs


def plan_dram_bytes(image, plan: Iterable[PlanEntry], k: int | None = None) -> int:
    """DRAM bytes the device reads to serve the plan (`k` overrides every entry's k, e.g. 8 for
    the int8 reference): k plane lines per block plus the metadata lines of those blocks' groups,
    counted once per entry (the device reads an entry's blocks as one sequential run)."""
    total = 0
    for p in plan:
        e = image.entry(p.tensor)
        blocks = entry_blocks(e, p.row_start, p.row_stop)
        groups_per_block = BLOCK_WEIGHTS // e.group_size
        first_group = blocks.start * groups_per_block
        last_group = blocks.stop * groups_per_block - 1
        meta_lines = last_group // GROUPS_PER_META_LINE - first_group // GROUPS_PER_META_LINE + 1
        total += (len(blocks) * (k or p.k) + meta_lines) * LINE_BYTES
    return total


def plan_average_bits(image, plan: Iterable[PlanEntry]) -> float:
    """Average k over the plan's real weights (rows * in), bits per weight."""
    bits = weights = 0
    for p in plan:
        n = (p.row_stop - p.row_start) * image.entry(p.tensor).shape[1]
        bits += n * p.k
        weights += n
    return bits / weights if weights else 0.0


def uniform_plan(image, k: int, tensors: Iterable[str] | None = None) -> Plan:
    """Every row of every (or the named) stored tensor at `k` bits."""
    names = list(tensors) if tensors is not None else [e.name for e in image.entries]
    return [PlanEntry(n, 0, image.entry(n).shape[0], k) for n in names]
