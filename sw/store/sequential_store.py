"""Sequential calibration of an image (`smartquant quantize minilm --sequential-calibration`):
each linear layer is calibrated on its inputs in the model whose earlier layers (in the order
the model uses them) are already quantized, read at the lowest view of the method
(`ptq_model.SequentialCalibration`), so its codes can compensate the error before it.
One forward pass over the calibration sentences per layer."""

from __future__ import annotations

import numpy as np

from ..infer.ptq_model import SequentialCalibration
from ..quantize.quantizer import QuantizedTensor
from .methods import CalibratedQuantizer, MethodSettings, minilm_calibration_texts
from .rotated import RotatedSource
from .sources import MINILM, Source


class SequentialCalibratedQuantizer(CalibratedQuantizer):
    """A `CalibratedQuantizer` whose layer inputs come from the partly quantized model.

    `calibration` names the layers the forward pass reaches (the one-pass inputs; the others get
    the grid alone); `plain` is the unrotated source the model runs on, `stored` the weights as the
    image stores them (W·H where rotated).  Whatever order the layers are asked for in, the
    layers before one in model order are quantized (and kept) first."""

    def __init__(self, settings: MethodSettings, calibration: dict, sequential: SequentialCalibration,
                 plain: Source, stored: RotatedSource):
        super().__init__(settings, calibration)
        self.sequential, self.stored = sequential, stored
        self.tensors = {**plain.weights, **plain.side}
        self.order = sequential.model_order(calibration)
        self.done: dict[str, QuantizedTensor] = {}

    def quantize_named(self, name: str, weight: np.ndarray) -> QuantizedTensor:
        if name not in self.done:
            self.done[name] = super().quantize_named(name, weight)
        return self.done[name]

    def inputs(self, name: str) -> np.ndarray:
        for earlier in self.order[:self.order.index(name)]:
            self.quantize_named(earlier, self.stored.weights[earlier])
        before = {n: self.done[n] for n in self.order[:self.order.index(name)]}
        x = self.sequential.inputs(name, self.tensors, before, min(self.settings.views),
                                   self.stored.rotations).numpy()
        rotation = self.stored.rotations.get(name)
        return x if rotation is None else rotation.rotate_inputs(x)


def minilm_sequential_quantizer(settings: MethodSettings, calibration: dict, sentences: int | None,
                                plain: Source, stored: RotatedSource) -> SequentialCalibratedQuantizer:
    """The sequential quantizer of MiniLM over `sentences` of its shipped calibration sentences."""
    from ..infer.model import load_encoder
    texts = minilm_calibration_texts(sentences)
    return SequentialCalibratedQuantizer(settings, calibration, SequentialCalibration(load_encoder(MINILM), texts),
                                         plain, stored)
