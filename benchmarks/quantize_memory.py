"""Peak memory and time of `smartquant quantize` on one large tensor.

Writes a Gaussian float32 weight (default 4096 x 4096, std 0.02) to a .safetensors
file and runs `smartquant quantize` on it with default options (method mse, fp16,
asym, G = 128) in a fresh subprocess, which reports:
- peak traced bytes (tracemalloc: numpy's buffers and Python objects) from just
  before loading the source to the end of writing the image;
- peak RSS growth (`ru_maxrss` minus the resident size after imports, torch's included);
both also as a multiple of the tensor's float32 size, and the command's wall and CPU time.

    python benchmarks/quantize_memory.py [--rows 4096] [--cols 4096] [--method mse]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: the measuring child: imports first, then the command under tracemalloc
CHILD = r"""
import json, resource, sys, time, tracemalloc
import safetensors.torch, torch  # loaded lazily by the command: import them before the baseline
from smartquant.cli import main

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

base_rss = rss_bytes()
cpu_start = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
tracemalloc.start()
start = time.perf_counter()
rc = main(sys.argv[1:])
seconds = time.perf_counter() - start
_, peak = tracemalloc.get_traced_memory()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rc": rc, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_start,
                  "traced_peak": peak, "rss_growth": usage.ru_maxrss * 1024 - base_rss}))
"""


def measure(rows: int, cols: int, method: str) -> dict:
    """Run the child on a fresh rows x cols tensor; its JSON figures plus the ratios."""
    from safetensors.numpy import save_file
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "weight.safetensors"
        weight = (np.random.default_rng(0).standard_normal((rows, cols)) * 0.02).astype(np.float32)
        save_file({"weight": weight}, str(source))
        del weight
        done = subprocess.run([sys.executable, "-c", CHILD, "quantize", str(source), "-o", str(Path(tmp) / "image"),
                               "--method", method], capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    tensor_bytes = rows * cols * 4
    figures.update(tensor_bytes=tensor_bytes, traced_ratio=figures["traced_peak"] / tensor_bytes,
                   rss_ratio=figures["rss_growth"] / tensor_bytes)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--method", choices=("mse", "rtn"), default="mse")
    args = parser.parse_args()
    f = measure(args.rows, args.cols, args.method)
    mib = 1 << 20
    print(f"{args.rows}x{args.cols} float32 ({f['tensor_bytes'] / mib:.0f} MiB), method {args.method}: "
          f"{f['seconds']:.1f} s ({f['cpu_seconds']:.1f} s CPU), traced peak {f['traced_peak'] / mib:.0f} MiB ({f['traced_ratio']:.2f}x), "
          f"RSS growth {f['rss_growth'] / mib:.0f} MiB ({f['rss_ratio']:.2f}x)")


if __name__ == "__main__":
    main()
