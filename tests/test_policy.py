"""Precision plans: the allocator's guarantees, block alignment, requests, DRAM bytes, line decoding."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from smartquant.errors import SmartquantError
from smartquant.spec import LINE_BYTES, View, lines_per_block, split_host_line_address
from smartquant.sw.image import golden
from smartquant.sw.infer.model import TransformerConfig, linear_weight_names, model_dir
from smartquant.sw.image.plan import PlanEntry, check_plan, plan_average_bits, plan_dram_bytes, plan_requests, uniform_plan
from smartquant.sw.infer.policy import ActivationStats, PrecisionPolicy, allocate, tensor_slices
from smartquant.sw.infer.weights import LineSource, StorePlan

KS = (2, 3, 4, 5, 6, 8)
slices = st.lists(st.tuples(st.floats(0, 1e3, allow_nan=False), st.integers(1, 50)), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(slices, st.floats(2, 8), st.integers(0, 3))
def test_allocation_within_budget_and_monotone(items, budget, seed):
    importance, sizes = zip(*items)
    ks = allocate(importance, sizes, budget, KS, seed)
    assert set(ks) <= set(KS)
    assert sum(n * k for n, k in zip(sizes, ks)) <= budget * sum(sizes) + 1e-6
    for a in range(len(ks)):
        for b in range(len(ks)):
            if importance[a] > importance[b]:
                assert ks[a] >= ks[b], (importance[a], ks[a], importance[b], ks[b])


@settings(max_examples=50, deadline=None)
@given(slices, st.floats(2, 8), st.integers(0, 1000))
def test_allocation_deterministic_for_a_seed(items, budget, seed):
    importance, sizes = zip(*items)
    assert allocate(importance, sizes, budget, KS, seed) == allocate(importance, sizes, budget, KS, seed)


def test_allocation_spends_budget_on_the_important_slice():
    ks = allocate([1.0, 100.0, 1.0], [10, 10, 10], 4.0, KS)
    assert ks[1] > ks[0] and ks[1] > ks[2]
    assert allocate([5.0] * 4, [7] * 4, 8, KS) == [8] * 4


@pytest.mark.parametrize("budget, message", [(0.5, "outside 1..8"), (8.5, "outside 1..8"),
                                             (float("nan"), "outside 1..8"), (1.5, "below the smallest")])
def test_bad_budget(budget, message):
    with pytest.raises(SmartquantError, match=message):
        allocate([1.0, 2.0], [1, 1], budget, KS)


@pytest.fixture(scope="module")
def policy(minilm_image):
    config = TransformerConfig.from_bert_json(model_dir("minilm") / "config.json")
    return PrecisionPolicy(minilm_image, config, KS)


def test_static_plan_covers_every_slice_within_budget(policy, minilm_image):
    for budget in (2.5, 3.0, 4.0):
        plan = policy.static_plan(budget)
        check_plan(minilm_image, plan, required=linear_weight_names(policy.config))
        assert plan_average_bits(minilm_image, plan) <= budget + 1e-9
        assert len(plan) == 36 * 12
    assert policy.static_plan(3.0) == policy.static_plan(3.0)


def test_dynamic_plan_follows_the_input(policy, minilm_image):
    """A tensor's dynamic plan ranks its slices by importance for the input it saw, within the static bits."""
    import torch
    name = "encoder.layer.0.intermediate.dense.weight"
    x = torch.randn(1, 9, 384, generator=torch.Generator().manual_seed(0))
    planner = policy.dynamic(3.0)
    planner(name, x)
    entries = [p for p in planner.plan if p.tensor == name]
    stats = ActivationStats()
    stats(name, x)
    importance = policy.importance(name, stats.mean_square(name))
    for a, pa in enumerate(entries):
        for b, pb in enumerate(entries):
            if importance[a] > importance[b]:
                assert pa.k >= pb.k
    static_bits = sum((p.row_stop - p.row_start) * p.k for p in policy.static_plan(3.0) if p.tensor == name)
    assert sum((p.row_stop - p.row_start) * p.k for p in entries) <= static_bits
    assert planner.linear(name).shape == (1536, 384)


def test_slices_must_be_whole_blocks(tiny_image):
    with pytest.raises(SmartquantError, match="not a whole number of 512-weight blocks"):
        tensor_slices(tiny_image, "asym_fp16_g32", 8)        # 1 row x 96 columns


def test_plan_rows_must_be_block_aligned(minilm_image):
    name = "encoder.layer.0.attention.self.query.weight"     # 384 x 384: 4 rows = 3 blocks
    check_plan(minilm_image, [PlanEntry(name, 0, 4, 3), PlanEntry(name, 4, 384, 5)])
    with pytest.raises(SmartquantError, match="splits a 512-weight block"):
        check_plan(minilm_image, [PlanEntry(name, 0, 2, 3), PlanEntry(name, 2, 384, 5)])
    with pytest.raises(SmartquantError, match="covers 380 of 384 rows"):
        check_plan(minilm_image, [PlanEntry(name, 4, 384, 5)])
    with pytest.raises(SmartquantError, match="overlap"):
        check_plan(minilm_image, [PlanEntry(name, 0, 8, 3), PlanEntry(name, 4, 384, 5)])


def test_uniform_plan_bytes_and_requests(minilm_image):
    names = [e.name for e in minilm_image.entries][:3]
    for k in (2, 8):
        plan = uniform_plan(minilm_image, k, names)
        entries = [minilm_image.entry(n) for n in names]
        assert plan_dram_bytes(minilm_image, plan) == sum((e.blocks * k + e.meta_lines) * LINE_BYTES
                                                          for e in entries)
        addrs = plan_requests(minilm_image, plan, View.PACKED)
        assert len(addrs) == len(set(addrs)) == sum(e.blocks for e in entries) * lines_per_block(View.PACKED, k)
        assert {split_host_line_address(a)[:2] for a in addrs} == {(int(View.PACKED), k)}


def _golden_lines(image, plan) -> dict[int, bytes]:
    """Response lines for the plan's fp16 requests, from the golden model's bulk decode."""
    lines, views = {}, {}
    for p in plan:
        e = image.entry(p.tensor)
        if (p.tensor, p.k) not in views:
            views[p.tensor, p.k] = golden.read_view(image, p.tensor, View.FP16, p.k)
        data = views[p.tensor, p.k]
        first = golden.view_offset(e, View.FP16, p.k)
        lines.update({a: data[(split_host_line_address(a)[2] - first) * LINE_BYTES:][:LINE_BYTES]
                      for a in plan_requests(image, [p], View.FP16)})
    return lines


def test_line_source_rebuilds_the_store_plan_exactly(minilm_image):
    name = "encoder.layer.0.output.dense.weight"
    plan = [PlanEntry(name, 0, 32, 2), PlanEntry(name, 32, 100, 5), PlanEntry(name, 100, 384, 8)]
    lines = _golden_lines(minilm_image, plan)
    some = sorted(lines)[::997]
    assert all(golden.response_line(minilm_image, a) == (lines[a], False) for a in some)
    rebuilt = LineSource(minilm_image, plan, lines).linear(name)
    assert np.array_equal(rebuilt.numpy(), StorePlan(minilm_image, plan).linear(name).numpy())
    del lines[some[0]]
    with pytest.raises(SmartquantError, match="no 64-byte response"):
        LineSource(minilm_image, plan, lines).linear(name)


def test_dynamic_plan_served_as_lines_gives_the_same_embedding(policy, minilm_image):
    """The path the RTL end-to-end test takes: the policy's requests answered line by line."""
    from smartquant.sw.infer.model import SentenceEncoder, load_encoder
    encoder = load_encoder("minilm")
    text = ["A dog runs across the beach."]
    planner = policy.dynamic(3.0)
    expected = SentenceEncoder(encoder.config, encoder.tokenizer, planner).embed(text, observe=planner)
    lines = _golden_lines(minilm_image, planner.plan)
    served = SentenceEncoder(encoder.config, encoder.tokenizer, LineSource(minilm_image, planner.plan, lines))
    assert np.array_equal(served.embed(text), expected)
