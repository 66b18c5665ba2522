"""OPTQ / GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", ICLR 2023) on the nested store.

Per column j (Alg. 1):  q_j = Q(w_j),  e_j = (w_j - q_j) / [H^-1]_jj,
w_(j+1:) -= e_j [H^-1]_(j, j+1:), using the upper Cholesky factor U of
H^-1 = (2 X X^T / n + lambda I)^-1 in place of the running inverse (Sec. 3,
"Cholesky reformulation"); lambda = percdamp * mean(diag H); lazy block updates;
optional activation order (columns by decreasing H_jj).  Nesting, group scales
and AXE: `nested_ptq.NestedSequentialQuantizer`.

    gptq = GPTQ(in_features)
    for x in calibration_inputs: gptq.add_batch(x)
    q = gptq.quantize(weight, views=(4, 8))
"""

from __future__ import annotations

import torch

from ...errors import SmartquantError
from .nested_ptq import NestedSequentialQuantizer


class GPTQ(NestedSequentialQuantizer):
    """GPTQ with H^-1 feedback through its upper Cholesky factor."""

    def feedback(self, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        try:
            inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
            upper = torch.linalg.cholesky(inverse, upper=True)
        except torch.linalg.LinAlgError as exc:
            raise SmartquantError("the damped Hessian is not positive definite; "
                                  "raise the damping (percdamp)") from exc
        return upper, torch.diag(upper).clone(), False
