"""Weight sources for `sw/infer/model.py`: where a linear layer's (out, in) matrix comes from.

- `FullPrecision`: the float32 safetensors;
- `StorePlan`: the golden store read at a precision plan (rows at their k, fp16 view);
- `LineSource`: the same rows rebuilt from host response lines (64 bytes each, keyed by
  host line address) that a simulation of the device returned for the plan's requests.
Non-linear parameters (embeddings, biases, LayerNorm) come from the safetensors or from
the image's side data; they are never quantized.  A source also names the rotation H of
each linear weight it hands out as W·H (the image manifest's `rotation`, else None): the
model multiplies that layer's inputs by H.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from ...errors import SmartquantError
from ...spec import BLOCK_WEIGHTS, LINE_BYTES, View, host_line_address, lines_per_block
from ..image.golden import tensor_values, view_offset
from ..quantize.rotation import Rotation
from ..image.plan import PlanEntry, check_plan, entry_blocks


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(str(path))


def _lookup(tensors: Mapping[str, np.ndarray], name: str, where: str) -> torch.Tensor:
    if name not in tensors:
        raise SmartquantError(f"{where} has no tensor {name!r}")
    return torch.from_numpy(np.asarray(tensors[name], dtype=np.float32))


class FullPrecision:
    """Every parameter as given (float32); the weights named in `rotations` are W·H."""

    def __init__(self, tensors: Mapping[str, np.ndarray], rotations: Mapping[str, Rotation] | None = None):
        self.tensors = tensors
        self.rotations = dict(rotations or {})

    def linear(self, name: str) -> torch.Tensor:
        return _lookup(self.tensors, name, "model")

    def tensor(self, name: str) -> torch.Tensor:
        return _lookup(self.tensors, name, "model")

    def rotation(self, name: str) -> Rotation | None:
        return self.rotations.get(name)


class StoreValues:
    """Cache of `golden.tensor_values(image, name, k)` (fp16 view) shared by many plans."""

    def __init__(self, image):
        self.image = image
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def get(self, name: str, k: int) -> np.ndarray:
        key = (name, k)
        if key not in self._cache:
            self._cache[key] = tensor_values(self.image, name, k, View.FP16)
        return self._cache[key]


def plan_rows(values: StoreValues, name: str, entries: Iterable[PlanEntry]) -> torch.Tensor:
    """Weight `name` (out, in) with each plan entry's rows at its k."""
    out = np.empty(values.image.entry(name).shape, dtype=np.float32)
    for p in entries:
        out[p.row_start:p.row_stop] = values.get(name, p.k)[p.row_start:p.row_stop]
    return torch.from_numpy(out)


def image_rotation(image, name: str) -> Rotation | None:
    """The rotation H the image declares for linear weight `name` (stored as W·H), or None."""
    return image.entry(name).rotation


def side_tensor(image, name: str) -> torch.Tensor:
    """A non-linear parameter from the image's side data."""
    return _lookup(image.side, name, "image side data")


def _by_tensor(image, plan: Iterable[PlanEntry]) -> dict[str, list[PlanEntry]]:
    plan = list(plan)
    check_plan(image, plan)
    out: dict[str, list[PlanEntry]] = {}
    for p in plan:
        out.setdefault(p.tensor, []).append(p)
    return out


class StorePlan:
    """Linear weights from the golden store at a precision plan; the rest from side data."""

    def __init__(self, image, plan: Iterable[PlanEntry], values: StoreValues | None = None):
        self.image = image
        self.plan = _by_tensor(image, plan)
        self.values = values or StoreValues(image)

    def linear(self, name: str) -> torch.Tensor:
        return plan_rows(self.values, name, self.plan[name])

    def tensor(self, name: str) -> torch.Tensor:
        return side_tensor(self.image, name)

    def rotation(self, name: str) -> Rotation | None:
        return image_rotation(self.image, name)


class LineSource(StorePlan):
    """Linear weights decoded from fp16-view response lines (host line address -> 64 bytes)."""

    def __init__(self, image, plan: Iterable[PlanEntry], lines: Mapping[int, bytes]):
        super().__init__(image, plan)
        self.lines = lines

    def _line(self, addr: int) -> bytes:
        data = self.lines.get(addr)
        if data is None or len(data) != LINE_BYTES:
            raise SmartquantError(f"no {LINE_BYTES}-byte response for host line {addr:#x}")
        return bytes(data)

    def linear(self, name: str) -> torch.Tensor:
        entry = self.image.entry(name)
        flat = np.zeros(entry.blocks * BLOCK_WEIGHTS, dtype=np.float32)
        for p in self.plan[name]:
            per_block = lines_per_block(View.FP16, p.k)
            for b in entry_blocks(entry, p.row_start, p.row_stop):
                first = view_offset(entry, View.FP16, p.k, b)
                raw = b"".join(self._line(host_line_address(View.FP16, p.k, first + j))
                               for j in range(per_block))
                flat[b * BLOCK_WEIGHTS:(b + 1) * BLOCK_WEIGHTS] = np.frombuffer(raw, "<f2")
        out, cols = entry.shape
        return torch.from_numpy(flat[:out * entry.padded_in].reshape(out, entry.padded_in)[:, :cols].copy())
