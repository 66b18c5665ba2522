"""Precision policy: which k each slice of each linear layer is read at, under a budget.

Slices: every linear weight is cut into `num_heads` row ranges: one attention head
(head_dim rows) of query/key/value/attention-output, and equal groups of output rows
of the two FFN matrices (MiniLM: 12 slices of 32 or 128 rows).

Importance (per slice s, from the activations seen so far): the expected squared
output error of the slice at a reference precision k_ref,

    I_s = (1 / n_s) * sum_{i in s} sum_j (W_kref[i,j] - W_8[i,j])^2 * a_j,

where a_j is the mean square of input channel j over the tokens that reach the
layer (the activation norm per input channel) and the squared view error is the
weight sensitivity (the golden store's own values).  With the usual noise model
(error variance x 4 per bit removed) a slice read at k bits costs
n_s * g_t * I_s * 4^(k_ref - k), where the tensor gain g_t (measured once on
calibration text, `PrecisionPolicy.calibrate`) converts a layer's output error into
the error it causes in the sentence embedding.  `allocate` minimises the sum under
`sum_s n_s k_s <= budget * sum_s n_s` by greedy marginal analysis, which never
gives a more important slice fewer bits than a less important one.

Plans: `static_plan` allocates over all slices with input-independent statistics
(calibration sentences, or a_j = 1); `DynamicPlanner` (one per forward pass) keeps
each tensor's static bit total and, as the model runs, re-allocates that tensor's
slices from the activations that actually reach it (causal: decided when the
layer's input is known, before its weights are read).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Sequence

import numpy as np
import torch

from ...errors import SmartquantError
from ...spec import BLOCK_WEIGHTS, PLANES
from .model import SentenceEncoder, TransformerConfig, linear_weight_names
from ..image.plan import PlanEntry, check_plan
from .weights import StorePlan, StoreValues, image_rotation, plan_rows, side_tensor

DEFAULT_KS = (2, 3, 4, 5, 6, 8)
K_REF = 4      #: precision whose measured view error is the slice sensitivity


def check_budget(budget: float, ks: Sequence[int]) -> None:
    """Budget must be an average of 1..8 bits reachable with the allowed ks."""
    if not ks or any(not 1 <= k <= PLANES for k in ks):
        raise SmartquantError(f"allowed bits {list(ks)} must be a non-empty set within 1..{PLANES}")
    if not (isinstance(budget, (int, float)) and 1 <= budget <= PLANES):
        raise SmartquantError(f"budget {budget!r} bits per weight outside 1..{PLANES}")
    if budget < min(ks):
        raise SmartquantError(f"budget {budget} bits per weight is below the smallest allowed k={min(ks)}")


def allocate(importance: Sequence[float], sizes: Sequence[int], budget: float,
             ks: Sequence[int] = DEFAULT_KS, seed: int = 0) -> list[int]:
    """k per slice minimising sum n_s I_s 4^-k_s with sum n_s k_s <= budget * sum n_s.

    Greedy marginal analysis: start every slice at min(ks), repeatedly upgrade the slice
    with the largest error drop per bit; when that upgrade no longer fits, fill the rest
    in importance order without ever passing a more important slice.  Ties in importance
    are ordered by a permutation drawn from `seed`."""
    ks = sorted(set(ks))
    check_budget(budget, ks)
    importance = np.asarray(importance, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if importance.shape != sizes.shape or (sizes <= 0).any() or not np.isfinite(importance).all():
        raise SmartquantError("importance and sizes must be finite, equally long, sizes positive")
    tiebreak = np.random.default_rng(seed).permutation(len(sizes))
    order = sorted(range(len(sizes)), key=lambda s: (-importance[s], tiebreak[s]))
    level = [0] * len(sizes)                             # index into ks
    spare = math.floor(budget * int(sizes.sum()) + 1e-6) - ks[0] * int(sizes.sum())

    def gain_per_bit(s):
        lo, hi = ks[level[s]], ks[level[s] + 1]
        return importance[s] * (4.0 ** -lo - 4.0 ** -hi) / (hi - lo)
    rank = {s: r for r, s in enumerate(order)}
    heap = [(-gain_per_bit(s), rank[s], s) for s in order if len(ks) > 1]
    heapq.heapify(heap)
    while heap:
        _, _, s = heapq.heappop(heap)
        cost = (ks[level[s] + 1] - ks[level[s]]) * sizes[s]
        if cost > spare:
            break
        spare -= cost
        level[s] += 1
        if level[s] + 1 < len(ks):
            heapq.heappush(heap, (-gain_per_bit(s), rank[s], s))
    changed = True
    while changed:                                       # fill, keeping k monotone in rank
        changed = False
        for r, s in enumerate(order):
            if level[s] + 1 >= len(ks) or (r and level[order[r - 1]] <= level[s]):
                continue
            cost = (ks[level[s] + 1] - ks[level[s]]) * sizes[s]
            if cost <= spare:
                spare -= cost
                level[s] += 1
                changed = True
    return [ks[lv] for lv in level]


@dataclasses.dataclass(frozen=True)
class Slice:
    tensor: str
    row_start: int
    row_stop: int
    weights: int          #: real weights (rows * in)


def tensor_slices(image, name: str, parts: int) -> list[Slice]:
    """`parts` equal row ranges of tensor `name`, each covering whole 512-weight blocks."""
    e = image.entry(name)
    rows, cols = e.shape
    if rows % parts:
        raise SmartquantError(f"{name!r}: {rows} rows do not split into {parts} slices")
    step = rows // parts
    if (step * e.padded_in) % BLOCK_WEIGHTS:
        raise SmartquantError(
            f"{name!r}: a slice of {step} rows x {e.padded_in} padded columns is not a whole number "
            f"of {BLOCK_WEIGHTS}-weight blocks; the store serves k per block")
    return [Slice(name, r, r + step, step * cols) for r in range(0, rows, step)]


class ActivationStats:
    """Observer for `Transformer.hidden_states`: mean square of each input channel per layer."""

    def __init__(self):
        self.sum_sq: dict[str, np.ndarray] = {}
        self.tokens: dict[str, int] = {}

    def __call__(self, name: str, x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1]).double()
        self.sum_sq[name] = self.sum_sq.get(name, 0) + (flat ** 2).sum(0).numpy()
        self.tokens[name] = self.tokens.get(name, 0) + flat.shape[0]

    def mean_square(self, name: str) -> np.ndarray:
        return self.sum_sq[name] / self.tokens[name]


class PrecisionPolicy:
    """Slices, sensitivities and plans for the linear layers of a model held in a store image.

    Uncalibrated, every input channel counts a_j = 1 and every tensor gain g_t = 1.
    `calibrate` measures both on calibration text: a_j from the activations of the model
    read at 8 bits, and g_t = (embedding error with only tensor t at K_REF bits) /
    (the tensor's modelled error sum_s n_s I_s), so that slice importances g_t * I_s of
    different tensors are on one scale (the error each causes in the sentence embedding)."""

    def __init__(self, image, config: TransformerConfig, ks: Sequence[int] = DEFAULT_KS,
                 seed: int = 0, values: StoreValues | None = None):
        self.image, self.config, self.ks, self.seed = image, config, tuple(sorted(set(ks))), seed
        self.values = values or StoreValues(image)
        self.tensors = linear_weight_names(config)
        self.slices = {n: tensor_slices(image, n, config.num_heads) for n in self.tensors}
        self._slice_error = {n: self._squared_view_error(n) for n in self.tensors}
        self.stats: ActivationStats | None = None
        self.gains = {n: 1.0 for n in self.tensors}
        self._static: dict[float, list[PlanEntry]] = {}   #: budget -> plan, until recalibrated

    def _squared_view_error(self, name: str) -> np.ndarray:
        """(slices, in): sum over each slice's rows of (W_kref - W_8)^2, divided by n_s."""
        err = (self.values.get(name, K_REF).astype(np.float64) - self.values.get(name, PLANES)) ** 2
        return np.stack([err[s.row_start:s.row_stop].sum(0) / s.weights for s in self.slices[name]])

    def local_importance(self, name: str, mean_square: np.ndarray | None) -> np.ndarray:
        """I_s of each slice of tensor `name` for input channel mean squares (None: all 1)."""
        err = self._slice_error[name]
        return err.sum(1) if mean_square is None else err @ mean_square

    def importance(self, name: str, mean_square: np.ndarray | None) -> np.ndarray:
        """g_t * I_s: slice importance on the scale of the sentence-embedding error."""
        return self.gains[name] * self.local_importance(name, mean_square)

    def calibrate(self, tokenizer, sentences: Sequence[str], progress=None) -> None:
        """Measure a_j and the tensor gains g_t on calibration sentences (see class doc)."""
        if not sentences:
            raise SmartquantError("calibration needs at least one sentence")
        top = {n: PlanEntry(n, 0, self.image.entry(n).shape[0], PLANES) for n in self.tensors}
        stats = ActivationStats()

        def encoder(plan):
            return SentenceEncoder(self.config, tokenizer, StorePlan(self.image, plan, self.values))
        for text in sentences:                    # one at a time: no padding tokens in a_j
            encoder(list(top.values())).embed([text], observe=stats)
        reference = encoder(list(top.values())).embed(list(sentences))
        gains = {}
        for name in self.tensors:
            if progress:
                progress(name)
            plan = [dataclasses.replace(p, k=K_REF) if p.tensor == name else p for p in top.values()]
            measured = ((encoder(plan).embed(list(sentences)) - reference) ** 2).sum(1).mean()
            sizes = np.array([s.weights for s in self.slices[name]])
            modelled = (sizes * self.local_importance(name, stats.mean_square(name))).sum()
            gains[name] = float(measured / modelled) if modelled > 0 else 0.0
        self.stats, self.gains, self._static = stats, gains, {}

    def _plan(self, names, stats, budget) -> list[PlanEntry]:
        sl = [s for n in names for s in self.slices[n]]
        imp = np.concatenate([self.importance(n, None if stats is None else stats.mean_square(n))
                              for n in names])
        ks = allocate(imp, [s.weights for s in sl], budget, self.ks, self.seed)
        return [PlanEntry(s.tensor, s.row_start, s.row_stop, k) for s, k in zip(sl, ks)]

    def static_plan(self, budget: float) -> list[PlanEntry]:
        """Input-independent plan over every slice (calibration statistics, if calibrated)."""
        if budget not in self._static:
            plan = self._plan(self.tensors, self.stats, budget)
            check_plan(self.image, plan, required=self.tensors)
            self._static[budget] = plan
        return list(self._static[budget])

    def dynamic(self, budget: float) -> "DynamicPlanner":
        """A planner for one forward pass, keeping the static plan's bits per tensor."""
        return DynamicPlanner(self, self.static_plan(budget))


class DynamicPlanner:
    """Weight source + observer: each tensor keeps its bits from a static plan, re-allocated
    across its slices from the activations reaching it in this forward pass."""

    def __init__(self, policy: PrecisionPolicy, static: list[PlanEntry]):
        self.policy = policy
        self.tensor_bits = {}
        for p in static:
            n = (p.row_stop - p.row_start) * policy.image.entry(p.tensor).shape[1]
            bits, weights = self.tensor_bits.get(p.tensor, (0, 0))
            self.tensor_bits[p.tensor] = (bits + n * p.k, weights + n)
        self.plan: list[PlanEntry] = []
        self._rows: dict[str, list[PlanEntry]] = {}

    def __call__(self, name: str, x: torch.Tensor) -> None:
        stats = ActivationStats()
        stats(name, x)
        bits, weights = self.tensor_bits[name]
        entries = self.policy._plan([name], stats, bits / weights)
        self._rows[name] = entries
        self.plan.extend(entries)

    def linear(self, name: str) -> torch.Tensor:
        return plan_rows(self.policy.values, name, self._rows[name])

    def tensor(self, name: str) -> torch.Tensor:
        return side_tensor(self.policy.image, name)

    def rotation(self, name: str):
        return image_rotation(self.policy.image, name)
