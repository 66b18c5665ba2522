"""The oracle bound of per-sentence precision plans on a MiniLM image (docs/INFERENCE.md).

    python benchmarks/dynamic_oracle.py IMAGE [--pairs 8] [--calibration 4] [--budgets 3 4]
        [--cache costs.npz] [--json out.json]

Rows per budget (sw/infer/oracle.py): static (the policy's plan), measured static (one
plan from the mean measured slice costs of `--calibration` calibration sentences), oracle
(per sentence, greedy on that sentence's own measured costs), oracle best (per sentence,
the best of the three).  Quality over the sentences of the first `--pairs` shipped pairs
(spread over the labels), which share no sentence with calibration.  Measuring one
sentence's costs takes 432 slices x 5 views (k = 2..6) probe passes, batched per tensor
(about 80 s on a loaded 2-core machine); `--cache` keeps them between runs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from smartquant.atomic import atomic_file
from smartquant.errors import SmartquantError
from smartquant.report import print_rows
from smartquant.sw.image.image import Image
from smartquant.sw.infer.evalset import load_calibration, load_pairs
from smartquant.sw.infer.experiment import prepare
from smartquant.sw.infer.oracle import oracle_rows, slice_costs
from smartquant.sw.infer.policy import DEFAULT_KS


class CostCache:
    """Measured slice costs per sentence, kept in an .npz file tagged with the image and ks."""

    def __init__(self, path: str | None, image_dir: str, ks):
        manifest = (Path(image_dir) / "manifest.json").read_bytes()
        self.tag = f"{hashlib.sha256(manifest).hexdigest()[:16]} ks={list(ks)}"
        self.path, self.costs = path, {}
        if path and Path(path).exists():
            try:
                with np.load(path) as data:
                    tag = str(data["tag"]) if "tag" in data.files else None
                    self.costs = {key: data[key] for key in data.files if key != "tag"}
            except (OSError, ValueError, zipfile.BadZipFile, AttributeError):
                tag = None
            if tag != self.tag:
                raise SmartquantError(f"{path}: not a cost cache of this image and these ks")

    def get(self, text: str, measure) -> np.ndarray:
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        if key not in self.costs:
            self.costs[key] = measure(text)
            if self.path:
                with atomic_file(self.path) as tmp, open(tmp, "wb") as f:
                    np.savez(f, tag=np.array(self.tag), **self.costs)
        return self.costs[key]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--calibration", type=int, default=4)
    parser.add_argument("--budgets", type=float, nargs="+", default=[3.0, 4.0])
    parser.add_argument("--cache")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ks = DEFAULT_KS
    try:
        ev = prepare(Image.load(args.image), pairs=load_pairs(limit=args.pairs))
        cache = CostCache(args.cache, args.image, ks)
        calibration = load_calibration(limit=args.calibration)
        todo = [*calibration, *ev.sentences]
        done = []

        def costs(text):
            if text not in done:
                done.append(text)
                print(f"costs {len(done)}/{len(todo)}", file=sys.stderr, flush=True)
            return cache.get(text, lambda t: slice_costs(ev, t, ks))
        rows = [row for budget in args.budgets for row in oracle_rows(ev, budget, ks, calibration, costs)]
    except SmartquantError as exc:
        print(f"dynamic_oracle: error: {exc}", file=sys.stderr)
        return 2
    headers = ["plan", "avg_bits", "vs_int8", "cosine_mean", "cosine_min", "spearman"]
    print(f"{len(ev.sentences)} held-out sentences ({len(ev.pairs)} pairs), "
          f"{len(calibration)} calibration sentences for the measured static plan")
    print_rows(headers, rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
