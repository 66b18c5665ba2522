"""Bit-true model of a two-stage integer accumulator (the reference for
`hw/dotproduct.py`): P-bit inner sums over tiles of T products that wrap in
two's complement, an outer sum over the tiles of a group that wraps too, and
sticky flags for any partial sum that left its range.
"""

from __future__ import annotations

import numpy as np

#: widest accumulator and input the checks accept (bits)
MAX_ACCUMULATOR_BITS = 64
MAX_INPUT_BITS = 32


def wrap(value: int, bits: int) -> int:
    """`value` reduced to a `bits`-bit two's-complement number."""
    half = 1 << (bits - 1)
    return ((value + half) % (1 << bits)) - half


def fits(value: int, bits: int) -> bool:
    return -(1 << (bits - 1)) <= value <= (1 << (bits - 1)) - 1


def accumulate_group(weights, inputs, accumulator_bits: int, tile: int,
                     outer_bits: int) -> tuple[int, bool, bool]:
    """(wrapped outer sum, inner overflow, outer overflow) of one group of products.

    `weights` and `inputs` are integer sequences of the group's length, a multiple of `tile`.
    """
    weights = np.asarray(weights, dtype=object)
    inputs = np.asarray(inputs, dtype=object)
    outer, inner_over, outer_over = 0, False, False
    for start in range(0, len(weights), tile):
        inner = 0
        for v, x in zip(weights[start:start + tile], inputs[start:start + tile]):
            inner += int(v) * int(x)
            inner_over |= not fits(inner, accumulator_bits)
            inner = wrap(inner, accumulator_bits)
        outer += inner
        outer_over |= not fits(outer, outer_bits)
        outer = wrap(outer, outer_bits)
    return outer, inner_over, outer_over
