"""The simulation build cache: built once, used builds kept, old ones pruned, foreign folders left alone."""

import fcntl
import os

import pytest

from smartquant.errors import SmartquantError
from smartquant.sim import build_cache
from smartquant.sim.build_cache import MARKER, PRUNE_MIN_AGE_S, cached_build, prune

HOUR = 3600.0


def _finished_build(root, name, last_used):
    folder = root / name
    folder.mkdir()
    (folder / "obj.o").write_bytes(b"x")
    (folder / MARKER).touch()
    os.utime(folder / MARKER, (last_used, last_used))
    return folder


def test_a_build_is_made_once(tmp_path):
    calls = []
    folder = tmp_path / "verilator-top-1"
    assert cached_build(folder, lambda d: calls.append((d / "source.v").write_text("module")))
    assert not cached_build(folder, lambda d: calls.append("again"))
    assert len(calls) == 1 and (folder / "source.v").exists() and (folder / MARKER).exists()


def test_a_failed_build_is_not_marked_finished(tmp_path):
    folder = tmp_path / "fast-verilator-2"

    def broken(d):
        raise RuntimeError("compiler failed")
    try:
        cached_build(folder, broken)
    except RuntimeError:
        pass
    assert not (folder / MARKER).exists()
    assert cached_build(folder, lambda d: None)


def test_prune_keeps_the_most_recently_used(tmp_path):
    now = 100 * HOUR
    builds = [_finished_build(tmp_path, f"verilator-top-{i}", now - (i + 2) * HOUR) for i in range(5)]
    removed = prune(tmp_path, keep=2, now=now)
    assert sorted(removed) == sorted(builds[2:])
    assert all(b.exists() for b in builds[:2]) and not any(b.exists() for b in builds[2:])


def test_prune_spares_recent_foreign_unfinished_and_locked_folders(tmp_path):
    now = 100 * HOUR
    recent = _finished_build(tmp_path, "fast-icarus-recent", now - PRUNE_MIN_AGE_S / 2)
    foreign = _finished_build(tmp_path, "my-notes", now - 50 * HOUR)
    unfinished = tmp_path / "icarus-top-partial"
    unfinished.mkdir()
    locked = _finished_build(tmp_path, "bare-verilator-busy", now - 50 * HOUR)
    old = _finished_build(tmp_path, "verilator-top-old", now - 60 * HOUR)
    with open(tmp_path / f".{locked.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        removed = prune(tmp_path, keep=0, now=now)
    assert removed == [old]
    assert recent.exists() and foreign.exists() and unfinished.exists() and locked.exists()


def test_keep_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("SMARTQUANT_SIM_KEEP", "3")
    assert build_cache.keep_count() == 3
    monkeypatch.setenv("SMARTQUANT_SIM_KEEP", "lots")
    with pytest.raises(SmartquantError, match="SMARTQUANT_SIM_KEEP='lots'"):
        build_cache.keep_count()
