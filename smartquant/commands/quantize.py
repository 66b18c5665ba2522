"""`smartquant quantize SRC -o IMAGE`: quantize a model's weights into a store image
(SRC: a .safetensors file, every 2-D floating-point tensor stored under its name, or
`minilm`, the packaged all-MiniLM-L6-v2's linear layers).  docs/FORMATS.md."""

from __future__ import annotations

import time

from ..atomic import check_output
from ..errors import SmartquantError
from ..spec import DEFAULT_GROUP_SIZE, GROUP_SIZES, ScaleFormat
from ..sw.quantize.quantizer import StoreFormat
from ..sw.store.recipe_store import quantize_with_recipe
from ..sw.quantize.rotation import parse_rotate
from ..sw.store.model_store import parse_views, quantize_source
from .common import source_input


def register(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="quantize weights into a store image", description=__doc__)
    p.add_argument("source", metavar="SRC", help="a .safetensors file, or 'minilm'")
    p.add_argument("-o", "--output", required=True, metavar="IMAGE",
                   help="image directory to write (replaces only an earlier image)")
    p.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, choices=GROUP_SIZES,
                   help="weights per scale (default %(default)s)")
    p.add_argument("--format", choices=("asym", "sym"), default="asym",
                   help="asymmetric (own zero point per group) or symmetric (z = 128; allows the int8 view)")
    p.add_argument("--scale", choices=("fp16", "bf16", "pow2"), default="fp16", help="scale encoding")
    p.add_argument("--views", default="3,4,8",
                   help="bit widths the clipping search optimises, e.g. 3,4,8 (default %(default)s)")
    p.add_argument("--method", choices=("mse", "rtn"), default="mse",
                   help="mse: clipping search over the views (default); rtn: plain min/max")
    p.add_argument("--rotate", default="none", metavar="none|hadamard[:SEED]",
                   help="store every weight as W*H for a signed block Hadamard H over its inputs, "
                        "declared in the manifest (default %(default)s; docs/FORMATS.md)")
    p.add_argument("--recipe", metavar="RECIPE",
                   help="per-tensor options from `smartquant recipe` (overrides the format options)")
    p.set_defaults(func=run)


def run(args) -> int:
    if parse_rotate(args.rotate) is not None and args.recipe:
        raise SmartquantError("--rotate does not combine with --recipe (a recipe sets every tensor's format)")
    check_output(args.output, "image", inputs=[source_input(args.source), args.recipe])
    views = parse_views(args.views)
    fmt = StoreFormat(args.group_size, args.format == "sym", ScaleFormat[args.scale.upper()])
    start = time.perf_counter()
    image = (quantize_with_recipe(args.source, args.recipe) if args.recipe
             else quantize_source(args.source, fmt, views=views, method=args.method, rotate=args.rotate))
    image.save(args.output)
    print(f"{args.output}: {len(image.entries)} tensors, {image.dram.size} DRAM bytes, "
          f"{len(image.side)} side tensors ({time.perf_counter() - start:.1f} s)")
    return 0
