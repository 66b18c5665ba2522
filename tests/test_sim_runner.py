"""The simulator runner's build cache (sim/runner.py), without a simulator."""

import shutil
from pathlib import Path

from amaranth.back import verilog

import smartquant.hw
from smartquant.hw.queue import BlockRamQueue
from smartquant.hw import top
from smartquant.sim import runner
from smartquant.sim.runner import without_source_locations


def test_the_same_design_from_another_checkout_has_the_same_build_text():
    text = verilog.convert(BlockRamQueue(width=8, depth=16), name="queue")
    checkout = str(Path(smartquant.hw.__file__).parent)
    moved = text.replace(checkout, "/elsewhere/checkout/hw")
    assert checkout in text and moved != text
    stripped = without_source_locations(text)
    assert without_source_locations(moved) == stripped
    assert "src =" not in stripped and "module queue" in stripped


def test_the_top_level_verilog_is_generated_once_per_rtl_source_and_parameters(tmp_path, monkeypatch):
    made = []

    def fake_generate(**params):
        made.append(params)
        return f'(* src = "/here/hw/top.py:1" *)\nmodule smartquant_top(); // {sorted(params.items())}\nendmodule\n'

    monkeypatch.setenv("SMARTQUANT_SIM_BUILD", str(tmp_path))
    monkeypatch.setattr(top, "generate_verilog", fake_generate)
    runner.design_verilog.cache_clear()
    try:
        first = runner.design_verilog(lanes=8)
        runner.design_verilog.cache_clear()             # a new process: only the files remain
        assert runner.design_verilog(lanes=8) == first and len(made) == 1
        assert "src =" not in first and list((tmp_path / "verilog").glob("*.v"))
        runner.design_verilog(lanes=4)                  # other parameters: generated
        monkeypatch.setattr(runner, "rtl_source_digest", lambda: "an edited hw/ file")
        runner.design_verilog.cache_clear()
        runner.design_verilog(lanes=8)                  # other RTL sources: generated again
        assert made == [{"lanes": 8}, {"lanes": 4}, {"lanes": 8}]
    finally:
        runner.design_verilog.cache_clear()


def test_the_rtl_source_digest_follows_every_hw_module(tmp_path, monkeypatch):
    copy = tmp_path / "hw"
    shutil.copytree(Path(smartquant.hw.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(smartquant.hw, "__file__", str(copy / "__init__.py"))
    before = runner.rtl_source_digest()
    assert runner.rtl_source_digest() == before
    with open(copy / "queue.py", "a") as f:
        f.write("# an edit\n")
    assert runner.rtl_source_digest() != before


def test_a_build_linked_against_another_cocotb_is_not_reused(monkeypatch):
    text = without_source_locations(verilog.convert(BlockRamQueue(width=8, depth=16), name="queue"))
    here = runner.build_dir_for("verilator", text, False, "queue")
    assert runner.build_dir_for("verilator", text, False, "queue") == here
    monkeypatch.setattr(runner, "cocotb_location", lambda: "2.0.0:/another/venv/site-packages/cocotb")
    elsewhere = runner.build_dir_for("verilator", text, False, "queue")
    assert elsewhere != here and elsewhere.parent == here.parent
