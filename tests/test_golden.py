"""Golden decoder: view semantics, address arithmetic, per-line responses, poison rules."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from smartquant.errors import SmartquantError
from smartquant.spec import (BLOCK_WEIGHTS, LINE_BYTES, PLANES, View, host_line_address,
                             lines_per_block, split_host_line_address)
from smartquant.sw.fpformat import bf16_bits, fp16_bits
from smartquant.sw.image.golden import (read_view, region_table, response_line, tensor_values,
                                  view_code, view_offset)

QUANTIZED = (View.PACKED, View.INT8, View.FP16, View.BF16)


@given(st.integers(0, 255), st.integers(1, 8))
def test_view_code_is_the_concatenation_c_1_zeros(q, k):
    c = q >> (8 - k)
    bits = format(c, f"0{k}b") + ("1" + "0" * (7 - k) if k < 8 else "")
    assert int(view_code(np.uint8(q), k)) == int(bits, 2)


@given(st.integers(0, 255), st.integers(1, 7))
def test_view_code_is_the_middle_of_the_bucket(q, k):
    width = 1 << (8 - k)
    low = (q // width) * width
    assert int(view_code(np.uint8(q), k)) * 2 == 2 * low + width


def test_view_code_rejects_bad_k():
    with pytest.raises(ValueError):
        view_code(np.uint8(3), 0)


@given(st.sampled_from(list(View)), st.integers(0, 15), st.integers(0, (1 << 32) - 1))
def test_host_address_fields_round_trip(view, k, offset):
    addr = host_line_address(view, k, offset)
    assert addr < 1 << 40
    assert split_host_line_address(addr) == (int(view), k, offset)


def test_view_offsets_of_tensors_do_not_overlap(tiny_image):
    for view in QUANTIZED:
        for k in range(1, 9):
            spans = sorted((view_offset(e, view, k), view_offset(e, view, k, e.blocks))
                           for e in tiny_image.entries)
            assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))


def _expected_line(qt, view, k, block, line):
    """Independent per-line expectation from the QuantizedTensor (not from DRAM)."""
    flat = np.full(-(-qt.codes.size // BLOCK_WEIGHTS) * BLOCK_WEIGHTS, 128, np.uint8)
    flat[:qt.codes.size] = qt.codes.reshape(-1)
    q = flat[block * BLOCK_WEIGHTS:(block + 1) * BLOCK_WEIGHTS].astype(np.int64)
    if view == View.PACKED:
        plane = 7 - line
        return np.packbits((q >> plane) & 1, bitorder="little").astype(np.uint8).tobytes()
    c = q >> (8 - k)
    r = q if k == 8 else (c << (8 - k)) + (1 << (7 - k))
    if view == View.INT8:
        return (r[64 * line:64 * line + 64] - 128).astype(np.int8).tobytes()
    idx = np.arange(32 * line, 32 * line + 32) + block * BLOCK_WEIGHTS
    groups = idx // qt.group_size
    from smartquant.sw.fpformat import scale_value
    scales = np.zeros(flat.size // qt.group_size)
    zeros = np.full(flat.size // qt.group_size, 128.0)
    scales[:qt.scale_bits.size] = scale_value(qt.scale_bits.reshape(-1), qt.scale_format)
    zeros[:qt.zeros.size] = qt.zeros.reshape(-1)
    values = scales[groups] * (r[32 * line:32 * line + 32] - zeros[groups])
    bits = fp16_bits(values) if view == View.FP16 else bf16_bits(values)
    return bits.astype("<u2").tobytes()


def test_every_line_of_every_view_matches_the_quantized_tensor(tiny_image, tiny_quantized):
    for e, qt in zip(tiny_image.entries, tiny_quantized.values()):
        for view in QUANTIZED:
            if view == View.INT8 and not e.symmetric:
                continue
            for k in (1, 3, 8):
                whole = read_view(tiny_image, e.name, view, k)
                per = lines_per_block(view, k)
                assert len(whole) == e.blocks * per * LINE_BYTES
                for block in range(e.blocks):
                    for line in range(per):
                        addr = host_line_address(view, k, view_offset(e, view, k, block, line))
                        data, poison = response_line(tiny_image, addr)
                        assert not poison
                        assert data == _expected_line(qt, view, k, block, line), (e.name, view, k, block, line)
                        i = (block * per + line) * LINE_BYTES
                        assert whole[i:i + LINE_BYTES] == data


def test_tensor_values_are_the_rounded_dequantization(tiny_image, tiny_quantized):
    for name, qt in tiny_quantized.items():
        for k in (2, 5, 8):
            exact = qt.dequantize(k)
            got16 = tensor_values(tiny_image, name, k)
            assert got16.shape == qt.shape and got16.dtype == np.float32
            np.testing.assert_array_equal(got16, exact.astype(np.float16).astype(np.float32))
            got_bf = tensor_values(tiny_image, name, k, View.BF16)
            np.testing.assert_allclose(got_bf, exact, rtol=2 ** -8, atol=0)


def test_raw_view_reads_dram(tiny_image):
    last = tiny_image.dram_lines - 1
    for k in (0, 5, 15):                       # k is ignored by the raw view
        data, poison = response_line(tiny_image, host_line_address(View.RAW, k, last))
        assert not poison and data == tiny_image.dram[last * 64:].tobytes()


def _poison(image, view, k, offset):
    addr = (int(view) << 36) | (k << 32) | offset
    return response_line(image, addr)


def test_poison_rules(tiny_image):
    e = tiny_image.entries[0]
    asym = next(x for x in tiny_image.entries if not x.symmetric)
    cases = [
        (View.RAW, 1, tiny_image.dram_lines),                              # past the end of DRAM
        (7, 4, 0),                                                         # unknown view
        (View.FP16, 0, view_offset(e, View.FP16, 1)),                      # k = 0
        (View.PACKED, 9, 0),                                               # k = 9
        (View.INT8, 4, view_offset(asym, View.INT8, 4)),                   # int8 of an asymmetric region
        (View.FP16, 4, view_offset(tiny_image.entries[-1], View.FP16, 4, tiny_image.entries[-1].blocks)),
    ]
    # a block whose lines hold metadata (no region's planes start there)
    meta_block = e.meta_base // PLANES
    if all(not (x.plane_base // 8 <= meta_block < x.plane_base // 8 + x.blocks) for x in tiny_image.entries):
        cases.append((View.PACKED, 2, meta_block * 2))
    for view, k, offset in cases:
        assert _poison(tiny_image, view, k, offset) == (bytes(64), True), (view, k, offset)


def test_nan_and_infinite_scales_give_canonical_results(tiny_image):
    image = type(tiny_image)(entries=tiny_image.entries, dram=tiny_image.dram.copy())
    e = next(x for x in image.entries if x.scale_format.name == "FP16")
    image.dram[e.meta_base * 64:e.meta_base * 64 + 2] = [0x00, 0x7C]      # group 0 scale = +inf
    values = np.frombuffer(read_view(image, e.name, View.FP16, 8), "<u2")[:e.group_size]
    assert set(values.tolist()) <= {0x7C00, 0xFC00, 0x7E00}      # +-inf, and inf * 0 = canonical NaN
    image.dram[e.meta_base * 64 + 1] = 0x7E                                 # NaN scale
    values = np.frombuffer(read_view(image, e.name, View.BF16, 4), "<u2")[:e.group_size]
    assert (values == 0x7FC0).all()


def test_read_view_rejects_bad_requests(tiny_image):
    asym = next(x for x in tiny_image.entries if not x.symmetric)
    with pytest.raises(SmartquantError, match="int8"):
        read_view(tiny_image, asym.name, View.INT8, 4)
    with pytest.raises(SmartquantError, match="outside 1..8"):
        read_view(tiny_image, asym.name, View.FP16, 9)
    with pytest.raises(SmartquantError, match="unknown tensor"):
        tensor_values(tiny_image, "missing", 4)


def test_region_table_lists_every_entry(tiny_image):
    table = region_table(tiny_image)
    assert [r["name"] for r in table] == [e.name for e in tiny_image.entries]
    assert all(r["plane_base"] % 8 == 0 and r["blocks"] > 0 for r in table)


def _check_address(image, view, k, offset):
    """response_line agrees with read_view, and poisons exactly where the rules say."""
    data, poison = response_line(image, host_line_address(view, k, offset))
    if view == View.RAW:
        assert poison == (offset >= image.dram_lines)
        return
    if not 1 <= k <= 8:
        assert (data, poison) == (bytes(64), True)
        return
    per = lines_per_block(view, k)
    block, line = divmod(offset, per)
    owner = [e for e in image.entries if e.plane_base // 8 <= block < e.plane_base // 8 + e.blocks]
    if not owner or (view == View.INT8 and not owner[0].symmetric):
        assert (data, poison) == (bytes(64), True)
        return
    e = owner[0]
    i = ((block - e.plane_base // 8) * per + line) * LINE_BYTES
    assert not poison and data == read_view(image, e.name, view, k)[i:i + LINE_BYTES]


@given(st.sampled_from(list(View)), st.integers(0, 15), st.integers(0, 400))
def test_random_addresses_agree_with_read_view(tiny_image, view, k, offset):
    _check_address(tiny_image, view, k, offset)


def test_minilm_random_lines_agree_with_read_view(minilm_image):
    rng = np.random.default_rng(5)
    total = minilm_image.dram_lines
    for _ in range(40):
        view = View(int(rng.integers(0, 5)))
        k = int(rng.integers(1, 9))
        per = 1 if view == View.RAW else lines_per_block(view, k)
        _check_address(minilm_image, view, k, int(rng.integers(0, total // 8 * per + 50)))
