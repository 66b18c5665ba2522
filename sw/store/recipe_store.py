"""Recipes on a whole source: calibration statistics, search and quantization into an image
(the work of `smartquant recipe` and `smartquant quantize --recipe`)."""

from __future__ import annotations

import numpy as np

from ...errors import SmartquantError
from ...spec import CODE_BITS
from ..image.image import Image
from ..quantize.quantizer import relative_error
from ..quantize.recipe import Recipe, apply, read_recipe, search
from .sources import MINILM, load_source

#: calibration sentences the recipe statistics use by default
CALIBRATION_SENTENCES = 64


#: damping of the input second moment, relative to its mean diagonal: a few hundred
#: calibration tokens leave H rank-deficient, and an undamped H would count no error at
#: all in the input directions calibration never saw (GPTQ damps its H the same way)
MOMENT_DAMPING = 0.1


def input_moments(inputs: dict, damping: float = MOMENT_DAMPING) -> dict[str, np.ndarray]:
    """name -> H = X^T X / n + damping * mean(diag) * I (in, in) of each layer's
    calibration inputs X (tokens, in)."""
    out = {}
    for name, x in inputs.items():
        x = np.asarray(x, dtype=np.float64)
        h = x.T @ x / x.shape[0]
        out[name] = h + damping * float(np.mean(np.diag(h))) * np.eye(h.shape[0])
    return out


def calibration_hessians(source_name: str, sentences: int = CALIBRATION_SENTENCES) -> dict[str, np.ndarray]:
    """`input_moments` of every linear layer the packaged model runs on its calibration
    sentences; {} for a source with no model to run."""
    if source_name != MINILM:
        return {}
    from ..infer.evalset import load_calibration
    from ..infer.model import load_encoder
    from ..infer.ptq_model import calibration_inputs
    return input_moments(calibration_inputs(load_encoder(MINILM), load_calibration(limit=sentences)))


def search_source(spec: str, bits: int, budget: float | None = None, options=None, views=None,
                  sentences: int = CALIBRATION_SENTENCES, progress: bool = True) -> Recipe:
    """Search a recipe for `spec` (`minilm` or a .safetensors path); the default budget is
    `bits` + 0.25 (the metadata of G = 128 with 4-byte groups)."""
    source = load_source(spec)
    hessians = calibration_hessians(source.name, sentences)
    return search(source.weights, bits, bits + 0.25 if budget is None else budget, options, views,
                  hessians, progress)


def build_image(weights: dict, quantized: dict, side=None, info=None):
    """The image of quantized tensors (uniform or codebook) with per-view relative errors."""
    errors = {n: {k: relative_error(q.dequantize(k), np.asarray(weights[n], np.float64))
                  for k in range(1, CODE_BITS + 1)} for n, q in quantized.items()}
    norms = {n: float(np.linalg.norm(np.asarray(weights[n], np.float64))) for n in quantized}
    return Image.build(list(quantized.items()), side=side, rel_errors=errors, norms=norms, info=info)


def quantize_with_recipe(spec: str, recipe_path, sentences: int = CALIBRATION_SENTENCES,
                         progress: bool = True):
    """Quantize `spec` into an image as recipe file `recipe_path` says."""
    recipe = read_recipe(recipe_path)
    source = load_source(spec)
    extra = [n for n in recipe.options if n not in source.weights]
    if extra:
        raise SmartquantError(f"recipe names {len(extra)} tensors {spec!r} lacks, e.g. {extra[0]!r}")
    needs_calibration = any(o.kind == "codebook" for o in recipe.options.values())
    hessians = calibration_hessians(source.name, sentences) if needs_calibration else {}
    quantized = apply(source.weights, recipe, hessians, progress)
    info = {"source": source.name, "quantizer": "recipe", "recipe_bits": recipe.bits,
            "views": list(recipe.views), "recipe_average_bits": recipe.average_bits()}
    return build_image(source.weights, quantized, side=source.side, info=info)
