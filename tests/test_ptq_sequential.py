"""Sequential calibration (sw/infer/ptq_model.py): each layer's inputs come from the
model whose earlier layers are already quantized."""

import numpy as np
import pytest
import torch

from smartquant.errors import SmartquantError
from smartquant.sw.infer.model import SentenceEncoder, linear_weight_names
from smartquant.sw.infer.ptq_model import (SequentialCalibration, calibration_for, calibration_inputs,
                                           quantize_model)
from smartquant.sw.infer.weights import FullPrecision
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat
from smartquant.sw.quantize.rotation import rotations_for

TEXTS = ["The cat sat on the warm mat.", "Stock prices fell sharply on Monday morning.",
         "She plays the violin in an orchestra.", "Heavy rain flooded the narrow streets."]
GRID = NestedRTN(StoreFormat(group_size=32, symmetric=True))


def encoder(toy, tensors=None):
    config, tokenizer, float_tensors = toy
    return SentenceEncoder(config, tokenizer, FullPrecision(tensors or float_tensors))


def at_view(toy, quantized, k):
    replaced = dict(toy[2])
    replaced.update({n: q.dequantize(k).astype(np.float32) for n, q in quantized.items()})
    return encoder(toy, replaced)


def test_inputs_come_from_the_quantized_prefix(toy_encoder):
    names = linear_weight_names(toy_encoder[0])
    one_pass = calibration_inputs(encoder(toy_encoder), TEXTS)
    sequential = SequentialCalibration(encoder(toy_encoder), TEXTS)
    first_layer = {n: GRID.quantize(toy_encoder[2][n]) for n in names[:6]}
    later = names[6]
    assert torch.equal(sequential.inputs(names[0], toy_encoder[2], {}, 3), one_pass[names[0]])
    got = sequential.inputs(later, toy_encoder[2], first_layer, 3)
    expected = calibration_inputs(at_view(toy_encoder, first_layer, 3), TEXTS)[later]
    assert torch.equal(got, expected)
    assert not torch.allclose(got, one_pass[later], atol=1e-3)


def test_rotated_prefix_is_read_as_stored(toy_encoder):
    names = linear_weight_names(toy_encoder[0])
    rotations = rotations_for({n: toy_encoder[2][n] for n in names}, 5)
    first_layer = {n: GRID.quantize(rotations[n].rotate_weight(toy_encoder[2][n])) for n in names[:6]}
    got = SequentialCalibration(encoder(toy_encoder), TEXTS).inputs(names[6], toy_encoder[2], first_layer, 4,
                                                                     rotations)
    replaced = dict(toy_encoder[2])
    replaced.update({n: q.dequantize(4).astype(np.float32) for n, q in first_layer.items()})
    model = SentenceEncoder(toy_encoder[0], toy_encoder[1],
                            FullPrecision(replaced, {n: rotations[n] for n in first_layer}))
    assert torch.equal(got, calibration_inputs(model, TEXTS)[names[6]])


def test_sequential_gptq_differs_after_the_first_layer_only_by_its_inputs(toy_encoder):
    names = linear_weight_names(toy_encoder[0])
    one_pass, _ = quantize_model(toy_encoder[2], names, "gptq", (3,), GRID,
                                 calibration_for(encoder(toy_encoder), TEXTS), progress=False)
    sequential, _ = quantize_model(toy_encoder[2], names[::-1], "gptq", (3,), GRID,
                                   calibration_for(encoder(toy_encoder), TEXTS, sequential=True),
                                   progress=False)
    assert list(sequential) == names                   # quantized in model order
    assert (sequential[names[0]].codes == one_pass[names[0]].codes).all()
    assert any((sequential[n].codes != one_pass[n].codes).any() for n in names[6:])


def test_bad_sequential_calibration(toy_encoder):
    calibration = SequentialCalibration(encoder(toy_encoder), TEXTS)
    with pytest.raises(SmartquantError, match="not a linear layer"):
        quantize_model(toy_encoder[2], ["embeddings.word_embeddings.weight"], "gptq", (3,), GRID, calibration)
    with pytest.raises(SmartquantError, match="at least one view"):
        quantize_model(toy_encoder[2], linear_weight_names(toy_encoder[0]), "gptq", (), GRID, calibration)
    with pytest.raises(SmartquantError, match="at least one sentence"):
        SequentialCalibration(encoder(toy_encoder), [])


# --- the store path (`smartquant quantize minilm --sequential-calibration`) -----------------

def test_store_quantizer_matches_sequential_ptq_in_any_order(toy_encoder):
    from smartquant.sw.store.methods import MethodSettings
    from smartquant.sw.store.rotated import rotated_source
    from smartquant.sw.store.sequential_store import SequentialCalibratedQuantizer
    from smartquant.sw.store.sources import Source
    config, _, tensors = toy_encoder
    names = linear_weight_names(config)
    plain = Source("toy", {n: tensors[n] for n in names}, {n: t for n, t in tensors.items() if n not in names})
    stored = rotated_source(plain, "hadamard:5")
    settings = MethodSettings("gptq", StoreFormat(group_size=32, symmetric=True), (3, 8))
    one_pass = {n: stored.rotations[n].rotate_inputs(x.numpy())
                for n, x in calibration_inputs(encoder(toy_encoder), TEXTS).items()}
    store = SequentialCalibratedQuantizer(settings, one_pass, SequentialCalibration(encoder(toy_encoder), TEXTS),
                                          plain, stored)
    got = {n: store.quantize_named(n, stored.weights[n]) for n in reversed(names)}   # out of model order
    expected, _ = quantize_model(tensors, names, "gptq", (3, 8), settings.grid(),
                                 calibration_for(encoder(toy_encoder), TEXTS, sequential=True),
                                 progress=False, rotations=stored.rotations)
    for n in names:
        assert (got[n].codes == expected[n].codes).all(), n
    assert (got[names[0]].codes == store.quantize_on(stored.weights[names[0]], one_pass[names[0]]).codes).all()
    assert any((got[n].codes != store.quantize_on(stored.weights[n], one_pass[n]).codes).any() for n in names[6:])
