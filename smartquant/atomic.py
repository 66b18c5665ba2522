"""Where a command may write, and how: the one rule for every output path.

* A directory output has a kind (KINDS).  It is built in a temporary sibling and renamed
  into place; an existing target is replaced only if it is a directory of the same kind
  holding nothing but files smartquant writes for that kind (or is empty).  The old one is
  renamed aside before the new one moves in and is removed after, so a failure at any
  point leaves the old output or the new one, never neither.
* A file output is written to a temporary sibling and renamed onto its path; an existing
  plain file there (one the user named) is replaced, a directory never.
* No output may be `.`, `..`, the working directory or one of its parents, the home
  directory or `/`, nor overlap an input of the same command (equal it, contain it or lie
  inside it).  check_output tests all this before a command starts its work.
* Final files and directories get the modes the umask gives (0644 / 0755 under umask 022).

Any refusal is a one-line SmartquantError; nothing is written or deleted then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import SmartquantError

MARKER = ".smartquant-output"      #: names the kind and the files of directories without a format file of their own
FILE = "file"                      #: check_output's kind for a single-file output


@dataclasses.dataclass(frozen=True)
class DirKind:
    """A kind of directory output: the file naming its format, and the files it holds."""
    noun: str                          #: for messages: "image", "trace", ...
    format: str                        #: the value of the marker's "format" field
    marker: str = MARKER               #: the JSON file whose "format" field identifies the kind
    files: frozenset[str] | None = None    #: relative paths the kind holds; None: those the marker lists


_IMAGE_FILES = frozenset({"manifest.json", "dram.bin", "side.safetensors"})

#: every kind of directory smartquant writes (the formats are those of sw/image/image.py and sw/image/trace.py)
KINDS = {
    "image": DirKind("image", "smartquant-image", "manifest.json", _IMAGE_FILES),
    "trace": DirKind("trace", "smartquant-trace", "trace.json",
                     frozenset({"trace.json", "requests.npz"} | {f"image/{name}" for name in _IMAGE_FILES})),
    "plots": DirKind("plot directory", "smartquant-plots"),
    "demo": DirKind("demo output", "smartquant-demo"),
    "synth": DirKind("synthesis work directory", "smartquant-synth"),
    "formal": DirKind("formal work directory", "smartquant-formal"),
}


def _umask() -> int:
    """The process's umask (os can only read it by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _give_umask_modes(root: Path) -> None:
    """Modes as if made under the umask: mkdtemp makes 0700 and some writers (safetensors) 0600."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for top, dirs, files in os.walk(root):
        for path in (os.path.join(top, name) for name in dirs + files):
            if not os.path.islink(path):        # a link's mode is its target's: not ours to change
                full = os.path.isdir(path) or os.stat(path).st_mode & 0o111
                os.chmod(path, (0o777 if full else 0o666) & ~mask)


def _files_under(root: Path) -> list[str]:
    """Relative POSIX paths of everything under `root` that is not a directory (links included)."""
    found = []
    for top, dirs, files in os.walk(root):
        rel = Path(top).relative_to(root)
        found += [(rel / name).as_posix() for name in files]
        found += [(rel / name).as_posix() for name in dirs if os.path.islink(os.path.join(top, name))]
    return sorted(found)


def _kind(kind: str) -> DirKind:
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    return KINDS[kind]


def _owned_files(path: Path, kind: DirKind) -> frozenset[str] | None:
    """The files smartquant wrote into an existing `path` of `kind`, or None if it is not one."""
    try:
        marker = json.loads((path / kind.marker).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != kind.format:
        return None
    if kind.files is not None:
        return kind.files
    listed = marker.get("files")
    return frozenset(listed) | {MARKER} if isinstance(listed, list) else None


def _check_replaceable(path: Path, kind: str) -> None:
    """Raise unless the existing `path` may be replaced by an output of `kind`."""
    spec = _kind(kind)
    if path.is_symlink():
        raise SmartquantError(f"{path}: is a symbolic link; name the directory itself")
    if not path.is_dir():
        raise SmartquantError(f"{path}: exists and is not a directory; remove it or choose another output")
    present = _files_under(path)
    if not present:
        return
    owned = _owned_files(path, spec)
    if owned is None:
        raise SmartquantError(f"{path}: exists and is not a smartquant {spec.noun}; "
                              f"remove it or choose another output")
    foreign = [name for name in present if name not in owned]
    if foreign:
        raise SmartquantError(f"{path}: holds {len(foreign)} file(s) smartquant did not write "
                              f"(e.g. {foreign[0]}); remove them or choose another output")


def _check_location(path: Path) -> None:
    """Raise if no directory of `path` can be made (some ancestor is not a directory)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SmartquantError(f"{path}: {parent} is not a directory")
            return


def _check_overlap(path: Path, others: Iterable, role: str) -> None:
    out = path.resolve()
    for given in others:
        if given is None:
            continue
        other = Path(given).resolve()
        relation = ("is" if out == other else "contains" if other.is_relative_to(out)
                    else "lies inside" if out.is_relative_to(other) else None)
        if relation:
            raise SmartquantError(f"{path}: {relation} the {role} {given}; choose another output")


def check_output(path: str | os.PathLike, kind: str, inputs: Iterable = (), outputs: Iterable = ()) -> Path:
    """Raise SmartquantError unless a command may write an output of `kind` (a KINDS name or
    FILE) at `path` without losing anything; `inputs`: the paths the command reads,
    `outputs`: its other outputs (None entries are skipped).  Cheap: call it before the work."""
    text = os.fspath(path)
    if text.strip() == "":
        raise SmartquantError("the output path is empty")
    path = Path(text)
    if kind != FILE and (path.name in ("", ".", "..") or path.resolve() in (Path("/"), Path.home().resolve())
                         or Path.cwd().resolve().is_relative_to(path.resolve())):
        raise SmartquantError(f"{text}: refusing to replace the working directory, one of its parents, "
                              f"the home directory or /; name a new directory")
    _check_location(path)
    _check_overlap(path, inputs, "input")
    _check_overlap(path, outputs, "output")
    if kind == FILE:
        if path.is_dir():
            raise SmartquantError(f"{path}: is a directory; name a file")
    elif os.path.lexists(path):
        _check_replaceable(path, kind)
    return path


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmartquantError(f"{path}: cannot make its directory ({exc.strerror})") from None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = check_output(path, FILE)
    _make_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str):
    """Yield a temporary directory beside `path`; it becomes the output of `kind` at `path`
    if the block succeeds (replacing a previous one of the same kind, see the module doc)."""
    path = check_output(path, kind)
    spec = _kind(kind)
    _make_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if spec.files is None:
            (tmp / MARKER).write_text(json.dumps({"format": spec.format, "files": _files_under(tmp)}) + "\n")
        _give_umask_modes(tmp)
        _move_into_place(tmp, path, kind)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _move_into_place(new: Path, path: Path, kind: str) -> None:
    """Rename `new` to `path`; an existing `path` (checked again) goes aside first and is
    removed only once `new` is in place."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    _check_replaceable(path, kind)
    old = new.with_name(new.name[:-len(".tmp")] + ".old")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old)
