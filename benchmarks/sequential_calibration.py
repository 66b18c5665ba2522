"""MiniLM quality after GPTQ with one-pass vs sequential calibration (docs/PTQ.md).

    python benchmarks/sequential_calibration.py [--bits 3 4] [--algorithm gptq] [--json out.json]

One pass: every layer's Hessian from the full-precision model's activations.
Sequential: each layer's Hessian from the model whose earlier layers are already
quantized (read at the view being built), `ptq_model.SequentialCalibration`.
Both use the shipped calibration sentences, the symmetric fp16 G=128 grid
(`NestedRTN`, as benchmarks/ptq_table.py), a dedicated pass per view k, and
quality over the shipped sentence pairs, which share no sentence with calibration.
"""

from __future__ import annotations

import argparse
import sys

import torch

from smartquant.report import print_rows
from smartquant.sw.infer.evalset import load_calibration
from smartquant.sw.infer.ptq_model import calibration_for, quality_bench, quantize_model
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--algorithm", default="gptq", choices=["gptq", "gpfq"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    bench = quality_bench("minilm")
    calibrations = {mode: calibration_for(bench.encoder, load_calibration(), sequential)
                    for mode, sequential in (("one-pass", False), ("sequential", True))}
    grid = NestedRTN(StoreFormat(symmetric=True))

    rows = []
    for k in args.bits:
        for mode, calibration in calibrations.items():
            quantized, seconds = quantize_model(bench.tensors, bench.names, args.algorithm, (k,), grid,
                                                calibration)
            metrics = bench.quality({n: q.dequantize(k) for n, q in quantized.items()})
            rows.append({"bits": k, "algorithm": args.algorithm, "calibration": mode, **metrics,
                         "seconds": round(seconds, 1)})
            print(f"{k}-bit {args.algorithm} {mode}: {metrics} {seconds:.1f}s", file=sys.stderr)
    headers = ["bits", "algorithm", "calibration", "cosine_mean", "cosine_min", "spearman", "seconds"]
    print_rows(headers, rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
