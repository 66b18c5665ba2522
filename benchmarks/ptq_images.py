"""MiniLM embedding quality at uniform k = 2..8 per quantization method, measured FROM
STORE IMAGES through the golden decoder (docs/PTQ.md, "Quality per method").

    python benchmarks/ptq_images.py [--methods rtn mse gptq joint] [--dedicated gptq joint]
                                    [--variants plain] [--damping F] [--act-order] [--keep DIR] [--json FILE]

Each (method, variant) is quantized by `model_store.quantize_source` exactly as
`smartquant quantize minilm --method M` does (calibration on the shipped calibration
sentences), saved, loaded back (`Image.load` checks the manifest) and read at every k
through `golden.tensor_values` (fp16 view).  Quality is `quality.quality` over the
shipped sentence pairs, which calibration never sees (`--pairs-from holdout`: the hold-out
pairs, which nothing was tuned on either).  `--dedicated M` adds, per k, an
image of method M with the single view k (a dedicated model per k: the price of
nesting is nested minus dedicated).  A variant (VARIANTS) sets `MethodSettings` fields
and `quantize_source` options on top of the command line's: `rotated` stores W·H
(`--rotate hadamard`), `mean-feedback` is `joint --joint-feedback mean` (joint only).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from smartquant.report import format_table, write_json
from smartquant.spec import ScaleFormat
from smartquant.sw.image.image import Image
from smartquant.sw.image.plan import uniform_plan
from smartquant.sw.infer.evalset import PAIR_SETS, load_pair_set, unique_sentences
from smartquant.sw.infer.model import linear_weight_names, load_encoder
from smartquant.sw.infer.quality import quality
from smartquant.sw.infer.weights import StorePlan, StoreValues
from smartquant.sw.quantize.quantizer import StoreFormat
from smartquant.sw.store.methods import SEQUENTIAL, MethodSettings
from smartquant.sw.store.model_store import quantize_source

KS = tuple(range(2, 9))
#: variant name -> (MethodSettings fields, `quantize_source` options) it sets
VARIANTS = {"plain": ({}, {}), "rotated": ({}, {"rotate": "hadamard"}),
            "mean-feedback": ({"joint_feedback": "mean"}, {})}


class Evaluator:
    """Full-precision reference embeddings of a pair set, and the quality of an
    image read at uniform k through the golden decoder."""

    def __init__(self, pairs_from: str = "shipped"):
        self.full = load_encoder("minilm")
        self.pairs = load_pair_set(pairs_from)
        self.sentences = unique_sentences(self.pairs)
        self.reference = dict(zip(self.sentences, self.full.embed(self.sentences)))
        self.names = linear_weight_names(self.full.config)

    def at(self, image: Image, k: int) -> dict:
        source = StorePlan(image, uniform_plan(image, k, self.names), StoreValues(image))
        encoder = type(self.full)(self.full.config, self.full.tokenizer, source)
        return quality(dict(zip(self.sentences, encoder.embed(self.sentences))), self.reference, self.pairs)


def applicable(methods, fields: dict) -> list[str]:
    """The methods a variant's `MethodSettings` fields apply to (joint feedback: joint only)."""
    return [m for m in methods if m == "joint" or "joint_feedback" not in fields]


def calibration_options(method: str, args) -> dict:
    """`--damping` and `--act-order` as MethodSettings fields, for the calibrated methods only."""
    if SEQUENTIAL[method] is None:
        return {}
    return {"damping": args.damping, "act_order": args.act_order}


def image_of(settings: MethodSettings, calibration: int | None, folder: Path, label: str,
             **options) -> tuple[Image, float]:
    """(the image loaded back from disk, seconds to quantize) of MiniLM by `settings`."""
    start = time.perf_counter()
    image = quantize_source("minilm", settings, calibration, warn=lambda _: None, **options)
    seconds = time.perf_counter() - start
    path = folder / label
    image.save(path)
    return Image.load(path), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["rtn", "mse", "gptq", "joint"])
    parser.add_argument("--dedicated", nargs="*", default=["gptq", "joint"],
                        help="methods that also get a dedicated image per k")
    parser.add_argument("--variants", nargs="+", default=["plain"], choices=list(VARIANTS))
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--dedicated-ks", type=int, nargs="+", help="k of the dedicated images (default --ks)")
    parser.add_argument("--views", type=int, nargs="+", default=[3, 4, 8])
    parser.add_argument("--view-weights", type=float, nargs="+", help="joint: lambda_k per view")
    parser.add_argument("--damping", type=float, help="calibrated methods: Hessian damping (quantize --damping)")
    parser.add_argument("--act-order", action="store_true", help="calibrated methods: quantize --act-order")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--format", choices=("asym", "sym"), default="asym")
    parser.add_argument("--calibration", type=int, help="calibration sentences (default all)")
    parser.add_argument("--sequential-calibration", action="store_true",
                        help="calibrate each layer behind the already-quantized ones (quantize --sequential-calibration)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the column loops' small steps run best on 1 on a busy machine)")
    parser.add_argument("--pairs-from", default="shipped", choices=list(PAIR_SETS),
                        help="the sentence pairs quality is measured on (holdout: nothing was tuned on them)")
    parser.add_argument("--keep", metavar="DIR", help="keep the images under DIR")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fmt = StoreFormat(args.group_size, args.format == "sym", ScaleFormat.FP16)
    evaluator = Evaluator(args.pairs_from)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ptq-images-"))
    rows = []
    for variant in args.variants:
        fields, options = VARIANTS[variant]
        options = {**options, "sequential": args.sequential_calibration}
        for method in applicable(args.methods, fields):
            weights = tuple(args.view_weights) if method == "joint" and args.view_weights else None
            settings = MethodSettings(method, fmt, tuple(args.views), weights, **fields,
                                      **calibration_options(method, args))
            image, seconds = image_of(settings, args.calibration, folder, f"{method}-{variant}", **options)
            row = {"method": method, "variant": variant, "image": "nested " + ",".join(map(str, args.views)),
                   "seconds": round(seconds, 1), **{k: evaluator.at(image, k)["cosine_mean"] for k in args.ks}}
            rows.append(row)
            print(row, file=sys.stderr)
        for method in applicable(args.dedicated, fields):
            row = {"method": method, "variant": variant, "image": "dedicated per k", "seconds": 0.0,
                   **dict.fromkeys(args.ks, "")}
            for k in args.dedicated_ks or args.ks:
                settings = MethodSettings(method, fmt, (k,), **fields, **calibration_options(method, args))
                image, seconds = image_of(settings, args.calibration, folder, f"{method}-{variant}-k{k}", **options)
                row[k] = evaluator.at(image, k)["cosine_mean"]
                row["seconds"] = round(row["seconds"] + seconds, 1)
            rows.append(row)
            print(row, file=sys.stderr)
    headers = ["method", "variant", "image"] + [f"k={k}" for k in args.ks] + ["seconds"]
    print(format_table(headers, [[r["method"], r["variant"], r["image"]] + [r[k] for k in args.ks] + [r["seconds"]]
                                 for r in rows]))
    print(f"\nmean cosine to full precision over {len(evaluator.sentences)} sentences of the {args.pairs_from} pairs; "
          f"images under {folder}")
    if args.json:
        write_json(args.json, [dataclasses.asdict(fmt) | {"rows": rows}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
