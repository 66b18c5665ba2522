"""End to end: MiniLM layer 0 with its weights served by the simulated RTL (Verilator)
equals the golden software path exactly, and a corrupted served line is caught."""

import numpy as np
import pytest

from smartquant.sim.endtoend import ServedLayer, compare_paths, coverify_layer, served_lines
from smartquant.sw.infer.model import layer_weight_names, linear_weight_names, load_encoder
from smartquant.sw.image.plan import PlanEntry, check_plan, uniform_plan
from smartquant.sw.image.trace import load_trace
from smartquant.sw.infer.weights import LineSource, StorePlan

SENTENCES = ["A man is playing a guitar on stage.", "Interest rates rose again this quarter."]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("minilm")


@pytest.fixture(scope="module")
def mixed_plan(minilm_image, encoder):
    """Layer 0 at a different k per 32-row slice (2, 3, 4, 8 in turn); the rest at 4 bits."""
    ks = (2, 3, 4, 8)
    plan = [p for p in uniform_plan(minilm_image, 4, linear_weight_names(encoder.config))
            if p.tensor not in layer_weight_names(0)]
    for name in layer_weight_names(0):
        rows = minilm_image.entry(name).shape[0]
        plan += [PlanEntry(name, r, r + 32, ks[(r // 32) % len(ks)]) for r in range(0, rows, 32)]
    check_plan(minilm_image, plan)
    return plan


@pytest.fixture(scope="module")
def served(minilm_image, minilm_image_dir, mixed_plan, encoder, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("endtoend")
    result = coverify_layer(minilm_image, minilm_image_dir, mixed_plan, 0, encoder.config, encoder.tokenizer,
                            SENTENCES, workdir)
    return result, workdir


def test_layer_served_by_rtl_equals_golden(served, minilm_image, mixed_plan):
    result, workdir = served
    layer_lines = sum(minilm_image.entry(n).blocks * 16 for n in layer_weight_names(0))
    assert result.sim["passed"], result.sim["error"]
    assert result.lines_checked == layer_lines
    assert result.line_mismatches == 0
    assert result.weights_equal and result.layer_output_equal and result.embeddings_equal
    assert result.max_abs_diff == 0.0
    assert result.passed


def test_a_corrupted_served_line_is_caught(served, minilm_image, mixed_plan, encoder):
    """The comparison itself can fail: flip one byte of one line the RTL returned."""
    _, workdir = served
    trace = load_trace(workdir / "trace")
    received = np.load(workdir / "responses.npy")
    received[len(received) // 3, 5] ^= 0x40
    layer_plan = [p for p in mixed_plan if p.tensor in layer_weight_names(0)]
    golden = StorePlan(minilm_image, mixed_plan)
    rtl = ServedLayer(LineSource(minilm_image, layer_plan, served_lines(trace, received)), golden)
    verdict = compare_paths(encoder.config, encoder.tokenizer, golden, rtl, 0, SENTENCES)
    assert not verdict["weights_equal"]
    assert not verdict["layer_output_equal"]
    assert verdict["max_abs_diff"] > 0
