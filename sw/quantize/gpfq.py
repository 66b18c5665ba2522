"""GPFQ: greedy path-following quantization (Lybrand & Saab, "A Greedy Algorithm
for Quantizing Neural Networks", JMLR 2021; Zhang, Zhou & Saab 2023) on the nested store.

For a neuron w and calibration data X (samples x features, column X_t per
feature) the running error u_(t-1) = sum_(s<t) (w_s - q_s) X_s is fed back:
    q_t = Q( <X_t, u_(t-1) + w_t X_t> / ||X_t||^2 )            (Eq. 3)
        = Q( w_t + sum_(s<t) (w_s - q_s) H_st / H_tt ),   H = X^T X (up to scale),
so all neurons of a layer run at once on the Gram matrix the layer statistics
hold (the damping keeps dead inputs finite).  Nesting, group scales and AXE:
`nested_ptq.NestedSequentialQuantizer`.
"""

from __future__ import annotations

import torch

from .nested_ptq import NestedSequentialQuantizer


class GPFQ(NestedSequentialQuantizer):
    """GPFQ: feedback F[s, t] = -H_st / H_tt (t > s) of the original-weight error."""

    def feedback(self, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        ratio = -torch.triu(hessian, diagonal=1) / torch.diag(hessian)[None, :]
        return ratio, torch.ones(hessian.shape[0], dtype=hessian.dtype), True
