"""Second-moment statistics of a linear layer's calibration inputs (the Hessian of
the layer's squared output error), shared by GPTQ and GPFQ.

For a layer y = W x and calibration inputs X (in_features x n samples), the
squared output error ||W X - Q X||_F^2 has the Hessian H = 2 X X^T / n
(Frantar et al., "GPTQ", ICLR 2023, Eq. 1-2); `add_batch` keeps the running
mean exactly as the reference implementation does.
"""

from __future__ import annotations

import torch

from ...errors import SmartquantError


class LayerStatistics:
    """Accumulates H = 2 X X^T / n over calibration batches of one linear layer."""

    def __init__(self, in_features: int):
        if in_features < 1:
            raise SmartquantError(f"a layer needs at least one input feature, got {in_features}")
        self.in_features = in_features
        self.samples = 0
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float64)

    def add_batch(self, inp) -> None:
        """Add calibration inputs `inp` (..., in_features): every leading index is one sample."""
        x = torch.as_tensor(inp)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise SmartquantError(f"calibration inputs have {tuple(x.shape)[-1:]} features, "
                                  f"the layer has {self.in_features}")
        x = x.reshape(-1, self.in_features).to(torch.float64)
        n = x.shape[0]
        self.hessian *= self.samples / (self.samples + n)
        self.samples += n
        x = x * (2.0 / self.samples) ** 0.5
        self.hessian += x.T @ x

    def damped_hessian(self, padded_in: int, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(H + damping, dead) padded to `padded_in` columns.

        Dead inputs (H_ii = 0: never active in calibration, or padding) get
        H_ii = 1 and are reported so the caller can zero their weights, as the
        reference GPTQ does; damping adds `percdamp` times the mean diagonal.
        """
        if self.samples == 0:
            raise SmartquantError("no calibration data: call add_batch before quantize")
        if not 0.0 <= percdamp < 1.0:
            raise SmartquantError(f"damping {percdamp} is not in [0, 1)")
        h = torch.zeros(padded_in, padded_in, dtype=torch.float64)
        h[:self.in_features, :self.in_features] = self.hessian
        dead = torch.diag(h) == 0
        h[dead, dead] = 1.0
        h += torch.eye(padded_in, dtype=torch.float64) * percdamp * torch.mean(torch.diag(h))
        return h, dead
