"""The oracle bound of per-sentence precision plans, and a static plan from measured errors.

Measured slice cost of one sentence: c_s(k) = ||e(slice s at k, the rest at 8) - e_8||^2,
the squared change of the sentence embedding (a unit vector, so c = 2 (1 - cosine)) when
only slice s is read at k bits.  `slice_costs` measures it for every slice and every k
with one batched pass per tensor: the batch holds one copy of the sentence per (slice, k),
runs from the tensor's layer on (the layers before it are the 8-bit model's, computed
once), and copy b adds x (W_k - W_8)[rows of its slice]^T to its output rows only.

`allocate_measured` spends the budget greedily on the largest measured cost drop per bit
(any upgrade of a slice that still fits, so non-convex measured costs are handled).

Plans (`oracle_rows`), all at the same average bits:
- **static**: the policy's static plan (modelled importance, sw/infer/policy.py);
- **measured static**: `allocate_measured` on the mean costs over calibration sentences,
  one plan for every input (realisable);
- **oracle**: per sentence, `allocate_measured` on that sentence's own costs; it needs
  the sentence's unquantized outputs, so no device can run it: an upper bound on what any
  per-sentence policy gains;
- **oracle best**: per sentence, whichever of the three plans above gives it the higher
  cosine to full precision.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from ...errors import SmartquantError
from ...spec import PLANES
from ..image.plan import PlanEntry, plan_average_bits, plan_dram_bytes, uniform_plan
from .experiment import Evaluation, result_row
from .model import Transformer, layer_weight_names, mean_pooled, one_thread
from .policy import check_budget
from .quality import cosines
from .weights import StorePlan

CostSource = Callable[[str], np.ndarray]     #: sentence -> (slices, len(ks)) measured costs


class _SliceProbe(Transformer):
    """A batch of copies of one input; copy b reads the rows `rows` of tensor `target`
    with `delta` (rows, in) added to their weights, for (rows, delta) = deltas[b]."""

    def __init__(self, config, source, target: str, deltas: list[tuple[slice, torch.Tensor]]):
        super().__init__(config, source)
        self.target, self.deltas = target, deltas

    def _linear(self, prefix, x, observe):
        y = super()._linear(prefix, x, observe)
        if f"{prefix}.weight" == self.target:
            rotation = self.source.rotation(self.target)      # the store holds W·H: inputs x·H
            x = x if rotation is None else rotation.rotate_inputs(x)
            for b, (rows, delta) in enumerate(self.deltas):
                y[b, :, rows] += x[b] @ delta.T
        return y


def slices_of(ev: Evaluation) -> list:
    """Every slice of the policy, in the row order of `slice_costs` and `allocate_measured`."""
    return [s for n in ev.policy.tensors for s in ev.policy.slices[n]]


@torch.no_grad()
def slice_costs(ev: Evaluation, text: str, ks: Sequence[int]) -> np.ndarray:
    """(slices, len(ks)) measured costs c_s(k) of sentence `text` (module docstring)."""
    values = ev.policy.values
    top = StorePlan(ev.image, uniform_plan(ev.image, PLANES, ev.policy.tensors), values)
    model = Transformer(ev.config, top)
    ids, mask = ev.tokenizer.batch([text])
    layers = ev.config.num_layers
    layer_of = {n: i for i in range(layers) for n in layer_weight_names(i)}
    costs = np.zeros((len(slices_of(ev)), len(ks)))
    row = 0
    with one_thread():
        inputs = [model.embed_tokens(ids)]
        for i in range(layers):
            inputs.append(model.layer(i, inputs[-1], mask))
        base = mean_pooled(model.head(inputs[-1]), mask)
        for name in ev.policy.tensors:
            probed = [(s, j) for s in range(len(ev.policy.slices[name]))
                      for j, k in enumerate(ks) if k != PLANES]
            deltas = []
            for s, j in probed:
                sl = ev.policy.slices[name][s]
                rows = slice(sl.row_start, sl.row_stop)
                delta = values.get(name, ks[j])[rows] - values.get(name, PLANES)[rows]
                deltas.append((rows, torch.from_numpy(delta.astype(np.float32))))
            probe = _SliceProbe(ev.config, top, name, deltas)
            batch_mask = mask.expand(len(deltas), -1)
            x = inputs[layer_of[name]].expand(len(deltas), -1, -1).contiguous()
            for i in range(layer_of[name], layers):
                x = probe.layer(i, x, batch_mask)
            change = ((mean_pooled(probe.head(x), batch_mask) - base) ** 2).sum(-1).numpy()
            for (s, j), c in zip(probed, change):
                costs[row + s, j] = c
            row += len(ev.policy.slices[name])
    return costs


def allocate_measured(costs: np.ndarray, sizes: Sequence[int], budget: float, ks: Sequence[int]) -> list[int]:
    """k per slice with sum n_s k_s <= budget * sum n_s, greedily minimising sum_s costs[s, k_s].

    `costs` is (slices, len(ks)) with `ks` ascending; every slice starts at ks[0], then the
    upgrade (to any higher k) with the largest cost drop per bit that still fits is taken,
    until none fits or none lowers the cost."""
    ks = np.asarray(ks)
    check_budget(budget, ks.tolist())
    costs = np.asarray(costs, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if (np.diff(ks) <= 0).any() or costs.shape != (len(sizes), len(ks)) or not np.isfinite(costs).all():
        raise SmartquantError(f"costs must be finite, one row per slice and one column per k of "
                              f"ascending ks {ks.tolist()}")
    level = np.zeros(len(sizes), dtype=np.int64)
    spare = math.floor(budget * int(sizes.sum()) + 1e-6) - int(ks[0]) * int(sizes.sum())
    rows = np.arange(len(sizes))
    while True:
        bits = (ks[None, :] - ks[level][:, None]) * sizes[:, None]
        drop = costs[rows, level][:, None] - costs
        allowed = (bits > 0) & (bits <= spare) & (drop > 0)
        if not allowed.any():
            return [int(k) for k in ks[level]]
        ratio = np.where(allowed, drop / np.maximum(bits, 1), -np.inf)
        s, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        spare -= int(bits[s, j])
        level[s] = j


def measured_plan(ev: Evaluation, costs: np.ndarray, budget: float, ks: Sequence[int]) -> list[PlanEntry]:
    """The plan `allocate_measured` picks for costs (slices, len(ks))."""
    sl = slices_of(ev)
    chosen = allocate_measured(costs, [s.weights for s in sl], budget, ks)
    return [PlanEntry(s.tensor, s.row_start, s.row_stop, k) for s, k in zip(sl, chosen)]


def oracle_rows(ev: Evaluation, budget: float, ks: Sequence[int], calibration: Sequence[str],
                costs: CostSource) -> list[dict]:
    """Rows static / measured static / oracle / oracle best at `budget` (module docstring)
    over the evaluation's sentences; `costs(text)` gives a sentence's measured costs."""
    if not calibration:
        raise SmartquantError("the measured static plan needs at least one calibration sentence")
    fixed = {"static": ev.policy.static_plan(budget),
             "measured static": measured_plan(ev, np.mean([costs(t) for t in calibration], 0), budget, ks)}
    plans = {kind: [plan] * len(ev.sentences) for kind, plan in fixed.items()}
    plans["oracle"] = [measured_plan(ev, costs(text), budget, ks) for text in ev.sentences]
    embeddings = {kind: np.stack([ev.encoder(StorePlan(ev.image, plan, ev.policy.values)).embed([text])[0]
                                  for text, plan in zip(ev.sentences, per_sentence)])
                  for kind, per_sentence in plans.items()}
    reference = np.stack([ev.reference[t] for t in ev.sentences])
    cosine = np.stack([cosines(embeddings[kind], reference) for kind in plans])      # (kinds, sentences)
    best = cosine.argmax(0)
    kinds = list(plans)
    plans["oracle best"] = [plans[kinds[b]][i] for i, b in enumerate(best)]
    embeddings["oracle best"] = np.stack([embeddings[kinds[b]][i] for i, b in enumerate(best)])
    return [result_row(ev, kind, budget,
                       np.mean([plan_average_bits(ev.image, p) for p in per_sentence]),
                       np.mean([plan_dram_bytes(ev.image, p) for p in per_sentence]), embeddings[kind])
            for kind, per_sentence in plans.items()]
