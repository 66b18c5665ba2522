"""The inference stack against an independent implementation (transformers), and its bad input."""

import numpy as np
import pytest
import torch
import transformers

from smartquant.errors import SmartquantError
from smartquant.sw.infer.model import (Transformer, TransformerConfig, linear_weight_names, load_encoder,
                                 model_dir)
from smartquant.sw.infer.weights import FullPrecision

SENTENCES = ["A man is playing a guitar on the stage.",
             "The quick brown fox jumps over the lazy dog!",
             "hello",
             "Quantized weights are served by a CXL memory device at a runtime-chosen precision."]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("minilm")


def test_minilm_matches_transformers(encoder):
    root = str(model_dir("minilm"))
    reference = transformers.BertModel.from_pretrained(root, add_pooling_layer=False).eval()
    batch = transformers.AutoTokenizer.from_pretrained(root)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    ours = encoder.embed(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    assert (ours * expected).sum(1).min() >= 0.9999


def test_batched_equals_one_at_a_time(encoder):
    together = encoder.embed(SENTENCES)
    alone = np.concatenate([encoder.embed([s]) for s in SENTENCES])
    assert (together * alone).sum(1).min() >= 0.99999


def _random_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2Model(cfg).eval(), cfg


def _gpt2_tensors(model, cfg) -> dict[str, np.ndarray]:
    """GPT-2 parameters renamed to this stack's layout (Conv1D weights are (in, out): transposed)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {"embeddings.word_embeddings.weight": sd["wte.weight"],
           "embeddings.position_embeddings.weight": sd["wpe.weight"],
           "encoder.final_layer_norm.weight": sd["ln_f.weight"],
           "encoder.final_layer_norm.bias": sd["ln_f.bias"]}
    for i in range(cfg.n_layer):
        h, p = f"h.{i}", f"encoder.layer.{i}"
        qkv_w, qkv_b = sd[f"{h}.attn.c_attn.weight"].T, sd[f"{h}.attn.c_attn.bias"]
        for j, role in enumerate(("query", "key", "value")):
            rows = slice(j * cfg.n_embd, (j + 1) * cfg.n_embd)
            out[f"{p}.attention.self.{role}.weight"] = qkv_w[rows]
            out[f"{p}.attention.self.{role}.bias"] = qkv_b[rows]
        for ours, theirs in (("attention.output.dense", "attn.c_proj"), ("intermediate.dense", "mlp.c_fc"),
                             ("output.dense", "mlp.c_proj")):
            out[f"{p}.{ours}.weight"] = sd[f"{h}.{theirs}.weight"].T
            out[f"{p}.{ours}.bias"] = sd[f"{h}.{theirs}.bias"]
        for ours, theirs in (("attention.output.LayerNorm", "ln_1"), ("output.LayerNorm", "ln_2")):
            out[f"{p}.{ours}.weight"] = sd[f"{h}.{theirs}.weight"]
            out[f"{p}.{ours}.bias"] = sd[f"{h}.{theirs}.bias"]
    return out


def _decoder_config(cfg) -> TransformerConfig:
    return TransformerConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, num_layers=cfg.n_layer,
                             num_heads=cfg.n_head, intermediate_size=4 * cfg.n_embd,
                             max_positions=cfg.n_positions, layer_norm_eps=cfg.layer_norm_epsilon,
                             activation="gelu_tanh", causal=True, pre_layer_norm=True)


def test_decoder_matches_transformers_gpt2():
    reference, cfg = _random_gpt2()
    ids = torch.randint(0, cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=ids).last_hidden_state
    ours = Transformer(_decoder_config(cfg), FullPrecision(_gpt2_tensors(reference, cfg))).hidden_states(ids)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_decoder_is_causal_and_sees_every_linear_layer():
    reference, cfg = _random_gpt2(seed=3)
    config = _decoder_config(cfg)
    model = Transformer(config, FullPrecision(_gpt2_tensors(reference, cfg)))
    ids = torch.randint(0, cfg.vocab_size, (1, 9), generator=torch.Generator().manual_seed(2))
    changed = ids.clone()
    changed[0, 6] = (ids[0, 6] + 1) % cfg.vocab_size
    seen = []
    a = model.lm_logits(ids)
    b = Transformer(config, model.source).hidden_states(changed, observe=lambda name, x: seen.append(name))
    b = b @ model.source.tensor("embeddings.word_embeddings.weight").T
    torch.testing.assert_close(a[0, :6], b[0, :6])
    assert not torch.allclose(a[0, 6:], b[0, 6:])
    assert seen == linear_weight_names(config)


@pytest.mark.parametrize("text, message", [("", "empty text"), ("   ", "empty text"),
                                           ("word " * 600, "past the model's maximum of 512")])
def test_bad_text(encoder, text, message):
    with pytest.raises(SmartquantError, match=message):
        encoder.embed([text])


def test_unknown_model():
    with pytest.raises(SmartquantError, match="unknown model 'gpt-17'"):
        load_encoder("gpt-17")
