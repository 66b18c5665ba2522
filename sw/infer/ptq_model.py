"""PTQ of a whole encoder: calibration activations of every linear layer, then RTN,
GPTQ, GPFQ or their AXE variants per layer (benchmarks/ptq_table.py; `smartquant
quantize --method` goes through sw/store/methods.py).

Calibration runs the full-precision model once over the calibration sentences
(`evalset.load_calibration`) and keeps every real token's input to every linear
layer (one pass, not layer-sequential: each layer sees full-precision inputs).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from ...errors import SmartquantError
from ..quantize.axe import AccumulatorSpec
from ..quantize.gpfq import GPFQ
from ..quantize.gptq import GPTQ
from .model import SentenceEncoder

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


def quantize_model(tensors: dict[str, np.ndarray], names, algorithm: str, views, grid,
                   calibration: dict[str, torch.Tensor] | None = None,
                   accumulator: AccumulatorSpec | None = None, act_order: bool = False,
                   progress: bool = True) -> tuple[dict, float]:
    """({name: QuantizedTensor}, seconds) for the linear weights `names` of `tensors`."""
    if algorithm not in ALGORITHMS:
        raise SmartquantError(f"unknown PTQ algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")
    quantizer_class, uses_accumulator = ALGORITHMS[algorithm]
    if uses_accumulator and accumulator is None:
        raise SmartquantError(f"{algorithm} needs an accumulator spec (P, N)")
    if quantizer_class is not None and calibration is None:
        raise SmartquantError(f"{algorithm} needs calibration inputs")
    started = time.perf_counter()
    out = {}
    for name in tqdm(list(names), desc=algorithm, disable=not progress, leave=False):
        weight = np.asarray(tensors[name], dtype=np.float64)
        if quantizer_class is None:
            out[name] = grid.quantize(weight)
            continue
        quantizer = quantizer_class(weight.shape[1])
        quantizer.add_batch(calibration[name])
        out[name] = quantizer.quantize(weight, views=views, grid=grid, act_order=act_order,
                                       accumulator=accumulator if uses_accumulator else None)
    return out, time.perf_counter() - started
