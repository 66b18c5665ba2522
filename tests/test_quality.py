"""Evaluation set, quality metrics and the experiment rows (small samples)."""

import re

import numpy as np
import pytest
from hypothesis import given, strategies as st

from smartquant.errors import SmartquantError
from smartquant.sw.infer import experiment
from smartquant.sw.infer.evalset import (LABELS, load_calibration, load_pair_set, load_pairs, load_ptq_calibration,
                                        unique_sentences)
from smartquant.sw.infer.quality import rank, spearman

values = st.lists(st.integers(-1000, 1000), min_size=2, max_size=40, unique=True)


@given(values)
def test_spearman_of_monotone_maps(x):
    x = np.array(x, dtype=np.int64)
    assert spearman(x, x ** 3 + 5) == pytest.approx(1.0)
    assert spearman(x, -7 * x) == pytest.approx(-1.0)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_ranks_average_ties(x):
    r = rank(x)
    assert r.sum() == pytest.approx(len(x) * (len(x) + 1) / 2)
    for i in range(len(x)):
        assert r[i] == pytest.approx(sum(v < x[i] for v in x) + (sum(v == x[i] for v in x) + 1) / 2)


def test_spearman_with_ties():
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / np.sqrt(3))


def test_evalset_is_shipped_and_balanced():
    pairs = load_pairs()
    assert 60 <= len(pairs) <= 100
    assert {p.label for p in pairs} == set(LABELS)
    assert not set(load_calibration()) & set(unique_sentences(pairs))
    assert len({p.label for p in load_pairs(limit=6)}) == 3


def _largest_word_overlap(sentences, others) -> float:
    """The largest Jaccard overlap of the word sets of a sentence of `sentences` and one of `others`."""
    words = {s: set(re.findall(r"[a-z]+", s.lower())) for s in [*sentences, *others]}
    return max(len(words[a] & words[b]) / len(words[a] | words[b]) for a in sentences for b in others)


def test_ptq_calibration_extends_the_plan_calibration_and_stays_off_the_pairs():
    ptq, plan, evaluated = load_ptq_calibration(), load_calibration(), unique_sentences(load_pairs())
    assert ptq[:len(plan)] == plan and len(ptq) > 10 * len(plan) and len(set(ptq)) == len(ptq)
    # calibration shares no sentence, nor most of one's words, with the pairs
    assert _largest_word_overlap(ptq, evaluated) <= 0.3
    assert len(load_ptq_calibration(limit=5)) == 5


def test_holdout_pairs_share_no_sentence_with_anything_tuned_on():
    holdout = load_pair_set("holdout")
    assert len(holdout) == 40 and {p.label for p in holdout} == set(LABELS)
    assert load_pair_set("shipped") == load_pairs()
    seen = load_ptq_calibration() + unique_sentences(load_pairs())
    assert _largest_word_overlap(unique_sentences(holdout), seen) <= 0.45         # no hold-out sentence repeats, or nearly repeats, a tuned-on one


def test_malformed_evalset(tmp_path):
    bad = tmp_path / "pairs.tsv"
    bad.write_text("similar\tone\ttwo\n")
    with pytest.raises(SmartquantError, match="pair 1 is not"):
        load_pairs(bad)
    with pytest.raises(SmartquantError, match="cannot read"):
        load_pairs(tmp_path / "missing.tsv")
    with pytest.raises(SmartquantError, match="missing.tsv: cannot read"):
        load_pair_set(str(tmp_path / "missing.tsv"))


def test_experiment_rows_and_plots(minilm_image, tmp_path):
    ev = experiment.prepare(minilm_image, pairs=load_pairs(limit=6), calibration=load_calibration(limit=3))
    steps = []
    rows = experiment.run(ev, static_ks=(3, 8), budgets=(3.5,), progress=steps.append)
    assert steps == ["uniform 3", "uniform 8", "static 3.5", "dynamic 3.5"]
    by = {r["plan"]: r for r in rows}
    assert by["uniform 8"]["vs_int8"] == 1.0
    assert by["uniform 8"]["cosine_mean"] > 0.999 and by["uniform 8"]["spearman"] > 0.99
    assert by["uniform 3"]["cosine_mean"] < by["uniform 8"]["cosine_mean"]
    for plan in ("static 3.5", "dynamic 3.5"):
        assert by[plan]["avg_bits"] <= 3.5 + 1e-9
        assert by["uniform 3"]["dram_bytes"] < by[plan]["dram_bytes"] < by["uniform 8"]["dram_bytes"]
    paths = experiment.plot(rows, tmp_path / "plots")
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_image_without_the_model(tiny_image):
    with pytest.raises(SmartquantError, match="image lacks 36 linear weights"):
        experiment.prepare(tiny_image)
