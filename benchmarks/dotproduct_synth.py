"""LUTs (and Fmax) of hw.dotproduct per accumulator width P (docs/PTQ.md).

    python benchmarks/dotproduct_synth.py [--widths 12 16 20 24 28 32] [--target ecp5]

The unit: 9-bit weights (r - z), 8-bit signed inputs, tiles of 128, two tiles per
group (outer accumulator P + 1 bits); the synthesis flow is `hw.synth`.
"""

from __future__ import annotations

import argparse
import sys

from smartquant.hw.dotproduct import DotProductUnit
from smartquant.hw.synth import synthesize_sweep
from smartquant.report import format_table, write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=list(range(12, 33, 4)))
    parser.add_argument("--target", default="ecp5")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    reports = synthesize_sweep(
        lambda p: DotProductUnit(p, 8, signed_inputs=True, tile=128, tiles_per_group=2),
        args.widths, "dotproduct", args.target)
    rows = [[p, r.luts, r.registers, r.dsps, round(r.fmax_mhz, 1)] for p, r in reports.items()]
    print(format_table(["P", "LUTs", "registers", "DSPs", "Fmax (MHz)"], rows))
    if args.json:
        write_json(args.json, {p: r.as_dict() for p, r in reports.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
