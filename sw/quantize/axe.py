"""AXE: accumulator-aware integer weights (Colbert et al., "Accumulator-Aware
Post-Training Quantization", 2024), for a P-bit signed accumulator and N-bit inputs.

Integer weights.  The device stores 8-bit codes q with a group zero point z; the
k-bit view rebuilds r_k(q) on the 8-bit grid (DESIGN.md section 2).  An integer
dot-product unit multiplies v = r_k(q) - z by the integer inputs x and applies the
group scale afterwards, so the bound applies to v = r_k - z *on the 8-bit grid*
(for symmetric formats, z = 128, v is exactly the int8 view the device serves).
A tile of T consecutive inputs (T divides the group size, so one scale covers it)
is summed in the P-bit inner accumulator; the G/T tile sums of a group go to an
outer accumulator whose width `outer_accumulator_bits` reports.

Worst case.  With x in [x_min, x_max] and S+ / S- the sums of the positive
weights / of the magnitudes of the negative ones in a tile,
    max_x v.x = x_max S+ - x_min S-,      min_x v.x = x_min S+ - x_max S-,
and both must lie in [-2^(P-1), 2^(P-1) - 1].

Bounds (cited for comparison; `side_budgets` is what the constraints enforce):
  * A2Q  (Colbert et al., ICCV 2023, Eq. 15):  ||v||_1 <= (2^(P-1) - 1) * 2^(1_signed(x) - N)
  * A2Q+ (Colbert et al., 2024, zero-centred weights, sum v = 0):
                                               ||v||_1 <= (2^P - 2) / (2^N - 1)
  * here, per side (AXE keeps the positive and negative sums apart, so no exact
    zero-centring is needed):  S+ <= B+, S- <= B- with
      unsigned x:  B+ = floor((2^(P-1) - 1) / (2^N - 1)),  B- = floor(2^(P-1) / (2^N - 1))
      signed x:    B+ = B- = floor((2^(P-1) - 1) / (2^N - 1))
    which the worst-case formulas above turn into the P-bit range; S+ + S- <= B+ + B-
    is the A2Q+ bound.

Constraints: the *soft* one projects each tile's real-valued integer-domain
weights w/s onto the L1 ball of radius B+ + B- before rounding
(`project_l1_ball`, Duchi et al. 2008); the *hard* one (`AccumulatorClamp`)
clamps each newly rounded integer weight to what the tile's running positive and
negative sums still allow, and is what makes the guarantee hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import SmartquantError
from ..codes import view_code
from .accumulator_model import MAX_ACCUMULATOR_BITS, MAX_INPUT_BITS



@dataclass(frozen=True)
class AccumulatorSpec:
    """A P-bit signed accumulator fed by N-bit inputs, summing tiles of `tile` products."""
    accumulator_bits: int          #: P
    input_bits: int                #: N
    signed_inputs: bool = False
    tile: int | None = None        #: T inputs per inner accumulation; None = the group size

    def __post_init__(self):
        p, n = self.accumulator_bits, self.input_bits
        if not 2 <= p <= MAX_ACCUMULATOR_BITS:
            raise SmartquantError(f"accumulator width P={p} is not in 2..{MAX_ACCUMULATOR_BITS} bits")
        if not 1 <= n <= MAX_INPUT_BITS:
            raise SmartquantError(f"input width N={n} is not in 1..{MAX_INPUT_BITS} bits")
        if self.tile is not None and self.tile < 1:
            raise SmartquantError(f"tile size T={self.tile} must be positive")
        if min(self.side_budgets()) < 1:
            raise SmartquantError(
                f"accumulator P={p} bits is too small for any non-zero weight with "
                f"{n}-bit {'signed' if self.signed_inputs else 'unsigned'} inputs "
                f"(needs P >= {n + 1})")

    def input_range(self) -> tuple[int, int]:
        """(x_min, x_max) of the N-bit inputs."""
        n = self.input_bits
        if self.signed_inputs:
            return -(1 << (n - 1)), (1 << (n - 1)) - 1
        return 0, (1 << n) - 1

    def accumulator_range(self) -> tuple[int, int]:
        """(min, max) a P-bit two's-complement accumulator holds."""
        return -(1 << (self.accumulator_bits - 1)), (1 << (self.accumulator_bits - 1)) - 1

    def side_budgets(self) -> tuple[int, int]:
        """(B+, B-): the largest tile sums of positive weights / of negative-weight magnitudes."""
        top = (1 << (self.accumulator_bits - 1)) - 1
        span = (1 << self.input_bits) - 1
        if self.signed_inputs:
            return top // span, top // span
        return top // span, (top + 1) // span

    def a2q_l1_bound(self) -> float:
        """A2Q: ||v||_1 <= (2^(P-1) - 1) * 2^(1_signed - N)."""
        return ((1 << (self.accumulator_bits - 1)) - 1) * 2.0 ** (int(self.signed_inputs) - self.input_bits)

    def a2q_plus_l1_bound(self) -> float:
        """A2Q+ (zero-centred): ||v||_1 <= (2^P - 2) / (2^N - 1)."""
        return ((1 << self.accumulator_bits) - 2) / ((1 << self.input_bits) - 1)

    def tile_for(self, padded_in: int, group_size: int) -> int:
        """The tile size for a tensor, checked: it divides the input size and the group."""
        tile = self.tile or group_size
        if padded_in % tile:
            raise SmartquantError(f"tile T={tile} does not divide the input size {padded_in}")
        if group_size % tile:
            raise SmartquantError(f"tile T={tile} spans several scale groups of {group_size} "
                                  f"weights; an integer accumulator needs T to divide the group")
        return tile


def smallest_magnitude(k: int) -> int:
    """Smallest |r_k - 128| of a symmetric k-bit view: 2^(7-k) (0 at k = 8)."""
    return 0 if k == 8 else 1 << (7 - k)


def check_feasible(spec: AccumulatorSpec, views, tile: int) -> None:
    """Raise if a tile of the coarsest view cannot fit: for k < 8 no code is 0, so
    each of the T weights costs at least 2^(7-k) of one side's budget."""
    m = smallest_magnitude(min(views))
    if m == 0:
        return
    pos, neg = spec.side_budgets()
    if pos // m + neg // m < tile:
        raise SmartquantError(
            f"accumulator P={spec.accumulator_bits} bits is too small for the {min(views)}-bit "
            f"view: a tile of {tile} weights needs at least {m} each "
            f"(side budgets {pos}/{neg})")


def narrowest_accumulator(input_bits: int, signed_inputs: bool, tile: int, views) -> int:
    """Smallest P for which AXE can fit a tile of `tile` weights at every view in `views`."""
    for p in range(input_bits + 1, MAX_ACCUMULATOR_BITS + 1):
        try:
            check_feasible(AccumulatorSpec(p, input_bits, signed_inputs, tile), views, tile)
            return p
        except SmartquantError:
            continue
    raise SmartquantError(f"no accumulator up to {MAX_ACCUMULATOR_BITS} bits fits tiles of {tile}")


def integer_weights(q, k: int) -> np.ndarray:
    """v = r_k(q) - z (int64, out x padded_in) of a QuantizedTensor's k-bit view."""
    zeros = np.repeat(q.zeros.astype(np.int64), q.group_size, axis=-1)
    return view_code(q.codes, k).astype(np.int64) - zeros.reshape(q.codes.shape)


def project_l1_ball(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of each row of `v` onto {||u||_1 <= radius} (Duchi et al. 2008, Fig. 1)."""
    mag = v.abs()
    inside = mag.sum(-1) <= radius
    if bool(inside.all()):
        return v
    sorted_mag, _ = torch.sort(mag, dim=-1, descending=True)
    cumsum = torch.cumsum(sorted_mag, dim=-1)
    index = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype)
    active = sorted_mag * index > cumsum - radius
    rho = active.to(torch.int64).cumsum(-1).argmax(-1, keepdim=True)
    theta = (torch.gather(cumsum, -1, rho) - radius) / (rho + 1).to(v.dtype)
    projected = torch.sign(v) * torch.clamp(mag - theta, min=0)
    return torch.where(inside[..., None], v, projected)


class AccumulatorClamp:
    """The hard per-step constraint of one rounding pass at view k.

    Keeps, per (row, tile), the running sums S+ / S- of the integers chosen so far.
    `interval(j)` is the range the integer of column j may take so that the tile
    can still be completed within (B+, B-); `commit(j, v)` records the choice.

    * Coarsest pass (`previous` is None): every later column of the tile still
      needs at least m = 2^(7-k) on one side, so with a = B+ - S+, b = B- - S- and
      n later columns, v may be at most a - m * max(0, n - floor(b/m)) (and the
      mirror image below).  Invariant floor(a/m) + floor(b/m) >= n + 1 keeps +m or
      -m available at every step.
    * Refining pass (`previous` = the integers of the coarser view the codes
      refine): the remaining columns reserve what they had in that view, R+ / R-,
      so v is allowed in [-(B- - S- - R-), B+ - S+ - R+]; the code between 0 and
      the coarser value inside the coarser bucket always fits (for z = 128 that
      bucket never straddles 0), so every named view ends within budget.
    """

    def __init__(self, spec: AccumulatorSpec, rows: int, cols: int, tile: int, k: int,
                 previous: torch.Tensor | None = None):
        self.tile = tile
        self.pos_budget, self.neg_budget = spec.side_budgets()
        tiles = cols // tile
        self.pos_used = torch.zeros(rows, tiles, dtype=torch.int64)
        self.neg_used = torch.zeros(rows, tiles, dtype=torch.int64)
        self.smallest = smallest_magnitude(k)
        self.previous = previous
        if previous is None:
            self.cols_left = torch.full((tiles,), tile, dtype=torch.int64)
        else:
            tiled = previous.reshape(rows, tiles, tile)
            self.pos_rest = tiled.clamp(min=0).sum(-1)
            self.neg_rest = (-tiled).clamp(min=0).sum(-1)

    def interval(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_min, v_max) per row for column j (in the tensor's column order)."""
        t = j // self.tile
        a = self.pos_budget - self.pos_used[:, t]
        b = self.neg_budget - self.neg_used[:, t]
        if self.previous is not None:
            p = self.previous[:, j]
            return -(b - (self.neg_rest[:, t] - (-p).clamp(min=0))), a - (self.pos_rest[:, t] - p.clamp(min=0))
        m = self.smallest
        if m == 0:
            return -b, a
        later = self.cols_left[t] - 1
        v_max = a - m * (later - b // m).clamp(min=0)
        v_min = -(b - m * (later - a // m).clamp(min=0))
        # no code lies strictly between -m and m: an empty side falls back to the other
        return torch.where(v_min <= -m, v_min, m), torch.where(v_max >= m, v_max, -m)

    def commit(self, j: int, v: torch.Tensor) -> None:
        t = j // self.tile
        self.pos_used[:, t] += v.clamp(min=0)
        self.neg_used[:, t] += (-v).clamp(min=0)
        if self.previous is None:
            self.cols_left[t] -= 1
        else:
            p = self.previous[:, j]
            self.pos_rest[:, t] -= p.clamp(min=0)
            self.neg_rest[:, t] -= (-p).clamp(min=0)


@dataclass
class WorstCaseReport:
    """Worst-case accumulator values of a tensor under an AccumulatorSpec."""
    ok: bool                      #: every view, channel and tile inside the P-bit range
    tile: int
    per_view: dict                #: k -> dict(max, min, overflowing_tiles, outer_bits)


def bits_for_range(low: int, high: int) -> int:
    """Smallest two's-complement width holding every integer in [low, high]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= low and high <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def tile_extremes(v: np.ndarray, spec: AccumulatorSpec, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(max, min) over inputs of each tile's dot product, arrays (out, tiles)."""
    x_min, x_max = spec.input_range()
    tiled = v.reshape(v.shape[0], -1, tile)
    pos = np.clip(tiled, 0, None).sum(-1)
    neg = np.clip(-tiled, 0, None).sum(-1)
    return x_max * pos - x_min * neg, x_min * pos - x_max * neg


def worst_case_check(q, spec: AccumulatorSpec, views) -> WorstCaseReport:
    """For every output channel, view k in `views` and tile: the dot product with
    inputs at their extremes (x_max where v > 0 and x_min where v < 0 for the
    maximum, the other way round for the minimum) stays in the P-bit range.
    Also reports the outer-accumulator width each view's group sums need."""
    views = sorted(set(views))
    if not views or not all(1 <= k <= 8 for k in views):
        raise SmartquantError(f"views {views} must be bit widths in 1..8")
    tile = spec.tile_for(q.codes.shape[1], q.group_size)
    acc_min, acc_max = spec.accumulator_range()
    per_view, ok = {}, True
    for k in views:
        v = integer_weights(q, k)
        high, low = tile_extremes(v, spec, tile)
        bad = (high > acc_max) | (low < acc_min)
        ok &= not bad.any()
        tiles_per_group = q.group_size // tile
        group_high = high.reshape(high.shape[0], -1, tiles_per_group).sum(-1)
        group_low = low.reshape(low.shape[0], -1, tiles_per_group).sum(-1)
        per_view[k] = dict(max=int(high.max()), min=int(low.min()),
                           overflowing_tiles=int(bad.sum()),
                           outer_bits=bits_for_range(int(group_low.min()), int(group_high.max())))
    return WorstCaseReport(ok=bool(ok), tile=tile, per_view=per_view)


def outer_accumulator_bits(spec: AccumulatorSpec, tiles_per_group: int) -> int:
    """Outer accumulator width that sums `tiles_per_group` P-bit tile results without
    overflow for any weights within budget: P + ceil(log2(tiles))."""
    return spec.accumulator_bits + max(0, (tiles_per_group - 1).bit_length())


def worst_case_inputs(v: np.ndarray, spec: AccumulatorSpec, maximise: bool = True) -> np.ndarray:
    """Inputs reaching the extremes of `tile_extremes`: x_max where v > 0 and x_min
    where v < 0 (maximise), the other way round to minimise; 0-weights get x_max."""
    x_min, x_max = spec.input_range()
    high, low = (x_max, x_min) if maximise else (x_min, x_max)
    return np.where(v > 0, high, np.where(v < 0, low, x_max)).astype(np.int64)
