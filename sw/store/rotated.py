"""A weight source rotated for the store: every weight replaced by W·H (sw/quantize/rotation.py),
with the H of each so the image can declare it and calibrated quantizers can rotate their
inputs.  Composes with any quantization method: rotate the source, then quantize it."""

from __future__ import annotations

import dataclasses

from ..quantize.rotation import Rotation, parse_rotate, rotate_weights, rotations_for
from .sources import Source


@dataclasses.dataclass
class RotatedSource(Source):
    """A `Source` whose weights named in `rotations` are stored rotated (W·H)."""
    rotations: dict[str, Rotation] = dataclasses.field(default_factory=dict)


def rotated_source(source: Source, rotate: str | None) -> RotatedSource:
    """`source` with every weight rotated as `rotate` (`--rotate`: none, hadamard, hadamard:SEED) says."""
    seed = parse_rotate(rotate)
    rotations = {} if seed is None else rotations_for(source.weights, seed)
    return RotatedSource(name=source.name, weights=rotate_weights(source.weights, rotations),
                         side=source.side, rotations=rotations)
