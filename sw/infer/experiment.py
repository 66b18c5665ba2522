"""Quality vs bits vs DRAM bytes: uniform, static mixed and dynamic precision plans.

Rows (one per plan kind and setting):
- `uniform k`: every linear weight at k bits;
- `static B`: the policy's input-independent plan at an average of B bits (slice
  importance from calibration sentences);
- `dynamic B`: per sentence, each tensor keeps the static plan's bits but its slices are
  re-allocated from the activations reaching it (sw/infer/policy.py).
Each row has the average bits per weight, the DRAM bytes one forward pass reads from the
store (mean over sentences), the ratio to reading everything at 8 bits, and the quality
metrics of sw/infer/quality.py against full precision.  Callable with small samples and a
progress callback (`progress(step_label)`), for the CLI and the demo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...atomic import atomic_dir
from ...errors import SmartquantError
from .evalset import SentencePair, load_calibration, load_pairs, unique_sentences
from .model import SentenceEncoder, SentenceTokenizer, TransformerConfig, linear_weight_names, load_encoder
from ..image.plan import plan_average_bits, plan_dram_bytes, uniform_plan
from ...spec import PLANES
from .policy import DEFAULT_KS, PrecisionPolicy, check_budget
from .quality import quality
from .weights import StorePlan, StoreValues

STATIC_KS = (2, 3, 4, 5, 6, 8)
BUDGETS = (2.5, 3.0, 3.5, 4.0)
Progress = Callable[[str], None]


@dataclasses.dataclass
class Evaluation:
    """Everything the rows share: the image, model, policy, sentences and the reference."""
    image: object
    config: TransformerConfig
    tokenizer: SentenceTokenizer
    policy: PrecisionPolicy
    pairs: list[SentencePair]
    sentences: list[str]
    reference: dict[str, np.ndarray]          #: full-precision embedding per sentence
    int8_bytes: int                           #: DRAM bytes of the linear weights at 8 bits

    def encoder(self, source) -> SentenceEncoder:
        return SentenceEncoder(self.config, self.tokenizer, source)


def prepare(image, model: str = "minilm", pairs: Sequence[SentencePair] | None = None,
            calibration: Sequence[str] | None = None, ks: Sequence[int] = DEFAULT_KS,
            seed: int = 0, progress: Progress | None = None) -> Evaluation:
    """Full-precision reference embeddings and calibration statistics for an image of `model`."""
    progress = progress or (lambda label: None)
    full = load_encoder(model)
    names = linear_weight_names(full.config)
    missing = [n for n in names if n not in {e.name for e in image.entries}]
    if missing:
        raise SmartquantError(f"image lacks {len(missing)} linear weights of {model!r}, e.g. {missing[0]!r}")
    pairs = list(pairs) if pairs is not None else load_pairs()
    sentences = unique_sentences(pairs)
    progress("full precision")
    reference = dict(zip(sentences, full.embed(sentences)))
    progress("sensitivity")
    policy = PrecisionPolicy(image, full.config, ks, seed, StoreValues(image))
    policy.calibrate(full.tokenizer, list(calibration) if calibration is not None else load_calibration(),
                     progress=lambda name: progress(f"calibrate {name}"))
    return Evaluation(image, full.config, full.tokenizer, policy, pairs, sentences, reference,
                      plan_dram_bytes(image, uniform_plan(image, 8, names)))


def result_row(ev: Evaluation, kind: str, setting: float, bits: float, dram: float, embeddings) -> dict:
    """A result row; `setting` is the plan kind's parameter (k for uniform, the budget otherwise)."""
    return {"plan": f"{kind} {setting:g}", "kind": kind, "setting": setting,
            "avg_bits": float(bits), "dram_bytes": float(dram),
            "vs_int8": float(dram) / ev.int8_bytes,
            **quality(dict(zip(ev.sentences, embeddings)), ev.reference, ev.pairs)}


def fixed_plan_row(ev: Evaluation, kind: str, setting: float, plan) -> dict:
    """A plan used for every sentence."""
    embeddings = ev.encoder(StorePlan(ev.image, plan, ev.policy.values)).embed(ev.sentences)
    return result_row(ev, kind, setting, plan_average_bits(ev.image, plan), plan_dram_bytes(ev.image, plan), embeddings)


def uniform_row(ev: Evaluation, k: int) -> dict:
    return fixed_plan_row(ev, "uniform", k, uniform_plan(ev.image, k, ev.policy.tensors))


def static_row(ev: Evaluation, budget: float) -> dict:
    return fixed_plan_row(ev, "static", budget, ev.policy.static_plan(budget))


def dynamic_row(ev: Evaluation, budget: float) -> dict:
    """One dynamic plan per sentence; bits and DRAM bytes are means over the sentences."""
    embeddings, bits, dram = [], [], []
    for text in ev.sentences:
        planner = ev.policy.dynamic(budget)
        embeddings.append(ev.encoder(planner).embed([text], observe=planner)[0])
        bits.append(plan_average_bits(ev.image, planner.plan))
        dram.append(plan_dram_bytes(ev.image, planner.plan))
    return result_row(ev, "dynamic", budget, np.mean(bits), np.mean(dram), embeddings)


def check_settings(static_ks: Sequence[int], budgets: Sequence[float], ks: Sequence[int] = DEFAULT_KS) -> None:
    """SmartquantError for a uniform k outside 1..8 or a budget the allowed ks cannot meet."""
    for k in static_ks:
        if not 1 <= k <= PLANES:
            raise SmartquantError(f"uniform k={k} outside 1..{PLANES}")
    for budget in budgets:
        check_budget(budget, ks)


def run(ev: Evaluation, static_ks: Sequence[int] = STATIC_KS, budgets: Sequence[float] = BUDGETS,
        progress: Progress | None = None) -> list[dict]:
    """Rows for uniform k in `static_ks`, then static and dynamic plans at each budget."""
    check_settings(static_ks, budgets, ev.policy.ks)
    progress = progress or (lambda label: None)
    rows = []
    for k in static_ks:
        progress(f"uniform {k}")
        rows.append(uniform_row(ev, k))
    for budget in budgets:
        progress(f"static {budget:g}")
        rows.append(static_row(ev, budget))
        progress(f"dynamic {budget:g}")
        rows.append(dynamic_row(ev, budget))
    return rows


COLUMNS = ("plan", "avg_bits", "dram_bytes", "vs_int8", "cosine_mean", "cosine_min", "spearman")


def table_rows(rows: list[dict]) -> list[list]:
    return [[r[c] if c != "dram_bytes" else int(round(r[c])) for c in COLUMNS] for r in rows]


def plot(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """quality_vs_bits.png and quality_vs_dram.png (cosine and Spearman per plan kind)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir = Path(out_dir)
    names = ("quality_vs_bits.png", "quality_vs_dram.png")
    with atomic_dir(out_dir, "plots") as tmp:
        for name, x_key, x_label in zip(names, ("avg_bits", "dram_bytes"),
                                        ("average bits per weight", "DRAM bytes per forward pass (MB)")):
            fig, axes = plt.subplots(1, 2, figsize=(10, 4))
            for ax, metric in zip(axes, ("cosine_mean", "spearman")):
                for kind, marker in (("uniform", "o-"), ("static", "s--"), ("dynamic", "^-")):
                    sel = [r for r in rows if r["kind"] == kind]
                    if sel:
                        x = [r[x_key] / (1e6 if x_key == "dram_bytes" else 1) for r in sel]
                        ax.plot(x, [r[metric] for r in sel], marker, label=kind)
                ax.set_xlabel(x_label)
                ax.set_ylabel(metric.replace("_", " ") + " vs full precision")
                ax.grid(alpha=0.3)
                ax.legend()
            fig.tight_layout()
            fig.savefig(tmp / name, dpi=100)
            plt.close(fig)
    return [out_dir / n for n in names]
