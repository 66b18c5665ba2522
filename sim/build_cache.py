"""The simulation build cache: one folder per build under `build_root()`, made once under
a file lock (parallel runs share it), marked finished by a `.built` file whose time is
its last use, and pruned least recently used first so that old designs do not pile up.

Pruning removes only folders this cache made (a `.built` marker and a name of one of
`BUILD_KINDS`), never one used in the last `PRUNE_MIN_AGE_S` seconds, and never one
whose lock another process holds (lock files, empty, stay: removing one could let two
processes build into one folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from ..errors import SmartquantError

#: name prefixes of the build folders (cocotb builds, fast-harness builds, bare-loop builds)
BUILD_KINDS = ("verilator-", "icarus-", "fast-", "bare-")
#: finished builds kept beyond the recently used ones (SMARTQUANT_SIM_KEEP overrides)
DEFAULT_KEEP = 12
#: a build used this recently is never pruned (seconds)
PRUNE_MIN_AGE_S = 3600
MARKER = ".built"


def build_root() -> Path:
    """SMARTQUANT_SIM_BUILD, else ~/.cache/smartquant/sim."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartquant" / "sim"
    return Path(os.environ.get("SMARTQUANT_SIM_BUILD", default))


def _lock_path(build_dir: Path) -> Path:
    return build_dir.parent / f".{build_dir.name}.lock"


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock on the file `path` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_built(build_dir: Path) -> bool:
    return (build_dir / MARKER).exists()


def mark_used(build_dir: Path) -> None:
    """Record a use of a finished build (the marker's modification time)."""
    os.utime(build_dir / MARKER)


def cached_build(build_dir: Path, make: Callable[[Path], None]) -> bool:
    """Make `build_dir` with `make(build_dir)` unless a finished build is there; True when
    it was made now.  Either way the build counts as used, and after a new build the
    cache is pruned."""
    with locked(_lock_path(build_dir)):
        made = not is_built(build_dir)
        if made:
            build_dir.mkdir(parents=True, exist_ok=True)
            make(build_dir)
            (build_dir / MARKER).touch()
        mark_used(build_dir)
    if made:
        prune(build_dir.parent)
    return made


def keep_count() -> int:
    value = os.environ.get("SMARTQUANT_SIM_KEEP", str(DEFAULT_KEEP))
    if not value.isdigit():
        raise SmartquantError(f"SMARTQUANT_SIM_KEEP={value!r}: expected a count of builds (0, 1, 2, ...)")
    return int(value)


def prune(root: Path, keep: int | None = None, now: float | None = None) -> list[Path]:
    """Remove the finished builds under `root` beyond the `keep` most recently used, except
    those used within PRUNE_MIN_AGE_S or locked by another process; the removed folders."""
    keep = keep_count() if keep is None else keep
    now = time.time() if now is None else now
    builds = sorted((d for d in root.iterdir() if d.is_dir() and d.name.startswith(BUILD_KINDS) and is_built(d)),
                    key=lambda d: (d / MARKER).stat().st_mtime, reverse=True)
    removed = []
    for build_dir in builds[keep:]:
        if now - (build_dir / MARKER).stat().st_mtime < PRUNE_MIN_AGE_S:
            continue
        with open(_lock_path(build_dir), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            try:
                (build_dir / MARKER).unlink()
                shutil.rmtree(build_dir)
                removed.append(build_dir)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return removed
