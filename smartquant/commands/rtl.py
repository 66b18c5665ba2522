"""`smartquant rtl -o DIR [--lanes N] [--axi-width W]`: write the controller's Verilog,
module `smartquant_top` (hw/top.py; ports and CSR map in docs/RTL.md), to DIR/smartquant_top.v."""

from __future__ import annotations

from pathlib import Path

from ..atomic import FILE, atomic_file, check_output
from ..errors import SmartquantError
from ..hw.top import generate_verilog

VERILOG_FILE = "smartquant_top.v"


def register(subparsers) -> None:
    p = subparsers.add_parser("rtl", help="write the controller's Verilog", description=__doc__)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--lanes", type=int, default=32, metavar="N",
                   help="weights dequantized per cycle: 1, 2, 4, 8, 16 or 32 (default 32)")
    p.add_argument("--axi-width", type=int, default=512, metavar="W",
                   help="AXI data width in bits: 64, 128, 256 or 512 (default 512)")
    p.add_argument("--axi-addr-width", type=int, default=32, metavar="A", help="AXI byte-address bits (default 32)")
    p.set_defaults(func=run)


def run(args) -> int:
    path = check_output(Path(args.output) / VERILOG_FILE, FILE)
    try:
        verilog = generate_verilog(lanes=args.lanes, axi_data_width=args.axi_width,
                                   axi_addr_width=args.axi_addr_width)
    except ValueError as exc:
        raise SmartquantError(str(exc)) from None
    with atomic_file(path) as tmp:
        tmp.write_text(verilog)
    print(f"{path}: module smartquant_top, lanes={args.lanes}, AXI {args.axi_width}-bit data, "
          f"{args.axi_addr_width}-bit addresses ({len(verilog.splitlines())} lines)")
    return 0
