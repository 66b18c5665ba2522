"""The FPGA synthesis flow (hw.synth): yosys + nextpnr from the YoWASP wheels on small
designs.  Budget: ~15 s after YoWASP's one-time compile of yosys (~40 s, cached in
~/.cache/YoWASP)."""

import json

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from smartquant.errors import SmartquantError
from smartquant.hw import synth


class AdderTree(wiring.Component):
    """Registered sum of `count` unsigned `width`-bit operands packed into one input."""

    def __init__(self, count: int, width: int = 8):
        self.count, self.width = count, width
        super().__init__({"operands": In(count * width),
                          "total": Out(width + (count - 1).bit_length())})

    def elaborate(self, platform):
        m = Module()
        terms = [self.operands[i * self.width:(i + 1) * self.width] for i in range(self.count)]
        m.d.sync += self.total.eq(sum(terms))
        return m


MAC_RAM_VERILOG = """
module mac_ram(input clk, input [8:0] a, input [8:0] b, input we, input [8:0] addr,
               input [35:0] wdata, output reg [17:0] product, output reg [35:0] rdata);
  reg [35:0] mem [0:511];
  always @(posedge clk) begin
    product <= a * b;
    if (we) mem[addr] <= wdata;
    rdata <= mem[addr];
  end
endmodule
"""


def test_ecp5_counts_the_design_alone_and_grow_with_it():
    small = synth.synthesize(AdderTree(2), "adder_tree_2", "ecp5")
    large = synth.synthesize(AdderTree(8), "adder_tree_8", "ecp5")
    for report, count in ((small, 2), (large, 8)):
        total_bits = 8 + (count - 1).bit_length()
        assert report.registers == total_bits          # the wrapper's chains are not counted
        # inputs: the operands and Amaranth's `rst` (the clock is the wrapper's)
        assert (report.input_bits, report.output_bits) == (8 * count + 1, total_bits)
        assert report.fmax_mhz > 0
        assert report.critical_path_ns == pytest.approx(1000 / report.fmax_mhz, rel=0.2)
        assert "clk-to-q" in report.critical_path and "setup" in report.critical_path
        # the whole chip holds the wrapper too: a flip-flop per port bit, and scan_out's
        assert report.device_utilisation["TRELLIS_FF"]["used"] == \
            report.registers + report.input_bits + report.output_bits + 1
    assert 0 < small.luts < large.luts
    assert large.critical_path_ns > small.critical_path_ns


WIDE_PORT_VERILOG = """
module wide_parity(input clk, input [4999:0] d, output reg p);
  always @(posedge clk) p <= ^d;
endmodule
"""


@pytest.mark.slow
def test_ports_thousands_of_bits_wide_are_scanned_in_segments():
    """One 5,000-bit scan chain made yosys run out of WebAssembly stack; segments do not."""
    report = synth.synthesize(WIDE_PORT_VERILOG, "wide_parity", "ecp5")
    assert (report.input_bits, report.output_bits, report.registers) == (5000, 1, 1)
    assert report.luts >= 5000 // 4                 # the parity tree reads every input bit
    wrapper = synth.wrapper_verilog("wide_parity", [("input", "clk", 1), ("input", "d", 5000),
                                                     ("output", "p", 1)], "clk")
    assert wrapper.count("<= {in_chain[") == -(-5000 // synth.CHAIN_SEGMENT_BITS)


@pytest.mark.parametrize("target", ["gowin", "ice40"])
def test_verilog_source_maps_multiplier_and_ram_to_hard_blocks(target):
    report = synth.synthesize(MAC_RAM_VERILOG, "mac_ram", target, freq_mhz=50)
    assert report.dsps >= 1 and report.block_rams >= 1
    assert report.registers >= 18                      # at least the registered product
    assert report.fmax_mhz > 0 and report.freq_mhz == 50
    assert report.meets_timing == (report.fmax_mhz >= 50)
    assert report.as_dict()["meets_timing"] == report.meets_timing


def test_sweep_reports_each_value():
    reports = synth.synthesize_sweep(AdderTree, [2, 4], "adder_tree", "ice40")
    assert sorted(reports) == [2, 4]
    assert reports[2].luts < reports[4].luts


def test_bad_target_is_rejected():
    with pytest.raises(SmartquantError, match="unknown synthesis target 'xilinx'"):
        synth.synthesize(MAC_RAM_VERILOG, "mac_ram", "xilinx")


@pytest.mark.parametrize("router", [None, "router2"])
def test_router_and_seed_reach_nextpnr_and_the_report(tmp_path, router):
    """ECP5's default router is router1; router2 hands its leftovers to router1."""
    report = synth.synthesize(AdderTree(2), "adder_tree", "ecp5", router=router, seed=3,
                              workdir=tmp_path)
    assert (report.router, report.seed) == (router or "default", 3)
    log = (tmp_path / "nextpnr.log").read_text()
    assert "Router1 time" in log and ("Router2 time" in log) == (router == "router2")


def test_bad_router_is_rejected():
    with pytest.raises(SmartquantError, match="unknown nextpnr router 'router3'"):
        synth.synthesize(MAC_RAM_VERILOG, "mac_ram", "ecp5", router="router3")


def test_bad_frequency_is_rejected():
    with pytest.raises(SmartquantError, match="frequency"):
        synth.synthesize(MAC_RAM_VERILOG, "mac_ram", "ecp5", freq_mhz=0)


def test_tool_failure_names_the_tool_and_its_error():
    broken = "module broken(input a, output y); assign y = a +; endmodule"
    with pytest.raises(SmartquantError, match=r"yosys failed .*ERROR"):
        synth.synthesize(broken, "broken", "ecp5")


def test_design_without_outputs_is_rejected():
    with pytest.raises(SmartquantError, match="no output ports"):
        synth.synthesize("module sink(input a); endmodule", "sink", "ecp5")


def test_timeout_is_reported():
    with pytest.raises(SmartquantError, match="did not finish within"):
        synth.synthesize(AdderTree(2), "adder_tree", "ecp5", timeout_s=0.01)


def test_not_a_design_is_rejected():
    with pytest.raises(SmartquantError, match="cannot synthesise a int"):
        synth.synthesize(42, "forty_two", "ecp5")


@pytest.mark.slow
def test_cli_synthesises_the_smallest_controller(tmp_path, capsys):
    """The controller's smallest configuration (1 lane, 64-bit AXI) on the ECP5: over
    15 minutes on the shared 2-core machine, so a slow test (place and route dominate)."""
    from smartquant.cli import main
    from smartquant.hw import top

    out = tmp_path / "synth.json"
    assert main(["synth", "--target", "ecp5", "--lanes", "1", "--axi-width", "64",
                 "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "LUTs" in table and "critical path" in table
    result = json.loads(out.read_text())
    assert result["parameters"] == top.SmartQuantTop(lanes=1, axi_data_width=64).params
    assert result["luts"] > 0 and result["registers"] > 0 and result["fmax_mhz"] > 0
    assert result["block_rams"] > 0          # the block buffers


def test_cli_rejects_a_bad_controller_configuration(capsys):
    from smartquant.cli import main
    assert main(["synth", "--lanes", "3"]) == 2
    assert "cannot build the controller" in capsys.readouterr().err


def test_the_fpga_configuration_is_the_cli_default():
    from smartquant.cli import build_parser
    args = build_parser().parse_args(["synth"])
    assert (args.target, args.lanes, args.axi_data_width) == ("ecp5", 8, 128) == \
        ("ecp5", synth.FPGA_LANES, synth.FPGA_AXI_DATA_WIDTH)
    assert args.timeout is None                 # chosen per target when the run starts


def test_default_timeout_covers_the_measured_run_twice_over():
    longest = max(high for _, high in synth.CONTROLLER_MINUTES["ecp5"].values())
    assert longest >= 50                        # routing alone took up to 46 min (docs/SYNTH.md)
    assert synth.controller_timeout_s("ecp5") == 2 * 60 * longest > synth.DEFAULT_TIMEOUT_S
    assert synth.controller_timeout_s("gowin") == synth.DEFAULT_TIMEOUT_S     # nothing measured


def test_estimate_names_the_minutes_the_busy_machine_and_the_limit():
    idle = synth.controller_estimate("ecp5", 8, 128, 6600, load=0.2, cpus=2)
    assert idle == ("expect yosys 3-5 min, nextpnr 30-55 min on an idle 2-core machine; "
                    "each tool stops after 6600 s (--timeout)")
    busy = synth.controller_estimate("ecp5", 8, 128, 6600, load=2.1, cpus=2)
    assert "the machine is busy (load 2.1 on 2 CPUs), so up to 2x that" in busy
    other = synth.controller_estimate("ecp5", 32, 512, 1800, load=0.0, cpus=2)
    assert other == "no measured run time for this configuration on ecp5; each tool stops after 1800 s (--timeout)"


def test_cli_prints_the_estimate_before_it_starts(monkeypatch, capsys):
    from smartquant.cli import main
    seen = {}

    def stop_before_the_tools(target, **kwargs):
        seen.update(kwargs, target=target, said=capsys.readouterr().err)
        raise SmartquantError("stopped by the test")

    monkeypatch.setattr(synth, "synthesize_top", stop_before_the_tools)
    assert main(["synth"]) == 2
    assert seen["said"].startswith("smartquant synth: expect yosys")
    assert (seen["target"], seen["lanes"], seen["axi_data_width"], seen["timeout_s"]) == \
        ("ecp5", 8, 128, synth.controller_timeout_s("ecp5"))
    assert main(["synth", "--timeout", "60"]) == 2 and seen["timeout_s"] == 60
