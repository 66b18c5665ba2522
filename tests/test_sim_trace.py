"""Golden trace format and generator (sw/image/trace.py): no simulator involved."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from smartquant import spec
from smartquant.errors import SmartquantError
from smartquant.spec import Opcode, View
from smartquant.sw.image import golden
from smartquant.sw.image.trace import (ERROR_KINDS, ORDERS, interleaved_streams, load_trace, make_trace,
                                       parse_order, parse_views, save_trace, windowed_shuffle)

ALL_VIEWS = "packed:3,fp16:4,bf16:2,raw"


def symmetric_names(image):
    return [e.name for e in image.entries if e.symmetric]


def test_every_expected_read_is_the_golden_response(tiny_image, tiny_image_dir):
    trace = make_trace(tiny_image, tiny_image_dir, None, parse_views(ALL_VIEWS), "random", errors=10, seed=3)
    reads = np.flatnonzero(trace.opcode == Opcode.MEM_RD)
    assert len(reads) > 100
    for i in reads:
        data, poison = golden.response_line(tiny_image, int(trace.addr[i]))
        assert poison == bool(trace.poison[i]), trace.describe(i)
        if not poison:
            assert data == trace.line[i].tobytes(), trace.describe(i)


def test_trace_reads_every_line_of_each_tensor_once_per_view(tiny_image, tiny_image_dir):
    views = parse_views("packed:2,int8:8")
    trace = make_trace(tiny_image, tiny_image_dir, None, views, int8_symmetric_only=True)
    expected = sum(e.blocks * spec.lines_per_block(v, k) for e in tiny_image.entries for v, k in views
                   if v != View.INT8 or e.symmetric)
    assert len(trace) == expected == len(set(trace.addr.tolist()))
    assert not trace.poison.any()
    assert symmetric_names(tiny_image) and len(symmetric_names(tiny_image)) < len(tiny_image.entries)


@given(order=st.sampled_from(ORDERS + ("streams:1", "streams:3", "streams:16", "window:1", "window:5")),
       seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_orders_are_permutations_of_sequential(tiny_image, tiny_image_dir, order, seed):
    views = parse_views("fp16:3,packed:8")
    base = make_trace(tiny_image, tiny_image_dir, None, views, "sequential")
    other = make_trace(tiny_image, tiny_image_dir, None, views, order, seed=seed)
    assert sorted(base.addr.tolist()) == sorted(other.addr.tolist())
    lookup = {int(a): line.tobytes() for a, line in zip(base.addr, base.line)}
    assert all(lookup[int(a)] == line.tobytes() for a, line in zip(other.addr, other.line))


def test_streams_read_their_own_ranges_round_robin():
    assert interleaved_streams(7, 3).tolist() == [0, 3, 5, 1, 4, 6, 2]      # ranges 0-2, 3-4, 5-6
    assert interleaved_streams(5, 1).tolist() == [0, 1, 2, 3, 4]
    assert interleaved_streams(2, 4).tolist() == [0, 1]                     # two streams stay empty


def test_streams_order_interleaves_contiguous_ranges(tiny_image, tiny_image_dir):
    views = parse_views("fp16:4")
    base = make_trace(tiny_image, tiny_image_dir, None, views, "sequential")
    streams = make_trace(tiny_image, tiny_image_dir, None, views, "streams:4")
    n = len(base)
    starts = [len(r) and r[0] for r in np.array_split(np.arange(n), 4)]
    assert streams.addr[:4].tolist() == base.addr[starts].tolist()         # each stream's first line
    assert streams.addr[4:8].tolist() == base.addr[[s + 1 for s in starts]].tolist()
    assert streams.settings["order"] == "streams:4"


def test_window_shuffles_only_inside_windows_and_is_seeded(tiny_image, tiny_image_dir):
    entry = tiny_image.entries[0]
    views = parse_views("packed:3")
    lines_per_window = 2 * spec.lines_per_block(View.PACKED, 3)
    base = make_trace(tiny_image, tiny_image_dir, [entry.name], views, "sequential")
    shuffled = make_trace(tiny_image, tiny_image_dir, [entry.name], views, "window:2", seed=5)
    assert not np.array_equal(base.addr, shuffled.addr)
    for start in range(0, len(base), lines_per_window):
        window = slice(start, start + lines_per_window)
        assert sorted(shuffled.addr[window].tolist()) == base.addr[window].tolist()
    again = make_trace(tiny_image, tiny_image_dir, [entry.name], views, "window:2", seed=5)
    other = make_trace(tiny_image, tiny_image_dir, [entry.name], views, "window:2", seed=6)
    assert np.array_equal(again.addr, shuffled.addr) and not np.array_equal(other.addr, shuffled.addr)
    rng = np.random.default_rng(0)
    assert windowed_shuffle(10, 4, rng)[8:].tolist() in ([8, 9], [9, 8])   # a short last window


@pytest.mark.parametrize("text, message", [
    ("zigzag", "unknown order 'zigzag'"), ("streams", "needs a whole number"), ("streams:x", "needs a whole number"),
    ("streams:0", "S must be >= 1"), ("window:-2", "W must be >= 1"), ("random:3", "unknown order"),
    ("window:", "needs a whole number")])
def test_bad_orders_are_one_line_errors(text, message):
    with pytest.raises(SmartquantError, match=message):
        parse_order(text)


def test_orders_parse():
    assert [parse_order(t) for t in ("sequential", "random", "streams:16", "window:128")] == [
        ("sequential", 0), ("random", 0), ("streams", 16), ("window", 128)]


def test_strided_visits_line_j_of_every_block_first(tiny_image, tiny_image_dir):
    entry = tiny_image.entries[0]
    trace = make_trace(tiny_image, tiny_image_dir, [entry.name], parse_views("fp16:4"), "strided")
    offsets = [spec.split_host_line_address(int(a))[2] for a in trace.addr[:entry.blocks]]
    first = entry.plane_base // spec.PLANES * 16
    assert offsets == [first + 16 * b for b in range(entry.blocks)]


def test_errors_are_poisoned_and_cover_every_kind(tiny_image, tiny_image_dir):
    errors = 4 * len(ERROR_KINDS)
    trace = make_trace(tiny_image, tiny_image_dir, None, parse_views("packed:4"), "sequential",
                       errors=errors, seed=7)
    assert int(trace.poison.sum()) == errors
    bad = np.flatnonzero(trace.poison)
    views = {spec.split_host_line_address(int(a))[0] for a in trace.addr[bad]}
    ks = {spec.split_host_line_address(int(a))[1] for a in trace.addr[bad]}
    assert (trace.opcode[bad] == Opcode.MEM_WR).any()                    # write to a quantized view
    assert View.INT8 in views                                             # int8 of an asymmetric tensor
    assert ks & ({0} | set(range(spec.CODE_BITS + 1, 16)))                # bad k


def test_load_via_host_prologue_writes_the_whole_image(tiny_image, tiny_image_dir):
    trace = make_trace(tiny_image, tiny_image_dir, None, parse_views("packed:1"), load_via_host=True)
    lines = tiny_image.dram.size // spec.LINE_BYTES
    assert (trace.opcode[:lines] == Opcode.MEM_WR).all()
    assert [spec.split_host_line_address(int(a)) for a in trace.addr[:lines]] == \
        [(View.RAW, 0, i) for i in range(lines)]
    assert trace.line[:lines].tobytes() == tiny_image.dram.tobytes()
    assert trace.segments[0].start == 0


def test_more_tensors_than_regions_split_into_segments(tiny_image, tiny_image_dir, monkeypatch):
    monkeypatch.setattr(spec, "MAX_REGIONS", 2)
    trace = make_trace(tiny_image, tiny_image_dir, None, parse_views("packed:2"), errors=3)
    sizes = [len(s.regions) for s in trace.segments]
    assert max(sizes) == 2 and sum(sizes) == len(tiny_image.entries)
    assert [s.start for s in trace.segments[1:]] == [s.stop for s in trace.segments[:-1]]
    assert trace.segments[0].start == 0 and trace.segments[-1].stop == len(trace)
    for segment in trace.segments:
        names = {r["name"] for r in segment.regions}
        for i in range(segment.start, segment.stop):
            if not trace.poison[i]:
                view, k, offset = spec.split_host_line_address(int(trace.addr[i]))
                block = offset // spec.lines_per_block(View(view), k)
                owner = next(e for e in tiny_image.entries
                             if e.plane_base // 8 <= block < e.plane_base // 8 + e.blocks)
                assert owner.name in names


def test_save_load_round_trip_with_relative_and_embedded_image(tiny_image, tiny_image_dir, tmp_path):
    trace = make_trace(tiny_image, tiny_image_dir, None, parse_views("bf16:8"), "random", errors=2, seed=1)
    for embed in (False, True):
        out = tmp_path / f"trace{embed}"
        save_trace(trace, out, embed_image=embed)
        meta = json.loads((out / "trace.json").read_text())
        assert meta["version"] == 1 and meta["requests"] == len(trace)
        assert (meta["image"] == "image") == embed
        back = load_trace(out)
        for column in ("opcode", "tag", "addr", "line", "poison"):
            assert np.array_equal(getattr(back, column), getattr(trace, column)), column
        assert np.array_equal(back.load_image().dram, tiny_image.dram)
        assert back.segments == trace.segments


@pytest.mark.parametrize("text", ["", "fp32:4", "fp16", "packed:9", "int8:0", "packed:x"])
def test_bad_views_are_one_line_errors(text):
    with pytest.raises(SmartquantError):
        parse_views(text)


def test_bad_inputs_are_one_line_errors(tiny_image, tiny_image_dir, tmp_path):
    with pytest.raises(SmartquantError, match="unknown tensor"):
        make_trace(tiny_image, tiny_image_dir, ["nope"], parse_views("packed:2"))
    asymmetric = [e.name for e in tiny_image.entries if not e.symmetric]
    with pytest.raises(SmartquantError, match="asymmetric"):
        make_trace(tiny_image, tiny_image_dir, asymmetric, parse_views("int8:4"))
    with pytest.raises(SmartquantError, match="order"):
        make_trace(tiny_image, tiny_image_dir, None, parse_views("packed:2"), order="zigzag")
    with pytest.raises(SmartquantError, match="no trace.json"):
        load_trace(tmp_path)
    out = tmp_path / "t"
    save_trace(make_trace(tiny_image, tiny_image_dir, None, parse_views("packed:2")), out)
    meta = json.loads((out / "trace.json").read_text())
    (out / "trace.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(SmartquantError, match="version 99"):
        load_trace(out)
