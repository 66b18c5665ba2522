"""Rotation (store W·H, rotate the activations by H): H rebuilt from the manifest alone, the
round trip, RTN on a rotated tensor, the manifest checks, the inference path and the CLI."""

import json
import re

import numpy as np
import pytest
import torch

from smartquant.cli import main
from smartquant.errors import SmartquantError
from smartquant.sw.image.image import Image
from smartquant.sw.image.plan import uniform_plan
from smartquant.sw.infer.model import Transformer, TransformerConfig, linear_weight_names
from smartquant.sw.infer.policy import PrecisionPolicy
from smartquant.sw.infer.ptq_model import quantize_model as ptq_quantize
from smartquant.sw.infer.weights import FullPrecision, StorePlan
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat, relative_error
from smartquant.sw.quantize.rotation import (Rotation, hadamard_matrix, largest_block, paley_12, parse_rotate,
                                             rotations_for)
from smartquant.sw.store.model_store import quantize_model
from smartquant.sw.store.rotated import rotated_source
from smartquant.sw.store.sources import Source


# --- an independent reader: H from docs/FORMATS.md ("Rotation") and the manifest only ---------

def _splitmix64_msb(seed: int, count: int) -> np.ndarray:
    """Sign per input from SplitMix64 (numpy uint64 arithmetic, wrapping)."""
    with np.errstate(over="ignore"):
        state = np.uint64(seed) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.where(z >> np.uint64(63), -1.0, 1.0)


def _hadamard(b: int) -> np.ndarray:
    """Walsh: A[i, j] = (-1)^popcount(i & j); times Paley 12 (Legendre symbol mod 11) when 12 | b."""
    m = b // 12 if b % 12 == 0 else b
    i = np.arange(m)
    walsh = np.array([[(-1) ** bin(x & y).count("1") for y in i] for x in i], dtype=float)
    if m == b:
        return walsh
    legendre = [0] + [1 if pow(d, 5, 11) == 1 else -1 for d in range(1, 11)]
    paley = np.eye(12)
    paley[0, 1:], paley[1:, 0] = 1, -1
    for r in range(11):
        for c in range(11):
            paley[1 + r, 1 + c] += legendre[(c - r) % 11]
    return np.kron(paley, walsh)


def _rebuild(declared: dict) -> np.ndarray:
    assert declared["kind"] == "hadamard" and declared["signs"] == "splitmix64-msb"
    n, b = declared["size"], declared["block"]
    blocks = np.kron(np.eye(n // b), _hadamard(b) / np.sqrt(b))
    return _splitmix64_msb(declared["seed"], n)[:, None] * blocks


def test_splitmix64_reference_value():
    assert _splitmix64_msb(0, 1)[0] == -1.0           # first output 0xE220A8397B1DCDAF: bit 63 set
    from smartquant.sw.quantize.rotation import splitmix64
    assert splitmix64(0, 3)[0] == 0xE220A8397B1DCDAF


@pytest.mark.parametrize("block", [2, 12, 24, 32, 96, 384])
def test_hadamard_blocks_are_hadamard(block):
    a = hadamard_matrix(block)
    assert set(np.unique(a)) == {-1.0, 1.0}
    np.testing.assert_array_equal(a @ a.T, block * np.eye(block))
    np.testing.assert_array_equal(a, _hadamard(block))


def test_paley_12():
    p = paley_12()
    np.testing.assert_array_equal(p @ p.T, 12 * np.eye(12))


@pytest.mark.parametrize("size, block", [(384, 384), (1536, 1536), (96, 96), (100, 4), (40, 8), (2, 2)])
def test_default_block_is_the_largest_order_dividing(size, block):
    assert largest_block(size) == block
    h = Rotation.for_size(size, seed=7).matrix()
    np.testing.assert_allclose(h @ h.T, np.eye(size), atol=1e-12)


def test_no_block_for_odd_inputs():
    with pytest.raises(SmartquantError, match="in=45 has no Hadamard block"):
        largest_block(45)
    with pytest.raises(SmartquantError, match="tensor 'w': cannot rotate"):
        rotations_for({"w": np.zeros((2, 45))}, 0)


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 96)) * 0.05
    w[:, 5] *= 30.0                       # an outlier input channel: what rotation spreads out
    return {"w": w.astype(np.float32), "v": (rng.standard_normal((8, 48)) * 0.05).astype(np.float32)}


def test_manifest_declares_h_well_enough_to_rebuild_it(tmp_path):
    source = rotated_source(Source("t", _weights(), {}), "hadamard:12345")
    quantize_model(source.weights, NestedRTN(StoreFormat(group_size=32)), warn=lambda _: None,
                   rotations=source.rotations).save(tmp_path / "img")
    manifest = json.loads((tmp_path / "img" / "manifest.json").read_text())
    original = _weights()
    for row in manifest["tensors"]:
        declared = row["rotation"]
        assert declared == {"kind": "hadamard", "size": row["shape"][1], "block": row["shape"][1],
                            "seed": 12345, "signs": "splitmix64-msb"}
        h = _rebuild(declared)
        np.testing.assert_allclose(h, source.rotations[row["name"]].matrix(), atol=1e-15)
        # the stored k=8 view, undone with the rebuilt H, is the source weight up to quantization
        stored = Image.load(tmp_path / "img")
        from smartquant.sw.image.golden import tensor_values
        from smartquant.spec import View
        unrotated = tensor_values(stored, row["name"], 8, View.FP16).astype(np.float64) @ h.T
        assert relative_error(unrotated, original[row["name"]]) < 0.01


def test_round_trip_and_rtn_on_a_rotated_tensor():
    w = _weights()["w"].astype(np.float64)
    rot = Rotation.for_size(96, seed=3)
    x = np.random.default_rng(1).standard_normal((20, 96))
    np.testing.assert_allclose(rot.rotate_inputs(x) @ rot.rotate_weight(w).T, x @ w.T, atol=1e-12)
    np.testing.assert_allclose(rot.unrotate_weight(rot.rotate_weight(w)), w, atol=1e-14)
    rtn = NestedRTN(StoreFormat(group_size=32))
    plain = rtn.quantize(w).dequantize(3)
    rotated = rot.unrotate_weight(rtn.quantize(rot.rotate_weight(w)).dequantize(3))
    exact = x @ w.T
    # y from the rotated store equals the unrotated one up to quantization, and the
    # outlier column spread over all inputs makes the 3-bit grid finer for every group
    assert relative_error(rot.rotate_inputs(x) @ rtn.quantize(rot.rotate_weight(w)).dequantize(8).T, exact) < 0.01
    assert relative_error(rotated, w) < 0.6 * relative_error(plain, w)


def test_gptq_on_rotated_inputs_beats_rtn_on_the_rotated_layer():
    rng = np.random.default_rng(2)
    w = _weights()["w"]
    mix = rng.standard_normal((96, 96))
    calibration = {"w": torch.from_numpy(rng.standard_normal((400, 96)) @ mix * 0.2)}
    rotations = rotations_for({"w": w}, 0)
    grid = NestedRTN(StoreFormat(group_size=32))
    x = calibration["w"].numpy()
    exact = x @ w.T.astype(np.float64)

    def output_error(algorithm):
        q = ptq_quantize({"w": w}, ["w"], algorithm, (3,), grid, calibration, progress=False,
                         rotations=rotations)[0]["w"]
        return relative_error(rotations["w"].rotate_inputs(x) @ q.dequantize(3).T, exact)
    assert output_error("gptq") < 0.8 * output_error("rtn")


# --- the manifest's rotation field ------------------------------------------------------

@pytest.fixture
def rotated_image_dir(tmp_path):
    source = rotated_source(Source("t", _weights(), {}), "hadamard:9")
    quantize_model(source.weights, NestedRTN(StoreFormat(group_size=32)), warn=lambda _: None,
                   rotations=source.rotations).save(tmp_path / "img")
    return tmp_path / "img"


@pytest.mark.parametrize("field, value, message", [
    ("size", 48, "rotation size 48 is not the tensor's in=96"),
    ("block", 64, "rotation block 64 is not 2^a or 12*2^a dividing in=96"),
    ("block", 36, "rotation block 36 is not 2^a or 12*2^a"),
    ("block", 1, "rotation block 1 must be in 2..96"),
    ("seed", -1, "rotation seed"),
    ("seed", 1 << 64, "rotation seed"),
    ("kind", "random", "rotation kind 'random' is not one of hadamard"),
    ("signs", "pcg64", "rotation signs 'pcg64' is not 'splitmix64-msb'"),
    ("extra", 1, "unknown field 'extra'"),
])
def test_bad_rotation_field_is_one_line(rotated_image_dir, field, value, message):
    path = rotated_image_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tensors"][0]["rotation"][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(SmartquantError, match=re.escape(message)) as info:
        Image.load(rotated_image_dir)
    assert "\n" not in str(info.value) and "'w'" in str(info.value)


def test_loaded_image_keeps_the_rotation(rotated_image_dir):
    image = Image.load(rotated_image_dir)
    assert image.entry("w").rotation == Rotation(96, 96, 9) and image.entry("v").rotation == Rotation(48, 48, 9)


# --- the inference path ------------------------------------------------------------------

TINY = TransformerConfig(vocab_size=50, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                         max_positions=16, type_vocab_size=1)      #: each head's rows are whole blocks


def _tiny_model(seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, f = TINY.hidden_size, TINY.intermediate_size
    out = {"embeddings.word_embeddings.weight": rng.standard_normal((TINY.vocab_size, h)),
           "embeddings.position_embeddings.weight": rng.standard_normal((TINY.max_positions, h)) * 0.1,
           "embeddings.token_type_embeddings.weight": rng.standard_normal((1, h)) * 0.1,
           "embeddings.LayerNorm.weight": np.ones(h), "embeddings.LayerNorm.bias": np.zeros(h)}
    for name in linear_weight_names(TINY):
        prefix = name[:-len(".weight")]
        rows, cols = {"intermediate": (f, h), "output": (h, f)}.get(name.split(".")[3], (h, h))
        out[name] = rng.standard_normal((rows, cols)) / np.sqrt(cols)
        out[name][:, 3] *= 8.0
        out[f"{prefix}.bias"] = rng.standard_normal(rows) * 0.02
    for i in range(TINY.num_layers):
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[f"encoder.layer.{i}.{norm}.weight"] = np.ones(h)
            out[f"encoder.layer.{i}.{norm}.bias"] = np.zeros(h)
    return {k: v.astype(np.float32) for k, v in out.items()}


class _IgnoresRotation(StorePlan):
    def rotation(self, name):
        return None


def _tiny_image(rotate: str):
    tensors = _tiny_model()
    names = linear_weight_names(TINY)
    source = rotated_source(Source("tiny", {n: tensors[n] for n in names},
                                   {n: a for n, a in tensors.items() if n not in names}), rotate)
    image = quantize_model(source.weights, NestedRTN(StoreFormat(group_size=32)), side=source.side,
                           warn=lambda _: None, rotations=source.rotations)
    return tensors, names, source, image


def test_rotated_image_runs_close_to_the_float_model():
    tensors, names, source, image = _tiny_image("hadamard:1")
    assert all(image.entry(n).rotation is not None for n in names)
    ids = torch.randint(0, TINY.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    exact = Transformer(TINY, FullPrecision(tensors)).hidden_states(ids)
    plan = uniform_plan(image, 8, names)
    seen = {}
    served = Transformer(TINY, StorePlan(image, plan)).hidden_states(
        ids, observe=lambda name, x: seen.setdefault(name, x))
    unrotated = Transformer(TINY, _IgnoresRotation(image, plan)).hidden_states(ids)
    plain = _tiny_image("none")[3]
    unrotated_image = Transformer(TINY, StorePlan(plain, uniform_plan(plain, 8, names))).hidden_states(ids)

    def error(hidden):
        return float((hidden - exact).norm() / exact.norm())
    # as close as the unrotated 8-bit image (this random model amplifies 8-bit error to ~2 %)
    assert error(served) < 1.2 * error(unrotated_image) < 0.03
    assert error(unrotated) > 0.3
    # the observer sees each layer's input in the stored (rotated) coordinates
    first = names[0]
    x = Transformer(TINY, FullPrecision(tensors)).embed_tokens(ids)
    torch.testing.assert_close(seen[first], source.rotations[first].rotate_inputs(x))


def test_dynamic_planner_rotates_the_inputs():
    _, names, _, image = _tiny_image("hadamard:2")
    ids = torch.randint(0, TINY.vocab_size, (1, 8), generator=torch.Generator().manual_seed(3))
    planner = PrecisionPolicy(image, TINY).dynamic(8.0)          # every slice at k = 8
    dynamic = Transformer(TINY, planner).hidden_states(ids, observe=planner)
    uniform = Transformer(TINY, StorePlan(image, uniform_plan(image, 8, names))).hidden_states(ids)
    torch.testing.assert_close(dynamic, uniform, rtol=0, atol=0)


# --- the CLI ----------------------------------------------------------------------------

def test_quantize_rotate_writes_the_rotation(model_file, tmp_path, capsys):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out), "--method", "rtn", "--rotate", "hadamard:5"]) == 0
    image = Image.load(out)
    assert image.entry("w1").rotation == Rotation(100, 4, 5) and image.entry("w2").rotation == Rotation(256, 256, 5)
    assert main(["inspect", str(out), "--json", str(tmp_path / "s.json")]) == 0
    assert "asym/fp16/H256" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["tensors"][0]["rotation"] == {"kind": "hadamard", "size": 100, "block": 4, "seed": 5,
                                                 "signs": "splitmix64-msb"}
    assert main(["quantize", str(model_file), "-o", str(tmp_path / "plain"), "--method", "rtn"]) == 0
    assert Image.load(tmp_path / "plain").entry("w1").rotation is None
    assert "rotation" not in (tmp_path / "plain" / "manifest.json").read_text()


@pytest.mark.parametrize("args, message", [
    (["--rotate", "givens"], "rotation 'givens' is not 'none', 'hadamard' or 'hadamard:SEED'"),
    (["--rotate", "hadamard:x"], "rotation seed 'x' is not an integer"),
    (["--rotate", "hadamard:-2"], "rotation seed -2 is not in 0..2\\^64-1"),
    (["--rotate", "hadamard", "--recipe", "r.json"], "--rotate does not combine with --recipe"),
])
def test_quantize_bad_rotate_is_one_line(model_file, tmp_path, capsys, args, message):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smartquant quantize: error:") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_parse_rotate():
    assert parse_rotate("none") is None and parse_rotate(None) is None
    assert parse_rotate("hadamard") == 0 and parse_rotate("hadamard:77") == 77
