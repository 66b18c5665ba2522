"""Every quantization method writes a store image (`smartquant quantize --method`), the joint
multi-view objective, the AXE guarantee in the manifest and its image-only check, and
the bad inputs of the PTQ methods (one line, exit 2, nothing written)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from smartquant.cli import main
from smartquant.errors import SmartquantError
from smartquant.spec import View
from smartquant.sw.codes import view_code
from smartquant.sw.image.golden import tensor_values
from smartquant.sw.image.image import Image
from smartquant.sw.quantize.gptq import GPTQ
from smartquant.sw.quantize.joint import JointClip, JointCodes, JointGPTQ
from smartquant.sw.quantize.quantizer import NestedMSEClip, NestedRTN, group_view, pad_columns
from smartquant.sw.store.methods import DEFAULT_DAMPING, METHODS

from cli_errors import assert_one_line_error

SHAPES = {"w1": (16, 100), "w2": (8, 256)}
AXE_OPTIONS = ["--format", "sym", "--group-size", "64", "--accumulator-bits", "20", "--input-bits", "8",
               "--signed-inputs"]


def _layer(rows=24, cols=128, samples=300, seed=0):
    """A weight and correlated calibration inputs (samples, cols)."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=gen, dtype=torch.float64) / cols ** 0.5
    x = torch.randn(samples, cols, generator=gen, dtype=torch.float64) @ (torch.eye(cols, dtype=torch.float64) + 2 * mix)
    return torch.randn(rows, cols, generator=gen, dtype=torch.float64).numpy() * 0.05, x


def _output_error(x, weight, approx):
    x = x.numpy()
    return float(np.square(x @ (approx - weight).T).sum() / np.square(x @ weight.T).sum())


@pytest.mark.parametrize("views, lam", [((3, 4, 8), (1, 1, 1)), ((2, 4), (1, 5)), ((3, 4, 8), (1, 40, 3000)), ((1,), None)])
def test_joint_codes_are_the_exhaustive_minimum(views, lam):
    joint = JointCodes(views, lam)
    lam = lam or (1,)
    t = np.concatenate([np.random.default_rng(1).uniform(-20, 280, 5000), np.arange(-2, 258, 0.25)])
    q = np.arange(256, dtype=np.uint8)
    table = sum(w * np.square(t[:, None] - view_code(q, k)[None, :].astype(float)) for k, w in zip(views, lam))
    index = joint.best(t)
    got = table[np.arange(t.size), joint.codes[index]]
    np.testing.assert_allclose(got, table.min(1), rtol=0, atol=1e-9)
    np.testing.assert_allclose(joint.objective(t, index), got, rtol=1e-9, atol=1e-6)


def test_joint_clip_objective_never_worse_than_min_max():
    weight = np.random.default_rng(2).standard_t(4, (32, 256)) * 0.02
    clip = JointClip(views=(3, 4, 8), view_weights=(1, 1, 1))
    groups = group_view(pad_columns(weight, 128), 128)

    def objective(params):
        _, stored, zero = params
        t = groups / stored[:, None] + zero[:, None]
        return (clip.joint.objective(t, clip.joint.best(t)) * np.square(stored)[:, None]).sum(1)
    searched, plain = objective(clip.group_params(groups)), objective(NestedRTN().group_params(groups))
    assert np.all(searched <= plain + 1e-12) and searched.sum() < 0.98 * plain.sum()     # measured 0.956


@pytest.mark.parametrize("per_view", [False, True])
def test_joint_with_one_view_is_dedicated_gptq(per_view):
    weight, x = _layer()
    grid = NestedMSEClip(views=(3,))
    joint, gptq = JointGPTQ(weight.shape[1]), GPTQ(weight.shape[1])
    joint.add_batch(x)
    gptq.add_batch(x)
    a = joint.quantize(weight, views=(3,), grid=grid, per_view=per_view)
    b = gptq.quantize(weight, views=(3,), grid=grid)
    np.testing.assert_array_equal(view_code(a.codes, 3), view_code(b.codes, 3))


@pytest.mark.parametrize("per_view", [False, True])
def test_joint_beats_the_grid_alone_at_the_low_views(per_view):
    weight, x = _layer(cols=256)
    grid = JointClip(views=(3, 4, 8), view_weights=(1, 1, 1))
    plain = grid.quantize(weight)
    joint = JointGPTQ(weight.shape[1])
    joint.add_batch(x)
    q = joint.quantize(weight, views=(3, 4, 8), view_weights=(1, 1, 1), grid=grid, per_view=per_view)
    for k in (3, 4):
        assert _output_error(x, weight, q.dequantize(k)) < 0.8 * _output_error(x, weight, plain.dequantize(k))


def test_joint_anchor_fixes_the_coarse_bits_and_refines_inside_them():
    weight, x = _layer(cols=256)
    grid = JointClip(views=(2, 3, 4, 8), view_weights=(0.5, 1, 8, 64))

    def joint(views, lam, **kw):
        layer = JointGPTQ(weight.shape[1])
        layer.add_batch(x)
        return layer.quantize(weight, views=views, view_weights=lam, grid=grid, **kw)
    anchored = joint((2, 3, 4, 8), (0.5, 1, 8, 64), anchor=3)
    first = joint((2, 3, 8), (0.5, 1, 64))
    np.testing.assert_array_equal(view_code(anchored.codes, 3), view_code(first.codes, 3))
    # the second pass re-chooses the low bits for views 4 and 8 inside the anchored buckets
    assert not np.array_equal(anchored.codes, first.codes)
    assert _output_error(x, weight, anchored.dequantize(4)) < _output_error(x, weight, first.dequantize(4))


@pytest.mark.parametrize("anchor, per_view, message", [(4, True, "another view between"), (5, True, "one of the views"),
                                                       (3, False, "needs per-view feedback")])
def test_joint_anchor_is_checked(anchor, per_view, message):
    weight, x = _layer(cols=64)
    layer = JointGPTQ(weight.shape[1])
    layer.add_batch(x)
    with pytest.raises(SmartquantError, match=message):
        layer.quantize(weight, views=(3, 4, 8), anchor=anchor, per_view=per_view)


# --- the CLI: every method writes an image --------------------------------------------------

@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_file({n: torch.randn(*s) * 0.05 for n, s in SHAPES.items()} | {"bias": torch.randn(8)}, str(path))
    return path


@pytest.fixture
def inputs_file(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "calib.safetensors"
    save_file({n: torch.randn(40, s[1]) for n, s in SHAPES.items()}, str(path))
    return path


def _method_args(method, inputs_file):
    args = ["--method", method]
    if method not in ("rtn", "mse"):
        args += ["--calibration-inputs", str(inputs_file)]
    return args + (AXE_OPTIONS if method.startswith("axe") else [])


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_an_image_read_at_every_view(method, model_file, inputs_file, tmp_path, capsys):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out)] + _method_args(method, inputs_file)) == 0
    image = Image.load(out)
    assert image.info["method"] == method and image.info["views"] == [3, 4, 8]
    assert ("accumulator" in image.info) == method.startswith("axe")
    weights = {n: t.numpy() for n, t in load_file(str(model_file)).items() if n in SHAPES}
    for k in range(1, 9):
        assert main(["read", str(out), "--tensor", "w2", "--bits", str(k), "-o", str(tmp_path / f"r{k}.npy")]) == 0
        read = np.load(tmp_path / f"r{k}.npy").astype(np.float32)
        np.testing.assert_array_equal(read, tensor_values(image, "w2", k, View.FP16))
    error8 = np.linalg.norm(np.load(tmp_path / "r8.npy").astype(np.float64) - weights["w2"])
    assert error8 < 0.2 * np.linalg.norm(weights["w2"])        # the image holds this weight, not another
    assert main(["inspect", str(out)]) == 0


def test_axe_image_declares_and_verifies_its_guarantee(model_file, inputs_file, tmp_path, capsys):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out), "--views", "4,8"]
                + _method_args("axe-gptq", inputs_file)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["info"]["accumulator"] == {"bits": 20, "input_bits": 8, "signed_inputs": True,
                                               "tile": None, "views": [4, 8]}
    capsys.readouterr()
    assert main(["inspect", str(out), "--json", str(tmp_path / "s.json")]) == 0
    rows = {r["k"]: r for r in json.loads((tmp_path / "s.json").read_text())["accumulator"]["per_k"]}
    assert rows[4]["status"] == rows[8]["status"] == "ok" and rows[4]["overflowing_tiles"] == 0
    assert rows[8]["worst_max"] <= (1 << 19) - 1 and rows[8]["tiles"] == 16 * 2 + 8 * 4
    assert all(rows[k]["status"] == "not guaranteed" for k in (1, 2, 3, 5, 6, 7))
    assert "not guaranteed" in capsys.readouterr().out
    # the same codes declared for a narrower accumulator: the check reads the image and finds overflows
    manifest["info"]["accumulator"]["bits"] = 12
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["inspect", str(out)]) == 1
    assert "OVERFLOW" in capsys.readouterr().out


@pytest.mark.parametrize("field, value, message", [
    ("tile", 48, "tile 48 does not divide"), ("bits", 8, "must exceed input_bits"),
    ("views", [4, 4], "twice"), ("extra", 1, "unknown field 'extra'")])
def test_manifest_accumulator_is_validated(field, value, message, model_file, inputs_file, tmp_path):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out)] + _method_args("axe-gptq", inputs_file)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["info"]["accumulator"][field] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SmartquantError, match=message):
        Image.load(out)


def _wide_inputs(t, model_file):
    path = t / "wide.safetensors"
    save_file({"w1": torch.randn(10, 101), "w2": torch.randn(10, 256)}, str(path))
    return path


BAD = {
    "PTQ without calibration": (lambda t, m, c: ["--method", "gptq"], "needs calibration data"),
    "calibration width": (lambda t, m, c: ["--method", "joint", "--calibration-inputs", str(_wide_inputs(t, m))],
                          "not (tokens, 100)"),
    "AXE on asym": (lambda t, m, c: ["--method", "axe-gptq", "--calibration-inputs", str(c),
                                     "--accumulator-bits", "20", "--input-bits", "8"], "needs a symmetric format"),
    "infeasible P": (lambda t, m, c: ["--method", "axe-gptq", "--calibration-inputs", str(c), "--format", "sym",
                                      "--accumulator-bits", "12", "--input-bits", "8"], "too small for the 3-bit view"),
    "AXE without P": (lambda t, m, c: ["--method", "axe-gpfq", "--calibration-inputs", str(c), "--format", "sym"],
                      "are required"),
    "calibration for RTN": (lambda t, m, c: ["--method", "rtn", "--calibration-inputs", str(c)], "uses no calibration"),
    "view weights count": (lambda t, m, c: ["--method", "joint", "--calibration-inputs", str(c),
                                            "--view-weights", "1,2"], "2 view weights for 3 views"),
    "joint feedback on gptq": (lambda t, m, c: ["--method", "gptq", "--calibration-inputs", str(c),
                                                "--joint-feedback", "mean"], "--joint-feedback belongs to the joint"),
    "joint anchor on gptq": (lambda t, m, c: ["--method", "gptq", "--calibration-inputs", str(c),
                                              "--joint-anchor", "3"], "--joint-anchor belongs to the joint"),
    "joint anchor not a view": (lambda t, m, c: ["--method", "joint", "--calibration-inputs", str(c),
                                                 "--joint-anchor", "2"], "must be one of the views"),
    "act order for MSE": (lambda t, m, c: ["--method", "mse", "--act-order"], "--act-order belongs to the calibrated"),
    "damping for RTN": (lambda t, m, c: ["--method", "rtn", "--damping", "0.1"], "--damping belongs to the calibrated"),
    "damping out of range": (lambda t, m, c: ["--method", "gptq", "--calibration-inputs", str(c), "--damping", "1"],
                             "damping 1 must be a fraction of the mean Hessian diagonal in [0, 1)"),
    "sequential for RTN": (lambda t, m, c: ["--method", "rtn", "--sequential-calibration"], "uses no calibration"),
    "sequential with inputs": (lambda t, m, c: ["--method", "gptq", "--calibration-inputs", str(c),
                                                "--sequential-calibration"], "minilm only"),
    "method options with a recipe": (lambda t, m, c: ["--recipe", str(t / "r.json"), "--method", "joint",
                                                      "--views", "4,8"],
                                     "--method, --views do not combine with --recipe"),
    "joint feedback with a recipe": (lambda t, m, c: ["--recipe", str(t / "r.json"), "--joint-feedback", "mean"],
                                     "--joint-feedback does not combine with --recipe"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, model_file, inputs_file, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    make_args, message = BAD[case]
    args = make_args(tmp_path, model_file, inputs_file)
    before = set(work.iterdir())
    assert main(["quantize", str(model_file), "-o", str(work / "img")] + args) == 2
    assert_one_line_error(capsys.readouterr().err, "quantize", message)
    assert set(work.iterdir()) == before


def test_minilm_calibration_reaches_every_layer_but_the_pooler():
    from smartquant.sw.store.methods import check_minilm_calibration, minilm_calibration
    from smartquant.sw.store.sources import minilm_source
    inputs, info = minilm_calibration(2)
    weights = minilm_source().weights
    assert info["sentences"] == 2 and info["tokens"] > 10
    assert check_minilm_calibration(inputs, weights) == ["pooler.dense.weight"]
    assert inputs["encoder.layer.0.output.dense.weight"].shape == (info["tokens"], 1536)


def test_rotated_weights_calibrate_on_rotated_inputs():
    from smartquant.sw.quantize.rotation import Rotation
    from smartquant.sw.store.methods import rotate_calibration
    weight, x = _layer(rows=6, cols=96)
    rotation = Rotation.for_size(96, seed=3)
    inputs = rotate_calibration({"w": x.numpy(), "plain": x.numpy()}, {"w": rotation})
    np.testing.assert_allclose(inputs["w"] @ rotation.rotate_weight(weight).T, x.numpy() @ weight.T, atol=1e-9)
    assert inputs["plain"] is not None and np.array_equal(inputs["plain"], x.numpy())


def test_a_calibrated_method_on_a_rotated_source_declares_h(model_file, inputs_file, tmp_path):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out), "--rotate", "hadamard"]
                + _method_args("joint", inputs_file)) == 0
    image = Image.load(out)
    assert image.info["method"] == "joint" and image.entry("w2").rotation is not None


@pytest.mark.parametrize("method, option", [("joint", ["--act-order"]), ("gptq", ["--act-order"]),
                                            ("joint", ["--joint-anchor", "3"]), ("gptq", ["--damping", "0.5"])])
def test_act_order_anchor_and_damping_change_the_codes_and_are_recorded(method, option, model_file, inputs_file,
                                                                        tmp_path):
    def quantize(name, options):
        assert main(["quantize", str(model_file), "-o", str(tmp_path / name)] + options
                    + _method_args(method, inputs_file)) == 0
        return Image.load(tmp_path / name)
    plain, changed = quantize("plain", []), quantize("changed", option)
    key, value, before = {"--act-order": ("act_order", True, None), "--joint-anchor": ("joint_anchor", 3, None),
                          "--damping": ("damping", 0.5, DEFAULT_DAMPING)}[option[0]]
    assert changed.info[key] == value and plain.info.get(key) == before
    assert not np.array_equal(tensor_values(changed, "w2", 3, View.FP16), tensor_values(plain, "w2", 3, View.FP16))


@pytest.mark.slow
def test_sequential_calibration_of_minilm_writes_an_image(tmp_path):
    out = tmp_path / "img"
    assert main(["quantize", "minilm", "-o", str(out), "--method", "gptq", "--views", "3",
                 "--calibration", "2", "--sequential-calibration"]) == 0
    image = Image.load(out)
    assert image.info["calibration"]["sequential"] is True and image.info["calibration"]["sentences"] == 2
    assert main(["read", str(out), "--tensor", "encoder.layer.5.output.dense.weight", "--bits", "3",
                 "-o", str(tmp_path / "r.npy")]) == 0


def test_option_defaults_follow_the_source():
    """`quantize minilm` defaults to the configuration that meets the any-precision targets;
    a .safetensors source (no calibration) to mse at G = 128, unrotated; given options win."""
    from smartquant.cli import build_parser
    from smartquant.commands.quantize import method_settings
    from smartquant.sw.store.methods import MINILM_DEFAULTS

    def settings(*argv):
        return method_settings(build_parser().parse_args(["quantize", *argv, "-o", "img"]))
    minilm = settings("minilm")
    assert (minilm.method, minilm.views, minilm.view_weights, minilm.fmt.group_size, minilm.damping,
            minilm.act_order) == ("joint", (3, 4, 8), (1.0, 1.0, 3.0), 32, 0.3, True)
    assert MINILM_DEFAULTS.rotate == "hadamard" and minilm == MINILM_DEFAULTS.settings()
    plain = settings("w.safetensors")
    assert (plain.method, plain.views, plain.view_weights, plain.fmt.group_size) == ("mse", (3, 4, 8), None, 128)
    named = settings("minilm", "--views", "3,4", "--group-size", "128", "--no-act-order", "--damping", "0.05")
    assert (named.method, named.views, named.view_weights, named.fmt.group_size, named.damping, named.act_order) == \
        ("joint", (3, 4), (1.0, 1.0), 128, 0.05, False)
    other = settings("minilm", "--method", "gptq")       # another method: the reference damping, input order
    assert (other.method, other.damping, other.act_order) == ("gptq", 0.01, False)
    assert settings("w.safetensors", "--method", "joint").damping == 0.01
