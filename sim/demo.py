"""The main job, from nothing to a report: quantize MiniLM into a store image, pick
precision plans (uniform, static mixed, dynamic per sentence), measure their quality
and DRAM traffic, and co-verify one encoder layer of every plan in RTL simulation
(the layer's weights served by the simulated controller must give exactly the golden
software path's output)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ..atomic import atomic_dir
from ..errors import SmartquantError
from ..report import write_json
from ..sw.infer import experiment
from ..sw.infer.evalset import load_calibration, load_pairs
from ..sw.infer.model import TransformerConfig, model_dir
from ..sw.image.plan import uniform_plan
from ..sw.store.methods import MINILM_DEFAULTS
from ..sw.store.model_store import quantize_source
from .endtoend import coverify_layer
from .runner import SimOptions

REPORT_FILE = "demo.json"    #: the report's JSON, in the output directory
COLUMNS = experiment.COLUMNS + ("rtl_lines", "rtl_mismatches", "rtl_exact")


@dataclasses.dataclass
class DemoSettings:
    out_dir: Path
    pairs: int = 24                      #: evaluation sentence pairs (of the shipped set)
    calibration: int = 8                 #: calibration sentences for the static plans
    uniform: tuple[int, ...] = (2, 3, 4, 8)
    budgets: tuple[float, ...] = (3.0, 4.0)
    layer: int = 0                       #: encoder layer co-verified in RTL simulation
    sim: SimOptions = dataclasses.field(default_factory=lambda: SimOptions(stall=0.1, read_latency=20))


def _plan_for_row(ev: experiment.Evaluation, row: dict):
    """(plan, sentences) to co-verify for a result row: a dynamic row's plan is the one its
    policy chose for the first sentence, run on that sentence."""
    kind, setting = row["kind"], row["setting"]
    if kind == "uniform":
        return uniform_plan(ev.image, setting, ev.policy.tensors), ev.sentences[:2]
    if kind == "static":
        return ev.policy.static_plan(setting), ev.sentences[:2]
    planner = ev.policy.dynamic(setting)
    ev.encoder(planner).embed(ev.sentences[:1], observe=planner)
    return planner.plan, ev.sentences[:1]


def run_demo(settings: DemoSettings, progress: Callable[[str], None] = lambda label: None) -> dict:
    """Everything the demo reports, as one JSON-ready dict; its files (image/, rtl/, plots/,
    demo.json) are written together under settings.out_dir when the run completes."""
    out = Path(settings.out_dir)
    experiment.check_settings(settings.uniform, settings.budgets)
    layers = TransformerConfig.from_bert_json(model_dir("minilm") / "config.json").num_layers
    if not 0 <= settings.layer < layers:
        raise SmartquantError(f"--layer {settings.layer}: MiniLM has encoder layers 0..{layers - 1}")
    with atomic_dir(out, "demo") as tmp:
        progress("quantize MiniLM")
        image = quantize_source("minilm", MINILM_DEFAULTS.settings(), rotate=MINILM_DEFAULTS.rotate,
                                warn=lambda message: None)
        image.save(tmp / "image")
        ev = experiment.prepare(image, "minilm", load_pairs(limit=settings.pairs),
                                load_calibration(limit=settings.calibration), progress=progress)
        rows = experiment.run(ev, settings.uniform, settings.budgets, progress)
        for row in rows:
            progress(f"RTL layer {settings.layer}, {row['plan']}")
            plan, sentences = _plan_for_row(ev, row)
            result = coverify_layer(image, tmp / "image", plan, settings.layer, ev.config, ev.tokenizer,
                                    sentences, tmp / "rtl" / row["plan"].replace(" ", "-"), settings.sim)
            row.update(rtl_lines=result.lines_checked, rtl_mismatches=result.line_mismatches,
                       rtl_exact=result.passed, rtl_cycles=result.sim["cycles"],
                       rtl_dram_bytes=result.sim["dram_bytes_read_bus"])
        plots = [str(out / p.relative_to(tmp)) for p in experiment.plot(rows, tmp / "plots")]
        report = {"image": str(out / "image"), "pairs": len(ev.pairs), "sentences": len(ev.sentences),
                  "layer": settings.layer, "rows": rows, "plots": plots}
        write_json(tmp / REPORT_FILE, {**report, "settings": {**dataclasses.asdict(settings), "out_dir": str(out)}})
    return report


def table_rows(rows: list[dict]) -> list[list]:
    return [base + [r["rtl_lines"], r["rtl_mismatches"], "yes" if r["rtl_exact"] else "NO"]
            for base, r in zip(experiment.table_rows(rows), rows)]
