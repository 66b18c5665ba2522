"""Memory image: bit-plane packing, metadata, layout, save/load and its errors."""

import json

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from smartquant.errors import SmartquantError
from smartquant.spec import BLOCK_WEIGHTS, GROUPS_PER_META_LINE, LINE_BYTES, PLANES
from smartquant.sw.image.image import (Image, PAD_CODE, pack_metadata, pack_planes, unpack_metadata,
                                 unpack_planes)

codes_strategy = st.integers(1, 3).flatmap(
    lambda blocks: arrays(np.uint8, blocks * BLOCK_WEIGHTS))


@given(codes_strategy)
def test_pack_unpack_round_trip(codes):
    planes = pack_planes(codes)
    assert len(planes) == codes.size // BLOCK_WEIGHTS * PLANES * LINE_BYTES
    np.testing.assert_array_equal(unpack_planes(planes), codes)


@given(codes_strategy, st.integers(1, 8))
def test_unpack_top_k_planes_is_the_code_with_low_bits_cleared(codes, k):
    mask = (0xFF << (8 - k)) & 0xFF
    np.testing.assert_array_equal(unpack_planes(pack_planes(codes), k), codes & mask)


@given(st.integers(0, BLOCK_WEIGHTS - 1), st.integers(0, 7))
def test_plane_bit_position(weight, bit):
    """Weight i, bit b lands in line 7-b, byte i//8, bit i%8 (DESIGN.md section 3)."""
    codes = np.zeros(BLOCK_WEIGHTS, np.uint8)
    codes[weight] = 1 << bit
    lines = np.frombuffer(pack_planes(codes), np.uint8).reshape(PLANES, LINE_BYTES)
    expected = np.zeros_like(lines)
    expected[7 - bit, weight // 8] = 1 << (weight % 8)
    np.testing.assert_array_equal(lines, expected)


@given(st.integers(1, 70).flatmap(lambda n: st.tuples(
    arrays(np.uint16, n), arrays(np.uint8, n))))
def test_metadata_round_trip_and_layout(pair):
    scales, zeros = pair
    meta = pack_metadata(scales, zeros, scales.size)
    assert len(meta) == -(-scales.size // GROUPS_PER_META_LINE) * LINE_BYTES
    back_scales, back_zeros = unpack_metadata(meta, scales.size)
    np.testing.assert_array_equal(back_scales, scales)
    np.testing.assert_array_equal(back_zeros, zeros)
    slots = np.frombuffer(meta, np.uint8).reshape(-1, 4)
    assert (slots[:, 3] == 0).all() and (slots[scales.size:] == 0).all()
    assert int(slots[0, 0]) | (int(slots[0, 1]) << 8) == int(scales[0])    # little-endian scale


def test_layout_regions_are_aligned_and_disjoint(tiny_image, tiny_quantized):
    used = np.zeros(tiny_image.dram_lines, bool)
    for e, qt in zip(tiny_image.entries, tiny_quantized.values()):
        assert e.plane_base % PLANES == 0
        assert e.meta_base == e.plane_base + e.blocks * PLANES
        assert e.blocks == -(-qt.codes.size // BLOCK_WEIGHTS)
        assert e.meta_lines == -(-e.groups // GROUPS_PER_META_LINE)
        assert e.groups * e.group_size == e.blocks * BLOCK_WEIGHTS
        region = slice(e.plane_base, e.meta_base + e.meta_lines)
        assert not used[region].any()
        used[region] = True


def test_image_holds_codes_metadata_and_padding(tiny_image, tiny_quantized):
    for e, qt in zip(tiny_image.entries, tiny_quantized.values()):
        codes = unpack_planes(tiny_image.lines(e.plane_base, e.blocks * PLANES))
        n = qt.codes.size
        np.testing.assert_array_equal(codes[:n], qt.codes.reshape(-1))
        assert (codes[n:] == PAD_CODE).all()
        scales, zeros = unpack_metadata(tiny_image.lines(e.meta_base, e.meta_lines).tobytes(), e.groups)
        g = qt.scale_bits.size
        np.testing.assert_array_equal(scales[:g], qt.scale_bits.reshape(-1))
        np.testing.assert_array_equal(zeros[:g], qt.zeros.reshape(-1))
        assert (scales[g:] == 0).all()


def test_save_load_round_trip(tiny_image, tmp_path):
    tiny_image.save(tmp_path / "img")
    back = Image.load(tmp_path / "img")
    assert back.entries == tiny_image.entries
    np.testing.assert_array_equal(back.dram, tiny_image.dram)
    np.testing.assert_array_equal(back.side["bias"], tiny_image.side["bias"])
    manifest = json.loads((tmp_path / "img" / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["tensors"][0]["name"] == tiny_image.entries[0].name


def test_unknown_tensor_name_is_an_error(tiny_image):
    with pytest.raises(SmartquantError, match="unknown tensor 'nope'"):
        tiny_image.entry("nope")


def _saved(image, path):
    image.save(path)
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "dram.bin").write_bytes((p / "dram.bin").read_bytes()[:-1]), "truncated"),
    (lambda p: (p / "dram.bin").unlink(), "missing"),
    (lambda p: (p / "manifest.json").unlink(), "not an image"),
    (lambda p: (p / "manifest.json").write_text("{"), "unreadable manifest"),
    (lambda p: (p / "manifest.json").write_text(
        (p / "manifest.json").read_text().replace('"version": 1', '"version": 7')), "unsupported image version 7"),
])
def test_damaged_image_is_a_one_line_error(tiny_image, tmp_path, damage, message):
    path = _saved(tiny_image, tmp_path / "img")
    damage(path)
    with pytest.raises(SmartquantError, match=message) as info:
        Image.load(path)
    assert "\n" not in str(info.value)


def test_duplicate_names_are_an_error(tiny_quantized):
    qt = next(iter(tiny_quantized.values()))
    with pytest.raises(SmartquantError, match="twice"):
        Image.build([("a", qt), ("a", qt)])


def _lut_image():
    from smartquant.sw.quantize.codebook import CodebookQuantizer
    rng = np.random.default_rng(2)
    lut = CodebookQuantizer(64).quantize(rng.standard_normal((8, 128)) * 0.05)
    return Image.build([("lut.weight", lut)]), lut


def test_codebook_tensor_gets_an_aligned_table_set(tmp_path):
    from smartquant.spec import CODEBOOK_LINES
    image, lut = _lut_image()
    entry = image.entry("lut.weight")
    assert entry.codebook_base % CODEBOOK_LINES == 0
    assert entry.codebook_base >= entry.meta_base + entry.meta_lines
    assert image.dram_lines == entry.codebook_base + CODEBOOK_LINES
    assert np.array_equal(image.table_bits(entry), lut.table_bits)
    loaded = Image.load(image.save(tmp_path / "img"))
    assert loaded.entry("lut.weight").codebook_base == entry.codebook_base


def test_older_manifests_load(tiny_image, tmp_path):
    """A manifest without `codebook_base` loads (None); one that listed table sets in
    info["codebooks"] (images written before the field) gets them as `codebook_base`."""
    path = tiny_image.save(tmp_path / "plain")
    assert all(e.codebook_base is None for e in Image.load(path).entries)
    image, _ = _lut_image()
    path = image.save(tmp_path / "legacy")
    manifest = json.loads((path / "manifest.json").read_text())
    base = manifest["tensors"][0].pop("codebook_base")
    manifest["info"] = {"codebooks": {"lut.weight": base}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert Image.load(path).entry("lut.weight").codebook_base == base
    manifest["info"] = {"codebooks": {"lut.weight": base + 1}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SmartquantError, match="misaligned"):
        Image.load(path)
