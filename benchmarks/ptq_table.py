"""MiniLM quality vs accumulator width P for RTN, GPTQ, GPFQ, AXE-GPTQ and AXE-GPFQ at
4 and 8 bits, plus quantization time (docs/PTQ.md).

    python benchmarks/ptq_table.py [--bits 4 8] [--accumulators 16 20 24] [--json out.json]

Every algorithm uses the same symmetric fp16 grid (G = 128, `NestedRTN`), a
dedicated pass for the view k in the row (views=(k,)), the shipped calibration
sentences, and the shipped sentence pairs for quality (`quality.quality`), with the
weights written as a store image and read back through the golden decoder.
AXE rows use N-bit signed inputs and tiles of one group; "infeasible" marks a P
too narrow for that view.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from smartquant.errors import SmartquantError
from smartquant.report import format_table, write_json
from smartquant.sw.quantize.axe import AccumulatorSpec, worst_case_check
from smartquant.sw.image.golden import tensor_values
from smartquant.sw.image.image import Image
from smartquant.sw.infer.ptq_model import quality_bench, quantize_model
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat


def image_round_trip(quantized: dict, path: Path) -> Image:
    """The quantized tensors written as a store image and loaded back (manifest checked):
    the table reads them through the golden decoder's fp16 view, as the device serves them."""
    Image.build(list(quantized.items())).save(path)
    return Image.load(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--accumulators", type=int, nargs="+", default=[16, 20, 24])
    parser.add_argument("--input-bits", type=int, default=8)
    parser.add_argument("--algorithms", nargs="+",
                        default=["rtn", "gptq", "gpfq", "axe-gptq", "axe-gpfq"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    bench = quality_bench("minilm")
    folder = Path(tempfile.mkdtemp(prefix="ptq-table-"))
    tensors, names, calibration = bench.tensors, bench.names, bench.calibration
    grid = NestedRTN(StoreFormat(symmetric=True))

    rows = []
    for k in args.bits:
        for algorithm in args.algorithms:
            axe = algorithm.startswith("axe")
            for p in (args.accumulators if axe else [None]):
                spec = None
                row = {"bits": k, "algorithm": algorithm, "P": p or "-"}
                try:
                    if axe:
                        spec = AccumulatorSpec(p, args.input_bits, signed_inputs=True)
                    quantized, seconds = quantize_model(tensors, names, algorithm, (k,), grid,
                                                        calibration, accumulator=spec)
                except SmartquantError as exc:
                    rows.append({**row, "note": f"infeasible: {exc}"})
                    print(f"{k}-bit {algorithm} P={p}: infeasible", file=sys.stderr)
                    continue
                image = image_round_trip(quantized, folder / f"{k}-{algorithm}-{p}")
                metrics = bench.quality({n: tensor_values(image, n, k) for n in quantized})
                narrowest = min(p_ for p_ in range(args.input_bits + 1, 48)
                                if all(worst_case_check(q, AccumulatorSpec(p_, args.input_bits, True), (k,)).ok
                                       for q in quantized.values()))
                rows.append({**row, **metrics, "seconds": round(seconds, 1), "needed_P": narrowest})
                print(f"{k}-bit {algorithm} P={p}: {metrics} {seconds:.1f}s, needs P={narrowest}",
                      file=sys.stderr)
    headers = ["bits", "algorithm", "P", "cosine_mean", "cosine_min", "spearman", "needed_P", "seconds"]
    print(format_table(headers, [[r.get(h, "infeasible" if h == "cosine_mean" else "") for h in headers]
                                 for r in rows]))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
