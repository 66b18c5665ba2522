"""`smartquant regress IMAGE`: many seeds and configurations of the co-verification in
parallel processes (or on a Ray cluster), with the failures, their seeds and the
command replaying each (sim/regress.py, docs/BENCH.md).  Exit status: 0 every job
passed, 1 a job failed, 2 bad input or an unreachable Ray cluster, 3 the Ray cluster
(or a node or worker) lost mid-run (the jobs finished before are summarised)."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..atomic import check_output
from ..report import format_table, write_json
from ..sim import ray_cluster, regress
from ..sw.image import trace as traces
from ..sw.image.image import Image
from .common import check_output_options, int_at_least

ERROR_CHARS = 120       #: error text shown per failure in the table (the JSON has all of it)
EXIT_JOB_FAILED = 1
EXIT_CLUSTER_LOST = 3


def register(subparsers) -> None:
    p = subparsers.add_parser("regress", help="co-verification over many seeds and configurations, in parallel",
                              description=__doc__)
    p.add_argument("image", help="image directory (smartquant quantize output)")
    p.add_argument("--configs", default="default",
                   help="comma-separated: " + "; ".join(f"{c.name}: {c.description}" for c in regress.CONFIGS.values()))
    p.add_argument("--seeds", type=int_at_least(1), default=8, help="seeds per configuration")
    p.add_argument("--first-seed", type=int_at_least(0), default=0)
    p.add_argument("--seed", type=int_at_least(0), help="run this one seed only (replay)")
    p.add_argument("--tensors-per-job", type=int_at_least(1), default=2, help="tensors each job reads")
    p.add_argument("--views", metavar="LIST|all",
                   help="instead of views drawn by the seed: one job per (view, k) listed (e.g. fp16:4,packed:3), "
                   "or 'all' of them the image serves, each reading every tensor (int8: the symmetric ones)")
    p.add_argument("--jobs", type=int_at_least(1), help="parallel processes (default: CPU count)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster ('auto', 'HOST:6379', 'ray://HOST:10001', "
                   "'local'; needs smartquant[cluster] and the image at the same path on every node; "
                   "exit 2 when unreachable, 3 when lost mid-run)")
    p.add_argument("--keep", metavar="DIR", help="keep every job's trace under DIR (for smartquant sim --waves)")
    p.add_argument("--json", metavar="FILE", help="write every job's result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    seeds = [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.seeds))
    image = Image.load(args.image)
    views = None if args.views is None else (
        traces.all_views(image) if args.views == "all" else traces.parse_views(args.views))
    jobs = regress.make_jobs(image, [c for c in args.configs.split(",") if c], seeds, args.tensors_per_job, views)
    if views is not None:
        covered = {job.views[0] for job in jobs}
        uncovered = [label for label in (traces.view_label(*v) for v in views) if label not in covered]
        print(f"{len(covered)} (view, k) combinations, one job each per seed" + (
            f"; none in {', '.join(uncovered)}: no tensor readable (int8 needs a symmetric one)" if uncovered else ""))
    check_output_options(args, inputs=[args.image])
    for job in jobs if args.keep else ():
        check_output(regress.kept_trace_dir(args.keep, job), "trace", inputs=[args.image], outputs=[args.json])
    lost = None
    with tqdm(total=len(jobs), desc="regress", unit="job", file=sys.stderr, disable=None) as bar:
        try:
            results = regress.run_regress(jobs, args.image, args.jobs, args.ray, args.keep,
                                          on_result=lambda result: bar.update(1))
        except ray_cluster.ClusterLost as exc:
            lost, results = exc, exc.results
    rows = regress.summary(results)
    print(format_table(["config", "jobs", "passed", "failed", "failing seeds"],
                       [[r["config"], r["jobs"], r["passed"], r["failed"],
                         " ".join(map(str, r["failing_seeds"])) or "-"] for r in rows]))
    failures = [r for r in results if not r["passed"]]
    job_of = {job.key(): job for job in jobs}
    for result in failures:
        result["replay"] = regress.replay_command(job_of[result["config"], result["seed"], tuple(result["views"])],
                                                  args.image, args.tensors_per_job)
    if failures:
        print("\nfailures")
        print(format_table(["config", "seed", "error", "replay"],
                           [[r["config"], r["seed"], (r["error"] or "")[:ERROR_CHARS], r["replay"]] for r in failures]))
    summary = {"summary": rows, "jobs": results}
    if lost:
        summary["cluster_lost"] = lost.reason
    if args.json:
        write_json(args.json, summary)
    if lost:
        print(f"smartquant regress: Ray cluster lost after {len(results)} of {len(jobs)} jobs: {lost.reason}",
              file=sys.stderr)
        return EXIT_CLUSTER_LOST
    return EXIT_JOB_FAILED if failures else 0
