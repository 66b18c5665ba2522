"""CLI quantize / inspect / read: happy paths and every bad input (exit 2, one line, no output)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from smartquant.cli import main
from smartquant.spec import View
from smartquant.sw.image.golden import tensor_values
from smartquant.sw.image.image import Image
from cli_errors import assert_one_line_error


@pytest.fixture
def image_dir(model_file, tmp_path):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out), "--format", "sym", "--scale", "bf16",
                 "--group-size", "64", "--views", "2,4,8"]) == 0
    return out


def test_quantize_writes_an_image_and_notes_padding(model_file, tmp_path, capsys):
    out = tmp_path / "img"
    assert main(["quantize", str(model_file), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: tensor 'w1': in=100 is not a multiple of group size 128; zero-padded to 128" in err
    image = Image.load(out)
    assert [e.name for e in image.entries] == ["w1", "w2"] and list(image.side) == ["bias"]
    assert image.entry("w1").group_size == 128 and not image.entry("w1").symmetric
    assert image.info["views"] == [3, 4, 8]


def test_inspect_table_and_json(image_dir, tmp_path, capsys):
    assert main(["inspect", str(image_dir), "--json", str(tmp_path / "s.json")]) == 0
    text = capsys.readouterr().out
    assert "w1" in text and "sym/bf16" in text and "err k=8" in text
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [t["name"] for t in summary["tensors"]] == ["w1", "w2"]
    errors = [r["rel_error"] for r in summary["per_k"]]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    reads = [r["bytes_read"] for r in summary["per_k"]]
    assert reads[7] - reads[3] == 4 * 64 * sum(t["blocks"] for t in summary["tensors"])


@pytest.mark.parametrize("view, dtype, shape", [("fp16", np.float16, (16, 100)), ("bf16", np.float32, (16, 100)),
                                                ("int8", np.int8, (16, 100)), ("packed", np.uint8, (4, 3, 64))])
def test_read_writes_the_view(image_dir, tmp_path, view, dtype, shape):
    out = tmp_path / "out.npy"
    assert main(["read", str(image_dir), "--tensor", "w1", "--view", view, "--bits", "3", "-o", str(out)]) == 0
    array = np.load(out)
    assert array.dtype == dtype and array.shape == shape
    if view in ("fp16", "bf16"):
        expected = tensor_values(Image.load(image_dir), "w1", 3, View[view.upper()])
        np.testing.assert_array_equal(array.astype(np.float32), expected)


def _bad_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    return path


def _int_safetensors(tmp_path):
    path = tmp_path / "int.safetensors"
    save_file({"w": torch.arange(64).reshape(2, 32)}, str(path))
    return path


def _damaged(image_dir, how):
    if how == "truncate":
        data = (image_dir / "dram.bin").read_bytes()
        (image_dir / "dram.bin").write_bytes(data[:len(data) // 2])
    else:
        manifest = json.loads((image_dir / "manifest.json").read_text())
        manifest["version"] = 99
        (image_dir / "manifest.json").write_text(json.dumps(manifest))
    return image_dir


BAD = {
    "missing file": (lambda t, i: ["quantize", str(t / "nope.safetensors"), "-o", str(t / "o")], "no such file"),
    "unreadable file": (lambda t, i: ["quantize", str(_bad_safetensors(t)), "-o", str(t / "o")], "unreadable"),
    "non-float dtype": (lambda t, i: ["quantize", str(_int_safetensors(t)), "-o", str(t / "o")], "not floating point"),
    "bad views": (lambda t, i: ["quantize", "minilm", "-o", str(t / "o"), "--views", "3,9"], "1..8"),
    "unknown tensor": (lambda t, i: ["read", str(i), "--tensor", "nope", "-o", str(t / "o.npy")], "unknown tensor 'nope'"),
    "bits 0": (lambda t, i: ["read", str(i), "--tensor", "w1", "--bits", "0", "-o", str(t / "o.npy")], "outside 1..8"),
    "bits 9": (lambda t, i: ["read", str(i), "--tensor", "w1", "--bits", "9", "-o", str(t / "o.npy")], "outside 1..8"),
    "truncated dram": (lambda t, i: ["read", str(_damaged(i, "truncate")), "--tensor", "w1", "-o", str(t / "o.npy")],
                       "truncated"),
    "unknown version": (lambda t, i: ["inspect", str(_damaged(i, "version")), "--json", str(t / "o.json")],
                        "unsupported image version 99"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(case, image_dir, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    make_args, message = BAD[case]
    args = make_args(work, image_dir)
    before = set(work.iterdir())
    assert main(args) == 2
    assert_one_line_error(capsys.readouterr().err, args[0], message)
    assert set(work.iterdir()) == before                  # no output, no temporary left behind


def test_exit_code_through_the_console_entry_point(tmp_path):
    (tmp_path / "empty").mkdir()
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "read", str(tmp_path / "empty"), "--tensor", "x",
                          "-o", str(tmp_path / "o.npy")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == f"smartquant read: error: {tmp_path / 'empty'}: not an image (no manifest.json)"


def test_inspect_minilm(minilm_image_dir, capsys):
    assert main(["inspect", str(minilm_image_dir)]) == 0
    out = capsys.readouterr().out
    assert "encoder.layer.5.output.dense.weight" in out and "384x1536" in out


@pytest.mark.slow
def test_quantize_minilm_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "quantize", "minilm", "-o", str(tmp_path / "m")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(Image.load(tmp_path / "m").entries) == 37
