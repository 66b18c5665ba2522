"""Column-by-column rounding with error feedback: the loop GPTQ and GPFQ share,
and the rounder that picks each column's codes on a view's grid.

Both algorithms round column j of the working weights W' and push the error
into the columns not yet rounded:  W'[:, t] -= e_j F[j, t]  for t > j.
  * GPTQ: e_j = (W'_j - Q(W'_j)) / U_jj and F = U, the upper Cholesky factor of
    H^-1 (Frantar et al. 2023, Alg. 1);
  * GPFQ: e_j = W_j - Q(W'_j) with the *original* W_j and F[j, t] = -H_jt / H_tt
    (Lybrand & Saab 2021, Eq. 3 written with the Gram matrix H ~ X X^T).
Updates are lazy (Frantar et al. 2023, Sec. 3 "Lazy batch-updates"): inside a
block of `block_size` columns immediately, to the rest once per block.
"""

from __future__ import annotations

import torch

from .axe import AccumulatorClamp


class ViewRounder:
    """Rounds a column to the nearest reconstruction point of view k.

    Points: r = c 2^(8-k) + 2^(7-k) (k < 8) or r = c (k = 8) with the code c
    confined to the bucket of the coarser pass's code `prefix` at `prefix_k`
    (nested refinement), and, with a clamp, to the integers v = r - z the
    accumulator budget still allows.  Records c (at view k) per column.
    """

    def __init__(self, scale: torch.Tensor, zero: torch.Tensor, k: int,
                 prefix: torch.Tensor | None = None, prefix_k: int | None = None,
                 clamp: AccumulatorClamp | None = None):
        self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        self.zero = zero
        self.k = k
        self.step = 1 << (8 - k)
        self.half = self.step // 2
        self.prefix, self.prefix_k = prefix, prefix_k
        self.clamp = clamp
        self.codes = torch.zeros(scale.shape, dtype=torch.int64)

    def reconstruction(self, c: torch.Tensor) -> torch.Tensor:
        """r on the 8-bit grid of view-k codes c."""
        return c * self.step + self.half

    def __call__(self, j: int, w: torch.Tensor) -> torch.Tensor:
        """Codes for column j from weights `w` (rows,); returns the dequantized column."""
        s, z = self.scale[:, j], self.zero[:, j]
        target = w / s + z
        c = torch.round((target - self.half) / self.step)
        if self.prefix is None:
            lo = torch.zeros_like(z)
            hi = torch.full_like(z, (1 << self.k) - 1)
        else:
            lo = self.prefix[:, j] << (self.k - self.prefix_k)
            hi = lo + (1 << (self.k - self.prefix_k)) - 1
        if self.clamp is not None:
            v_min, v_max = self.clamp.interval(j)
            lo = torch.maximum(lo, -torch.div(-(v_min + z - self.half), self.step, rounding_mode="floor"))
            hi = torch.minimum(hi, torch.div(v_max + z - self.half, self.step, rounding_mode="floor"))
        c = torch.minimum(torch.maximum(c.to(torch.int64), lo), hi)
        r = self.reconstruction(c)
        if self.clamp is not None:
            self.clamp.commit(j, r - z)
        self.codes[:, j] = c
        return self.scale[:, j] * (r - z).to(w.dtype)


def sequential_round(weights: torch.Tensor, feedback: torch.Tensor, divisor: torch.Tensor,
                     rounder, column_of, block_size: int = 128,
                     error_from_original: bool = False) -> torch.Tensor:
    """Round every column of `weights` (rows x cols, float64, in processing order).

    `rounder(column_of[j], w)` quantizes processing-order column j;
    `feedback` (cols x cols, upper triangular) and `divisor` (cols) define the
    error feedback (module docstring).  Returns the dequantized weights.
    """
    work = weights.clone()
    dequantized = torch.zeros_like(weights)
    cols = weights.shape[1]
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        block = work[:, i1:i2].clone()
        errors = torch.zeros_like(block)
        for i in range(i2 - i1):
            dq = rounder(int(column_of[i1 + i]), block[:, i])
            dequantized[:, i1 + i] = dq
            source = weights[:, i1 + i] if error_from_original else block[:, i]
            err = (source - dq) / divisor[i1 + i]
            block[:, i + 1:] -= err[:, None] * feedback[i1 + i, i1 + i + 1:i2][None, :]
            errors[:, i] = err
        work[:, i2:] -= errors @ feedback[i1:i2, i2:]
    return dequantized
