"""Shared fixtures: a quantized MiniLM image and a tiny image covering every storage format.

`minilm_image` is quantized once and cached in pytest's cache directory (or the
session's tmp dir without the cache plugin), keyed by a hash of the software modules
that shape it, so later sessions load it in well under a second; `tiny_image` is small enough for exhaustive per-line checks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from smartquant.spec import ScaleFormat

#: set by .ci/run, where the apt tools are installed: a missing one fails the test instead of skipping it
REQUIRE_APT_TOOLS = "SMARTQUANT_REQUIRE_APT_TOOLS"

MINILM_VIEWS = (2, 3, 4, 8)     #: views the MiniLM fixture's clipping search optimises
_IMAGE_MODULES = ("fpformat", "codes", "image/image", "quantize/quantizer", "store/sources", "store/model_store",
                  "image/golden")


def _sw_hash() -> str:
    import smartquant.sw as sw
    digest = hashlib.sha256()
    for name in _IMAGE_MODULES:
        digest.update((Path(sw.__file__).parent / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def iverilog() -> str:
    """Path of Icarus Verilog's `iverilog`, the second simulator.  It comes from apt, not PyPI:
    where it is missing the test skips with the reason (`pytest -rs` lists it), except under
    SMARTQUANT_REQUIRE_APT_TOOLS=1 (.ci/run), where it fails."""
    path = shutil.which("iverilog")
    if path is None:
        reason = "Icarus Verilog is not installed (apt-get install iverilog)"
        if os.environ.get(REQUIRE_APT_TOOLS) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_APT_TOOLS}=1 requires it")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def minilm_image_dir(request, tmp_path_factory) -> Path:
    """Directory of MiniLM quantized with defaults (G=128, asym, fp16) and NestedMSEClip(views=MINILM_VIEWS)."""
    from smartquant.sw.image.image import MANIFEST
    from smartquant.sw.quantize.quantizer import NestedMSEClip
    from smartquant.sw.store.sources import minilm_source
    from smartquant.sw.store.model_store import quantize_model

    cache = getattr(request.config, "cache", None)      # absent under -p no:cacheprovider
    folder = cache.mkdir("smartquant-images") if cache else tmp_path_factory.mktemp("images")
    path = Path(folder) / f"minilm-{_sw_hash()}"
    if not (path / MANIFEST).is_file():
        source = minilm_source()
        quantize_model(source.weights, NestedMSEClip(views=MINILM_VIEWS), side=source.side,
                       info={"source": "minilm", "quantizer": "NestedMSEClip",
                             "views": list(MINILM_VIEWS)}, warn=lambda _: None).save(path)
    return path


@pytest.fixture(scope="session")
def minilm_image(minilm_image_dir):
    """The MiniLM image (smartquant.sw.image.Image); treat as read-only (copy .dram before writing)."""
    from smartquant.sw.image.image import Image
    return Image.load(minilm_image_dir)


#: (name, (out, in), group size, symmetric, scale format, quantizer) of the tiny image's tensors
TINY_TENSORS = (
    ("asym_fp16_g32", (8, 96), 32, False, ScaleFormat.FP16, "rtn"),
    ("sym_bf16_g64", (5, 200), 64, True, ScaleFormat.BF16, "rtn"),       # in padded to 256
    ("asym_pow2_g128", (3, 130), 128, False, ScaleFormat.POW2, "mse"),   # in padded to 256
    ("sym_pow2_g256", (4, 256), 256, True, ScaleFormat.POW2, "rtn"),
    ("sym_fp16_g128", (16, 128), 128, True, ScaleFormat.FP16, "mse"),
    ("asym_bf16_g256", (2, 512), 256, False, ScaleFormat.BF16, "mse"),
)


@pytest.fixture(scope="session")
def tiny_weights() -> dict[str, np.ndarray]:
    """The float32 source weights of `tiny_image` (normal, a few outliers, one all-zero group)."""
    rng = np.random.default_rng(20240611)
    weights = {}
    for name, shape, *_ in TINY_TENSORS:
        w = rng.standard_normal(shape) * 0.05
        w[rng.random(shape) < 0.01] *= 20
        weights[name] = w.astype(np.float32)
    weights["asym_fp16_g32"][0, :32] = 0.0
    return weights


@pytest.fixture(scope="session")
def tiny_quantized(tiny_weights) -> dict:
    """name -> QuantizedTensor of TINY_TENSORS, in order."""
    from smartquant.sw.quantize.quantizer import NestedMSEClip, NestedRTN, StoreFormat
    quantized = {}
    for name, _, group_size, symmetric, scale_format, method in TINY_TENSORS:
        fmt = StoreFormat(group_size, symmetric, scale_format)
        quantizer = NestedRTN(fmt) if method == "rtn" else NestedMSEClip(fmt, views=(3, 4, 8))
        quantized[name] = quantizer.quantize(tiny_weights[name])
    return quantized


@pytest.fixture(scope="session")
def tiny_image(tiny_quantized):
    """A small image of TINY_TENSORS (sym/asym, fp16/bf16/pow2, G=32..256, padded `in`) plus side data.
    Treat as read-only (copy .dram before writing)."""
    from smartquant.sw.image.image import Image
    return Image.build(list(tiny_quantized.items()), side={"bias": np.arange(7, dtype=np.float32)},
                       info={"source": "tiny"})


@pytest.fixture(scope="session")
def tiny_image_dir(tiny_image, tmp_path_factory):
    """`tiny_image` saved as an image directory (read-only)."""
    path = tmp_path_factory.mktemp("tiny") / "img"
    tiny_image.save(path)
    return path


@pytest.fixture(scope="session")
def lut_image(tiny_quantized):
    """Two LUT tensors (fp16 and bf16 scales, G=64 / 128) around an affine one."""
    from smartquant.spec import ScaleFormat
    from smartquant.sw.quantize.codebook import CodebookQuantizer
    from smartquant.sw.image.image import Image
    rng = np.random.default_rng(8)
    affine_name = next(iter(tiny_quantized))
    return Image.build([
        ("lut_a", CodebookQuantizer(64).quantize(rng.standard_normal((6, 192)) * 0.05)),
        (affine_name, tiny_quantized[affine_name]),
        ("lut_b", CodebookQuantizer(128, ScaleFormat.BF16).quantize(rng.standard_t(3, (4, 256)) * 0.02)),
    ])


@pytest.fixture
def corrupt_expected_line():
    """A function (source, trace, out) -> request index: copies the trace directory `source`
    (holding `trace`) to `out` with byte 9 of one unpoisoned read's expected line flipped."""
    from smartquant.spec import Opcode

    def corrupt(source, trace, out) -> int:
        shutil.copytree(source, out)
        reads = np.flatnonzero((trace.opcode == Opcode.MEM_RD) & (trace.poison == 0))
        index = int(reads[len(reads) // 2])
        lines = trace.line.copy()
        lines[index, 9] ^= 0x10
        np.savez(Path(out) / "requests.npz", opcode=trace.opcode, tag=trace.tag, addr=trace.addr, line=lines,
                 poison=trace.poison)
        return index

    return corrupt


@pytest.fixture(scope="session")
def toy_encoder():
    """(config, tokenizer, tensors): a random 2-layer BERT-style encoder (hidden 128, 4 heads,
    FFN 256, float32) on MiniLM's tokenizer, small enough for per-slice measurements."""
    from smartquant.sw.infer.model import SentenceTokenizer, TransformerConfig, layer_names, model_dir
    config = TransformerConfig(vocab_size=30522, hidden_size=128, num_layers=2, num_heads=4,
                               intermediate_size=256, max_positions=64, type_vocab_size=2)
    rng = np.random.default_rng(7)
    h, f = config.hidden_size, config.intermediate_size
    tensors = {"embeddings.word_embeddings.weight": rng.standard_normal((config.vocab_size, h)),
               "embeddings.position_embeddings.weight": rng.standard_normal((config.max_positions, h)) * 0.1,
               "embeddings.token_type_embeddings.weight": rng.standard_normal((2, h)) * 0.1,
               "embeddings.LayerNorm.weight": np.ones(h), "embeddings.LayerNorm.bias": np.zeros(h)}
    for i in range(config.num_layers):
        names = layer_names(i)
        shapes = {"query": (h, h), "key": (h, h), "value": (h, h), "attn_out": (h, h),
                  "ffn_in": (f, h), "ffn_out": (h, f)}
        for role, (rows, cols) in shapes.items():
            tensors[f"{names[role]}.weight"] = rng.standard_normal((rows, cols)) / np.sqrt(cols)
            tensors[f"{names[role]}.bias"] = rng.standard_normal(rows) * 0.02
        for norm in ("attn_norm", "ffn_norm"):
            tensors[f"{names[norm]}.weight"] = 1 + rng.standard_normal(h) * 0.1
            tensors[f"{names[norm]}.bias"] = rng.standard_normal(h) * 0.1
    tensors = {name: t.astype(np.float32) for name, t in tensors.items()}
    return config, SentenceTokenizer(model_dir("minilm") / "tokenizer.json", config.max_positions), tensors


@pytest.fixture
def model_file(tmp_path):
    """A .safetensors of two weights, (16, 100) and (8, 256), and a 1-D bias."""
    import torch
    from safetensors.torch import save_file
    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_file({"w1": torch.randn(16, 100) * 0.05, "w2": torch.randn(8, 256) * 0.05, "bias": torch.randn(8)}, str(path))
    return path
