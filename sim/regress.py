"""Regression sweeps of the co-verification (`smartquant regress`, docs/BENCH.md).

A *job* is one configuration (simulator and RTL parameters) and one seed.  The seed
alone draws the workload, the same on every configuration: which tensors, which
views at which k, the request order, bad requests, DRAM latency, stall probability
and host requests in flight.  Each job writes its golden trace and replays it
(`runner.run_trace`, every response compared bit for bit).  Jobs run in parallel
processes on this machine, or as tasks on a Ray cluster (`ray_address`; the optional
extra `smartquant[cluster]`; every node needs smartquant and the image at the same
path; connecting: `ray_cluster.py`).  A failure is reported with its seed and the
command that replays it alone; a cluster lost mid-run raises `ClusterLost`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import random
import shlex
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import SmartquantError
from ..spec import CODE_BITS, MAX_REGIONS, Opcode, View
from ..sw.image.image import Image
from ..sw.image.trace import (ORDERS, QUANTIZED_VIEWS, make_trace, parse_views, readable_tensors, region_of,
                              save_trace, view_label)
from . import fast_harness, ray_cluster, runner
from .testbench import region_writes

STALLS = (0.0, 0.1, 0.25, 0.4)
READ_LATENCIES = (0, 16, 64, 128)
MAX_IN_FLIGHT = (4, 64, 256)
MAX_ERRORS = 6
#: images up to this many DRAM lines are sometimes loaded through the host's raw view
LOAD_VIA_HOST_LINES = 8192


@dataclasses.dataclass(frozen=True)
class RegressConfig:
    """What a job runs on; `corrupt` flips one bit of one expected response line, so every
    job of it must fail (a check that the harness reports failures with their seeds)."""
    name: str
    description: str
    simulator: str = "verilator"
    lanes: int | None = None
    axi_data_width: int | None = None
    corrupt: bool = False

    def verilog(self) -> str | None:
        """The design's Verilog (None for Amaranth's simulator, which needs none)."""
        return None if self.simulator == "amaranth" else runner.design_verilog(self.lanes, self.axi_data_width)


CONFIGS = {c.name: c for c in (
    RegressConfig("default", "the RTL's default parameters on Verilator"),
    RegressConfig("narrow", "8 lanes and a 128-bit AXI bus on Verilator", lanes=8, axi_data_width=128),
    RegressConfig("icarus", "the default RTL on Icarus (slow: small images)", simulator="icarus"),
    RegressConfig("corrupt", "self-check: one expected bit flipped, every job must FAIL", corrupt=True),
)}


@dataclasses.dataclass
class Job:
    """One configuration and seed, with the workload the seed draws."""
    config: str
    seed: int
    tensors: list[str]
    views: list[str]                #: "fp16:4" labels
    order: str
    errors: int
    stall: float
    read_latency: int
    max_in_flight: int
    load_via_host: bool
    view_given: bool = False        #: one (view, k) named on the command line, every tensor read

    def key(self) -> tuple:
        return self.config, self.seed, tuple(self.views)


def draw_job(config: str, seed: int, image: Image, tensors_per_job: int) -> Job:
    """The workload of `seed` (independent of the configuration)."""
    rng = random.Random(seed)
    names = sorted(e.name for e in image.entries)
    tensors = sorted(rng.sample(names, min(tensors_per_job, len(names))))
    views = [(view, rng.randint(1, CODE_BITS)) for view in QUANTIZED_VIEWS if rng.random() < 0.75]
    views = views or [(rng.choice(QUANTIZED_VIEWS), rng.randint(1, CODE_BITS))]
    return Job(config, seed, tensors, [view_label(v, k) for v, k in views], rng.choice(ORDERS),
               rng.randint(0, MAX_ERRORS), rng.choice(STALLS), rng.choice(READ_LATENCIES),
               rng.choice(MAX_IN_FLIGHT), image.dram_lines <= LOAD_VIA_HOST_LINES and rng.random() < 0.25)


def make_jobs(image: Image, configs: list[str], seeds: list[int], tensors_per_job: int = 2,
              views: list[tuple[View, int]] | None = None) -> list[Job]:
    """A job per configuration and seed; with `views`, one per (view, k) of them instead, each
    reading every tensor the view can read (trace.readable_tensors; a view reading none has no
    job), the rest of its workload drawn by the seed."""
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SmartquantError(f"unknown configuration {unknown[0]!r} (one of {', '.join(CONFIGS)})")
    if tensors_per_job < 1:
        raise SmartquantError(f"--tensors-per-job must be >= 1, got {tensors_per_job}")
    if views is None:
        return [draw_job(config, seed, image, tensors_per_job) for config in configs for seed in seeds]
    names = sorted(e.name for e in image.entries)
    return [dataclasses.replace(draw_job(config, seed, image, tensors_per_job), views=[view_label(view, k)],
                                tensors=readable_tensors(image, names, view), view_given=True)
            for config in configs for seed in seeds for view, k in views if readable_tensors(image, names, view)]


def corrupt_one_line(trace, seed: int) -> int:
    """Flip one bit of one unpoisoned read's expected line (chosen by `seed`); its index."""
    candidates = np.flatnonzero((trace.opcode == Opcode.MEM_RD) & (trace.poison == 0))
    rng = random.Random(seed)
    index = int(candidates[rng.randrange(len(candidates))])
    trace.line[index, rng.randrange(trace.line.shape[1])] ^= 1 << rng.randrange(8)
    return index


def sim_options(job: Job, config: RegressConfig) -> runner.SimOptions:
    return runner.SimOptions(simulator=config.simulator, seed=job.seed, stall=job.stall,
                             read_latency=job.read_latency, max_in_flight=job.max_in_flight,
                             lanes=config.lanes, axi_data_width=config.axi_data_width)


def replay_command(job: Job, image_dir: str, tensors_per_job: int, keep: str = "regress-replay") -> str:
    """The command that runs one job again, keeping its trace for `smartquant sim --waves`."""
    words = ["smartquant", "regress", str(image_dir), "--configs", job.config, "--seed", str(job.seed),
             "--tensors-per-job", str(tensors_per_job), "--keep", keep]
    return shlex.join(words + (["--views", job.views[0]] if job.view_given else []))


def sim_command(job: Job, config: RegressConfig, trace_dir: str) -> str:
    """`smartquant sim` of a kept trace with the job's settings."""
    words = ["smartquant", "sim", trace_dir, "--sim", config.simulator, "--seed", str(job.seed),
             "--stall", str(job.stall), "--read-latency", str(job.read_latency),
             "--max-in-flight", str(job.max_in_flight)]
    for flag, value in (("--lanes", config.lanes), ("--axi-width", config.axi_data_width)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def kept_trace_dir(keep: str | os.PathLike, job: Job) -> Path:
    """Where `--keep` puts the trace of `job`."""
    view = f"-{job.views[0].replace(':', '')}" if job.view_given else ""
    return Path(keep) / f"{job.config}-seed{job.seed}{view}"


def run_job(job: Job, image_dir: str, verilog: str | None = None, keep: str | None = None) -> dict:
    """Make the job's trace and replay it; a result dict (never raises: a crash of the
    harness is a failure too, with its traceback's last line as the error)."""
    config = CONFIGS[job.config]
    result = {**dataclasses.asdict(job), "passed": False, "error": None}
    try:
        image = Image.load(image_dir)
        views = parse_views(",".join(job.views))
        trace = make_trace(image, image_dir, job.tensors, views, job.order, job.errors, job.seed,
                           job.load_via_host, int8_symmetric_only=True)
        if config.corrupt:
            result["corrupted_request"] = corrupt_one_line(trace, job.seed)
        with tempfile.TemporaryDirectory(prefix="smartquant-regress-") as work:
            trace_dir = kept_trace_dir(keep, job) if keep else Path(work) / "trace"
            save_trace(trace, trace_dir)
            stats = runner.run_trace(trace_dir, sim_options(job, config), verilog=verilog)
        if keep:
            result["trace"] = str(trace_dir)
            result["sim_command"] = sim_command(job, config, str(trace_dir))
        result.update(passed=stats["passed"], error=stats["error"], requests=stats["requests"],
                      cycles=stats["cycles"], wall_s=stats["wall_s"])
    except Exception as exc:        # a harness crash is a failed job, not a failed sweep
        last = traceback.format_exception_only(exc)[-1].strip()
        result["error"] = f"harness: {last}"
    return result


# --- running many -------------------------------------------------------------------

def harness_capacity(image: Image, jobs: list[Job]) -> fast_harness.Capacity:
    """Memories that hold the trace of every job (a bound: per view 16 lines a block and every
    metadata line, the bad requests, a load through the host), so one fast-harness build serves all."""
    entries = {e.name: e for e in image.entries}
    requests = max(len(job.views) * sum(16 * entries[t].blocks + entries[t].meta_lines for t in job.tensors)
                   + job.errors
                   + (image.dram_lines if job.load_via_host else 0) for job in jobs)
    segments = max(-(-len(job.tensors) // MAX_REGIONS) for job in jobs)
    csr_writes = max(_csr_writes([region_of(entries[t]) for t in job.tensors]) for job in jobs)
    return fast_harness.Capacity.fitting(requests, segments, csr_writes, image.dram_lines)


def _csr_writes(regions: list[dict]) -> int:
    """CSR writes of a trace over `regions`: DRAM size and counter clear, each segment's region table."""
    return 2 + sum(len(region_writes(regions[i:i + MAX_REGIONS])) for i in range(0, len(regions), MAX_REGIONS))


def prepare(jobs: list[Job], image: Image) -> dict[str, str | None]:
    """Verilog per configuration, each design built here in the fast harness (which the jobs
    run) large enough for every job, so parallel jobs find the build cached."""
    verilogs = {}
    capacity = harness_capacity(image, jobs)
    for name in dict.fromkeys(job.config for job in jobs):
        config = CONFIGS[name]
        verilogs[name] = config.verilog()
        if verilogs[name] is not None:
            fast_harness.build_harness(config.simulator, verilogs[name], capacity)
    return verilogs


def failed(job: Job, error: str) -> dict:
    """The result of a job that produced none (its worker or task died)."""
    return {**dataclasses.asdict(job), "passed": False, "error": error}


def _local(jobs, image_dir, verilogs, workers, keep) -> Iterator[dict]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_job, job, image_dir, verilogs[job.config], keep): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:        # the worker process itself died
                yield failed(futures[future], f"harness: worker died: {exc!r}")


def _ray(ray, jobs, image_dir, verilogs, keep) -> Iterator[dict]:
    """Each job a task, never retried; a task that raised is a failed job, any other Ray
    error (a node, worker or the connection lost) raises `ClusterLost`.  Disconnects at the end."""
    remote = ray.remote(max_retries=0, retry_exceptions=False)(run_job)
    try:
        shared = {name: ray.put(text) for name, text in verilogs.items()}
        pending = {remote.remote(job, image_dir, shared[job.config], keep): job for job in jobs}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                result = failed(job, f"harness: task raised: {ray_cluster.one_line(exc.cause or exc)}")
            yield result
    except (ray.exceptions.RayError, ConnectionError) as exc:     # ConnectionError: the client connection
        raise ray_cluster.ClusterLost(ray_cluster.one_line(exc)) from exc
    finally:
        ray.shutdown()


def run_regress(jobs: list[Job], image_dir: str | os.PathLike, workers: int | None = None,
                ray_address: str | None = None, keep: str | None = None,
                on_result: Callable[[dict], None] = lambda result: None) -> list[dict]:
    """Run every job (in `workers` processes, default the CPU count, or on Ray at
    `ray_address`); results in job order.  `on_result` sees each as it finishes.
    Raises `ClusterLost`, with the results so far, when the Ray cluster goes away."""
    image_dir = str(Path(image_dir).resolve())
    keep = str(Path(keep).resolve()) if keep else None
    if ray_address is None:
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1:
            raise SmartquantError(f"--jobs must be >= 1, got {workers}")
        stream = _local(jobs, image_dir, prepare(jobs, Image.load(image_dir)), workers, keep)
    else:
        ray = ray_cluster.connect(ray_address)      # before minutes of Verilog generation
        verilogs = {name: CONFIGS[name].verilog() for name in dict.fromkeys(job.config for job in jobs)}
        stream = _ray(ray, jobs, image_dir, verilogs, keep)
    results = {}
    try:
        for result in stream:
            on_result(result)
            results[result["config"], result["seed"], tuple(result["views"])] = result
    except ray_cluster.ClusterLost as lost:
        lost.results = [results[job.key()] for job in jobs if job.key() in results]
        raise
    return [results[job.key()] for job in jobs]


def summary(results: list[dict]) -> list[dict]:
    """Per configuration: jobs, passed, failed and the failing seeds."""
    rows = []
    for name in dict.fromkeys(r["config"] for r in results):
        mine = [r for r in results if r["config"] == name]
        failed = [r["seed"] for r in mine if not r["passed"]]
        rows.append({"config": name, "jobs": len(mine), "passed": len(mine) - len(failed), "failed": len(failed),
                     "failing_seeds": failed})
    return rows
