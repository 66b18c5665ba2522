"""MiniLM quality vs k with and without a Hadamard rotation, per quantization method, and
the gain of a per-view affine refit at low k (docs/PTQ.md, "Rotation" and "Per-view refit").

    python benchmarks/rotation_table.py [--methods rtn gptq] [--ks 2 3 4 5 6 7 8]
                                        [--refit-ks 2 3 4] [--seed 0] [--json out.json]

Format: asymmetric fp16, G = 128 unless --format/--group-size say otherwise.  `rtn` and
`mse` are the nested codes of `NestedRTN` and of `NestedMSEClip` (views 3, 4, 8: the
`smartquant quantize` default), one quantization serving every k; the others (any name of
`ptq_model.ALGORITHMS`) a dedicated pass per k (views=(k,)) on the `NestedRTN` grid and
the shipped calibration sentences.  `rotate=hadamard` stores W·H with the
default block of sw/quantize/rotation.py (one full Hadamard per input dimension) and the
model rotates each layer's input.  Quality (`quality.quality`) over the shipped sentence
pairs against full precision, as `smartquant eval` reports it; `refit` is the same view
with a least-squares (scale, offset) per group (sw/quantize/refit.py).
"""

from __future__ import annotations

import argparse
import sys

import torch

from smartquant.report import format_table, write_json
from smartquant.spec import DEFAULT_GROUP_SIZE, GROUP_SIZES
from smartquant.sw.infer.ptq_model import ALGORITHMS, quality_bench, quantize_model
from smartquant.sw.quantize.quantizer import NestedMSEClip, NestedRTN, StoreFormat
from smartquant.sw.quantize.refit import refit_view
from smartquant.sw.quantize.rotation import rotations_for

COLUMNS = ("method", "rotate", "k", "cosine_mean", "cosine_min", "spearman", "refit_cosine_mean", "refit_gain")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["rtn", "mse", "gptq"], choices=sorted({*ALGORITHMS, "mse"}))
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    parser.add_argument("--refit-ks", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument("--seed", type=int, default=0, help="rotation seed")
    parser.add_argument("--format", choices=("asym", "sym"), default="asym")
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, choices=GROUP_SIZES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    bench = quality_bench("minilm")
    tensors, names, calibration = bench.tensors, bench.names, bench.calibration
    fmt = StoreFormat(args.group_size, args.format == "sym")
    grids = {"rtn": NestedRTN(fmt), "mse": NestedMSEClip(fmt)}

    rows = []
    for method in args.methods:
        for rotate in ("none", "hadamard"):
            rotations = {} if rotate == "none" else rotations_for({n: tensors[n] for n in names}, args.seed)
            stored = {n: tensors[n] if n not in rotations else rotations[n].rotate_weight(tensors[n]) for n in names}
            shared = None
            for k in args.ks:
                if method in grids:
                    if shared is None:
                        shared = quantize_model(tensors, names, "rtn", (k,), grids[method], progress=False,
                                                rotations=rotations)[0]
                    quantized = shared
                else:
                    quantized = quantize_model(tensors, names, method, (k,), grids["rtn"], calibration,
                                               progress=False, rotations=rotations)[0]
                row = {"method": method, "rotate": rotate, "k": k,
                       **bench.quality({n: q.dequantize(k) for n, q in quantized.items()}, rotations)}
                if k in args.refit_ks:
                    refit = bench.quality({n: refit_view(q, stored[n], k) for n, q in quantized.items()}, rotations)
                    row.update(refit_cosine_mean=refit["cosine_mean"],
                               refit_gain=refit["cosine_mean"] - row["cosine_mean"])
                rows.append(row)
                print({c: row.get(c) for c in COLUMNS}, file=sys.stderr, flush=True)
    print(format_table(COLUMNS, [[r.get(c, "") for c in COLUMNS] for r in rows]))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
