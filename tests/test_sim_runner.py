"""The simulator runner's build cache (sim/runner.py), without a simulator."""

from pathlib import Path

from amaranth.back import verilog

import smartquant.hw
from smartquant.hw.queue import BlockRamQueue
from smartquant.sim.runner import without_source_locations


def test_the_same_design_from_another_checkout_has_the_same_build_text():
    text = verilog.convert(BlockRamQueue(width=8, depth=16), name="queue")
    checkout = str(Path(smartquant.hw.__file__).parent)
    moved = text.replace(checkout, "/elsewhere/checkout/hw")
    assert checkout in text and moved != text
    stripped = without_source_locations(text)
    assert without_source_locations(moved) == stripped
    assert "src =" not in stripped and "module queue" in stripped
