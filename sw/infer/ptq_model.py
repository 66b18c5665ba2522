"""PTQ of a whole encoder: calibration activations of every linear layer, then RTN,
GPTQ, GPFQ or their AXE variants per layer (optionally on rotated weights and inputs,
sw/quantize/rotation.py), and the model rebuilt with the quantized weights
(`QualityBench`: its quality against full precision).

Calibration runs the encoder over the calibration sentences (`evalset.load_calibration`)
one sentence at a time and keeps every real token's input to every linear layer.  Two
ways (`calibration_for`):

- one pass (`calibration_inputs`): the full-precision model runs once, so every layer
  is calibrated on full-precision inputs;
- sequential (`SequentialCalibration`, as reference GPTQ does block by block): each
  layer's inputs come from the model whose earlier layers (in the order the model uses
  them) are already quantized, read at the lowest view being quantized, so a layer's
  codes see, and can compensate, the error the layers before it make.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Mapping

import numpy as np
import torch
from tqdm import tqdm

from ...errors import SmartquantError
from ..quantize.axe import AccumulatorSpec
from ..quantize.gpfq import GPFQ
from ..quantize.gptq import GPTQ
from ..quantize.rotation import Rotation
from .evalset import load_calibration, load_pairs, unique_sentences
from .model import SentenceEncoder, linear_weight_names, load_encoder, model_dir
from .quality import quality
from .weights import FullPrecision, read_safetensors

#: algorithm name -> (sequential quantizer class or None for RTN, uses the accumulator spec)
ALGORITHMS = {"rtn": (None, False), "gptq": (GPTQ, False), "gpfq": (GPFQ, False),
              "axe-gptq": (GPTQ, True), "axe-gpfq": (GPFQ, True)}


def calibration_inputs(encoder: SentenceEncoder, texts) -> dict[str, torch.Tensor]:
    """name -> (tokens, in_features) inputs of each linear layer over `texts` (no padding)."""
    seen: dict[str, list[torch.Tensor]] = {}
    for text in texts:      # one sentence at a time: no padding tokens in the statistics
        encoder.embed([text], observe=lambda name, x: seen.setdefault(name, []).append(
            x.reshape(-1, x.shape[-1]).clone()))
    return {name: torch.cat(chunks) for name, chunks in seen.items()}


class SequentialCalibration:
    """Inputs of each linear layer with the layers before it already quantized.

    `inputs(name, tensors, quantized, k, rotations)` runs the encoder over the calibration
    texts with every tensor in `quantized` read at view k (W·H where `rotations` names one;
    the rest from `tensors`) and returns the unrotated (tokens, in_features) inputs of
    layer `name`.  One forward pass per layer."""

    def __init__(self, encoder: SentenceEncoder, texts):
        self.encoder, self.texts = encoder, list(texts)
        if not self.texts:
            raise SmartquantError("calibration needs at least one sentence")
        self.order = {n: i for i, n in enumerate(linear_weight_names(encoder.config))}
        self._views: dict[tuple[str, int], np.ndarray] = {}

    def model_order(self, names) -> list[str]:
        """`names` in the order the model uses them (each layer calibrated after its inputs')."""
        unknown = [n for n in names if n not in self.order]
        if unknown:
            raise SmartquantError(f"{unknown[0]!r} is not a linear layer of the calibration model")
        return sorted(names, key=self.order.__getitem__)

    def inputs(self, name: str, tensors: Mapping[str, np.ndarray], quantized: Mapping, k: int,
               rotations: Mapping[str, Rotation] | None = None) -> torch.Tensor:
        current = dict(tensors)
        for n, q in quantized.items():
            if (n, k) not in self._views:
                self._views[(n, k)] = q.dequantize(k).astype(np.float32)
            current[n] = self._views[(n, k)]
        encoder = SentenceEncoder(self.encoder.config, self.encoder.tokenizer, FullPrecision(current, {
            n: r for n, r in (rotations or {}).items() if n in quantized}))
        chunks = []
        for text in self.texts:
            encoder.embed([text], observe=lambda n, x: chunks.append(x.reshape(-1, x.shape[-1]).clone())
                          if n == name else None)
        return torch.cat(chunks)


def calibration_for(encoder: SentenceEncoder, texts, sequential: bool = False):
    """Calibration for `quantize_model`: one full-precision pass, or `SequentialCalibration`."""
    return SequentialCalibration(encoder, texts) if sequential else calibration_inputs(encoder, texts)


def quantize_model(tensors: dict[str, np.ndarray], names, algorithm: str, views, grid,
                   calibration: dict[str, torch.Tensor] | SequentialCalibration | None = None,
                   accumulator: AccumulatorSpec | None = None, act_order: bool = False,
                   progress: bool = True, rotations: dict[str, Rotation] | None = None) -> tuple[dict, float]:
    """({name: QuantizedTensor}, seconds) for the linear weights `names` of `tensors`; a weight
    with a rotation H in `rotations` is quantized as W·H against inputs x·H.

    `calibration`: a dict of layer inputs (`calibration_inputs`) or a
    `SequentialCalibration`, which quantizes `names` in model order, each on the inputs
    the already-quantized layers before it produce at view min(views)."""
    if algorithm not in ALGORITHMS:
        raise SmartquantError(f"unknown PTQ algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")
    quantizer_class, uses_accumulator = ALGORITHMS[algorithm]
    if uses_accumulator and accumulator is None:
        raise SmartquantError(f"{algorithm} needs an accumulator spec (P, N)")
    if quantizer_class is not None and calibration is None:
        raise SmartquantError(f"{algorithm} needs calibration inputs")
    rotations = rotations or {}
    sequential = isinstance(calibration, SequentialCalibration)
    if sequential and not list(views):
        raise SmartquantError("sequential calibration needs at least one view to read the earlier layers at")
    names = calibration.model_order(names) if sequential else list(names)
    started = time.perf_counter()
    out = {}
    for name in tqdm(names, desc=algorithm, disable=not progress, leave=False):
        rotation = rotations.get(name)
        weight = np.asarray(tensors[name], dtype=np.float64)
        weight = weight if rotation is None else rotation.rotate_weight(weight)
        if quantizer_class is None:
            out[name] = grid.quantize(weight)
            continue
        quantizer = quantizer_class(weight.shape[1])
        inputs = (calibration.inputs(name, tensors, out, min(views), rotations) if sequential
                  else calibration[name])
        quantizer.add_batch(inputs if rotation is None else rotation.rotate_inputs(inputs))
        out[name] = quantizer.quantize(weight, views=views, grid=grid, act_order=act_order,
                                       accumulator=accumulator if uses_accumulator else None)
    return out, time.perf_counter() - started


@dataclasses.dataclass
class QualityBench:
    """A packaged encoder, its calibration inputs, and its full-precision embeddings of
    the shipped sentence pairs: what the PTQ tables measure quality against."""
    model: str
    encoder: SentenceEncoder
    tensors: dict[str, np.ndarray]
    names: list[str]
    calibration: dict[str, torch.Tensor]
    pairs: list
    sentences: list[str]
    reference: dict[str, np.ndarray]

    def quality(self, values: dict[str, np.ndarray], rotations: dict[str, Rotation] | None = None) -> dict:
        """`quality.quality` of the encoder with the linear weights in `values` replaced."""
        model = encoder_with(values, self.model, self.tensors, rotations)
        return quality(dict(zip(self.sentences, model.embed(self.sentences))), self.reference, self.pairs)


def quality_bench(model: str = "minilm") -> QualityBench:
    """The bench of a packaged model over the shipped calibration sentences and pairs."""
    encoder = load_encoder(model)
    pairs = load_pairs()
    sentences = unique_sentences(pairs)
    return QualityBench(model, encoder, read_safetensors(model_dir(model) / "model.safetensors"),
                        linear_weight_names(encoder.config), calibration_inputs(encoder, load_calibration()),
                        pairs, sentences, dict(zip(sentences, encoder.embed(sentences))))


def encoder_with(values: dict[str, np.ndarray], name: str, tensors: dict[str, np.ndarray],
                 rotations: dict[str, Rotation] | None = None) -> SentenceEncoder:
    """The encoder with the linear weights in `values` replaced (W·H where `rotations` says)."""
    replaced = dict(tensors)
    replaced.update({n: np.asarray(v, dtype=np.float32) for n, v in values.items()})
    return load_encoder(name, lambda _: FullPrecision(replaced, rotations))

