"""The file validator (sw/image/validate.py): every known bad manifest and trace is one line and
exit 2, and hypothesis mutations of valid files (fields deleted, altered, retyped, files
truncated, bytes flipped) end in a correct result or exit 2 with one line, never a
traceback and never a wrongly shaped array."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from smartquant.cli import main
from smartquant.sim.runner import check_trace
from smartquant.errors import SmartquantError
from smartquant.spec import ScaleFormat, View
from smartquant.sw.image.golden import view_array
from smartquant.sw.image.image import Image
from smartquant.sw.quantize.quantizer import NestedRTN, StoreFormat
from smartquant.sw.image.trace import load_trace, make_trace, parse_views, save_trace

#: (name, (out, in), group size, symmetric, scale format) of the test image's tensors
TENSORS = (("a", (64, 256), 64, False, ScaleFormat.FP16),
           ("b", (3, 100), 32, True, ScaleFormat.BF16))          # in padded to 128
#: entry fields that do not change what `read --view fp16` returns
NOT_DECODED = ("rel_error", "norm", "symmetric")
HYPOTHESIS = dict(deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# --- the valid files ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    quantized = [(name, NestedRTN(StoreFormat(g, sym, fmt)).quantize(rng.standard_normal(shape) * 0.05))
                 for name, shape, g, sym, fmt in TENSORS]
    rel_errors = {name: {k: 0.5 ** k for k in range(1, 9)} for name, *_ in TENSORS}
    return Image.build(quantized, side={"bias": np.arange(4, dtype=np.float32)}, rel_errors=rel_errors,
                       norms={name: 1.0 for name, *_ in TENSORS}, info={"source": "test"})


@pytest.fixture(scope="module")
def image_dir(image, tmp_path_factory):
    return image.save(tmp_path_factory.mktemp("valid") / "img")


@pytest.fixture(scope="module")
def golden(image):
    """name -> the fp16 array `read` returns for the valid image."""
    return {name: view_array(image, name, View.FP16, 8) for name, *_ in TENSORS}


@pytest.fixture(scope="module")
def trace_dir(image, image_dir):
    trace = make_trace(image, image_dir, None, parse_views("fp16:4,packed:2,raw"), errors=3, seed=1)
    path = image_dir.parent / "trace"
    save_trace(trace, path)
    return path


def _run(args: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the CLI; any exception escaping main() fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except BaseException as exc:    # noqa: BLE001 - a traceback is exactly what must not happen
            pytest.fail(f"smartquant {' '.join(args)} raised {type(exc).__name__}: {exc}")
    return code, out.getvalue(), err.getvalue()


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("smartquant "), err
    for needle in needles:
        assert needle in err, err


# --- explicit bad manifests ----------------------------------------------------------------

def _copy_changed(source, path, name: str, change):
    """A copy of directory `source` at `path`, its JSON file `name` passed through `change`."""
    shutil.copytree(source, path)
    doc = json.loads((path / name).read_text())
    change(doc)
    (path / name).write_text(json.dumps(doc))
    return path


def _set(field, value, tensor=0):
    def change(m):
        m["tensors"][tensor][field] = value
    return change


def _overlap(m):
    m["tensors"][1]["plane_base"] = m["tensors"][0]["meta_base"] - 8


def _duplicate(m):
    m["tensors"][1]["name"] = m["tensors"][0]["name"]


def _partial_rel_error(m):
    del m["tensors"][0]["rel_error"]["5"]


def _tensors(value):
    def change(m):
        m["tensors"] = value
    return change


BAD_MANIFESTS = {
    "padded_in 100 for in 256": (_set("padded_in", 100), "padded_in 100"),
    "negative shape": (_set("shape", [-64, 256]), "shape"),
    "shape of fewer rows": (_set("shape", [8, 256]), "blocks 32 is not ceil(8 x 256"),
    "3-D shape": (_set("shape", [64, 16, 16]), "shape"),
    "float shape": (_set("shape", [64.0, 256]), "shape"),
    "group size 0": (_set("group_size", 0), "group_size 0"),
    "group size 100": (_set("group_size", 100), "group_size 100"),
    "group size true": (_set("group_size", True), "group_size True"),
    "negative plane_base": (_set("plane_base", -8), "plane_base -8"),
    "unaligned plane_base": (_set("plane_base", 4, tensor=1), "misaligned"),
    "negative meta_base": (_set("meta_base", -1), "meta_base -1"),
    "negative blocks": (_set("blocks", -1), "blocks -1"),
    "bool blocks": (_set("blocks", True), "blocks must be an integer"),
    "meta_lines off by one": (_set("meta_lines", 17), "meta_lines 17"),
    "planes past dram.bin": (_set("plane_base", 1 << 20, tensor=1), "outside"),
    "tensors [5]": (_tensors([5]), "tensor #0"),
    "tensors not a list": (_tensors({"a": 1}), "tensors must be a list"),
    "partial rel_error": (_partial_rel_error, "rel_error"),
    "nan rel_error": (_set("rel_error", {str(k): float("nan") for k in range(1, 9)}), "rel_error[1]"),
    "string norm": (_set("norm", "1.0"), "norm"),
    "overlapping regions": (_overlap, "overlaps"),
    "duplicate names": (_duplicate, "named 'a'"),
    "empty name": (_set("name", ""), "name"),
    "symmetric 'false'": (_set("symmetric", "false"), "symmetric must be true or false"),
    "unknown scale format": (_set("scale_format", "FP16"), "scale_format 'FP16'"),
    "unknown field": (_set("codebook_bas", 16), "unknown field 'codebook_bas'"),
    "missing field": (lambda m: m["tensors"][0].pop("meta_lines"), "'meta_lines' is missing"),
    "version 1.0": (lambda m: m.update(version=1.0), "version 1.0"),
    "line_bytes 32": (lambda m: m.update(line_bytes=32), "line_bytes 32"),
    "side not a list": (lambda m: m.update(side="bias"), "side"),
    "side name not stored": (lambda m: m.update(side=["bias", "gone"]), "lacks side tensor 'gone'"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_is_one_line_exit_2_and_no_output(case, image_dir, tmp_path):
    change, needle = BAD_MANIFESTS[case]
    path = _copy_changed(image_dir, tmp_path / "img", "manifest.json", change)
    for args in (["read", str(path), "--tensor", "b", "-o", str(tmp_path / "o.npy")], ["inspect", str(path)]):
        code, _, err = _run(args)
        _assert_one_line_error(code, err, "side.safetensors" if case == "side name not stored" else "manifest.json",
                               needle)
    assert not (tmp_path / "o.npy").exists()


def test_huge_recorded_errors_inspect_without_overflow(image_dir, tmp_path):
    def huge(manifest):
        for entry in manifest["tensors"]:
            entry.update(norm=1e200, rel_error={str(k): 1e154 for k in range(1, 9)})
    path = _copy_changed(image_dir, tmp_path / "img", "manifest.json", huge)
    code, out, err = _run(["inspect", str(path)])
    assert code == 0 and "inf" in out, err


def test_valid_image_reads_back_exactly(image_dir, golden, tmp_path):
    for name, shape, *_ in TENSORS:
        code, _, err = _run(["read", str(image_dir), "--tensor", name, "-o", str(tmp_path / "o.npy")])
        assert code == 0, err
        array = np.load(tmp_path / "o.npy")
        assert array.shape == shape and np.array_equal(array, golden[name])


# --- explicit bad traces -------------------------------------------------------------------

def _flip_npz_byte(path):
    data = bytearray((path / "requests.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF            # inside the `line` column: a CRC mismatch
    (path / "requests.npz").write_bytes(bytes(data))


def _rewrite_npz(path, **changes):
    with np.load(path / "requests.npz") as arrays:
        columns = {k: arrays[k] for k in arrays.files}
    columns.update(changes)
    np.savez(path / "requests.npz", **{k: v for k, v in columns.items() if v is not None})


def _json_change(change):
    def apply(path):
        meta = json.loads((path / "trace.json").read_text())
        change(meta)
        (path / "trace.json").write_text(json.dumps(meta))
    return apply


BAD_TRACES = {
    "truncated npz": (lambda p: (p / "requests.npz").write_bytes((p / "requests.npz").read_bytes()[:1000]),
                      "requests.npz: unreadable"),
    "empty npz": (lambda p: (p / "requests.npz").write_bytes(b""), "requests.npz: unreadable"),
    "corrupted npz": (_flip_npz_byte, "requests.npz: unreadable"),
    "npz without poison": (lambda p: _rewrite_npz(p, poison=None), "not addr, line, opcode, poison, tag"),
    "addr as int64": (lambda p: _rewrite_npz(p, addr=np.zeros(1, np.int64)), "addr is int64"),
    "opcode 2": (lambda p: _rewrite_npz(p, opcode=np.full(_requests(p), 2, np.uint8)),
                 "request 0: opcode 2"),
    "poison 7": (lambda p: _rewrite_npz(p, poison=np.full(_requests(p), 7, np.uint8)), "request 0: poison 7"),
    "requests count": (_json_change(lambda m: m.update(requests=m["requests"] + 1)), "segments cover"),
    "segment gap": (_json_change(lambda m: m["segments"][0].update(start=1)), "segment 0: start 1"),
    "17 regions": (_json_change(lambda m: m["segments"][0].update(regions=m["segments"][0]["regions"] * 9)),
                   "at most 16"),
    "region group size": (_json_change(lambda m: m["segments"][0]["regions"][0].update(group_size=48)),
                          "region 'a': group_size 48"),
    "region scale format name": (_json_change(lambda m: m["segments"][0]["regions"][0].update(scale_format="fp16")),
                                 "scale_format 'fp16'"),
    "dram_bytes not lines": (_json_change(lambda m: m.update(dram_bytes=m["dram_bytes"] - 1)), "multiple of 64"),
    "dram_bytes 0": (_json_change(lambda m: m.update(dram_bytes=0)), "dram_bytes 0"),
    "no image": (_json_change(lambda m: m.pop("image")), "'image' is missing"),
    "dram error past the end": (_json_change(lambda m: m.update(dram_errors=[m["dram_bytes"] // 64])),
                                "dram_errors[0]"),
    "load_via_host 'yes'": (_json_change(lambda m: m["settings"].update(load_via_host="yes")),
                            "settings.load_via_host"),
}


def _absolute_image(trace_dir):
    """A change of trace.json that names its image by absolute path (so the trace can move)."""
    def change(meta):
        meta["image"] = str((trace_dir / meta["image"]).resolve())
    return change


def _requests(path) -> int:
    return json.loads((path / "trace.json").read_text())["requests"]


@pytest.mark.parametrize("case", list(BAD_TRACES))
def test_bad_trace_is_one_line_error(case, trace_dir, tmp_path):
    damage, needle = BAD_TRACES[case]
    path = _copy_changed(trace_dir, tmp_path / "trace", "trace.json", _absolute_image(trace_dir))
    damage(path)
    with pytest.raises(SmartquantError) as info:
        load_trace(path)
    assert needle in str(info.value) and "\n" not in str(info.value), info.value
    code, _, err = _run(["sim", str(path)])     # refused before any simulator build
    _assert_one_line_error(code, err, needle)


def test_valid_trace_loads_with_dram_errors(trace_dir, image):
    meta = json.loads((trace_dir / "trace.json").read_text())
    assert meta.get("dram_errors", []) == []
    trace = load_trace(trace_dir)
    check_trace(trace_dir)
    assert trace.dram_bytes == image.dram.size and trace.segments[-1].stop == len(trace)
    _json_change(lambda m: m.update(dram_errors=[0, image.dram_lines - 1]))(trace_dir)
    try:
        assert len(load_trace(trace_dir)) == len(trace)
    finally:
        (trace_dir / "trace.json").write_text(json.dumps(meta, indent=2) + "\n")


def test_sim_check_needs_the_image_to_fill_dram_bytes(trace_dir, tmp_path):
    def grow(meta):
        _absolute_image(trace_dir)(meta)
        meta["dram_bytes"] += 64
    path = _copy_changed(trace_dir, tmp_path / "trace", "trace.json", grow)
    load_trace(path)                            # well formed on its own
    with pytest.raises(SmartquantError, match="holds"):
        check_trace(path)


# --- mutations -----------------------------------------------------------------------------

def _paths(node, prefix=()):
    """Paths (tuples of keys and indices) of every value inside a JSON document."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


def _near(value):
    """Values a field could be mistaken for: retyped, shifted, out of range."""
    options = [st.none(), st.booleans(), st.integers(-3, 3), st.integers(-2 ** 70, 2 ** 70),
               st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
               st.sampled_from(["false", "fp16", "pow2", "1", "a"]), st.lists(st.integers(-2, 300), max_size=3),
               st.just({}), st.just({"1": 0.5})]
    if type(value) is int:
        options += [st.integers(value - 70, value + 70), st.just(float(value)), st.just(str(value))] * 3
    if isinstance(value, list):
        options += [st.lists(st.integers(-1, 300), min_size=len(value), max_size=len(value))] * 3
    return st.one_of(options)


@st.composite
def json_mutation(draw, doc, extra_keys=()):
    """A copy of `doc` with one to three values deleted, replaced, duplicated or added."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key, op = path[-1], draw(st.sampled_from(["delete", "replace", "replace", "duplicate", "add"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(_near(parent[key]))
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(("extra",) + tuple(extra_keys)))] = draw(_near(0))
    return doc


def _damaged_bytes(draw, data: bytes) -> bytes:
    """`data` truncated, extended or with one byte flipped (or unchanged)."""
    how = draw(st.sampled_from(["keep", "keep", "truncate", "extend", "flip"]))
    if how == "truncate":
        return data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "extend":
        return data + bytes(draw(st.integers(1, 64)))
    if how == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data


@pytest.fixture(scope="module")
def valid_manifest(image_dir):
    return json.loads((image_dir / "manifest.json").read_text())


@settings(max_examples=500, **HYPOTHESIS)
@given(data=st.data())
def test_mutated_manifest_reads_correctly_or_fails_in_one_line(data, image_dir, valid_manifest, golden,
                                                              tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "mutated-image"
    path.mkdir(exist_ok=True)
    shutil.copyfile(image_dir / "side.safetensors", path / "side.safetensors")
    if data.draw(st.booleans()):
        text = json.dumps(data.draw(json_mutation(valid_manifest, extra_keys=("codebook_base", "info"))))
    else:
        text = json.dumps(valid_manifest)
    raw = text.encode()
    if data.draw(st.booleans()):
        raw = _damaged_bytes(data.draw, raw)
    dram = (image_dir / "dram.bin").read_bytes()
    damaged_dram = _damaged_bytes(data.draw, dram)
    (path / "manifest.json").write_bytes(raw)
    (path / "dram.bin").write_bytes(damaged_dram)
    out = path / "o.npy"
    out.unlink(missing_ok=True)

    code, _, err = _run(["inspect", str(path)])
    if code != 0:
        _assert_one_line_error(code, err)
    for name, *_ in TENSORS:
        code, _, err = _run(["read", str(path), "--tensor", name, "-o", str(out)])
        event(f"read exit {code}")
        if code != 0:
            _assert_one_line_error(code, err)
            assert not out.exists()
            continue
        entry = next(t for t in json.loads(raw)["tensors"] if t["name"] == name)
        array = np.load(out)
        assert array.shape == tuple(entry["shape"]) and array.dtype == np.float16
        original = next(t for t in valid_manifest["tensors"] if t["name"] == name)
        decoded_fields_kept = ({k: v for k, v in entry.items() if k not in NOT_DECODED}
                               == {k: v for k, v in original.items() if k not in NOT_DECODED})
        if decoded_fields_kept and damaged_dram == dram:
            event("read compared with the golden decoder")
            assert np.array_equal(array, golden[name], equal_nan=True)
        out.unlink()


def _npz_bytes(columns: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **columns)
    return buffer.getvalue()


@st.composite
def column_mutation(draw, columns: dict):
    """A copy of the request columns with one deleted, added, retyped, reshaped or given
    an out-of-range (or a harmless) value."""
    columns = dict(columns)
    name = draw(st.sampled_from(sorted(columns)))
    column = columns[name]
    op = draw(st.sampled_from(["delete", "add", "retype", "shorten", "reshape", "value", "value"]))
    if op == "delete":
        del columns[name]
    elif op == "add":
        columns["extra"] = column
    elif op == "retype":
        columns[name] = column.astype(draw(st.sampled_from([np.int8, np.uint16, np.int64, np.float32, ">u8", bool])))
    elif op == "shorten":
        columns[name] = column[:draw(st.integers(0, len(column) - 1))]
    elif op == "reshape":
        columns[name] = column.reshape(len(column), -1)[:, :1] if column.ndim == 1 else column.reshape(-1)
    else:
        column = column.copy()
        index = draw(st.integers(0, len(column) - 1))
        limit = int(np.iinfo(column.dtype).max)
        column[index] = draw(st.integers(0, limit)) if column.ndim == 1 else draw(st.integers(0, 255))
        columns[name] = column
    return columns


@pytest.fixture(scope="module")
def valid_trace(trace_dir):
    meta = json.loads((trace_dir / "trace.json").read_text())
    _absolute_image(trace_dir)(meta)
    with np.load(trace_dir / "requests.npz") as arrays:
        columns = {k: arrays[k] for k in arrays.files}
    return meta, columns


def _assert_well_formed(trace, meta: dict) -> None:
    """What every loaded trace guarantees the bench."""
    n = len(trace)
    assert n == meta["requests"]
    for name, dtype, shape in (("opcode", np.uint8, (n,)), ("tag", np.uint8, (n,)), ("addr", np.uint64, (n,)),
                               ("line", np.uint8, (n, 64)), ("poison", np.uint8, (n,))):
        column = getattr(trace, name)
        assert column.dtype == dtype and column.shape == shape, name
    assert np.isin(trace.opcode, [0, 1]).all() and (trace.poison <= 1).all() and (trace.addr < 1 << 40).all()
    assert [s.start for s in trace.segments] == [0] + [s.stop for s in trace.segments[:-1]]
    assert (trace.segments[-1].stop if trace.segments else 0) == n
    assert all(len(s.regions) <= 16 for s in trace.segments)
    assert trace.dram_bytes > 0 and trace.dram_bytes % 64 == 0


@settings(max_examples=250, **HYPOTHESIS)
@given(data=st.data())
def test_mutated_trace_loads_correctly_or_fails_in_one_line(data, valid_trace, tmp_path_factory):
    meta, columns = valid_trace
    path = tmp_path_factory.getbasetemp() / "mutated-trace"
    path.mkdir(exist_ok=True)
    where = data.draw(st.sampled_from(["json", "columns", "npz bytes", "json", "columns"]))
    mutated_meta = data.draw(json_mutation(meta, extra_keys=("dram_errors", "codebook_base"))) \
        if where == "json" else meta
    mutated_columns = data.draw(column_mutation(columns)) if where == "columns" else columns
    npz = _npz_bytes(mutated_columns)
    if where == "npz bytes":
        npz = _damaged_bytes(data.draw, npz)
    (path / "trace.json").write_text(json.dumps(mutated_meta))
    (path / "requests.npz").write_bytes(npz)
    try:
        trace = load_trace(path)
    except SmartquantError as exc:
        event(f"{where}: refused")
        assert "\n" not in str(exc) and str(path) in str(exc), exc
        code, _, err = _run(["sim", str(path)])     # the CLI refuses it before building anything
        _assert_one_line_error(code, err)
        return
    event(f"{where}: loaded")
    _assert_well_formed(trace, mutated_meta)
    if where != "columns":
        for name, column in columns.items():
            assert np.array_equal(getattr(trace, name), column), name
    try:
        check_trace(path)
    except SmartquantError as exc:
        assert "\n" not in str(exc)


def test_npz_of_another_archive_is_refused(valid_trace, tmp_path):
    """A zip that is not numpy's (text files named like the columns) is a one-line error."""
    meta, columns = valid_trace
    (tmp_path / "trace.json").write_text(json.dumps(meta))
    with zipfile.ZipFile(tmp_path / "requests.npz", "w") as archive:
        for name in columns:
            archive.writestr(f"{name}.npy", "not an array")
    with pytest.raises(SmartquantError, match="is not a .npy array"):
        load_trace(tmp_path)
