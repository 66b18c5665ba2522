"""The co-verification scoreboard (sim/scoreboard.py) on its own: what it accepts and
what it reports, without a simulator."""

import numpy as np
import pytest

from smartquant.sim.scoreboard import Scoreboard, describe_difference
from smartquant.sw.image.trace import make_trace, parse_views


@pytest.fixture(scope="module")
def trace(tiny_image, tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "img"
    tiny_image.save(path)
    return make_trace(tiny_image, path, None, parse_views("fp16:4"), "random", errors=5, seed=2)


def respond(board, trace, index, cycle=10, data=None, poison=None):
    data = trace.line[index].tobytes() if data is None else data
    poison = int(trace.poison[index]) if poison is None else poison
    channel = "ndr" if trace.opcode[index] else "drs"
    board.responded(channel, int(trace.tag[index]), poison, None if channel == "ndr" else data, cycle)


def test_expected_responses_pass_and_count(trace):
    board = Scoreboard(trace)
    for i in range(len(trace)):
        board.accepted(i, i)
        respond(board, trace, i, cycle=i + 7)
    assert not board.mismatches and not board.outstanding
    assert board.compared == len(trace) and board.poisoned == int(trace.poison.sum())
    assert set(board.latencies) == {7}


def test_one_flipped_bit_names_request_view_and_bytes(trace):
    index = int(np.flatnonzero(trace.poison == 0)[3])
    board = Scoreboard(trace)
    board.accepted(index, 0)
    data = bytearray(trace.line[index].tobytes())
    data[17] ^= 0x04
    respond(board, trace, index, data=bytes(data))
    text = board.first_mismatch.text
    assert f"tag {trace.tag[index]}" in text and f"{int(trace.addr[index]):#x}" in text
    assert "fp16 k=4" in text and "[17]" in text and "1 bytes differ" in text


def test_poison_mismatch_and_unknown_tag_are_caught(trace):
    bad = int(np.flatnonzero(trace.poison)[0])
    board = Scoreboard(trace)
    board.accepted(bad, 0)
    respond(board, trace, bad, poison=0)
    assert "poison 0, expected 1" in board.first_mismatch.text
    board.responded("drs", 255, 0, bytes(64), 20)
    assert "no request outstanding" in board.mismatches[1].text


def test_poisoned_data_is_not_compared(trace):
    bad = [int(i) for i in np.flatnonzero(trace.poison) if trace.opcode[i] == 0][0]
    board = Scoreboard(trace)
    board.accepted(bad, 0)
    respond(board, trace, bad, data=bytes(range(64)))
    assert not board.mismatches


def test_describe_difference_lists_at_most_eight_bytes():
    text = describe_difference(bytes(64), bytes([1]) * 64)
    assert text.startswith("64 bytes differ") and text.count("!=") == 9 and "(64 of 64)" in text
