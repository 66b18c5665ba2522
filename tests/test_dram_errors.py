"""DRAM read errors (AXI SLVERR): the golden rule of which responses they poison
(sw/image/dram_errors.py), `smartquant trace --dram-errors`, and co-verification of the rule
on every simulator backend."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from smartquant.cli import main
from smartquant.errors import SmartquantError
from smartquant.sim.runner import SimOptions, run_trace
from smartquant.sim import fast_harness, runner
from smartquant.spec import PLANE_SLOTS, PLANES, Opcode, View, host_line_address, split_host_line_address
from smartquant.sw.image import golden
from smartquant.sw.image.dram_errors import meta_line_of
from smartquant.sw.image.trace import (Segment, Trace, expect_dram_errors, load_trace, make_trace, parse_views,
                                 region_of, save_trace, trace_sources)

STALLY = dict(stall=0.25, read_latency=24)


# --- the rule, on hand-made request sequences, and the RTL agreeing -------------------

def _read(entry, view, k, block=0, line=0):
    return Opcode.MEM_RD, host_line_address(view, k, golden.view_offset(entry, view, k, block, line))


def _raw(opcode, line):
    """A raw read, or a raw write (of the line's own data, see `case_trace`)."""
    return opcode, host_line_address(View.RAW, 0, line)


BAD = (Opcode.MEM_RD, host_line_address(View.PACKED, 0, 0))      #: k = 0: a decoder error


def case_trace(image, image_path, requests) -> Trace:
    """`requests` ((opcode, addr)) as a one-segment trace over every tensor of `image`: reads
    expect the golden response, writes write the line's own data (so reads see the same image)."""
    opcode = np.array([op for op, _ in requests], np.uint8)
    addr = np.array([a for _, a in requests], np.uint64)
    lines, poison = [], []
    for op, a in requests:
        if op == Opcode.MEM_WR:
            data, bad = image.lines(split_host_line_address(a)[2], 1).tobytes(), False
        else:
            data, bad = golden.response_line(image, a)
        lines.append(np.frombuffer(data, np.uint8))
        poison.append(bad)
    return Trace(Path(image_path), image.dram.size, {}, [Segment([region_of(e) for e in image.entries], 0, len(requests))],
                 opcode, (np.arange(len(requests)) % 256).astype(np.uint8), addr, np.stack(lines),
                 np.array(poison, np.uint8))


def _poison(image, requests, error_lines):
    """Expected DRAM-error poison of `requests` ((opcode, addr)) under a region table of every tensor."""
    trace = case_trace(image, "unused", requests)
    return trace_sources(trace).poisoned(error_lines).astype(int).tolist()


def rule_cases(image):
    """name -> (requests, error lines, expected DRAM-error poison) on `image`'s first tensor
    (affine) and, for a table-lookup image, its first LUT tensor."""
    entry = next(e for e in image.entries if e.codebook_base is None)
    deep = entry.plane_base + 5             # plane line 5 of block 0: inside a k=8 burst, not a k=3 one
    packed8, packed3 = _read(entry, View.PACKED, 8, line=7), _read(entry, View.PACKED, 3, line=1)
    meta_block = entry.plane_base // PLANES + 1
    meta = meta_line_of(region_of(entry), meta_block)
    filler = _raw(Opcode.MEM_RD, entry.plane_base + PLANES)     # a clean line: raw reads take slots
    cases = {
        "k=3 reuses the k=8 burst": ([packed8, packed3], [deep], [1, 1]),
        "k=8 after k=3 fetches again": ([packed3, packed8], [deep], [0, 1]),
        "the k=8 burst replaces the k=3 one": ([packed3, packed8, packed3], [deep], [0, 1, 1]),
        "a raw read keeps the burst": ([packed8, _raw(Opcode.MEM_RD, entry.meta_base), packed3], [deep], [1, 0, 1]),
        "a raw write elsewhere keeps the burst": (
            [packed8, _raw(Opcode.MEM_WR, entry.meta_base), packed3], [deep], [1, 0, 1]),
        "a raw write into the burst invalidates it": (
            [packed8, _raw(Opcode.MEM_WR, entry.plane_base + 1), packed3], [deep], [1, 0, 0]),
        "another block in between keeps it": ([packed8, _read(entry, View.PACKED, 3, block=1), packed3], [deep], [1, 0, 1]),
        "resident until PLANE_SLOTS fetches later": (
            [packed8] + [filler] * (PLANE_SLOTS - 1) + [packed3], [deep], [1] + [0] * (PLANE_SLOTS - 1) + [1]),
        "replaced by the PLANE_SLOTS-th fetch": (
            [packed8] + [filler] * PLANE_SLOTS + [packed3], [deep], [1] + [0] * PLANE_SLOTS + [0]),
        "a bad request fetches nothing": ([packed8, BAD, packed3], [deep], [1, 0, 1]),
        "a raw read of the line": ([_raw(Opcode.MEM_RD, deep)], [deep], [1]),
        "metadata poisons dequantized reads only": (
            [_read(entry, View.FP16, 4, block=1), _read(entry, View.PACKED, 4, block=1),
             _read(entry, View.BF16, 2, block=1, line=15), _read(entry, View.FP16, 4, block=0)], [meta], [1, 0, 1, 0]),
    }
    lut = next((e for e in image.entries if e.codebook_base is not None), None)
    if lut is not None:
        # the burst's slot comes round again just when the table load takes a slot
        lut_filler = _raw(Opcode.MEM_RD, lut.plane_base + PLANES)
        cases["a table load takes a slot before the read's own lookup"] = (
            [_read(lut, View.PACKED, 8)] + [lut_filler] * (PLANE_SLOTS - 1)
            + [_read(lut, View.FP16, 3), _read(lut, View.PACKED, 8, line=6), _read(lut, View.PACKED, 2),
               _read(lut, View.FP16, 2)],
            [lut.plane_base + 5], [1] + [0] * (PLANE_SLOTS - 1) + [0, 1, 1, 1])
    return cases


@pytest.mark.parametrize("image_name", ["tiny_image", "lut_image"])
def test_rule_cases(image_name, request):
    image = request.getfixturevalue(image_name)
    for name, (requests, error_lines, expected) in rule_cases(image).items():
        assert _poison(image, requests, error_lines) == expected, name


def test_rule_matches_the_rtl_on_every_case(lut_image, tmp_path):
    """All cases in one trace, replayed on the RTL (Amaranth backend, random stalls): every
    response's poison is the rule's, the rest answer the golden data, the CSR counters agree."""
    lut_image.save(tmp_path / "image")
    requests, error_lines = [], set()
    for case_requests, lines, _ in rule_cases(lut_image).values():
        requests += case_requests
        error_lines |= set(lines)
    trace = case_trace(lut_image, tmp_path / "image", requests)
    bad = int(trace.poison.sum())
    expect_dram_errors(trace, sorted(error_lines), trace_sources(trace))
    assert trace.poison.sum() - bad >= 8
    save_trace(trace, tmp_path / "trace")
    stats = run_trace(tmp_path / "trace", SimOptions(simulator="amaranth", seed=1, **STALLY))
    assert stats["passed"], stats["error"]
    assert stats["poisoned"] == trace.poison.sum() and stats["counters"]["errors_dram_error"] == trace.poison.sum() - bad


# --- smartquant trace --dram-errors ---------------------------------------------------

def small_trace(image, image_dir, seed: int, dram_errors: int = 0):
    """A two-block tensor with a metadata line per block, deep and shallow views in random order
    (bursts reused at lower k) and raw, two bad requests: 72 requests."""
    name = next(e.name for e in image.entries if e.blocks == 2 and e.group_size == 32)
    return make_trace(image, image_dir, [name], parse_views("packed:8,fp16:3,packed:2,raw"), "random",
                      errors=2, seed=seed, dram_errors=dram_errors)


def test_trace_dram_errors_poison_exactly_the_rule(tiny_image, tiny_image_dir, tmp_path):
    clean = small_trace(tiny_image, tiny_image_dir, seed=3)
    trace = small_trace(tiny_image, tiny_image_dir, seed=3, dram_errors=4)
    assert np.array_equal(trace.addr, clean.addr) and np.array_equal(trace.opcode, clean.opcode)
    sources = trace_sources(clean)
    assert len(trace.dram_errors) == 4 and set(trace.dram_errors) <= set(sources.lines().tolist())
    failed = sources.poisoned(trace.dram_errors)
    assert failed.any() and not (failed & clean.poison.astype(bool)).any()
    assert np.array_equal(trace.poison, clean.poison | failed)
    assert not trace.line[failed].any()
    assert np.array_equal(trace.line[~failed], clean.line[~failed])
    save_trace(trace, tmp_path / "t")
    assert load_trace(tmp_path / "t").dram_errors == trace.dram_errors
    with pytest.raises(SmartquantError, match="fetch only"):
        small_trace(tiny_image, tiny_image_dir, seed=3, dram_errors=10_000)


def test_trace_cli_writes_dram_errors(tiny_image_dir, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["trace", str(tiny_image_dir), "-o", str(out), "--views", "fp16:2", "--dram-errors", "2",
                 "--seed", "5"]) == 0
    trace = load_trace(out)
    assert len(trace.dram_errors) == 2 and trace.poison.sum() > 0
    assert trace.settings["dram_errors"] == 2


# --- options and traces checked before any simulator starts -------------------------

BAD_OPTIONS = [
    (["sim", "T", "--stall", "-1"], "argument --stall: must be in [0, 1), got -1"),
    (["sim", "T", "--stall", "1.0"], "argument --stall: must be in [0, 1), got 1.0"),
    (["sim", "T", "--stall", "nan"], "argument --stall: must be in [0, 1)"),
    (["sim", "T", "--read-latency", "-5"], "argument --read-latency: must be >= 0, got -5"),
    (["sim", "T", "--max-in-flight", "0"], "argument --max-in-flight: must be >= 1, got 0"),
    (["sim", "T", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["sim", "T", "--seed", "1.5"], "argument --seed: expected an integer, got '1.5'"),
    (["trace", "I", "-o", "O", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["trace", "I", "-o", "O", "--dram-errors", "-2"], "argument --dram-errors: must be >= 0, got -2"),
    (["trace", "I", "-o", "O", "--errors", "-1"], "argument --errors: must be >= 0, got -1"),
    (["regress", "I", "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    (["regress", "I", "--first-seed", "-3"], "argument --first-seed: must be >= 0, got -3"),
    (["bench", "--stall", "2"], "argument --stall: must be in [0, 1), got 2"),
    (["bench", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
]


@pytest.mark.parametrize("argv,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"smartquant {argv[0]}: error: {message}"), err


def _corrupt(path):
    data = (path / "requests.npz").read_bytes()
    return {
        "truncated": data[:len(data) // 2],
        "garbage": b"\x00not a zip" * 50,
        "empty": b"",
        "bit-flipped": data[:30] + bytes([data[30] ^ 0xFF]) + data[31:],
    }


@pytest.mark.parametrize("simulator", ["verilator", "amaranth"])
def test_a_corrupted_trace_fails_at_once(tiny_image, tiny_image_dir, tmp_path, simulator, capsys, monkeypatch):
    def no_simulator(*args, **kwargs):
        raise AssertionError("a simulator was started")
    monkeypatch.setattr(runner, "build", no_simulator)
    monkeypatch.setattr(runner, "_run_amaranth", no_simulator)
    monkeypatch.setattr(fast_harness, "run_trace_fast", no_simulator)
    source = tmp_path / "good"
    save_trace(small_trace(tiny_image, tiny_image_dir, seed=1), source)
    for name, data in _corrupt(source).items():
        path = tmp_path / name
        shutil.copytree(source, path)
        (path / "requests.npz").write_bytes(data)
        code = main(["sim", str(path), "--sim", simulator])
        err = capsys.readouterr().err
        assert code == 2, (name, code)
        assert err.count("\n") == 1 and err.startswith("smartquant sim: error: ") and "requests.npz" in err, err


# --- co-verification on every backend -------------------------------------------------

def discriminating_errors(trace):
    """A plane line that only a reused, deeper burst holds (some read is poisoned by it although
    its own top-k lines are clean) and a metadata line of a dequantized read."""
    sources = trace_sources(trace)
    for i in np.flatnonzero(sources.plane_lines > 0):
        view, k, _ = split_host_line_address(int(trace.addr[i]))
        if view != View.RAW and sources.plane_lines[i] > k:
            deep = int(sources.plane_first[i] + sources.plane_lines[i] - 1)
            break
    else:
        raise AssertionError("the trace reuses no deeper burst")
    meta = int(sources.meta_line[sources.meta_line >= 0][0])
    return [deep, meta], sources


@pytest.fixture(scope="module")
def error_trace(tiny_image, tiny_image_dir, tmp_path_factory):
    """A small trace with DRAM errors on a line reached only through burst reuse and a metadata line."""
    trace = small_trace(tiny_image, tiny_image_dir, seed=7)
    bad_requests = trace.poison.astype(bool)
    lines, sources = discriminating_errors(trace)
    expect_dram_errors(trace, lines, sources)
    path = tmp_path_factory.mktemp("dram-errors") / "t"
    save_trace(trace, path, embed_image=True)
    return path, trace, bad_requests


# Icarus runs the same trace in the slow sweep: the default run has Icarus in test_sim_cocotb.py
@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.slow), "amaranth"])
def test_dram_errors_coverify(error_trace, simulator, request):
    if simulator == "icarus":
        request.getfixturevalue("iverilog")        # skips with the reason where Icarus is missing
    path, trace, bad_requests = error_trace
    stats = run_trace(path, SimOptions(simulator=simulator, seed=2, **STALLY))
    assert stats["passed"], stats["error"]
    assert stats["mismatches"] == 0 and stats["lines_compared"] == len(trace)
    assert stats["poisoned"] == int(trace.poison.sum()) > bad_requests.sum()
    assert stats["counters"]["errors_dram_error"] == int(trace.poison.sum() - bad_requests.sum())


def test_a_missing_expected_poison_is_reported(error_trace, tmp_path, capsys):
    source, trace, bad_requests = error_trace
    path = tmp_path / "dropped"
    shutil.copytree(source, path)
    index = int(np.flatnonzero(trace.poison.astype(bool) & ~bad_requests)[-1])     # a DRAM-error poison
    poison = trace.poison.copy()
    poison[index] = 0
    np.savez(path / "requests.npz", **{c: getattr(trace, c) for c in ("opcode", "tag", "addr", "line")},
             poison=poison)
    assert main(["sim", str(path), "--seed", "3", "--stall", "0.1"]) == 1
    err = capsys.readouterr().err
    assert f"request {index} tag {trace.tag[index]} MemRd" in err and "poison 1, expected 0" in err
