"""`smartquant prove`: formal checks of the leaf components with SymbiYosys (YoWASP)."""

from __future__ import annotations

import sys

from .. import report
from ..sim import formal
from ..sim.formal_harness import PROPERTIES
from ..atomic import FILE, check_output


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prove", help="prove properties of the controller's components (sby + boolector from PyPI)",
        description="Build formal harnesses around held_below, BlockRamQueue, HeadPair, the block "
                    "cache (BlockTags, BlockCache) and the read path (FetchIssue + DramPort), run "
                    "SymbiYosys with the boolector solver (both from PyPI) and print per property: "
                    "proven (k-induction or BMC depth), covers reached, or failed with its "
                    "counterexample.  See docs/FORMAL.md.")
    parser.add_argument("properties", nargs="*", metavar="PROPERTY",
                        help=f"properties to check (default all: {', '.join(PROPERTIES)})")
    parser.add_argument("--timeout", type=float, default=formal.DEFAULT_TIMEOUT_S, metavar="S",
                        help="limit per property in seconds (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=formal.DEFAULT_JOBS, metavar="N",
                        help="sby runs at a time (default %(default)s)")
    parser.add_argument("--workdir", help="keep sby's files (logs, VCD traces) here")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    workdir = check_output(args.workdir, "formal") if args.workdir else None
    if args.json:
        check_output(args.json, FILE, outputs=[workdir])
    chosen = formal.select(args.properties or None)
    results = formal.prove(chosen, workdir=args.workdir, timeout_s=args.timeout, jobs=args.jobs,
                           progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.format_table(["property", "component", "status", "how", "trace", "seconds"],
                              [r.row() for r in results]))
    if args.json:
        report.write_json(args.json, {"properties": [r.as_dict() for r in results]})
    return 0 if all(r.passed for r in results) else 1
