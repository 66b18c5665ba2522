"""Recipes: option costs, the budgeted search, JSON round trip through `quantize --recipe`,
codebook nesting, and the LUT image through the golden decoder."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from smartquant.cli import main
from smartquant.errors import SmartquantError
from smartquant.spec import (CODEBOOK_LINES, LINE_BYTES, PLANES, CFG_CODEBOOK_SHIFT, CFG_LUT, View,
                             codebook_index, region_config_word,
                             host_line_address, lines_per_block)
from smartquant.sw.image import golden
from smartquant.sw.quantize.codebook import CodebookQuantizer, fit_nested
from smartquant.sw.fpformat import fp16_bits
from smartquant.sw.image.image import Image
from smartquant.sw.quantize.recipe import (Recipe, TensorOption, choose, option_bits, option_lines, output_error,
                                  read_recipe, search, write_recipe)
from smartquant.sw.store.recipe_store import build_image


def tiny_weights(seed=0):
    """Three layers with different statistics: Gaussian, heavy-tailed, and one with outlier columns."""
    rng = np.random.default_rng(seed)
    heavy = rng.standard_t(3, (32, 128)) * 0.02
    outliers = rng.standard_normal((16, 256)) * 0.02
    outliers[:, :4] *= 20
    return {"a.weight": rng.standard_normal((24, 128)) * 0.05, "b.weight": heavy, "c.weight": outliers}


def test_option_bits_count_metadata_and_codebook():
    shape = (384, 384)                      # 288 whole blocks
    assert option_bits(shape, TensorOption(group_size=128), 3) == pytest.approx(3.25)
    assert option_bits(shape, TensorOption(group_size=32), 3) == pytest.approx(4.0)
    # in = 384 is padded to 512 for G = 256: the padding's planes count too
    assert option_bits(shape, TensorOption(group_size=256), 3) == pytest.approx((3 + 0.125) * 512 / 384)
    wide = (384, 1536)
    lut = option_bits(wide, TensorOption("codebook", 256), 3)
    assert lut == pytest.approx(3.125 + 512 / (384 * 1536))     # one table line at k = 3
    assert option_bits(wide, TensorOption("codebook", 256), 8) == pytest.approx(8.125 + 8 * 512 / (384 * 1536))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(1, 12), st.floats(0.0, 1.0)), min_size=1, max_size=4),
                min_size=1, max_size=4), st.integers(0, 40))
def test_choose_is_the_exact_optimum(rows, budget):
    """Against brute force over every assignment: within budget and least summed error."""
    import itertools
    measured = {f"t{i}": [(j, lines, e) for j, (lines, e) in enumerate(r)] for i, r in enumerate(rows)}
    feasible = [combo for combo in itertools.product(*measured.values()) if sum(c[1] for c in combo) <= budget]
    if not feasible:
        with pytest.raises(SmartquantError):
            choose(measured, budget)
        return
    choice = choose(measured, budget)
    assert sum(r[1] for r in choice.values()) <= budget
    assert sum(r[2] for r in choice.values()) == pytest.approx(min(sum(c[2] for c in combo) for combo in feasible))


def test_search_meets_budget_and_beats_uniform_default():
    weights = tiny_weights()
    default = TensorOption()                # asym g128 fp16 clip
    budget = sum(option_lines(w.shape, default, 3) for w in weights.values()) * 512 / sum(w.size for w in weights.values())
    recipe = search(weights, 3, budget, progress=False)
    assert recipe.average_bits() <= budget + 1e-9
    baseline = sum(output_error(w, default.quantize(w, (3,)).dequantize(3), None) for w in weights.values())
    assert sum(m["error"] for m in recipe.measured.values()) <= baseline + 1e-12
    assert recipe.options != {n: default for n in weights}      # these tensors want other options


def test_recipe_json_round_trip_through_quantize(tmp_path):
    from safetensors.numpy import save_file
    weights = {n: w.astype(np.float32) for n, w in tiny_weights(1).items()}
    src = tmp_path / "tiny.safetensors"
    save_file(weights, str(src))
    options = {"a.weight": TensorOption("codebook", 64), "b.weight": TensorOption("uniform", 32, True, "pow2"),
               "c.weight": TensorOption("uniform", 256, False, "bf16", False)}
    path = tmp_path / "recipe.json"
    write_recipe(Recipe(3, 3.5, (3, 4), options), path)
    assert read_recipe(path).options == options
    assert main(["quantize", str(src), "--recipe", str(path), "-o", str(tmp_path / "img")]) == 0
    image = Image.load(tmp_path / "img")
    assert {e.name: (e.group_size, e.symmetric, e.scale_format.name.lower()) for e in image.entries} == \
        {n: (o.group_size, o.symmetric, o.scale_format) for n, o in options.items()}
    assert [e.name for e in image.entries if e.codebook_base is not None] == ["a.weight"]
    for name, option in options.items():
        expected = option.quantize(weights[name].astype(np.float64), (3, 4)).dequantize(3)
        assert np.array_equal(golden.tensor_values(image, name, 3),
                              np.float16(expected).astype(np.float32)), name


def test_recipe_command_writes_what_quantize_reads(tmp_path, capsys):
    from safetensors.numpy import save_file
    src = tmp_path / "tiny.safetensors"
    save_file({n: w.astype(np.float32) for n, w in tiny_weights(2).items()}, str(src))
    out = tmp_path / "r.json"
    assert main(["recipe", str(src), "--bits", "3", "--budget", "3.3", "--group-sizes", "64,128,256",
                 "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["average_bits"] <= 3.3 and len(data["tensors"]) == 3
    assert "bits/weight" in capsys.readouterr().out
    assert main(["quantize", str(src), "--recipe", str(out), "-o", str(tmp_path / "img")]) == 0
    assert main(["recipe", str(src), "--bits", "3", "--budget", "2.0", "-o", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_bad_recipe_files_are_one_line_errors(tmp_path, capsys):
    from safetensors.numpy import save_file
    src = tmp_path / "tiny.safetensors"
    save_file({"a.weight": np.ones((4, 64), np.float32)}, str(src))
    for text in ("{", json.dumps({"format": "other"}),
                 json.dumps({"format": "smartquant-recipe", "version": 1, "bits": 3, "budget": 3, "views": [3],
                             "tensors": [{"name": "a.weight", "kind": "magic"}]}),
                 json.dumps({"format": "smartquant-recipe", "version": 1, "bits": 3, "budget": 3, "views": [3],
                             "tensors": [{"name": "zzz", "kind": "uniform"}]})):
        (tmp_path / "r.json").write_text(text)
        assert main(["quantize", str(src), "--recipe", str(tmp_path / "r.json"), "-o", str(tmp_path / "img")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "error" in err
        assert not (tmp_path / "img").exists()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(20, 600), st.sampled_from([(3,), (3, 4), (2, 5), ()]))
def test_codebook_nesting(seed, n, anchors):
    """Each view's bucket is the union of two buckets of the next view, its entry their weighted
    mean, and the buckets are intervals: codes sort like the values at every view."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n)
    weights = rng.uniform(0.1, 2.0, n)
    codes, table = fit_nested(values, weights, anchors)
    for k in range(1, 9):
        c = codes.astype(np.int64) >> (8 - k)
        for bucket in np.unique(c):
            members = c == bucket
            mean = np.sum(weights[members] * values[members]) / np.sum(weights[members])
            assert table[codebook_index(k, bucket)] == pytest.approx(mean, rel=1e-6, abs=1e-9)
        order = np.argsort(values, kind="stable")
        assert np.all(np.diff(c[order]) >= 0)
    # more bits never hurt: the weighted error falls view by view
    errors = [np.sum(weights * (values - table[codebook_index(k, codes.astype(np.int64) >> (8 - k))]) ** 2)
              for k in range(1, 9)]
    assert all(b <= a * (1 + 1e-9) + 1e-12 for a, b in zip(errors, errors[1:]))


def test_lut_image_lines_match_tensor_and_config():
    weights = tiny_weights(3)
    quantized = {"a.weight": CodebookQuantizer(32).quantize(weights["a.weight"]),
                 "b.weight": TensorOption(group_size=64).quantize(weights["b.weight"], (3,))}
    image = build_image(weights, quantized)
    entry = image.entry("a.weight")
    base = entry.codebook_base
    assert base % CODEBOOK_LINES == 0 and image.entry("b.weight").codebook_base is None
    assert np.array_equal(image.table_bits(entry), quantized["a.weight"].table_bits)
    for k in (1, 3, 8):
        for view in (View.FP16, View.BF16):
            per_block = lines_per_block(view, k)
            first = entry.plane_base // PLANES * per_block
            lines = b"".join(golden.response_line(image, host_line_address(view, k, first + i))[0]
                             for i in range(entry.blocks * per_block))
            assert lines == golden.read_view(image, "a.weight", view, k)
        assert np.array_equal(fp16_bits(golden.tensor_values(image, "a.weight", k)),
                              fp16_bits(quantized["a.weight"].dequantize(k)))
    # the affine tensor decodes affinely, packed / raw lines of the LUT tensor are its DRAM lines,
    # its int8 view is poison
    other = image.entry("b.weight")
    assert golden.response_line(image, host_line_address(View.FP16, 3, other.plane_base // PLANES * 16))[0] == \
        golden.read_view(image, "b.weight", View.FP16, 3)[:LINE_BYTES]
    assert golden.response_line(image, host_line_address(View.PACKED, 2, entry.plane_base // PLANES * 2 + 1)) == \
        (image.lines(entry.plane_base + 1, 1).tobytes(), False)
    assert golden.response_line(image, host_line_address(View.RAW, 0, base)) == (image.lines(base, 1).tobytes(), False)
    assert golden.response_line(image, host_line_address(View.INT8, 3, entry.plane_base // PLANES * 8)) == golden.POISON
    config = region_config_word(entry.group_size, entry.symmetric, entry.scale_format, codebook_base=base)
    assert config & CFG_LUT and config >> CFG_CODEBOOK_SHIFT == base // CODEBOOK_LINES
    assert image.lines(base, 1).tobytes()[:4] == bytes(4)      # reserved entries 0 and 1
    assert len(image.dram) == (base + CODEBOOK_LINES) * LINE_BYTES
