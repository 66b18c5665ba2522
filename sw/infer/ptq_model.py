"""PTQ of a whole encoder: calibration activations of every linear layer, then RTN,
GPTQ, GPFQ or their AXE variants per layer, and the model rebuilt at a view k.

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

import time
from typing import Mapping

import numpy as np
import torch
from tqdm import tqdm

from ...errors import SmartquantError
from ..quantize.axe import AccumulatorSpec
from ..quantize.gpfq import GPFQ
from ..quantize.gptq import GPTQ
from .model import SentenceEncoder, linear_weight_names, load_encoder
from .weights import FullPrecision

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

    `inputs(name, tensors, quantized, k)` runs the encoder over the calibration texts with
    every tensor in `quantized` read at view k (the rest from `tensors`) and returns the
    (tokens, in_features) inputs of layer `name`.  One forward pass per layer."""

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

    def inputs(self, name: str, tensors: Mapping[str, np.ndarray], quantized: Mapping, k: int) -> torch.Tensor:
        current = dict(tensors)
        for n, q in quantized.items():
            if (n, k) not in self._views:
                self._views[(n, k)] = q.dequantize(k).astype(np.float32)
            current[n] = self._views[(n, k)]
        encoder = SentenceEncoder(self.encoder.config, self.encoder.tokenizer, FullPrecision(current))
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
                   progress: bool = True) -> tuple[dict, float]:
    """({name: QuantizedTensor}, seconds) for the linear weights `names` of `tensors`.

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
    sequential = isinstance(calibration, SequentialCalibration)
    if sequential and not list(views):
        raise SmartquantError("sequential calibration needs at least one view to read the earlier layers at")
    names = calibration.model_order(names) if sequential else list(names)
    started = time.perf_counter()
    out = {}
    for name in tqdm(names, desc=algorithm, disable=not progress, leave=False):
        weight = np.asarray(tensors[name], dtype=np.float64)
        if quantizer_class is None:
            out[name] = grid.quantize(weight)
            continue
        quantizer = quantizer_class(weight.shape[1])
        quantizer.add_batch(calibration.inputs(name, tensors, out, min(views)) if sequential
                            else calibration[name])
        out[name] = quantizer.quantize(weight, views=views, grid=grid, act_order=act_order,
                                       accumulator=accumulator if uses_accumulator else None)
    return out, time.perf_counter() - started


def encoder_at_view(name: str, tensors: dict[str, np.ndarray], quantized: dict, k: int) -> SentenceEncoder:
    """The encoder with every quantized linear weight replaced by its k-bit view."""
    replaced = dict(tensors)
    replaced.update({n: q.dequantize(k).astype(np.float32) for n, q in quantized.items()})
    return load_encoder(name, lambda _: FullPrecision(replaced))
