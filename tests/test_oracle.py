"""The oracle of per-sentence plans (sw/infer/oracle.py) on a toy encoder: measured slice
costs equal one-at-a-time measurements, the greedy allocator's budget and optimality."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from smartquant.errors import SmartquantError
from smartquant.sw.image.image import Image
from smartquant.sw.image.plan import PlanEntry, plan_dram_bytes, uniform_plan
from smartquant.sw.infer.evalset import SentencePair, unique_sentences
from smartquant.sw.infer.experiment import Evaluation
from smartquant.sw.infer.model import SentenceEncoder, linear_weight_names
from smartquant.sw.infer.oracle import allocate_measured, oracle_rows, slice_costs, slices_of
from smartquant.sw.infer.policy import PrecisionPolicy
from smartquant.sw.infer.weights import FullPrecision, StorePlan
from smartquant.sw.quantize.quantizer import NestedRTN
from smartquant.sw.quantize.rotation import rotations_for

KS = (2, 3, 4, 5, 6, 8)
PAIRS = [SentencePair("paraphrase", "A dog runs across the green field.", "A dog is running on grass."),
         SentencePair("unrelated", "The committee approved the budget.", "Snow covered the village.")]
CALIBRATION = ["The cat sat on the warm mat.", "She plays the violin in an orchestra."]


def toy_evaluation(toy_encoder, rotated: bool) -> Evaluation:
    """The toy encoder in an image (stored as W·H with a Hadamard rotation if `rotated`)."""
    config, tokenizer, tensors = toy_encoder
    names = linear_weight_names(config)
    rotations = rotations_for({n: tensors[n] for n in names}, 11) if rotated else {}
    image = Image.build([(n, NestedRTN().quantize(rotations[n].rotate_weight(tensors[n]) if rotated
                                                  else tensors[n])) for n in names],
                        side={n: t for n, t in tensors.items() if n not in names}, rotations=rotations)
    sentences = unique_sentences(PAIRS)
    reference = SentenceEncoder(config, tokenizer, FullPrecision(tensors)).embed(sentences)
    return Evaluation(image, config, tokenizer, PrecisionPolicy(image, config, KS), PAIRS, sentences,
                      dict(zip(sentences, reference)), plan_dram_bytes(image, uniform_plan(image, 8, names)))


@pytest.fixture(scope="module")
def toy_eval(toy_encoder):
    return toy_evaluation(toy_encoder, rotated=False)


def embedding(ev, plan, text):
    return ev.encoder(StorePlan(ev.image, plan, ev.policy.values)).embed([text])[0]


@pytest.mark.parametrize("rotated", [False, True])
def test_batched_costs_equal_one_slice_at_a_time(toy_encoder, rotated):
    ev, text = toy_evaluation(toy_encoder, rotated), PAIRS[0].a
    costs = slice_costs(ev, text, KS)
    top = uniform_plan(ev.image, 8, ev.policy.tensors)
    base = embedding(ev, top, text)
    slices = slices_of(ev)
    assert costs.shape == (len(slices), len(KS)) and (costs[:, -1] == 0).all()
    for index, j in [(0, 0), (5, 1), (len(slices) // 2, 2), (len(slices) - 1, 4)]:
        s = slices[index]
        plan = [p for p in top if p.tensor != s.tensor] + [
            PlanEntry(s.tensor, r, r + s.row_stop - s.row_start, KS[j] if r == s.row_start else 8)
            for r in range(0, ev.image.entry(s.tensor).shape[0], s.row_stop - s.row_start)]
        measured = float(((embedding(ev, plan, text) - base) ** 2).sum())
        assert measured > 0 and costs[index, j] == pytest.approx(measured, rel=1e-3, abs=1e-9)


def total(costs, ks, chosen):
    return sum(costs[s, ks.index(k)] for s, k in enumerate(chosen))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 100), st.floats(1.5, 6)), min_size=1, max_size=5),
       st.floats(2, 6))
def test_greedy_is_optimal_for_convex_costs_and_equal_slices(slices, budget):
    ks = [2, 3, 4, 5, 6]
    costs = np.array([[scale * decay ** -k for k in ks] for scale, decay in slices])
    chosen = allocate_measured(costs, [4] * len(slices), budget, ks)
    assert sum(chosen) <= budget * len(slices) + 1e-9
    best = min(total(costs, ks, c) for c in itertools.product(ks, repeat=len(slices))
               if sum(c) <= budget * len(slices) + 1e-6)
    assert total(costs, ks, chosen) == pytest.approx(best)


def test_greedy_stays_within_budget_with_unequal_sizes_and_noisy_costs():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 40, 30)
    costs = np.sort(rng.random((30, len(KS))), axis=1)[:, ::-1] * rng.random((30, 1))
    costs[:, 3] += 0.5 * costs[:, 2]                      # k=5 worse than k=4: not convex
    for budget in (2.0, 3.0, 4.5, 8.0):
        chosen = allocate_measured(costs, sizes, budget, KS)
        assert (np.array(chosen) * sizes).sum() <= budget * sizes.sum() + 1e-9
    assert allocate_measured(costs, sizes, 8.0, KS) == [8] * 30
    with pytest.raises(SmartquantError, match="ascending"):
        allocate_measured(costs[:, :5], sizes, 3.0, KS)
    with pytest.raises(SmartquantError, match="below the smallest"):
        allocate_measured(costs, sizes, 1.5, KS)


def test_oracle_rows(toy_eval):
    cache = {}
    rows = oracle_rows(toy_eval, 3.0, KS, CALIBRATION,
                       lambda text: cache.setdefault(text, slice_costs(toy_eval, text, KS)))
    assert [r["kind"] for r in rows] == ["static", "measured static", "oracle", "oracle best"]
    assert set(cache) == set(CALIBRATION) | set(toy_eval.sentences)
    assert all(r["avg_bits"] <= 3.0 + 1e-9 for r in rows)
    assert rows[3]["cosine_mean"] >= max(r["cosine_mean"] for r in rows[:3]) - 1e-7
    assert rows[3]["cosine_min"] >= max(r["cosine_min"] for r in rows[:3]) - 1e-7
    assert rows[2]["cosine_mean"] > 0.9          # the toy at 3 bits is not broken
