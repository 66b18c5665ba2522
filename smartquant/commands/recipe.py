"""`smartquant recipe SRC --bits 3 -o recipe.json`: search a per-tensor quantization recipe
(uniform or codebook, group size, scale format, clipping) for serving at `--bits` under a
budget of bits per weight including metadata; prints the chosen recipe and writes it as
JSON for `smartquant quantize SRC --recipe recipe.json`.  docs/RECIPES.md."""

from __future__ import annotations

from ..atomic import FILE, check_output
from ..errors import SmartquantError
from ..report import format_table
from ..spec import GROUP_SIZES
from ..sw.quantize.recipe import KINDS, SCALE_NAMES, TABLE_HEADER, option_grid, write_recipe
from ..sw.store.recipe_store import CALIBRATION_SENTENCES, search_source
from .common import source_input


def _choices(text: str, allowed, convert=str) -> tuple:
    try:
        values = tuple(dict.fromkeys(convert(v.strip()) for v in text.split(",") if v.strip()))
    except ValueError:
        raise SmartquantError(f"{text!r} is not a comma-separated list") from None
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise SmartquantError(f"{text!r}: each choice must be one of {', '.join(map(str, allowed))}")
    return values


def register(subparsers) -> None:
    p = subparsers.add_parser("recipe", help="search a per-tensor quantization recipe", description=__doc__)
    p.add_argument("source", metavar="SRC", help="a .safetensors file, or 'minilm' (calibrated)")
    p.add_argument("-o", "--output", required=True, metavar="RECIPE", help="recipe JSON file to write")
    p.add_argument("--bits", type=int, default=3, help="view k the recipe serves (default %(default)s)")
    p.add_argument("--budget", type=float,
                   help="average bits per weight including metadata (default: bits + 0.25)")
    p.add_argument("--kinds", default=",".join(KINDS), help="option kinds (default %(default)s)")
    p.add_argument("--group-sizes", default=",".join(map(str, GROUP_SIZES)), help="default %(default)s")
    p.add_argument("--scales", default="fp16", help=f"scale formats among {','.join(SCALE_NAMES)} (default %(default)s)")
    p.add_argument("--calibration", type=int, default=CALIBRATION_SENTENCES,
                   help="calibration sentences for the sensitivity (minilm; default %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output(args.output, FILE, inputs=[source_input(args.source)])
    options = option_grid(kinds=_choices(args.kinds, KINDS),
                          group_sizes=_choices(args.group_sizes, GROUP_SIZES, int),
                          scale_formats=_choices(args.scales, tuple(SCALE_NAMES)))
    recipe = search_source(args.source, args.bits, args.budget, options, sentences=args.calibration)
    print(format_table(TABLE_HEADER, recipe.table_rows()))
    print(f"\n{len(recipe.options)} tensors at view {recipe.bits}: {recipe.average_bits():.4f} bits/weight "
          f"including metadata (budget {recipe.budget:g}), summed output error "
          f"{sum(m['error'] for m in recipe.measured.values()):.4g}")
    write_recipe(recipe, args.output)
    return 0
