"""`smartquant trace IMAGE -o TRACE`: write a golden trace (sw/image/trace.py, docs/COVERIFY.md)."""

from __future__ import annotations

from ..atomic import check_output
from ..errors import SmartquantError
from ..report import format_table
from ..spec import Opcode
from ..sw.image import trace as traces
from ..sw.image.image import Image
from .common import int_at_least


def register(subparsers) -> None:
    p = subparsers.add_parser("trace", help="write a golden trace of host requests and expected responses",
                              description=__doc__)
    p.add_argument("image", help="image directory (smartquant quantize output)")
    p.add_argument("-o", "--output", required=True,
                   help="trace directory to write (replaces only an earlier trace)")
    p.add_argument("--tensors", default="", help="comma-separated tensor names (default: all)")
    p.add_argument("--views", help="views to read, e.g. fp16:4,packed:3,int8:8,raw (default fp16:4)")
    p.add_argument("--all-views", action="store_true",
                   help="every quantized view at every k the image was quantized for (int8 of its symmetric "
                   "tensors only); prints the combinations covered")
    p.add_argument("--order", default="sequential",
                   help="sequential lines; strided: line j of every block, then j+1; random: a permutation; "
                        "streams:S: S hosts each reading its own contiguous range, round robin; "
                        "window:W: a random order inside each window of W blocks")
    p.add_argument("--errors", type=int_at_least(0), default=0, help="bad requests to mix in (expected poison)")
    p.add_argument("--dram-errors", type=int_at_least(0), default=0, metavar="N",
                   help="DRAM lines the reads fetch that answer AXI SLVERR (expected poison, docs/COVERIFY.md)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the order, bad requests and DRAM errors")
    p.add_argument("--load-via-host", action="store_true",
                   help="prologue: write every image line through the raw view (expected NDR)")
    p.add_argument("--embed-image", action="store_true", help="copy the image into the trace")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.all_views and args.views:
        raise SmartquantError("give --views or --all-views, not both")
    traces.parse_order(args.order)
    check_output(args.output, "trace", inputs=[args.image])
    image = Image.load(args.image)
    tensors = [t for t in args.tensors.split(",") if t] or None
    views = traces.all_views(image) if args.all_views else traces.parse_views(args.views or "fp16:4")
    trace = traces.make_trace(image, args.image, tensors, views, args.order, args.errors, args.seed,
                              args.load_via_host, int8_symmetric_only=args.all_views, dram_errors=args.dram_errors)
    traces.save_trace(trace, args.output, embed_image=args.embed_image)
    reads = int((trace.opcode == Opcode.MEM_RD).sum())
    print(format_table(["trace", "requests", "reads", "writes", "expected poison", "DRAM error lines", "segments"],
                       [[args.output, len(trace), reads, len(trace) - reads, int(trace.poison.sum()),
                         len(trace.dram_errors), len(trace.segments)]]))
    if args.all_views:
        names = tensors or [e.name for e in image.entries]
        print(format_table(["view", "tensors read"], [[traces.view_label(view, k),
                                                      len(traces.readable_tensors(image, names, view))]
                                                     for view, k in views]))
    return 0
