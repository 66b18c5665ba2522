"""`smartquant quantize SRC -o IMAGE`: quantize a model's weights into a store image
(SRC: a .safetensors file, every 2-D floating-point tensor stored under its name, or
`minilm`, the packaged all-MiniLM-L6-v2's linear layers) by one of the methods of
docs/PTQ.md.  docs/FORMATS.md."""

from __future__ import annotations

import argparse
import time

from ..atomic import check_output
from ..errors import SmartquantError
from ..spec import GROUP_SIZES, ScaleFormat
from ..sw.quantize.axe import AccumulatorSpec
from ..sw.quantize.quantizer import StoreFormat
from ..sw.store.methods import (DEFAULT_DAMPING, JOINT_FEEDBACK, METHODS, MINILM_DEFAULTS, MethodSettings,
                                SourceDefaults, defaults_for)
from ..sw.store.recipe_store import quantize_with_recipe
from ..sw.store.model_store import parse_views, quantize_source
from .common import int_at_least, number_list, one_torch_thread, source_input


def _listed(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def register(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="quantize weights into a store image", description=__doc__)
    p.add_argument("source", metavar="SRC", help="a .safetensors file, or 'minilm'")
    p.add_argument("-o", "--output", required=True, metavar="IMAGE",
                   help="image directory to write (replaces only an earlier image)")
    p.add_argument("--group-size", type=int, choices=GROUP_SIZES,
                   help=f"weights per scale (default {MINILM_DEFAULTS.group_size} for minilm, "
                        f"{SourceDefaults().group_size} otherwise)")
    p.add_argument("--format", choices=("asym", "sym"), default="asym",
                   help="asymmetric (own zero point per group) or symmetric (z = 128; allows the int8 view)")
    p.add_argument("--scale", choices=("fp16", "bf16", "pow2"), default="fp16", help="scale encoding")
    p.add_argument("--method", choices=METHODS,
                   help="rtn: min/max; mse: clipping search over the views; gptq, gpfq: error feedback by "
                        "incremental upscaling; joint: one GPTQ pass under the multi-view objective; "
                        f"axe-gptq, axe-gpfq: with an accumulator guarantee (default {MINILM_DEFAULTS.method} "
                        f"for minilm, {SourceDefaults().method} otherwise; docs/PTQ.md)")
    p.add_argument("--views", help=f"bit widths the method optimises, e.g. 3,4,8 (default "
                                   f"{_listed(MINILM_DEFAULTS.views)} for minilm, {_listed(SourceDefaults().views)} otherwise)")
    p.add_argument("--view-weights", metavar="L,..",
                   help=f"joint: weight lambda_k of each view's squared error (default "
                        f"{_listed(MINILM_DEFAULTS.view_weights)} for minilm's default views, else 1, and 64 for view 8)")
    p.add_argument("--joint-feedback", choices=JOINT_FEEDBACK,
                   help="joint: feed back each view's error to its own copy of the weights (per-view, "
                        "default) or the error of the weighted-mean reconstruction (mean)")
    p.add_argument("--joint-anchor", type=int, metavar="K",
                   help="joint, per-view: fix the codes' top K bits (K a view below the two finest) by a first "
                        "pass over the views <= K and the finest, then choose the low bits inside each K-bit "
                        "bucket by a second pass over the views > K")
    p.add_argument("--act-order", action=argparse.BooleanOptionalAction,
                   help="PTQ methods: round the columns by decreasing Hessian diagonal (activation order; "
                        "default: on for minilm's default method, else in input order)")
    p.add_argument("--damping", type=float, metavar="F",
                   help=f"PTQ methods: add F times the mean Hessian diagonal to it (default "
                        f"{MINILM_DEFAULTS.damping:g} for minilm's default method, {DEFAULT_DAMPING:g} otherwise)")
    p.add_argument("--calibration", type=int_at_least(1), metavar="N",
                   help="minilm, PTQ methods: calibrate on N of the shipped PTQ calibration sentences (default all 234; sw/data/)")
    p.add_argument("--sequential-calibration", action="store_true",
                   help="minilm, PTQ methods: calibrate each layer on its inputs with the layers before it "
                        "already quantized (one forward pass per layer; default: one full-precision pass)")
    p.add_argument("--calibration-inputs", metavar="FILE",
                   help=".safetensors source, PTQ methods: a .safetensors file with, per weight name, "
                        "a (tokens, in) matrix of that layer's inputs")
    p.add_argument("--accumulator-bits", type=int, metavar="P", help="AXE: signed accumulator width P")
    p.add_argument("--input-bits", type=int, metavar="N", help="AXE: input width N")
    p.add_argument("--signed-inputs", action="store_true", help="AXE: inputs are signed N-bit integers")
    p.add_argument("--tile", type=int, metavar="T", help="AXE: inputs per inner accumulation (default: the group)")
    p.add_argument("--rotate", metavar="none|hadamard[:SEED]",
                   help="store every weight as W*H for a signed block Hadamard H over its inputs, "
                        f"declared in the manifest (default {MINILM_DEFAULTS.rotate} for minilm, none otherwise; "
                        "docs/FORMATS.md)")
    p.add_argument("--recipe", metavar="RECIPE",
                   help="per-tensor options from `smartquant recipe` (overrides the format options; "
                        "refuses the method options)")
    p.set_defaults(func=run)


def accumulator_spec(args) -> AccumulatorSpec | None:
    """The AXE options as a spec (None when none is given; P and N go together)."""
    given = [args.accumulator_bits, args.input_bits]
    if all(v is None for v in given) and not args.signed_inputs and args.tile is None:
        return None
    if any(v is None for v in given):
        raise SmartquantError("--accumulator-bits P and --input-bits N go together")
    return AccumulatorSpec(args.accumulator_bits, args.input_bits, args.signed_inputs, args.tile)


#: (flag, args attribute) of every option a recipe cannot take (it names each tensor's quantizer)
METHOD_OPTIONS = (("--method", "method"), ("--views", "views"), ("--view-weights", "view_weights"),
                  ("--joint-feedback", "joint_feedback"), ("--joint-anchor", "joint_anchor"),
                  ("--act-order", "act_order"), ("--damping", "damping"), ("--calibration", "calibration"),
                  ("--calibration-inputs", "calibration_inputs"),
                  ("--sequential-calibration", "sequential_calibration"), ("--rotate", "rotate"),
                  ("--accumulator-bits", "accumulator_bits"), ("--input-bits", "input_bits"),
                  ("--signed-inputs", "signed_inputs"), ("--tile", "tile"))


def check_recipe_options(args) -> None:
    """A recipe sets every tensor's quantizer: a method option given with it is an error, not ignored."""
    given = [flag for flag, name in METHOD_OPTIONS if getattr(args, name) not in (None, False)]
    if given:
        raise SmartquantError(f"{', '.join(given)} do{'es' if len(given) == 1 else ''} not combine with --recipe "
                              f"(a recipe sets every tensor's quantizer)")


def method_settings(args) -> MethodSettings:
    """The --method options as MethodSettings, each option not given from the source's
    defaults (checked: a one-line error for each misuse)."""
    defaults = defaults_for(args.source)
    method = args.method or defaults.method
    if args.view_weights:
        weights = number_list(float)(args.view_weights)
    else:
        weights = defaults.view_weights if args.views is None and method == "joint" else None
    # the source's default method also takes its default damping and column order
    own = method == defaults.method
    damping = args.damping if args.damping is not None else (defaults.damping if own else None)
    act_order = args.act_order if args.act_order is not None else own and defaults.act_order
    fmt = StoreFormat(args.group_size or defaults.group_size, args.format == "sym", ScaleFormat[args.scale.upper()])
    return MethodSettings(method, fmt, parse_views(args.views) if args.views else defaults.views, weights,
                          accumulator_spec(args), args.joint_feedback, args.joint_anchor,
                          act_order, damping)


def run(args) -> int:
    if args.recipe:
        check_recipe_options(args)
    check_output(args.output, "image", inputs=[source_input(args.source), args.recipe, args.calibration_inputs])
    one_torch_thread()
    start = time.perf_counter()
    if args.recipe:
        image = quantize_with_recipe(args.source, args.recipe)
    else:
        rotate = args.rotate if args.rotate is not None else defaults_for(args.source).rotate
        image = quantize_source(args.source, method_settings(args), args.calibration, args.calibration_inputs,
                                rotate=rotate, sequential=args.sequential_calibration)
    image.save(args.output)
    print(f"{args.output}: {len(image.entries)} tensors, {image.dram.size} DRAM bytes, "
          f"{len(image.side)} side tensors, method {image.info.get('method', 'recipe')} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0
