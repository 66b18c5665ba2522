"""MiniLM at 3 and 4 bits: RTN, GPTQ, the best uniform recipe and the recipe with codebooks,
all at the same bits per weight including metadata (k + 0.25: G = 128 with 4-byte groups),
and the dequantizers' hardware cost by synthesis.  docs/RECIPES.md quotes its output.

    python benchmarks/recipes.py [--bits 3,4] [--pairs 60] [--synth] [-o results.json]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from smartquant.report import format_table, write_json
from smartquant.sw.infer.evalset import load_calibration, load_pairs, unique_sentences
from smartquant.sw.quantize.gptq import GPTQ
from smartquant.sw.infer.model import load_encoder
from smartquant.sw.infer.quality import quality
from smartquant.sw.quantize.quantizer import NestedRTN
from smartquant.sw.quantize.recipe import TensorOption, best_recipe, measure_options, option_grid, option_lines, output_error
from smartquant.sw.infer.ptq_model import calibration_inputs
from smartquant.sw.store.recipe_store import input_moments
from smartquant.sw.store.sources import minilm_source
from smartquant.sw.infer.weights import FullPrecision
from smartquant.spec import LINE_BITS


def embeddings(quantized: dict, k: int, sentences) -> np.ndarray:
    """Sentence embeddings with every stored weight served at view k as fp16 (the device's view)."""
    def source(tensors):
        replaced = dict(tensors)
        replaced.update({n: q.dequantize(k).astype(np.float16).astype(np.float32) for n, q in quantized.items()})
        return FullPrecision(replaced)
    return load_encoder("minilm", source).embed(sentences)


def gptq_tensors(weights: dict, inputs: dict, k: int) -> dict:
    """GPTQ (G = 128, asym fp16 min/max grid, view k) per layer; RTN where a layer has no calibration."""
    out = {}
    for name, w in weights.items():
        if name not in inputs:
            out[name] = NestedRTN().quantize(w)
            continue
        gptq = GPTQ(w.shape[1])
        gptq.add_batch(inputs[name])
        out[name] = gptq.quantize(w, views=(k,))
    return out


def measure(bits_list, pairs_limit: int, calibration: int) -> list[dict]:
    source = minilm_source()
    weights = {n: np.asarray(w, np.float64) for n, w in source.weights.items()}
    sizes = {n: w.size for n, w in weights.items()}
    inputs = calibration_inputs(load_encoder("minilm"), load_calibration(limit=calibration))
    hessians = input_moments(inputs)
    pairs = load_pairs(limit=pairs_limit)
    sentences = unique_sentences(pairs)
    reference = dict(zip(sentences, load_encoder("minilm").embed(sentences)))
    rows = []
    for k in bits_list:
        budget = k + 0.25
        started = time.perf_counter()
        measured = measure_options(weights, option_grid(), k, (k,), hessians)
        search_s = time.perf_counter() - started
        recipes = {kind: best_recipe(measured, sizes, k, budget, (k,), kinds=kinds)
                   for kind, kinds in (("best uniform recipe", ("uniform",)), ("recipe with codebooks", ("uniform", "codebook")))}
        methods = {"RTN g128": {n: NestedRTN().quantize(w) for n, w in weights.items()},
                   "GPTQ g128": gptq_tensors(weights, inputs, k)}
        for label, recipe in recipes.items():
            methods[label] = {n: recipe.options[n].quantize(w, (k,), np.diag(hessians[n]) if n in hessians else None)
                              for n, w in weights.items()}
        default = TensorOption(group_size=128)
        for label, quantized in methods.items():
            lines = sum(option_lines(w.shape, recipes[label].options[n] if label in recipes else default, k)
                        for n, w in weights.items())
            emb = dict(zip(sentences, embeddings(quantized, k, sentences)))
            row = {"bits": k, "method": label, "bits_per_weight": lines * LINE_BITS / sum(sizes.values()),
                   "output_error": sum(output_error(w, quantized[n].dequantize(k), hessians.get(n))
                                       for n, w in weights.items()),
                   **quality(emb, reference, pairs)}
            if label in recipes:
                chosen = [recipes[label].options[n].label for n in weights]
                row["options"] = {o: chosen.count(o) for o in sorted(set(chosen))}
                row["search_seconds"] = search_s
            rows.append(row)
            print(f"k={k} {label}: {row}", file=sys.stderr, flush=True)
    return rows


def synthesis(lanes: int = 4) -> list[dict]:
    """LUTs / registers / block RAMs / DSPs / Fmax of the affine and the table-lookup dequantizer (ECP5)."""
    from smartquant.hw.dequant import Dequantizer
    from smartquant.hw.lut_dequant import LutDequantizer
    from smartquant.hw.synth import synthesize
    out = []
    for label, design in (("affine s*(r-z)", Dequantizer(lanes)), ("table lookup s*T[c]", LutDequantizer(lanes))):
        r = synthesize(design, f"dequant_{'lut' if 'table' in label else 'affine'}_{lanes}", "ecp5")
        out.append({"dequantizer": label, "lanes": lanes, "luts": r.luts, "registers": r.registers,
                    "block_rams": r.block_rams, "dsps": r.dsps, "fmax_mhz": round(r.fmax_mhz, 1)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", default="3,4")
    parser.add_argument("--pairs", type=int, default=60, help="sentence pairs evaluated")
    parser.add_argument("--calibration", type=int, default=64, help="calibration sentences")
    parser.add_argument("--synth", action="store_true", help="also synthesise both dequantizers (ECP5)")
    parser.add_argument("-o", "--output", help="write the rows as JSON")
    args = parser.parse_args()
    rows = measure([int(b) for b in args.bits.split(",")], args.pairs, args.calibration)
    print(format_table(["k", "method", "bits/weight", "sum output err", "cosine mean", "cosine min", "spearman"],
                       [[r["bits"], r["method"], r["bits_per_weight"], r["output_error"], r["cosine_mean"],
                         r["cosine_min"], r["spearman"]] for r in rows]))
    for r in rows:
        if "options" in r:
            print(f"k={r['bits']} {r['method']}: {r['options']}")
    result = {"quality": rows}
    if args.synth:
        result["synthesis"] = synthesis()
        print(format_table(list(result["synthesis"][0]), [list(r.values()) for r in result["synthesis"]]))
    if args.output:
        write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
