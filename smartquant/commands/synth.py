"""`smartquant synth`: synthesise the controller for an FPGA with yosys + nextpnr (YoWASP)."""

from __future__ import annotations

import os
import sys

from .. import report
from ..hw import synth
from .common import check_output_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="synthesise the controller (yosys + nextpnr) and report resources and Fmax",
        description="Synthesise the controller top level for an FPGA with the YoWASP builds "
                    "of yosys and nextpnr; print LUTs, registers, block RAMs, DSPs, the "
                    "achieved Fmax and the critical path.  See docs/SYNTH.md.")
    parser.add_argument("--target", choices=sorted(synth.TARGETS), default="ecp5",
                        help="FPGA family (default device per family in docs/SYNTH.md)")
    parser.add_argument("--lanes", type=int, metavar="N", default=synth.FPGA_LANES,
                        help="dequantizer lanes (default %(default)s, the FPGA configuration)")
    parser.add_argument("--axi-width", type=int, dest="axi_data_width", metavar="W",
                        default=synth.FPGA_AXI_DATA_WIDTH,
                        help="AXI data width in bits (default %(default)s, the FPGA configuration)")
    parser.add_argument("--freq", type=float, default=100.0, metavar="MHZ",
                        help="target clock frequency for place and route (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--router", choices=synth.ROUTERS,
                        help="nextpnr router (default: nextpnr's own for the family, router1 on "
                             "ECP5 and iCE40; router2 is faster but does not converge on the "
                             "full ECP5 controller)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="limit per tool run in seconds (default: twice the longest measured run, "
                             f"{synth.controller_timeout_s('ecp5'):g} on ECP5; {synth.DEFAULT_TIMEOUT_S:g} "
                             "where none was measured)")
    parser.add_argument("--share", action="store_true",
                        help="run yosys's SAT resource sharing (slow: tens of minutes at 32 lanes)")
    parser.add_argument("--workdir", help="keep the tools' files (netlist, logs) here")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    check_output_options(args)
    timeout = args.timeout if args.timeout is not None else synth.controller_timeout_s(args.target)
    print("smartquant synth: " + synth.controller_estimate(args.target, args.lanes, args.axi_data_width, timeout,
                                                            os.getloadavg()[0], os.cpu_count() or 1),
          file=sys.stderr, flush=True)
    result = synth.synthesize_top(
        args.target, lanes=args.lanes, axi_data_width=args.axi_data_width,
        freq_mhz=args.freq, seed=args.seed, router=args.router, timeout_s=timeout, workdir=args.workdir,
        resource_sharing=args.share, progress=True)
    print(report.format_table(["quantity", "value"], result.table_rows()))
    print(f"\ncritical path ({result.critical_path_ns} ns):\n{result.critical_path}")
    if args.json:
        report.write_json(args.json, result.as_dict())
    return 0
