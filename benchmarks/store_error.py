"""Acceptance numbers of the nested store on all-MiniLM-L6-v2 (docs/FORMATS.md):

- relative Frobenius error ||W_k - W||_F / ||W||_F over all linear layers, per view
  k = 2..8, for nested RTN, nested MSE-clipped (several view sets) and a dedicated
  k-bit RTN per k (the price of nesting);
- metadata overhead in bits per weight for G = 32, 64, 128, 256;
- wall time of quantizing all of MiniLM (quantizer alone, and `quantize_model` with
  its per-k error bookkeeping).

Run: python benchmarks/store_error.py [--json FILE]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smartquant.report import format_table, write_json
from smartquant.spec import GROUP_SIZES
from smartquant.sw.quantize.quantizer import DedicatedRTN, NestedMSEClip, NestedRTN, StoreFormat
from smartquant.sw.store.sources import minilm_source
from smartquant.sw.store.model_store import quantize_model

KS = range(2, 9)


def model_error(weights, reconstruct) -> float:
    """Relative Frobenius error of all weights together."""
    num = sum(np.square(reconstruct(name, w) - w.astype(np.float64)).sum() for name, w in weights.items())
    den = sum(np.square(w.astype(np.float64)).sum() for w in weights.values())
    return float(np.sqrt(num / den))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    weights = minilm_source().weights
    n = sum(w.size for w in weights.values())
    print(f"MiniLM: {len(weights)} linear layers, {n} weights (G=128, asymmetric, fp16 scales)\n")

    nested = {"nested RTN": NestedRTN(),
              "nested MSE views 3,4,8": NestedMSEClip(views=(3, 4, 8)),
              "nested MSE views 2,3,4,8": NestedMSEClip(views=(2, 3, 4, 8)),
              "nested MSE views 3,4,8 (plain sum)": NestedMSEClip(views=(3, 4, 8), weight_base=1.0),
              "nested MSE view 4 only": NestedMSEClip(views=(4,))}
    rows, times, results = [], {}, {}
    for label, quantizer in nested.items():
        quantized, seconds = timed(lambda: {name: quantizer.quantize(w) for name, w in weights.items()})
        times[label] = seconds
        results[label] = [model_error(weights, lambda name, w: quantized[name].dequantize(k)) for k in KS]
    results["dedicated RTN per k"] = [model_error(weights, lambda name, w: DedicatedRTN(k).fake_quantize(w))
                                      for k in KS]
    rows = [[label] + errors for label, errors in results.items()]
    print("relative Frobenius error per view k")
    print(format_table(["quantizer"] + [f"k={k}" for k in KS], rows))

    overhead = {}
    for g in GROUP_SIZES:
        image = quantize_model(weights, NestedRTN(StoreFormat(g)), warn=lambda _: None)
        meta_lines = sum(e.meta_lines for e in image.entries)
        overhead[g] = meta_lines * 64 * 8 / sum(e.weights for e in image.entries)
    print("\nmetadata overhead (4 bytes per group; G=256 pads MiniLM's in=384 to 512)")
    print(format_table(["G", "bits/weight"], [[g, v] for g, v in overhead.items()]))

    _, full = timed(lambda: quantize_model(weights, NestedMSEClip(views=(3, 4, 8)), warn=lambda _: None))
    print("\nwall time, all of MiniLM")
    print(format_table(["step", "seconds"],
                       [[f"{label} (quantizer only)", t] for label, t in times.items()]
                       + [["quantize_model, MSE views 3,4,8 (with per-k errors, image build)", full]]))
    if args.json:
        write_json(args.json, {"weights": n, "rel_error": {l: dict(zip(KS, e)) for l, e in results.items()},
                               "metadata_bits_per_weight": overhead, "seconds": {**times, "quantize_model": full}})


if __name__ == "__main__":
    main()
