"""`smartquant inspect IMAGE`: what a store image holds: tensors, sizes, DRAM bytes read
per k, metadata overhead and the relative Frobenius error of every view k.  For an image
quantized with an accumulator guarantee (AXE), the worst-case accumulator of every view,
read from the image alone; exit 1 if a guaranteed view overflows."""

from __future__ import annotations

from ..report import format_table, write_json
from ..sw.image.accumulator_check import accumulator_rows, declared_accumulator
from ..sw.image.image import Image
from ..sw.store.model_store import summarize
from .common import check_output_options


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="summarise a store image", description=__doc__)
    p.add_argument("image", metavar="IMAGE", help="image directory")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.set_defaults(func=run)


def _error(value):
    return "-" if value is None else float(value)


def run(args) -> int:
    check_output_options(args, inputs=[args.image])
    image = Image.load(args.image)
    summary = summarize(image)
    ks = range(1, 9)
    print(format_table(
        ["tensor", "shape", "G", "format", "blocks", "meta b/w", "KiB@k=8"] + [f"err k={k}" for k in ks],
        [[t["name"], "x".join(map(str, t["shape"])), t["group_size"], t["format"], t["blocks"],
          t["metadata_bits_per_weight"], t["bytes_read"][8] / 1024]
         + [_error(t["rel_error"] and t["rel_error"][k]) for k in ks] for t in summary["tensors"]]))
    print()
    print(format_table(["k", "DRAM bytes read", "bits/weight", "rel error"],
                       [[r["k"], r["bytes_read"], r["bits_per_weight"], _error(r["rel_error"])]
                        for r in summary["per_k"]]))
    print(f"\n{len(summary['tensors'])} tensors, {summary['weights']} weights, "
          f"metadata {summary['metadata_bits_per_weight']:.4g} bits/weight, "
          f"{summary['dram_bytes']} DRAM bytes, {summary['side_tensors']} side tensors")
    overflowing = 0
    if declared_accumulator(image) is not None:
        summary["accumulator"] = {**image.info["accumulator"], "per_k": accumulator_rows(image)}
        overflowing = print_accumulator(summary["accumulator"])
    if args.json:
        write_json(args.json, summary)
    return 1 if overflowing else 0


def print_accumulator(acc: dict) -> int:
    """Print the per-view worst-case accumulator table; the overflowing tiles of guaranteed views."""
    signed = "signed" if acc["signed_inputs"] else "unsigned"
    print(f"\naccumulator: P={acc['bits']} bits, {acc['input_bits']}-bit {signed} inputs, "
          f"tile {acc['tile'] or 'G'}; guaranteed views {','.join(map(str, acc['views']))}")
    rows = acc["per_k"]
    print(format_table(["k", "tiles", "worst max", "worst min", "limit 2^(P-1)-1", "overflowing tiles", "status"],
                       [[r["k"], r["tiles"], r["worst_max"], r["worst_min"], r["limit"], r["overflowing_tiles"],
                         r["status"]] for r in rows]))
    return sum(r["overflowing_tiles"] for r in rows if r["guaranteed"])
