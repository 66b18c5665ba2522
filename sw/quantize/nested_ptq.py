"""Nested (any-precision) sequential PTQ: the driver GPTQ and GPFQ share.

The group scales and zero points come from a nested grid quantizer (e.g.
`NestedRTN`, `NestedMSEClip`) run on the full-precision weights once ("static
groups" in the reference GPTQ), so every pass and every view shares them.

Nesting, by incremental upscaling (after Any-Precision LLM, Park et al. 2024):
the views the caller names are quantized from the lowest up, each by a full
error-feedback pass over the original weights.  Pass k_1 (the lowest) chooses the
top k_1 bits of every code; pass k_i chooses the next k_i - k_(i-1) bits *inside
the bucket the earlier bits fixed*, so its error feedback works around the
coarse codes.  The final code is the reconstruction point of the last view
(if it is below 8, the lower bits are the bucket's middle, so view 8 equals it).
A dedicated model for one k is `quantize(w, views=(k,))`.

With an `AccumulatorSpec` (AXE, symmetric formats only): the soft constraint
projects each tile's w/s onto the L1 ball first, and the hard constraint clamps
every pass (see `axe.AccumulatorClamp`), so every named view is within budget.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ...errors import SmartquantError
from .axe import AccumulatorClamp, AccumulatorSpec, check_feasible, project_l1_ball
from ..fpformat import scale_value
from .layer_stats import LayerStatistics
from .sequential import ViewRounder, sequential_round
from .quantizer import NestedRTN, QuantizedTensor


@dataclasses.dataclass
class LayerSetup:
    """What every sequential pass over one weight shares: the group grid `base` (scales and
    zeros from a grid quantizer), per-weight scale and zero, the padded float64 weights
    with dead inputs zeroed, and the damped Hessian."""
    base: QuantizedTensor
    scale: torch.Tensor          #: (out, padded_in) float64 stored scale of each weight's group
    zero: torch.Tensor           #: (out, padded_in) int64 zero point
    weights: torch.Tensor        #: (out, padded_in) float64
    hessian: torch.Tensor        #: (padded_in, padded_in) damped
    shape: tuple[int, int]       #: (out, in) of the source weight

    def order(self, act_order: bool) -> torch.Tensor:
        """Column processing order: by decreasing H_jj (activation order) or natural."""
        if act_order:
            return torch.argsort(torch.diag(self.hessian), descending=True)
        return torch.arange(self.hessian.shape[0])

    def tensor(self, codes: np.ndarray) -> QuantizedTensor:
        """The QuantizedTensor of 8-bit `codes` (out, padded_in) on this grid."""
        base = self.base
        return QuantizedTensor(codes=codes, scale_bits=base.scale_bits, zeros=base.zeros,
                               group_size=base.group_size, symmetric=base.symmetric,
                               scale_format=base.scale_format, shape=self.shape)


class NestedSequentialQuantizer(LayerStatistics):
    """Base class: `add_batch` collects H; subclasses define the error feedback."""

    def feedback(self, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(F, divisor, error_from_original) for `sequential.sequential_round`."""
        raise NotImplementedError

    def prepare(self, weight, grid, percdamp: float, block_size: int) -> LayerSetup:
        """Checks `weight` against the layer, runs the grid quantizer on it ("static groups")
        and pads weights and Hessian to whole groups."""
        weight = np.asarray(weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[1] != self.in_features:
            raise SmartquantError(f"weight of shape {weight.shape} does not match a layer "
                                  f"with {self.in_features} inputs")
        if block_size < 1:
            raise SmartquantError(f"block size {block_size} must be positive")
        base = grid.quantize(weight)
        rows, padded_in = base.codes.shape
        g = base.group_size
        scale = torch.from_numpy(np.repeat(scale_value(base.scale_bits, base.scale_format), g, axis=-1)
                                 .reshape(rows, padded_in))
        zero = torch.from_numpy(np.repeat(base.zeros.astype(np.int64), g, axis=-1).reshape(rows, padded_in))
        hessian, dead = self.damped_hessian(padded_in, percdamp)
        w = torch.zeros(rows, padded_in, dtype=torch.float64)
        w[:, :self.in_features] = torch.from_numpy(weight)
        w[:, dead] = 0.0
        return LayerSetup(base, scale, zero, w, hessian, tuple(weight.shape))

    def quantize(self, weight, views=(8,), grid=None, accumulator: AccumulatorSpec | None = None,
                 soft: bool = True, hard: bool = True, act_order: bool = False,
                 percdamp: float = 0.01, block_size: int = 128) -> QuantizedTensor:
        """Nested codes for `weight` (out x in) whose views `views` (bits) are all kept good.

        `grid` picks the group scales/zeros (default: `NestedRTN()` with the
        store's default format); `accumulator` turns on AXE for every named view
        (it needs a symmetric format).
        """
        views = sorted(set(int(k) for k in views))
        if not views or not all(1 <= k <= 8 for k in views):
            raise SmartquantError(f"views {views} must be bit widths in 1..8")
        setup = self.prepare(weight, grid or NestedRTN(), percdamp, block_size)
        scale, zero, w = setup.scale, setup.zero, setup.weights
        rows, padded_in = w.shape

        tile = None
        if accumulator is not None:
            if not setup.base.symmetric:
                raise SmartquantError("AXE needs a symmetric format (z = 128): with an arbitrary "
                                      "zero point a refined view can outgrow the coarse one")
            tile = accumulator.tile_for(padded_in, setup.base.group_size)
            check_feasible(accumulator, views, tile)
            if soft:
                radius = float(sum(accumulator.side_budgets()))
                safe = torch.where(scale > 0, scale, torch.ones_like(scale))
                units = (w / safe).reshape(rows, -1, tile)
                w = project_l1_ball(units, radius).reshape(rows, padded_in) * safe

        order = setup.order(act_order)
        feedback, divisor, from_original = self.feedback(setup.hessian[order][:, order])
        w_ordered = w[:, order]

        codes, prev_k, prev_ints, rounder = None, None, None, None
        for k in views:
            clamp = (AccumulatorClamp(accumulator, rows, padded_in, tile, k, previous=prev_ints)
                     if accumulator is not None and hard else None)
            rounder = ViewRounder(scale, zero, k, prefix=codes, prefix_k=prev_k, clamp=clamp)
            sequential_round(w_ordered, feedback, divisor, rounder, order, block_size, from_original)
            codes, prev_k = rounder.codes, k
            prev_ints = rounder.reconstruction(codes) - zero
        return setup.tensor(rounder.reconstruction(codes).numpy().astype(np.uint8))
