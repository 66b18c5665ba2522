"""`smartquant demo`: the main job. Quantize MiniLM into a store image, pick precision
plans for a few sentences (uniform, static mixed, dynamic), measure quality and DRAM
bytes, co-verify one encoder layer of each plan in RTL simulation (Verilator), and
print the report; JSON and plots go to the output directory."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..atomic import check_output
from ..report import format_table
from ..sim.demo import COLUMNS, REPORT_FILE, DemoSettings, run_demo, table_rows
from .common import number_list, one_torch_thread


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job: quantize, plan, co-verify a layer in RTL, report",
                              description=__doc__)
    p.add_argument("-o", "--out", default="smartquant-demo", metavar="DIR",
                   help="output directory: image/, rtl/ traces, plots/, demo.json (default: smartquant-demo; "
                        "replaces only an earlier demo output)")
    p.add_argument("--pairs", type=int, default=DemoSettings.pairs, metavar="N",
                   help=f"sentence pairs to evaluate (default {DemoSettings.pairs})")
    p.add_argument("--uniform", default=",".join(map(str, DemoSettings.uniform)), metavar="K,..",
                   help="uniform-precision plans")
    p.add_argument("--budgets", default=",".join(f"{b:g}" for b in DemoSettings.budgets), metavar="B,..",
                   help="average bits of the static and dynamic plans")
    p.add_argument("--layer", type=int, default=DemoSettings.layer, help="encoder layer co-verified in RTL")
    p.set_defaults(func=run)


def run(args) -> int:
    out = check_output(args.out, "demo")
    one_torch_thread()
    settings = DemoSettings(out, pairs=args.pairs, uniform=number_list(int)(args.uniform),
                            budgets=number_list(float)(args.budgets), layer=args.layer)
    with tqdm(desc="demo", unit="step", file=sys.stderr, disable=None) as bar:
        def progress(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update()
        report = run_demo(settings, progress)
    rows = report["rows"]
    print(format_table(COLUMNS, table_rows(rows)))
    print(f"\n{report['pairs']} pairs ({report['sentences']} sentences); dram_bytes per forward pass, "
          f"vs_int8 = against every linear weight at 8 bits; rtl_*: encoder layer {report['layer']} "
          f"of each plan served by the simulated controller (Verilator), rtl_exact = its output "
          f"equals the golden software path bit for bit")
    for path in report["plots"]:
        print(f"wrote {path}")
    print(f"wrote {out / REPORT_FILE}")
    failed = [r["plan"] for r in rows if not r["rtl_exact"]]
    if failed:
        print(f"RTL co-verification FAILED for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
