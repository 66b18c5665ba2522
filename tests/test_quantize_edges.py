"""`smartquant quantize` on edge-case weights (scales outside the scale format, empty and
non-finite tensors), its progress on stderr, and chunked quantization."""

import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from smartquant.cli import main
from smartquant.errors import SmartquantError
from smartquant.spec import ScaleFormat
from smartquant.sw.fpformat import SCALE_LIMITS, scale_value
from smartquant.sw.image.image import Image
from smartquant.sw.quantize.quantizer import NestedMSEClip, NestedRTN, StoreFormat, relative_error
from smartquant.sw.store.sources import load_source
from smartquant.sw.store.model_store import view_errors
from cli_errors import assert_one_line_error

RNG = np.random.default_rng(7)


def _gaussian(shape, std):
    return (RNG.standard_normal(shape) * std).astype(np.float32)


def _with_bad_values(shape):
    w = _gaussian(shape, 0.02)
    w[1, 2], w[3, 4], w[5, 6] = np.nan, np.inf, -np.inf
    return w


#: case -> (tensors in the file, extra options, words the one-line error must hold)
CASES = {
    "fp16 underflow": ({"w": _gaussian((64, 256), 1e-6)}, [], ["tensor 'w'", "underflow fp16", "--scale bf16"]),
    "pow2 underflow": ({"w": _gaussian((64, 256), 1e-6)}, ["--scale", "pow2"],
                       ["tensor 'w'", "underflow pow2", "--scale bf16"]),
    "fp16 overflow (mse)": ({"w": _gaussian((64, 256), 1e7)}, [], ["tensor 'w'", "overflow fp16", "--scale bf16"]),
    "fp16 overflow (rtn)": ({"w": _gaussian((64, 256), 1e7)}, ["--method", "rtn"], ["tensor 'w'", "overflow fp16"]),
    "pow2 overflow": ({"w": _gaussian((64, 256), 1e7)}, ["--scale", "pow2"], ["tensor 'w'", "overflow pow2"]),
    "no rows": ({"w": np.zeros((0, 256), np.float32)}, [], ["tensor 'w'", "(0, 256)", "no values"]),
    "no columns": ({"w": np.zeros((64, 0), np.float32)}, [], ["tensor 'w'", "(64, 0)", "no values"]),
    "empty side tensor": ({"w": _gaussian((4, 128), 0.02), "b": np.zeros(0, np.float32)}, [],
                          ["tensor 'b'", "(0,)", "no values"]),
    "NaN and infinity": ({"ok": _gaussian((4, 128), 0.02), "w": _with_bad_values((64, 256))}, [],
                         ["tensor 'w'", "3 of 16384 weights are NaN or infinite"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_edge_cases_are_one_line_errors_naming_the_tensor(case, tmp_path, capsys):
    tensors, options, words = CASES[case]
    source, out = tmp_path / "src.safetensors", tmp_path / "image"
    save_file(tensors, str(source))
    assert main(["quantize", str(source), "-o", str(out), *options]) == 2
    assert_one_line_error(capsys.readouterr().err, "quantize", *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]     # nothing written


@pytest.mark.parametrize("case", ["no rows", "no columns", "empty side tensor", "NaN and infinity"])
def test_empty_and_non_finite_tensors_are_refused_at_load_time(case, tmp_path):
    tensors, _, words = CASES[case]
    source = tmp_path / "src.safetensors"
    save_file(tensors, str(source))
    with pytest.raises(SmartquantError) as info:
        load_source(str(source))
    assert all(word in str(info.value) for word in words), info.value


def test_a_bad_tensor_is_refused_before_any_tensor_is_quantized(tmp_path, monkeypatch, capsys):
    source = tmp_path / "src.safetensors"
    save_file({"first": _gaussian((8, 128), 0.02), "last": _gaussian((8, 128), 1e-7)}, str(source))
    monkeypatch.setattr(NestedMSEClip, "quantize", lambda *a, **k: pytest.fail("quantized before the check"))
    assert main(["quantize", str(source), "-o", str(tmp_path / "image")]) == 2
    assert "tensor 'last'" in capsys.readouterr().err


def _group_needing(scale: float) -> np.ndarray:
    """One asymmetric G=128 group whose min/max scale is exactly `scale` (range 0..255 s)."""
    w = np.zeros((1, 128))
    w[0, 0], w[0, 1] = 255 * scale, 0.37 * 255 * scale
    return w


@pytest.mark.parametrize("fmt", [ScaleFormat.FP16, ScaleFormat.BF16, ScaleFormat.POW2])
@pytest.mark.parametrize("quantizer", [NestedRTN, NestedMSEClip])
def test_scale_range_bounds_are_exact_and_shared_by_the_quantizers(fmt, quantizer):
    smallest, largest = SCALE_LIMITS[fmt]
    q = quantizer(StoreFormat(scale_format=fmt))
    for fine in (smallest / 2 * 1.01, largest):
        qt = q.quantize(_group_needing(fine))
        stored = scale_value(qt.scale_bits, fmt)
        assert np.isfinite(stored).all() and (stored > 0).all()
        assert qt.dequantize(8)[0, 0] > 0                         # never a silent all-zero group
    with pytest.raises(SmartquantError, match=f"underflow {fmt.name.lower()}"):
        q.quantize(_group_needing(smallest / 2))
    with pytest.raises(SmartquantError, match=f"overflow {fmt.name.lower()}"):
        q.quantize(_group_needing(largest * 1.01))


def test_exact_zero_groups_are_fine_next_to_normal_ones():
    w = _gaussian((4, 256), 0.02)
    w[1] = 0.0
    qt = NestedMSEClip().quantize(w)
    assert (qt.dequantize(8)[1] == 0).all() and relative_error(qt.dequantize(8), w) < 0.01


def _isatty(monkeypatch):
    """Make stderr (captured) look like a terminal, so tqdm's `disable=None` bars show."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)


def test_progress_on_stderr_per_tensor_and_per_chunk(tmp_path, monkeypatch, capsys):
    source, out = tmp_path / "src.safetensors", tmp_path / "image"
    # 2048 x 256 weights: two row chunks of the default size
    save_file({"big": _gaussian((2048, 256), 0.02), "small": _gaussian((8, 128), 0.02)}, str(source))
    _isatty(monkeypatch)
    assert main(["quantize", str(source), "-o", str(out), "--method", "rtn"]) == 0
    err = capsys.readouterr().err
    assert "quantize: 100%" in err and "2/2" in err
    assert "big: " in err and "chunk" in err and "big (errors)" in err
    assert "small:" not in err                                   # one chunk: no bar of its own
    assert [e.name for e in Image.load(out).entries] == ["big", "small"]


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path, capsys):
    source = tmp_path / "src.safetensors"
    save_file({"a": _gaussian((8, 128), 0.02), "b": _gaussian((8, 128), 0.02)}, str(source))
    assert main(["quantize", str(source), "-o", str(tmp_path / "image"), "--method", "rtn"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fmt", [StoreFormat(), StoreFormat(32, True, ScaleFormat.BF16),
                                 StoreFormat(64, False, ScaleFormat.POW2)])
@pytest.mark.parametrize("quantizer", [NestedRTN, NestedMSEClip])
def test_chunked_quantization_is_identical(fmt, quantizer):
    w = (RNG.standard_t(3, (45, 300)) * 0.05).astype(np.float32)
    whole = quantizer(fmt, chunk_weights=10 ** 9).quantize(w)
    for chunk_weights in (1, 700, 5000):                         # one row; two rows; a ragged last chunk
        chunked = quantizer(fmt, chunk_weights=chunk_weights).quantize(w)
        for field in ("codes", "scale_bits", "zeros"):
            np.testing.assert_array_equal(getattr(chunked, field), getattr(whole, field))


def test_chunked_view_errors_match_the_whole_tensor():
    w = _gaussian((1100, 256), 0.02)                             # two chunks of the default size
    qt = NestedRTN().quantize(w)
    errors, norm = view_errors(w, qt)
    assert norm == pytest.approx(np.linalg.norm(w.astype(np.float64)), rel=1e-12)
    for k in range(1, 9):
        assert errors[k] == pytest.approx(relative_error(qt.dequantize(k), w.astype(np.float64)), rel=1e-9)
