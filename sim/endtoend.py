"""End to end: a transformer layer runs on weights the simulated RTL served, and its
output must equal the golden software path exactly.

The host's requests for one layer of a precision plan (sw/image/plan.py) become a trace
(`sw.trace.plan_trace`); the RTL answers them in a cocotb simulation; the weights
are rebuilt from the response lines the RTL returned (`sw.weights.LineSource`), and
the layer (and the whole model) is run on them and on the golden store's values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..sw.infer.model import SentenceEncoder, SentenceTokenizer, Transformer, TransformerConfig, layer_weight_names
from ..sw.image.trace import plan_trace, save_trace
from ..sw.infer.weights import LineSource, StorePlan
from .runner import SimOptions, run_trace

class ServedLayer:
    """A weight source: the co-verified tensors from the RTL's response lines, every
    other parameter from the golden store at the same plan."""

    def __init__(self, served: LineSource, rest: StorePlan):
        self.served = served
        self.rest = rest

    def linear(self, name: str) -> torch.Tensor:
        return (self.served if name in self.served.plan else self.rest).linear(name)

    def tensor(self, name: str) -> torch.Tensor:
        return self.rest.tensor(name)

    def rotation(self, name: str):
        return self.rest.rotation(name)


@dataclasses.dataclass
class EndToEndResult:
    lines_checked: int          #: response lines the scoreboard compared
    line_mismatches: int        #: lines that differed from the golden trace
    weights_equal: bool         #: every served weight equals the golden value bit for bit
    layer_output_equal: bool    #: the layer's hidden states equal the golden path exactly
    embeddings_equal: bool      #: the whole model's sentence embeddings, likewise
    max_abs_diff: float         #: largest |RTL path - golden path| over the layer outputs
    sim: dict                   #: the simulation's stats (sim.testbench.summarize)

    @property
    def passed(self) -> bool:
        return (self.sim["passed"] and self.weights_equal and self.layer_output_equal
                and self.embeddings_equal)


def served_lines(trace, received: np.ndarray) -> dict[int, bytes]:
    """Host line address -> the 64 bytes the RTL returned for it."""
    return {int(addr): received[i].tobytes() for i, addr in enumerate(trace.addr)}


def compare_paths(config: TransformerConfig, tokenizer: SentenceTokenizer, golden: StorePlan,
                  rtl: ServedLayer, layer: int, sentences: list[str]) -> dict:
    """Weights, the output of layers 0..`layer` alone, and the full model's embeddings,
    on the golden source against the RTL-served one."""
    weights_equal = all(torch.equal(golden.linear(n), rtl.linear(n)) for n in rtl.served.plan)
    ids, mask = tokenizer.batch(sentences)
    partial = dataclasses.replace(config, num_layers=layer + 1)
    hidden = [Transformer(partial, source).hidden_states(ids, mask) for source in (golden, rtl)]
    embeddings = [SentenceEncoder(config, tokenizer, source).embed(sentences) for source in (golden, rtl)]
    return {"weights_equal": weights_equal,
            "layer_output_equal": torch.equal(*hidden),
            "embeddings_equal": bool(np.array_equal(*embeddings)),
            "max_abs_diff": float((hidden[0] - hidden[1]).abs().max())}


def coverify_layer(image, image_path: str | Path, plan, layer: int, config: TransformerConfig,
                   tokenizer: SentenceTokenizer, sentences: list[str], workdir: str | Path,
                   options: SimOptions = SimOptions()) -> EndToEndResult:
    """Serve encoder layer `layer` of `plan` (fp16 view) from the simulated RTL and run the
    model on `sentences` with it."""
    workdir = Path(workdir)
    names = set(layer_weight_names(layer))
    layer_plan = [p for p in plan if p.tensor in names]
    trace = plan_trace(image, image_path, layer_plan)
    save_trace(trace, workdir / "trace")
    responses = workdir / "responses.npy"
    stats = run_trace(workdir / "trace", dataclasses.replace(options, responses=str(responses)))
    lines = served_lines(trace, np.load(responses))
    golden = StorePlan(image, plan)
    rtl = ServedLayer(LineSource(image, layer_plan, lines), golden)
    return EndToEndResult(lines_checked=stats["lines_compared"], line_mismatches=stats["mismatches"],
                          sim=stats, **compare_paths(config, tokenizer, golden, rtl, layer, sentences))
