"""The deepest register-to-register paths of an ECP5 netlist, without place and route
(docs/SYNTH.md, "Where the limit is").

    python benchmarks/netlist_paths.py DIR/netlist.json [--top smartquant_synth_wrapper] [--paths 30]

DIR is a `smartquant synth --workdir DIR` folder (yosys's JSON netlist of the design and
its synthesis wrapper).  Arrival times come from a fixed delay model (ns, LFE5U -6 order
of magnitude, no placement): a LUT4 0.42, a PFUMX / L6MUX21 0.2, a CCU2C input to sum
0.6 and carry-in to carry-out 0.06, a LUT-RAM read 0.45, a MULT18X18D 4.0; each net
0.45 + 0.12 log2(fanout), none on a carry chain; flip-flops start at 0.5, block RAM
outputs at 4.3.  Paths end at flip-flop, block RAM and LUT-RAM write inputs.  The model
ranks logic depth and fanout, not routing: its worst figure is below nextpnr's, but a
path it puts first is one no placement makes short.  Printed: the endpoints over 10 ns
per component, then the worst path of each (start register, end register) pair, the
first three net by net (net names after yosys's ABC are those of nearby signals).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
import sys

LUT_DELAY, MUX_DELAY, CARRY_SUM_DELAY, CARRY_CHAIN_DELAY = 0.42, 0.2, 0.6, 0.06
LUTRAM_READ_DELAY, MULT_DELAY = 0.45, 4.0
FF_CLOCK_TO_OUT, BRAM_CLOCK_TO_OUT = 0.5, 4.3
FF_SETUP, OTHER_SETUP = 0.2, 0.6
SEQUENTIAL = ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4")
CLOCKS = ("CLK", "CLKA", "CLKB", "WCK")


def net_delay(fanout: int) -> float:
    return 0.45 + 0.12 * math.log2(max(1, fanout))


def arcs(cell_type: str) -> list[tuple[str, str, float]]:
    """(input port, output port, delay) of a combinational cell; bus ports by their base name."""
    if cell_type == "LUT4":
        return [(i, "Z", LUT_DELAY) for i in "ABCD"]
    if cell_type == "PFUMX":
        return [(i, "Z", MUX_DELAY) for i in ("ALUT", "BLUT", "C0")]
    if cell_type == "L6MUX21":
        return [(i, "Z", MUX_DELAY) for i in ("D0", "D1", "SD")]
    if cell_type == "CCU2C":
        low = [(i, o, CARRY_SUM_DELAY) for i in ("A0", "B0", "C0", "D0") for o in ("S0", "S1", "COUT")]
        high = [(i, o, CARRY_SUM_DELAY) for i in ("A1", "B1", "C1", "D1") for o in ("S1", "COUT")]
        return low + high + [("CIN", "S0", 0.25), ("CIN", "S1", 0.3), ("CIN", "COUT", CARRY_CHAIN_DELAY)]
    if cell_type == "TRELLIS_DPR16X4":
        return [(f"RAD{i}", f"DO{j}", LUTRAM_READ_DELAY) for i in range(4) for j in range(4)]
    if cell_type == "MULT18X18D":
        return [(f"{x}{i}", f"P{j}", MULT_DELAY) for x in "AB" for i in range(18) for j in range(36)]
    return []


class Netlist:
    def __init__(self, module: dict):
        self.cells = module["cells"]
        self.names = {}
        for name, net in module["netnames"].items():
            for bit in net["bits"]:
                if isinstance(bit, int) and (bit not in self.names or
                                             (name.count("$"), len(name)) < (self.names[bit].count("$"), len(self.names[bit]))):
                    self.names[bit] = name
        self.fanout = collections.Counter(
            bit for c in self.cells.values() for p, bits in c["connections"].items()
            if c["port_directions"].get(p) == "input" for bit in bits if isinstance(bit, int))
        self.arrival, self.previous = {}, {}
        self.inputs = collections.defaultdict(list)     # output bit -> [(input bit, delay, on a carry chain)]
        for cell in self.cells.values():
            kind, connections = cell["type"], cell["connections"]
            if kind == "TRELLIS_FF":
                for bit in connections["Q"]:
                    self.arrival[bit] = FF_CLOCK_TO_OUT
            elif kind == "DP16KD":
                for port, bits in connections.items():
                    if cell["port_directions"][port] == "output":
                        self.arrival.update(dict.fromkeys(bits, BRAM_CLOCK_TO_OUT))
            for in_port, out_port, delay in arcs(kind):
                ins, outs = connections.get(in_port, []), connections.get(out_port, [])
                pairs = ([(i, o) for i in ins for o in outs] if kind in ("MULT18X18D", "TRELLIS_DPR16X4")
                         else zip(ins, outs))
                for i, o in pairs:
                    if isinstance(i, int) and isinstance(o, int):
                        self.inputs[o].append((i, delay, in_port == "CIN"))

    def arrival_at(self, bit: int) -> float:
        """Latest arrival (ns) at `bit`, memoised, iteratively (paths are thousands of nets deep)."""
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in self.arrival:
                stack.pop()
                continue
            pending = [i for i, _, _ in self.inputs.get(b, []) if i not in self.arrival]
            if pending and b not in self.previous:
                self.previous[b] = None          # visiting: a loop through it counts as a start
                stack.extend(pending)
                continue
            best, via = 0.0, None
            for i, delay, chain in self.inputs.get(b, []):
                t = self.arrival.get(i, 0.0) + (0.0 if chain else net_delay(self.fanout[i])) + delay
                if t > best:
                    best, via = t, i
            self.arrival[b], self.previous[b] = best, via
            stack.pop()
        return self.arrival[bit]

    def endpoints(self) -> list[tuple[float, int]]:
        out = []
        for cell in self.cells.values():
            kind = cell["type"]
            if kind not in SEQUENTIAL:
                continue
            for port, bits in cell["connections"].items():
                if cell["port_directions"][port] != "input" or port in CLOCKS:
                    continue
                if kind == "TRELLIS_DPR16X4" and port.startswith("RAD"):
                    continue
                setup = FF_SETUP if kind == "TRELLIS_FF" else OTHER_SETUP
                out += [(self.arrival_at(b) + net_delay(self.fanout[b]) + setup, b) for b in bits if isinstance(b, int)]
        return sorted(out, reverse=True)

    def path(self, bit: int) -> list[str]:
        """Net names from the start register to `bit`."""
        nets = []
        while bit is not None:
            nets.append(self.names.get(bit, str(bit)))
            bit = self.previous.get(bit)
        return nets[::-1]


def signal_of(net: str) -> str:
    """A net name without yosys's cell suffixes and bit indices: the signal it belongs to."""
    net = re.sub(r"_(LUT4|TRELLIS_FF|CCU2C|PFUMX|L6MUX21|DP16KD|TRELLIS_DPR16X4)_.*$", "", net)
    return re.sub(r"\[\d+\]|\d+$", "", net)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netlist")
    parser.add_argument("--top", default="smartquant_synth_wrapper")
    parser.add_argument("--paths", type=int, default=30, help="(start, end) register pairs to print")
    args = parser.parse_args(argv)
    with open(args.netlist) as f:
        modules = json.load(f)["modules"]
    if args.top not in modules:
        sys.exit(f"netlist_paths: no module {args.top!r} in {args.netlist}")
    netlist = Netlist(modules[args.top])
    ends = netlist.endpoints()
    print(f"{len(ends)} endpoints; worst {ends[0][0]:.2f} ns")
    over = collections.Counter(".".join(netlist.names.get(b, "?").split(".")[:2]) for t, b in ends if t > 10.0)
    print("endpoints over 10 ns by component: " + ", ".join(f"{c} {n}" for c, n in over.most_common()))
    seen = set()
    for t, b in ends:
        nets = netlist.path(b)
        pair = (signal_of(nets[0]), signal_of(nets[-1]))
        if pair in seen:
            continue
        seen.add(pair)
        print(f"{t:6.2f} ns  {len(nets):2d} nets  {pair[0]}  ->  {pair[1]}")
        if len(seen) <= 3:
            print("".join(f"          {n}\n" for n in nets), end="")
        if len(seen) >= args.paths:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
