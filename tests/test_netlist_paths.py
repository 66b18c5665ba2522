"""benchmarks/netlist_paths.py: arrival times and the worst path on a hand-made netlist."""

import importlib.util
import json
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "netlist_paths", Path(__file__).resolve().parents[1] / "benchmarks" / "netlist_paths.py")
netlist_paths = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(netlist_paths)


def _ff(d, q):
    return {"type": "TRELLIS_FF", "port_directions": {"CLK": "input", "DI": "input", "Q": "output"},
            "connections": {"CLK": [1], "DI": [d], "Q": [q]}}


def _lut(a, z):
    return {"type": "LUT4", "port_directions": {p: "input" for p in "ABCD"} | {"Z": "output"},
            "connections": {"A": [a], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [z]}}


def _module():
    """start (net 10) -> two LUTs -> end_a (net 20); start -> one LUT -> end_b (net 30)."""
    cells = {"start": _ff(2, 10), "l1": _lut(10, 11), "l2": _lut(11, 12), "end_a": _ff(12, 20),
             "l3": _lut(10, 13), "end_b": _ff(13, 30)}
    names = {"top.start": [10], "top.mid": [11], "top.deep": [12], "top.shallow": [13], "top.end_a": [20],
             "top.end_b": [30], "clk": [1], "top.d": [2]}
    return {"cells": cells, "netnames": {n: {"bits": b} for n, b in names.items()}}


def test_the_deepest_path_and_its_arrival():
    netlist = netlist_paths.Netlist(_module())
    ends = netlist.endpoints()
    net = netlist_paths.net_delay
    start_fanout = 2                       # net 10 drives two LUTs
    deep = (netlist_paths.FF_CLOCK_TO_OUT + net(start_fanout) + netlist_paths.LUT_DELAY + net(1)
            + netlist_paths.LUT_DELAY + net(1) + netlist_paths.FF_SETUP)
    assert ends[0][0] == pytest.approx(deep)
    assert netlist.path(ends[0][1]) == ["top.start", "top.mid", "top.deep"]
    assert ends[1][0] < ends[0][0]


def test_the_command_prints_the_worst_pair(tmp_path, capsys):
    path = tmp_path / "netlist.json"
    path.write_text(json.dumps({"modules": {"top": _module()}}))
    assert netlist_paths.main([str(path), "--top", "top", "--paths", "2"]) == 0
    out = capsys.readouterr().out
    assert "top.start  ->  top.deep" in out.splitlines()[2]
