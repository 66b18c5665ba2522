"""Joint multi-view quantization (after MatGPTQ, "Matryoshka GPTQ", arXiv 2602.03537):
one 8-bit code per weight chosen for all the views k a policy reads at once.

Objective, per weight w of a group with scale s and zero z, over the target views K
with weights lambda_k:
    J(q) = sum_k lambda_k (w - s (r_k(q) - z))^2,     r_k = `codes.view_code(q, k)`.
In code units t = w / s + z it is  s^2 [ L t^2 - 2 t A(q) + B(q) ]  with
    L = sum_k lambda_k,  A(q) = sum_k lambda_k r_k(q),  B(q) = sum_k lambda_k r_k(q)^2,
so the best code is the lowest of 256 lines B(q) - 2 t A(q) at t: `JointCodes` keeps
their lower envelope (a step function of t: every code is on it) and looks the code up by its unit cell.

* `JointClip`: per-group scale/zero search under J (range multipliers p as GPTQ's
  clipping search), codes chosen by J, in place of the 8-bit min/max grid;
* `JointGPTQ`: GPTQ's column loop (Frantar et al. 2023, Alg. 1) choosing each column's
  codes by J, with one of two error feedbacks:
  - mean (MatGPTQ's multi-view error): one working copy W', the error of the lambda-weighted mean
    reconstruction fed back, e_j = (w'_j - sum_k lambda_k w_k,j / L) / U_jj;
  - per-view (default): one working copy W'_k per view, each fed its own view's error
    e_k,j = (w'_k,j - w_k,j) / U_jj, and the code minimising sum_k lambda_k (w'_k,j - w_k,j)^2;
    a fine view then compensates its own errors instead of carrying the coarse views'.

  With an anchor of K bits (`anchor=K`, per-view feedback only), two such passes over the
  original weights: the first over the views <= K and the finest view fixes the top K bits
  of every code, the second over the views > K picks the low bits inside each K-bit bucket
  (as incremental upscaling does, `nested_ptq`).  The views between K and the finest then
  no longer pull on the coarse bits; the finest view stays in the first pass, or the
  buckets would drift from the weights and view 8 could not follow them.

    joint = JointGPTQ(in_features)
    for x in calibration_inputs: joint.add_batch(x)
    q = joint.quantize(weight, views=(3, 4, 8), view_weights=(1, 1, 64), per_view=True)
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import SmartquantError
from ...spec import CODE_BITS
from ..codes import view_code
from .gptq import GPTQ
from .quantizer import CODE_LEVELS, CHUNK_WEIGHTS, DEFAULT_SHRINK_GRID, NestedMSEClip, QuantizedTensor, StoreFormat
from .sequential import sequential_round

#: target views when the caller names none
DEFAULT_VIEWS = (3, 4, 8)
#: default lambda of the 8-bit view (every other view: 1).  A k-bit view's squared error scales
#: as 4^-k, so equal weights let the coarse views decide; 64 keeps view 8 near its own GPTQ
#: while views 3 and 4 keep most of their gain (docs/PTQ.md, measured on MiniLM)
FINE_VIEW_WEIGHT = 64.0


def check_view_weights(views, view_weights) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(views, weights) sorted by view: bit widths in 1..8, one finite weight > 0 each
    (when `view_weights` is None: 1, and FINE_VIEW_WEIGHT for view 8)."""
    views = tuple(int(k) for k in views)
    if not views or len(set(views)) != len(views) or not all(1 <= k <= CODE_BITS for k in views):
        raise SmartquantError(f"views {list(views)} must be distinct bit widths in 1..{CODE_BITS}")
    weights = (tuple(FINE_VIEW_WEIGHT if k == CODE_BITS else 1.0 for k in views) if view_weights is None
               else tuple(float(w) for w in view_weights))
    if len(weights) != len(views):
        raise SmartquantError(f"{len(weights)} view weights for {len(views)} views {list(views)}")
    if not all(np.isfinite(w) and w > 0 for w in weights):
        raise SmartquantError(f"view weights {list(weights)} must be finite numbers > 0")
    pairs = sorted(zip(views, weights))
    return tuple(k for k, _ in pairs), tuple(w for _, w in pairs)


class JointCodes:
    """The code minimising J for any t (code units), and the weighted-mean reconstruction."""

    def __init__(self, views=DEFAULT_VIEWS, view_weights=None):
        self.views, self.view_weights = check_view_weights(views, view_weights)
        q = np.arange(CODE_LEVELS + 1, dtype=np.uint8)
        # codes that agree on every named view are the same point: keep the finest view's middle
        candidates = np.unique(view_code(q, self.views[-1])).astype(np.int64)
        points = np.stack([view_code(candidates.astype(np.uint8), k).astype(np.float64) for k in self.views])
        lam = np.asarray(self.view_weights)[:, None]
        self.total = float(lam.sum())
        slope, offset = (lam * points).sum(0), (lam * points ** 2).sum(0)     # A(q), B(q); A rises with q
        # every candidate is the best code somewhere (checked for all view sets and random weights):
        # the envelope is the candidates in order, code i+1 taking over where its line crosses code i's
        breaks = np.diff(offset) / (2 * np.diff(slope))
        if np.any(np.diff(breaks) <= 0):
            raise SmartquantError(f"views {self.views} with weights {self.view_weights}: a code is never best")
        self.codes = candidates                   #: envelope codes, left to right
        self.breaks = breaks                      #: t where the next envelope code takes over
        self.slope, self.offset = slope, offset   #: A(q), B(q) of each envelope code
        self.mean_point = slope / self.total      #: sum_k lambda_k r_k / L of each envelope code
        # lookup by unit cell: the envelope index at the cell's floor, then the few breaks inside it
        cells = np.arange(-1, CODE_LEVELS + 2, dtype=np.float64)
        self._cell_start = np.searchsorted(self.breaks, cells, side="right")
        self._steps = int(np.diff(np.append(self._cell_start, len(self.breaks))).max(initial=0))
        self._padded_breaks = np.append(self.breaks, np.inf)

    def best(self, t: np.ndarray) -> np.ndarray:
        """Index into `codes` of the best code for each t (any shape): the number of breaks <= t."""
        cell = np.clip(np.floor(t), -1, CODE_LEVELS + 1).astype(np.int64) + 1
        index = self._cell_start[cell]
        below, above = t < -1, t >= CODE_LEVELS + 2     # outside the cells: the envelope's ends
        for _ in range(self._steps):
            index += self._padded_breaks[index] <= t
        return np.where(below, 0, np.where(above, len(self.breaks), index))

    def objective(self, t: np.ndarray, index: np.ndarray) -> np.ndarray:
        """J / s^2 = L t^2 - 2 t A(q) + B(q) of the codes `codes[index]` at t (code units)."""
        return (self.total * t - 2 * self.slope[index]) * t + self.offset[index]


class JointClip(NestedMSEClip):
    """Per-group scale/zero by the clipping search (range multiplier p per group) under J:
    for each p, min/max parameters of the shrunk range, codes by J, and each group keeps
    the p with the least summed J (a p whose scale overflows the format is never kept)."""

    def __init__(self, fmt: StoreFormat = StoreFormat(), views=DEFAULT_VIEWS, view_weights=None,
                 grid=DEFAULT_SHRINK_GRID, chunk_weights: int = CHUNK_WEIGHTS):
        self.joint = JointCodes(views, view_weights)
        super().__init__(fmt, self.joint.views, grid, chunk_weights=chunk_weights)

    def view_error(self, groups: np.ndarray, stored: np.ndarray, zero: np.ndarray) -> np.ndarray:
        """Summed J per group (inf where the stored scale overflowed)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            safe = np.where(stored > 0, stored, 1.0)[:, None]
            t = groups / safe + zero[:, None]
            error = (self.joint.objective(t, self.joint.best(t)) * np.square(safe)).sum(1)
        return np.where(np.isfinite(stored), error, np.inf)

    def encode_groups(self, groups: np.ndarray, stored: np.ndarray, zero: np.ndarray) -> np.ndarray:
        """Codes by J (z where s = 0), float64 like `quantizer.encode`."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = groups / np.where(stored > 0, stored, 1.0)[:, None] + zero[:, None]
        codes = self.joint.codes[self.joint.best(t)].astype(np.float64)
        return np.where(stored[:, None] > 0, codes, zero[:, None])


class JointRounder:
    """`sequential.sequential_round`'s rounder: column codes by J; returns the weighted-mean
    reconstruction s (sum_k lambda_k r_k / L - z), whose error is fed back."""

    def __init__(self, joint: JointCodes, scale: torch.Tensor, zero: torch.Tensor):
        self.joint = joint
        self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.zero = zero.to(torch.float64)
        self.codes = torch.zeros(scale.shape, dtype=torch.int64)
        self.breaks = torch.from_numpy(self.joint.breaks)
        self.envelope = torch.from_numpy(self.joint.codes)
        self.mean_point = torch.from_numpy(self.joint.mean_point)

    def __call__(self, j: int, w: torch.Tensor) -> torch.Tensor:
        s, z = self.scale[:, j], self.zero[:, j]
        index = torch.searchsorted(self.breaks, (w / s + z).contiguous(), right=True)
        self.codes[:, j] = self.envelope[index]
        return s * (self.mean_point[index] - z)


class PerViewRounder:
    """The rounder of per-view feedback: the working weights hold one copy per view
    (stacked rows, view-major), each carrying its own GPTQ error; the column's code
    minimises sum_k lambda_k (w'_k - s (r_k(q) - z))^2 over all 256 codes (with `prefix`, the
    (out, padded_in) codes of view `prefix_k`: over the codes in that view's bucket), and each
    copy gets its own view's reconstruction back."""

    def __init__(self, joint: JointCodes, scale: torch.Tensor, zero: torch.Tensor,
                 prefix: torch.Tensor | None = None, prefix_k: int | None = None):
        self.joint = joint
        self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.zero = zero.to(torch.float64)
        self.codes = torch.zeros(scale.shape, dtype=torch.int64)
        q = np.arange(CODE_LEVELS + 1, dtype=np.uint8)
        points = np.stack([view_code(q, k).astype(np.float64) for k in joint.views])        # (V, 256)
        lam = np.asarray(joint.view_weights)[:, None]
        self.points = torch.from_numpy(points)
        self.weighted = torch.from_numpy(2 * lam * points)                                   # 2 lambda_k r_k(q)
        self.offset = torch.from_numpy((lam * points ** 2).sum(0))                           # B(q)
        self.prefix = prefix
        if prefix is not None:
            self.bucket = torch.arange(CODE_LEVELS + 1, dtype=torch.int64) >> (CODE_BITS - prefix_k)

    def __call__(self, j: int, w: torch.Tensor) -> torch.Tensor:
        s, z = self.scale[:, j], self.zero[:, j]
        t = w.reshape(len(self.joint.views), -1) / s + z                                     # (V, rows)
        cost = self.offset[None, :] - t.T @ self.weighted                                    # (rows, 256)
        if self.prefix is not None:
            cost = cost.masked_fill(self.bucket[None, :] != self.prefix[:, j, None], torch.inf)
        q = torch.argmin(cost, dim=1)
        self.codes[:, j] = q
        return (s * (self.points[:, q] - z)).reshape(-1)


class JointGPTQ(GPTQ):
    """GPTQ with one pass choosing every code by J over the target views (module docstring)."""

    def quantize(self, weight, views=DEFAULT_VIEWS, view_weights=None, grid=None, per_view: bool = True,
                 anchor: int | None = None, act_order: bool = False, percdamp: float = 0.01,
                 block_size: int = 128) -> QuantizedTensor:
        """Nested codes for `weight` (out x in); `grid` picks the group scales and zeros
        (default: `JointClip` with the same views and weights on the default format);
        `per_view` keeps one working copy of the weights per view (`PerViewRounder`)
        instead of feeding back the error of the weighted-mean reconstruction; `anchor`
        (a named view with another between it and the finest, per-view only) splits the pass
        in two (module docstring)."""
        joint = JointCodes(views, view_weights)
        split = check_anchor(joint.views, anchor, per_view)
        grid = grid or JointClip(views=joint.views, view_weights=joint.view_weights)
        setup = self.prepare(weight, grid, percdamp, block_size)
        order = setup.order(act_order)
        feedback, divisor, from_original = self.feedback(setup.hessian[order][:, order])
        work = setup.weights[:, order]
        if not per_view:
            rounder = JointRounder(joint, setup.scale, setup.zero)
            sequential_round(work, feedback, divisor, rounder, order, block_size, from_original)
            return setup.tensor(rounder.codes.numpy().astype(np.uint8))
        passes = [joint] if anchor is None else [
            JointCodes(joint.views[:split] + joint.views[-1:], joint.view_weights[:split] + joint.view_weights[-1:]),
            JointCodes(joint.views[split:], joint.view_weights[split:])]
        prefix = None
        for codes in passes:
            rounder = PerViewRounder(codes, setup.scale, setup.zero, prefix, anchor)
            sequential_round(work.repeat(len(codes.views), 1), feedback, divisor, rounder, order,
                             block_size, from_original)
            prefix = rounder.codes >> (CODE_BITS - anchor) if anchor is not None else None
        return setup.tensor(rounder.codes.numpy().astype(np.uint8))


def check_anchor(views: tuple[int, ...], anchor: int | None, per_view: bool) -> int:
    """The number of `views` (sorted) at or below `anchor`: it must be a named view with another
    between it and the finest (else the second pass re-chooses what the first did), with
    per-view feedback (0 when there is no anchor)."""
    if anchor is None:
        return 0
    if anchor not in views[:-2]:
        raise SmartquantError(f"anchor {anchor} bits must be one of the views {list(views)} "
                              f"with another view between it and the finest")
    if not per_view:
        raise SmartquantError("an anchor needs per-view feedback (the mean feedback has one working copy)")
    return views.index(anchor) + 1
