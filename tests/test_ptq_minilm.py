"""The AXE worst-case property on MiniLM's real weights with real calibration activations."""

import pytest

from smartquant.sw.quantize.axe import AccumulatorSpec, narrowest_accumulator, worst_case_check
from smartquant.sw.infer.evalset import load_calibration
from smartquant.sw.infer.model import linear_weight_names, load_encoder, model_dir
from smartquant.sw.infer.ptq_model import calibration_inputs, quantize_model
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat
from smartquant.sw.infer.weights import read_safetensors

VIEWS = (4, 8)
GRID = NestedRTN(StoreFormat(symmetric=True))


@pytest.fixture(scope="module")
def minilm():
    encoder = load_encoder("minilm")
    tensors = read_safetensors(model_dir("minilm") / "model.safetensors")
    return encoder, tensors, calibration_inputs(encoder, load_calibration(limit=8))


def check_layers(minilm, names, algorithm):
    encoder, tensors, calibration = minilm
    p = narrowest_accumulator(8, True, 128, VIEWS)
    spec = AccumulatorSpec(p, 8, signed_inputs=True)
    quantized, _ = quantize_model(tensors, names, algorithm, VIEWS, GRID, calibration,
                                  accumulator=spec, progress=False)
    for name, q in quantized.items():
        report = worst_case_check(q, spec, VIEWS)
        assert report.ok, (name, report.per_view)
    rtn, _ = quantize_model(tensors, names, "rtn", VIEWS, GRID, progress=False)
    assert not any(worst_case_check(q, spec, VIEWS).ok for q in rtn.values())


@pytest.mark.parametrize("algorithm", ["axe-gptq", "axe-gpfq"])
def test_axe_on_minilm_layer0(minilm, algorithm):
    names = [n for n in linear_weight_names(minilm[0].config) if ".layer.0." in n]
    check_layers(minilm, [names[0]], algorithm)     # the query projection, 384 x 384


@pytest.mark.slow
def test_axe_gptq_on_all_of_minilm(minilm):
    check_layers(minilm, linear_weight_names(minilm[0].config), "axe-gptq")
