"""Output safety (smartquant/atomic.py): no command deletes or overwrites what it did not
write, refusals come before the work, replacements are atomic, modes follow the umask."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from smartquant.atomic import KINDS, MARKER, atomic_dir, atomic_file
from smartquant.cli import main
from cli_errors import assert_one_line_error


def _tree(root: Path) -> dict:
    """Every path under `root` -> its bytes ("dir" for directories, the target for links)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = (f"link:{os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir()
                      else path.read_bytes())
    return found


@pytest.fixture
def work(tmp_path, monkeypatch):
    """tmp_path/work as the working directory, holding d/w.safetensors (a (16, 128) float32
    weight and a bias), an image `img` made from it, and the user's own files."""
    root = tmp_path / "work"
    (root / "d").mkdir(parents=True)
    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal((16, 128)).astype(np.float32),
               "bias": rng.standard_normal(16).astype(np.float32)}, str(root / "d" / "w.safetensors"))
    (root / "notes.txt").write_text("the user's notes\n")
    (root / "mine").mkdir()
    (root / "mine" / "data.bin").write_bytes(b"\x01\x02")
    monkeypatch.chdir(root)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".profile").write_text("export A=1\n")
    assert main(["quantize", "d/w.safetensors", "-o", "img", "--method", "rtn"]) == 0
    return root


REFUSAL_S = 15.0     #: a refusal's time at most, seconds


def _refused(argv, root: Path, capsys, message: str) -> str:
    """Run `argv`; assert exit 2, one line on stderr naming `message`, nothing under `root` changed."""
    capsys.readouterr()
    before = _tree(root)
    started = time.perf_counter()
    assert main(argv) == 2
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert_one_line_error(err, argv[0], message)
    assert _tree(root) == before, "a refused command changed files"
    # the work these commands refuse takes minutes (quantizing MiniLM, a demo, a synthesis);
    # the bound leaves room for a loaded machine
    assert elapsed < REFUSAL_S, f"refusal took {elapsed:.1f} s (the check must come before the work)"
    return err


@pytest.mark.parametrize("output, message", [
    (".", "working directory"),
    ("..", "working directory"),
    ("", "empty"),
    ("/", "working directory"),
    ("mine", "not a smartquant image"),
    ("d", "contains the input d/w.safetensors"),
    ("d/w.safetensors", "is the input"),
    ("notes.txt", "not a directory"),
    ("notes.txt/img", "is not a directory"),
])
def test_quantize_refuses_outputs_it_would_destroy(work, capsys, output, message):
    _refused(["quantize", "d/w.safetensors", "-o", output], work.parent, capsys, message)


def test_quantize_refuses_the_home_directory_and_parents_of_the_working_directory(work, capsys):
    _refused(["quantize", "d/w.safetensors", "-o", os.environ["HOME"]], work.parent, capsys, "home directory")
    _refused(["quantize", "d/w.safetensors", "-o", str(work.parent)], work.parent, capsys, "working directory")


def test_minilm_refusal_comes_before_quantizing(work, capsys):
    _refused(["quantize", "minilm", "-o", "."], work.parent, capsys, "working directory")
    _refused(["quantize", "minilm", "-o", "mine"], work.parent, capsys, "not a smartquant image")


def test_image_with_foreign_files_is_not_replaced(work, capsys):
    (work / "img" / "README").write_text("my notes on this image\n")
    _refused(["quantize", "d/w.safetensors", "-o", "img"], work.parent, capsys, "did not write (e.g. README)")


def test_symlink_output_is_refused(work, capsys):
    (work / "link").symlink_to(work / "img")
    _refused(["quantize", "d/w.safetensors", "-o", "link"], work.parent, capsys, "symbolic link")


@pytest.mark.parametrize("argv, message", [
    (["trace", "img", "-o", "img"], "is the input img"),
    (["trace", "img", "-o", "img/trace"], "inside the input img"),
    (["trace", "img", "-o", "mine"], "not a smartquant trace"),
    (["trace", "img", "-o", "."], "working directory"),
    (["read", "img", "--tensor", "w", "-o", "img"], "is the input img"),
    (["read", "img", "--tensor", "w", "-o", "img/dram.bin"], "inside the input img"),
    (["read", "img", "--tensor", "w", "-o", "mine"], "is a directory"),
    (["inspect", "img", "--json", "mine"], "is a directory"),
    (["inspect", "img", "--json", "img/manifest.json"], "inside the input img"),
    (["recipe", "d/w.safetensors", "-o", "d/w.safetensors"], "is the input"),
    (["rtl", "-o", "notes.txt"], "is not a directory"),
    (["eval", "img", "--plot", "img", "--uniform", "3"], "is the input img"),
    (["eval", "img", "--plot", "mine", "--uniform", "3"], "not a smartquant plot directory"),
    (["bench", "--plot", "mine", "--no-speed"], "not a smartquant plot directory"),
    (["bench", "--plot", "p", "--json", "p/bench.json", "--no-speed"], "contains the output p/bench.json"),
    (["synth", "--workdir", "mine"], "not a smartquant synthesis work directory"),
    (["synth", "--workdir", "."], "working directory"),
    (["regress", "img", "--keep", "img"], "inside the input img"),
    (["regress", "img", "--seeds", "1", "--keep", "."], "not a smartquant trace"),
    (["demo", "-o", "mine"], "not a smartquant demo output"),
    (["demo", "-o", ".."], "working directory"),
])
def test_every_command_refuses_before_working(work, capsys, argv, message):
    if argv[0] == "regress" and "." in argv:
        (work / "default-seed0").mkdir()
        (work / "default-seed0" / "x").write_text("mine\n")
    _refused(argv, work.parent, capsys, message)


def test_sim_refuses_waves_and_json_inside_its_trace(work, capsys):
    assert main(["trace", "img", "-o", "t"]) == 0
    _refused(["sim", "t", "--waves", "t/w.vcd"], work.parent, capsys, "inside the input t")
    _refused(["sim", "t", "--json", "t"], work.parent, capsys, "is the input t")


def test_rtl_refuses_a_directory_where_its_file_goes(work, capsys):
    (work / "v" / "smartquant_top.v").mkdir(parents=True)
    _refused(["rtl", "-o", "v"], work.parent, capsys, "is a directory")


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def test_an_image_replaces_an_earlier_image(work):
    before = json.loads((work / "img" / "manifest.json").read_text())
    assert main(["quantize", "d/w.safetensors", "-o", "img", "--format", "sym", "--method", "rtn"]) == 0
    after = json.loads((work / "img" / "manifest.json").read_text())
    assert before["tensors"][0]["symmetric"] is False and after["tensors"][0]["symmetric"] is True
    assert _siblings(work / "img") == []
    assert (work / "notes.txt").read_text() == "the user's notes\n" and (work / "mine" / "data.bin").exists()


def test_a_trace_replaces_an_earlier_trace_and_an_empty_directory_is_taken(work):
    (work / "t").mkdir()
    assert main(["trace", "img", "-o", "t", "--views", "fp16:4"]) == 0
    assert main(["trace", "img", "-o", "t", "--views", "packed:3", "--embed-image"]) == 0
    meta = json.loads((work / "t" / "trace.json").read_text())
    assert meta["image"] == "image" and (work / "t" / "image" / "dram.bin").is_file()
    assert main(["trace", "img", "-o", "t", "--views", "fp16:4"]) == 0       # the embedded image goes too
    assert not (work / "t" / "image").exists() and _siblings(work / "t") == []


def test_a_failed_quantize_leaves_the_earlier_image_byte_identical(work, monkeypatch):
    before = _tree(work)
    import safetensors.numpy

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.numpy, "save_file", disk_full)     # side.safetensors: the last file written
    with pytest.raises(OSError, match="No space"):
        main(["quantize", "d/w.safetensors", "-o", "img", "--format", "sym"])
    assert _tree(work) == before


def test_a_failed_trace_leaves_the_earlier_trace_byte_identical(work, monkeypatch, capsys):
    assert main(["trace", "img", "-o", "t"]) == 0
    before = _tree(work)
    assert main(["trace", "img", "-o", "t", "--tensors", "nope"]) == 2
    assert _tree(work) == before

    import smartquant.sw.image.trace as traces

    def broken_savez(*args, **kwargs):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(traces.np, "savez", broken_savez)
    with pytest.raises(OSError, match="Input/output"):
        main(["trace", "img", "-o", "t", "--views", "packed:2"])
    assert _tree(work) == before


def test_a_failed_rename_puts_the_old_output_back(work, monkeypatch):
    before = _tree(work)
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:                          # the new directory moving in
            raise OSError(18, "Invalid cross-device link")
        real_rename(src, dst)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="cross-device"):
        main(["quantize", "d/w.safetensors", "-o", "img", "--format", "sym"])
    assert calls[0][0] == "img" and calls[0][1].endswith(".old") and calls[1][1] == "img"
    assert _tree(work) == before


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600),
                                                        (0o002, 0o775, 0o664)])
def test_modes_follow_the_umask(work, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        assert main(["quantize", "d/w.safetensors", "-o", "img2", "--method", "rtn"]) == 0
        assert main(["inspect", "img2", "--json", "s.json"]) == 0
        assert main(["trace", "img2", "-o", "t", "--embed-image"]) == 0
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)     # noqa: E731
    assert mode(work / "img2") == dir_mode and mode(work / "t") == dir_mode and mode(work / "t" / "image") == dir_mode
    assert {mode(p) for p in (work / "img2").iterdir()} == {file_mode}
    assert mode(work / "s.json") == file_mode


def test_a_file_output_overwrites_the_named_file_atomically(work):
    (work / "s.json").write_text("old\n")
    assert main(["inspect", "img", "--json", "s.json"]) == 0
    assert json.loads((work / "s.json").read_text())["tensors"][0]["name"] == "w"
    assert _siblings(work / "s.json") == []
    with pytest.raises(RuntimeError):
        with atomic_file(work / "s.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads((work / "s.json").read_text())["tensors"][0]["name"] == "w"
    assert _siblings(work / "s.json") == []


def test_marked_kinds_list_their_files_and_refuse_additions(work):
    plots = work / "plots"
    for _ in range(2):                                   # the second run replaces the first
        with atomic_dir(plots, "plots") as tmp:
            (tmp / "a.png").write_bytes(b"png")
            (tmp / "sub").mkdir()
            (tmp / "sub" / "b.png").write_bytes(b"png")
    marker = json.loads((plots / MARKER).read_text())
    assert marker == {"format": "smartquant-plots", "files": ["a.png", "sub/b.png"]}
    (plots / "sub" / "mine.txt").write_text("x")
    with pytest.raises(Exception, match="did not write .e.g. sub/mine.txt"):
        with atomic_dir(plots, "plots") as tmp:
            pass
    assert (plots / "sub" / "mine.txt").exists() and _siblings(plots) == []
    with pytest.raises(Exception, match="not a smartquant demo output"):
        with atomic_dir(plots, "demo"):
            pass


def test_kind_formats_are_the_formats_the_writers_use():
    from smartquant.sw.image.image import DRAM_FILE, FORMAT_NAME, MANIFEST, SIDE_FILE
    from smartquant.sw.image.trace import TRACE_FORMAT
    assert (KINDS["image"].format, KINDS["image"].marker) == (FORMAT_NAME, MANIFEST)
    assert KINDS["image"].files == {MANIFEST, DRAM_FILE, SIDE_FILE}
    assert (KINDS["trace"].format, KINDS["trace"].marker) == (TRACE_FORMAT, "trace.json")
