"""`smartquant eval IMAGE`: quality of MiniLM sentence embeddings read from a store image at
uniform k, at a static mixed-precision plan and at per-sentence dynamic plans of the same
average bits, with the DRAM bytes each reads (cosine and Spearman vs full precision)."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..report import format_table, write_json
from .common import check_output_options, number_list
from ..sw.infer import experiment
from ..sw.infer.evalset import load_calibration, load_pair_set, pair_set_file
from ..sw.image.image import Image
from ..sw.infer.policy import DEFAULT_KS


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="embedding quality vs bits and DRAM bytes", description=__doc__)
    p.add_argument("image", metavar="IMAGE", help="image directory of the model (smartquant quantize minilm)")
    p.add_argument("--model", default="minilm", help="packaged model the image holds (default: minilm)")
    p.add_argument("--uniform", default="2,3,4,5,6,8", metavar="K,..", help="uniform k rows")
    p.add_argument("--budgets", default="2.5,3,3.5,4", metavar="B,..",
                   help="average bits per weight of the static and dynamic plans (1..8)")
    p.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)), metavar="K,..",
                   help="the k a plan may choose per slice")
    p.add_argument("--pairs", type=int, metavar="N", help="evaluate N of the sentence pairs")
    p.add_argument("--pairs-from", default="shipped", metavar="SET",
                   help="the sentence pairs: 'shipped' (default), 'holdout' (pairs nothing was tuned on) "
                        "or a TSV file of label<TAB>sentence<TAB>sentence lines")
    p.add_argument("--calibration", type=int, metavar="N", help="use N calibration sentences")
    p.add_argument("--seed", type=int, default=0, help="tie-break seed of the allocator")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--plot", metavar="DIR", help="write quality_vs_bits.png and quality_vs_dram.png")
    p.set_defaults(func=run)


def run(args) -> int:
    uniform, budgets = number_list(int)(args.uniform), number_list(float)(args.budgets)
    ks = number_list(int)(args.ks)
    experiment.check_settings(uniform, budgets, ks)
    check_output_options(args, inputs=[args.image, pair_set_file(args.pairs_from)])
    image = Image.load(args.image)
    with tqdm(desc="eval", unit="step", file=sys.stderr, disable=None) as bar:
        def progress(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update()
        ev = experiment.prepare(image, args.model, load_pair_set(args.pairs_from, limit=args.pairs),
                                load_calibration(limit=args.calibration), ks, args.seed, progress)
        rows = experiment.run(ev, uniform, budgets, progress)
    print(format_table(experiment.COLUMNS, experiment.table_rows(rows)))
    print(f"\n{len(ev.pairs)} pairs, {len(ev.sentences)} sentences; dram_bytes per forward pass "
          f"(mean over sentences), vs_int8 = dram_bytes / all linear weights at 8 bits")
    if args.json:
        write_json(args.json, {"image": str(args.image), "model": args.model, "rows": rows})
    if args.plot:
        for path in experiment.plot(rows, args.plot):
            print(f"wrote {path}")
    return 0
