"""Weight sources: safetensors files and the packaged MiniLM; padding notes."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from smartquant.errors import SmartquantError
from smartquant.sw.store.sources import load_source, minilm_source
from smartquant.sw.store.model_store import padding_note, quantize_model
from smartquant.sw.quantize.quantizer import NestedRTN


def _write(path, **tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_safetensors_source_splits_store_and_side(tmp_path):
    path = _write(tmp_path / "m.safetensors", a=torch.randn(4, 64), b=torch.randn(3, 32).to(torch.bfloat16),
                  bias=torch.randn(4))
    source = load_source(str(path))
    assert list(source.weights) == ["a", "b"] and list(source.side) == ["bias"]
    assert source.weights["b"].dtype == np.float32


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"), p)[1], "unreadable"),
    (lambda p: _write(p, a=torch.randn(4, 32), ids=torch.arange(4)), "dtype int64"),
    (lambda p: _write(p, bias=torch.randn(4)), "no 2-D"),
])
def test_bad_sources_are_one_line_errors(tmp_path, make, message):
    path = make(tmp_path / "x.safetensors")
    with pytest.raises(SmartquantError, match=message) as info:
        load_source(str(path))
    assert "\n" not in str(info.value)


def test_minilm_source_stores_linear_layers():
    source = minilm_source()
    assert len(source.weights) == 6 * 6 + 1
    assert all(w.ndim == 2 and name.endswith(".weight") for name, w in source.weights.items())
    assert "embeddings.word_embeddings.weight" in source.side
    assert "encoder.layer.0.attention.self.query.bias" in source.side


def test_padding_is_noted(tmp_path):
    assert padding_note("w", (4, 256), 128) is None
    notes = []
    image = quantize_model({"w": np.ones((4, 100), np.float32)}, NestedRTN(), warn=notes.append)
    assert notes == ["tensor 'w': in=100 is not a multiple of group size 128; zero-padded to 128"]
    assert image.entries[0].padded_in == 128 and image.entries[0].shape == (4, 100)
