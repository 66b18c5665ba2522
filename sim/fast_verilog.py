"""Verilog of the fast harness: trace replay inside the simulation (docs/COVERIFY.md).

`harness_verilog(design, capacity)` writes module `sq_harness` (one input, `clk`) around the
unchanged `smartquant_top` of `design`: memories loaded by binary `$fread` from the files
`sim/fast_harness.py` writes (request stream, expected lines, CSR writes per segment,
DRAM image and error lines, run settings), a host driver and response checker, an AXI4
DRAM model, a CSR sequencer and the counters; at the end it writes `results.txt` and
calls `$finish`.  Verilog-2005, no DPI/VPI, so Verilator (`--exe`, a bare C++ clock
loop) and Icarus (`sq_icarus_tb`, an `initial` clock) both run it at full speed.

Memory depths are powers of two (at least the `MIN_*` below), so traces of similar size
share one build; the run-time sizes come from `config.bin`.
"""

from __future__ import annotations

import dataclasses
import re

from .. import spec

HARNESS = "sq_harness"
ICARUS_TOP = "sq_icarus_tb"
#: mismatches kept in full (kind, channel, tag, request, cycle, poison, data) for the report
KEPT_MISMATCHES = 4
AXI_QUEUE = 16                     #: outstanding bursts the DRAM model takes per direction
MIN_REQUESTS = 1 << 13
MIN_SEGMENTS = 16
MIN_CSR_WRITES = 1 << 10
MIN_DRAM_LINES = 1 << 14

#: run file -> the memory `$fread` fills from it: raw bytes, each word most significant byte first
RUN_FILES = {"config.bin": "cfg", "requests.bin": "req_mem", "lines.bin": "line_mem", "segments.bin": "seg_mem",
             "csr.bin": "csr_mem", "dram.bin": "dram", "dram_errors.bin": "derr"}

#: config.bin words (64-bit), in order
CONFIG_FIELDS = ("segments", "requests", "dram_lines", "stall_threshold", "read_latency", "max_in_flight",
                 "watchdog_cycles", "cycles_after_mismatch", "seed_gap", "seed_drs", "seed_ndr",
                 "seed_aw", "seed_w", "seed_b", "seed_ar", "seed_r", "csr_writes")

#: mismatch kinds in results.txt
MISMATCH_UNEXPECTED_TAG, MISMATCH_CHANNEL, MISMATCH_POISON, MISMATCH_DATA = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Memory depths of one build (powers of two)."""
    requests: int
    segments: int
    csr_writes: int
    dram_lines: int

    @classmethod
    def fitting(cls, requests: int, segments: int, csr_writes: int, dram_lines: int) -> "Capacity":
        return cls(_pow2(requests, MIN_REQUESTS), _pow2(segments, MIN_SEGMENTS),
                   _pow2(csr_writes, MIN_CSR_WRITES), _pow2(dram_lines, MIN_DRAM_LINES))

    def label(self) -> str:
        """'r8192-s16-c1024-d16384': the build directory's suffix."""
        return f"r{self.requests}-s{self.segments}-c{self.csr_writes}-d{self.dram_lines}"

    @classmethod
    def from_label(cls, label: str) -> "Capacity | None":
        found = re.fullmatch(r"r(\d+)-s(\d+)-c(\d+)-d(\d+)", label)
        return cls(*map(int, found.groups())) if found else None

    def holds(self, other: "Capacity") -> bool:
        return all(mine >= theirs for mine, theirs in zip(dataclasses.astuple(self), dataclasses.astuple(other)))

    def words(self) -> int:
        """Memory words of a build (requests twice: the request and its line): smaller starts faster."""
        return 2 * self.requests + self.segments + self.csr_writes + self.dram_lines


def _pow2(n: int, least: int) -> int:
    return max(least, 1 << max(n - 1, 0).bit_length())


def port_widths(design: str, toplevel: str = "smartquant_top") -> dict[str, int]:
    """{port name: bits} of module `toplevel` in the Verilog text `design`."""
    start = design.index(f"module {toplevel}(")
    body = design[start:design.index("endmodule", start)]
    return {name: int(msb) + 1 if msb else 1 for msb, name in
            re.findall(r"^\s*(?:input|output)\s+(?:\[(\d+):0\]\s+)?(\w+)", body, flags=re.M)}


def _log2(n: int) -> int:
    return n.bit_length() - 1


def harness_verilog(design: str, capacity: Capacity) -> str:
    """Module `sq_harness` (and `sq_icarus_tb`, `sq_random`) around `smartquant_top` of `design`."""
    widths = port_widths(design)
    beat_bits, addr_bits, id_bits = widths["axi__rdata"], widths["axi__araddr"], widths["axi__arid"]
    beats_per_line = spec.LINE_BITS // beat_bits
    beat_shift = _log2(beat_bits // 8)
    req_bits, drs_bits = widths["req__payload"], widths["drs__payload"]
    params = dict(
        REQ_CAP=capacity.requests, REQ_AW=_log2(capacity.requests), SEG_CAP=capacity.segments,
        CSRW_CAP=capacity.csr_writes, DLINES=capacity.dram_lines, DWORDS=capacity.dram_lines * beats_per_line,
        DWORD_AW=_log2(capacity.dram_lines * beats_per_line), DLINE_AW=_log2(capacity.dram_lines),
        BW=beat_bits, BSHIFT=beat_shift, AW=addr_bits, IDW=id_bits, REQW=req_bits, DRSW=drs_bits,
        KEEP=KEPT_MISMATCHES, QD=AXI_QUEUE, NCOUNTERS=2 * len(spec.COUNTERS), CBASE=spec.CSR_COUNTER_BASE,
        CSR_WAIT=spec.CSR_READ_LATENCY + 2, NCONFIG=len(CONFIG_FIELDS),
        LINE_BITS=spec.LINE_BITS, TAG_BITS=spec.TAG_BITS, ADDR_BITS=spec.LINE_ADDR_BITS,
    )
    header = "\n".join(f"  localparam {name} = {value};" for name, value in params.items())
    return _RANDOM + _HARNESS.replace("//PARAMS", header).replace("//LOADS", _loads())


def _loads() -> str:
    """`$fread` of every run file into its memory; a missing file ends the run without results."""
    return "\n".join(
        f'    fd = $fopen("{name}", "rb");\n'
        f'    if (fd == 0) begin $display("sq_harness: cannot open {name}"); $finish; end\n'
        f'    got = $fread({memory}, fd);\n'
        f'    $fclose(fd);' for name, memory in RUN_FILES.items())


#: Icarus's top level: a clock for `sq_harness` (Verilator's is the C++ loop of fast_harness.py)
ICARUS_TOP_VERILOG = """
module sq_icarus_tb;
  reg clk = 0;
  reg [63:0] dump_from, dump_to;
  always #1 clk = ~clk;
  sq_harness harness(.clk(clk));
  // +dump_from=F +dump_to=T: waves.fst holds clock cycles F..T (cycle c rises at time 2c-1)
  initial if ($value$plusargs("dump_from=%d", dump_from) && $value$plusargs("dump_to=%d", dump_to)) begin
    $dumpfile("waves.fst");
    $dumpvars(0, harness);
    if (dump_from > 1) begin
      $dumpoff;
      #(2 * dump_from - 2) $dumpon;
    end
    #(2 * (dump_to - dump_from) + 2) $dumpoff;
  end
endmodule
"""


_RANDOM = """
// xorshift64 per stream: `hit` with probability threshold/65536 per cycle, or (BURSTY)
// pauses that start with that probability and last 1..7 cycles
module sq_random #(parameter BURSTY = 0) (input clk, input rst, input [63:0] seed,
                                          input [16:0] threshold, output hit);
  reg [63:0] x;
  reg [2:0] left;
  wire [63:0] x1 = x ^ (x << 13);
  wire [63:0] x2 = x1 ^ (x1 >> 7);
  wire [63:0] xn = x2 ^ (x2 << 17);
  wire draw = {1'b0, x[15:0]} < threshold;
  assign hit = BURSTY ? left != 0 : draw;
  always @(posedge clk) begin
    if (rst) begin
      x <= seed | 64'h1;
      left <= 0;
    end else begin
      x <= xn;
      if (left != 0) left <= left - 1;
      else if (BURSTY && draw) left <= 3'd1 + x[18:16] % 3'd7;
    end
  end
endmodule
"""

_HARNESS = """
module sq_harness(input clk);
//PARAMS
  localparam P_BOOT = 0, P_CSR = 1, P_REPLAY = 2, P_COUNTERS = 3, P_DONE = 4;

  // ---- memories loaded from the run directory (RUN_FILES) ----
  reg [63:0] cfg [0:NCONFIG-1];
  reg [63:0] req_mem [0:REQ_CAP-1];        // {poison, opcode, tag[7:0], addr[39:0]}
  reg [LINE_BITS-1:0] line_mem [0:REQ_CAP-1];
  reg [127:0] seg_mem [0:SEG_CAP-1];       // {csr first, csr count, start, stop}
  reg [63:0] csr_mem [0:CSRW_CAP-1];       // {addr, data[31:0]}
  reg [BW-1:0] dram [0:DWORDS-1];
  reg derr [0:DLINES-1];
  reg [63:0] counters [0:NCOUNTERS-1];

  // ---- run settings ----
  reg [63:0] n_segments, stall_threshold, read_latency, max_in_flight, watchdog, after_mismatch;
  integer fd, got, b, j;
  initial begin
//LOADS
    n_segments = cfg[0];
    stall_threshold = cfg[3];
    read_latency = cfg[4];
    max_in_flight = cfg[5];
    watchdog = cfg[6];
    after_mismatch = cfg[7];
  end

  // ---- DUT ----
  reg rst = 1;
  reg req_valid = 0, drs_ready = 0, ndr_ready = 0;
  reg [REQW-1:0] req_payload = 0;
  reg csr_w_en = 0, csr_r_en = 0;
  reg [9:0] csr_addr = 0;
  reg [31:0] csr_w_data = 0;
  wire req_ready, drs_valid, ndr_valid;
  wire [DRSW-1:0] drs_payload;
  wire [8:0] ndr_payload;
  wire [31:0] csr_r_data;
  wire [IDW-1:0] awid, arid;
  wire [AW-1:0] awaddr, araddr;
  wire [7:0] awlen, arlen;
  wire [2:0] awsize, arsize;
  wire [1:0] awburst, arburst;
  wire awvalid, wvalid, wlast, bready, arvalid, rready;
  wire [BW-1:0] wdata;
  wire [BW/8-1:0] wstrb;
  wire awready, wready, bvalid, arready, rvalid, rlast;
  wire [IDW-1:0] bid, rid;
  wire [1:0] rresp;
  wire [BW-1:0] rdata;

  smartquant_top dut(
    .clk(clk), .rst(rst),
    .req__valid(req_valid), .req__ready(req_ready), .req__payload(req_payload),
    .drs__valid(drs_valid), .drs__ready(drs_ready), .drs__payload(drs_payload),
    .ndr__valid(ndr_valid), .ndr__ready(ndr_ready), .ndr__payload(ndr_payload),
    .csr__addr(csr_addr), .csr__w_en(csr_w_en), .csr__w_data(csr_w_data), .csr__r_en(csr_r_en),
    .csr__r_data(csr_r_data),
    .axi__awid(awid), .axi__awaddr(awaddr), .axi__awlen(awlen), .axi__awsize(awsize),
    .axi__awburst(awburst), .axi__awvalid(awvalid), .axi__awready(awready),
    .axi__wdata(wdata), .axi__wstrb(wstrb), .axi__wlast(wlast), .axi__wvalid(wvalid), .axi__wready(wready),
    .axi__bid(bid), .axi__bresp(2'b00), .axi__bvalid(bvalid), .axi__bready(bready),
    .axi__arid(arid), .axi__araddr(araddr), .axi__arlen(arlen), .axi__arsize(arsize),
    .axi__arburst(arburst), .axi__arvalid(arvalid), .axi__arready(arready),
    .axi__rid(rid), .axi__rdata(rdata), .axi__rresp(rresp), .axi__rlast(rlast),
    .axi__rvalid(rvalid), .axi__rready(rready));

  // ---- random streams ----
  wire gap, drs_stall, ndr_stall, aw_pause, w_pause, b_pause, ar_pause, r_pause;
  wire [16:0] thr = stall_threshold[16:0];
  sq_random #(0) rnd_gap(clk, rst, cfg[8], thr, gap);
  sq_random #(0) rnd_drs(clk, rst, cfg[9], thr, drs_stall);
  sq_random #(0) rnd_ndr(clk, rst, cfg[10], thr, ndr_stall);
  sq_random #(1) rnd_aw(clk, rst, cfg[11], thr, aw_pause);
  sq_random #(1) rnd_w(clk, rst, cfg[12], thr, w_pause);
  sq_random #(1) rnd_b(clk, rst, cfg[13], thr, b_pause);
  sq_random #(1) rnd_ar(clk, rst, cfg[14], thr, ar_pause);
  sq_random #(1) rnd_r(clk, rst, cfg[15], thr, r_pause);

  // ---- global time and counters ----
  reg [63:0] clock_cycles = 0, cycle = 0;
  reg [63:0] read_beats = 0, read_bursts = 0, write_beats = 0;
  always @(posedge clk) begin
    clock_cycles <= clock_cycles + 1;
    if (rvalid && rready) read_beats <= read_beats + 1;
    if (arvalid && arready) read_bursts <= read_bursts + 1;
    if (wvalid && wready) write_beats <= write_beats + 1;
  end

  // ---- DRAM: AXI4 subordinate, pipelined read latency, pauses, SLVERR lines ----
  reg [IDW-1:0] arq_id [0:QD-1];
  reg [AW-1:0] arq_addr [0:QD-1];
  reg [7:0] arq_len [0:QD-1];
  reg [63:0] arq_ready_at [0:QD-1];
  reg [4:0] arq_head = 0, arq_tail = 0;
  reg [7:0] r_beat = 0;
  wire [4:0] arq_count = arq_tail - arq_head;
  wire [3:0] arh = arq_head[3:0];
  wire [DWORD_AW-1:0] r_word = arq_addr[arh][BSHIFT+DWORD_AW-1:BSHIFT] + r_beat;
  assign arready = !rst && !ar_pause && arq_count < QD;
  assign rvalid = !rst && !r_pause && arq_count != 0 && clock_cycles >= arq_ready_at[arh];
  assign rid = arq_id[arh];
  assign rdata = dram[r_word];
  assign rresp = derr[r_word >> (DWORD_AW - DLINE_AW)] ? 2'b10 : 2'b00;
  assign rlast = r_beat == arq_len[arh];
  always @(posedge clk) begin
    if (arvalid && arready) begin
      arq_id[arq_tail[3:0]] <= arid;
      arq_addr[arq_tail[3:0]] <= araddr;
      arq_len[arq_tail[3:0]] <= arlen;
      arq_ready_at[arq_tail[3:0]] <= clock_cycles + 1 + read_latency;
      arq_tail <= arq_tail + 1;
    end
    if (rvalid && rready) begin
      if (rlast) begin
        arq_head <= arq_head + 1;
        r_beat <= 0;
      end else r_beat <= r_beat + 1;
    end
  end

  reg [IDW-1:0] awq_id [0:QD-1];
  reg [AW-1:0] awq_addr [0:QD-1];
  reg [4:0] awq_head = 0, awq_tail = 0, bq_head = 0, bq_tail = 0;
  reg [IDW-1:0] bq_id [0:QD-1];
  reg [7:0] w_beat = 0;
  wire [4:0] awq_count = awq_tail - awq_head, bq_count = bq_tail - bq_head;
  wire [DWORD_AW-1:0] w_word = awq_addr[awq_head[3:0]][BSHIFT+DWORD_AW-1:BSHIFT] + w_beat;
  reg [BW-1:0] wmask;
  always @* for (b = 0; b < BW / 8; b = b + 1) wmask[8*b +: 8] = {8{wstrb[b]}};
  assign awready = !rst && !aw_pause && awq_count < QD;
  assign wready = !rst && !w_pause && awq_count != 0 && bq_count < QD;
  assign bvalid = !rst && !b_pause && bq_count != 0;
  assign bid = bq_id[bq_head[3:0]];
  always @(posedge clk) begin
    if (awvalid && awready) begin
      awq_id[awq_tail[3:0]] <= awid;
      awq_addr[awq_tail[3:0]] <= awaddr;
      awq_tail <= awq_tail + 1;
    end
    if (wvalid && wready) begin
      dram[w_word] <= (dram[w_word] & ~wmask) | (wdata & wmask);
      if (wlast) begin
        bq_id[bq_tail[3:0]] <= awq_id[awq_head[3:0]];
        bq_tail <= bq_tail + 1;
        awq_head <= awq_head + 1;
        w_beat <= 0;
      end else w_beat <= w_beat + 1;
    end
    if (bvalid && bready) bq_head <= bq_head + 1;
  end

  // ---- sequencer: reset, per segment CSR writes then replay, counter reads, results ----
  reg [2:0] phase = P_BOOT;
  reg [3:0] boot = 0;
  reg [63:0] segment = 0, csr_ptr = 0, csr_end = 0, stop = 0, next = 0;
  reg [7:0] counter_ptr = 0;
  reg [3:0] wait_left = 0;
  reg hang = 0;

  // host state (blocking, only this block reads it)
  reg busy [0:255];
  reg [REQ_AW-1:0] tag_index [0:255];
  reg [63:0] tag_cycle [0:255];
  reg [63:0] outstanding = 0, last_progress = 0, compared = 0, poisoned = 0;
  reg [63:0] latency_sum = 0, latency_max = 0, latency_min = ~64'd0;
  reg [63:0] mismatches = 0, first_mismatch_cycle = 0, first_mismatch_clock = 0;
  reg [2:0] mis_kind [0:KEEP-1];
  reg mis_ndr [0:KEEP-1];
  reg [7:0] mis_tag [0:KEEP-1];
  reg [63:0] mis_index [0:KEEP-1];
  reg [63:0] mis_cycle [0:KEEP-1];
  reg mis_poison [0:KEEP-1];
  reg [LINE_BITS-1:0] mis_data [0:KEEP-1];
  reg valid_now;
  reg [63:0] req;
  reg [127:0] seg;

  task respond(input is_ndr, input [7:0] tag, input poison, input [LINE_BITS-1:0] data);
    reg [63:0] index, entry, latency;
    reg [2:0] kind;
    begin
      kind = 0;
      index = 0;
      if (!busy[tag]) kind = 1;
      else begin
        index = tag_index[tag];
        entry = req_mem[index];
        busy[tag] = 0;
        outstanding = outstanding - 1;
        compared = compared + 1;
        poisoned = poisoned + poison;
        latency = cycle - tag_cycle[tag];
        latency_sum = latency_sum + latency;
        if (latency > latency_max) latency_max = latency;
        if (latency < latency_min) latency_min = latency;
        if (entry[48] != is_ndr) kind = 2;
        else if (entry[49] != poison) kind = 3;
        else if (!is_ndr && !poison && data != line_mem[index]) kind = 4;
      end
      if (kind != 0) begin
        if (mismatches < KEEP) begin
          mis_kind[mismatches] = kind;
          mis_ndr[mismatches] = is_ndr;
          mis_tag[mismatches] = tag;
          mis_index[mismatches] = index;
          mis_cycle[mismatches] = cycle;
          mis_poison[mismatches] = poison;
          mis_data[mismatches] = data;
        end
        if (mismatches == 0) begin
          first_mismatch_cycle = cycle;
          first_mismatch_clock = clock_cycles;
        end
        mismatches = mismatches + 1;
      end
      last_progress = cycle;
    end
  endtask

  always @(posedge clk) begin
    case (phase)
      P_BOOT: begin
        boot <= boot + 1;
        for (j = 0; j < 256; j = j + 1) busy[j] = 0;
        if (boot == 4) rst <= 0;
        if (boot == 6) phase <= P_CSR;
        seg = seg_mem[0];
        csr_ptr <= seg[127:96];
        csr_end <= seg[127:96] + seg[95:64];
      end
      P_CSR: begin
        if (csr_ptr != csr_end) begin
          csr_addr <= csr_mem[csr_ptr][41:32];
          csr_w_data <= csr_mem[csr_ptr][31:0];
          csr_w_en <= 1;
          csr_ptr <= csr_ptr + 1;
        end else begin
          csr_w_en <= 0;
          seg = seg_mem[segment];
          next <= seg[63:32];
          stop <= seg[31:0];
          last_progress = cycle;
          phase <= P_REPLAY;
        end
      end
      P_REPLAY: begin
        cycle = cycle + 1;
        valid_now = req_valid;
        if (req_valid && req_ready) begin
          req = req_mem[next[REQ_AW-1:0]];
          busy[req[47:40]] = 1;
          tag_index[req[47:40]] = next[REQ_AW-1:0];
          tag_cycle[req[47:40]] = cycle;
          outstanding = outstanding + 1;
          last_progress = cycle;
          next <= next + 1;
          valid_now = 0;
        end
        if (drs_ready && drs_valid)
          respond(0, drs_payload[TAG_BITS-1:0], drs_payload[TAG_BITS], drs_payload[TAG_BITS+LINE_BITS:TAG_BITS+1]);
        if (ndr_ready && ndr_valid)
          respond(1, ndr_payload[TAG_BITS-1:0], ndr_payload[TAG_BITS], {LINE_BITS{1'b0}});
        if ((mismatches != 0 && cycle - first_mismatch_cycle >= after_mismatch)
            || (next + (req_valid && req_ready) == stop && !valid_now && outstanding == 0)) begin
          req_valid <= 0;
          drs_ready <= 0;
          ndr_ready <= 0;
          if (mismatches == 0 && segment + 1 < n_segments) begin
            seg = seg_mem[segment + 1];
            segment <= segment + 1;
            csr_ptr <= seg[127:96];
            csr_end <= seg[127:96] + seg[95:64];
            phase <= P_CSR;
          end else begin
            counter_ptr <= 0;
            wait_left <= 0;
            phase <= P_COUNTERS;
          end
        end else if (cycle - last_progress > watchdog) begin
          hang <= 1;
          req_valid <= 0;
          phase <= P_DONE;
        end else begin
          req_valid <= valid_now;
          if (!valid_now && next + (req_valid && req_ready) < stop) begin
            req = req_mem[next[REQ_AW-1:0] + (req_valid && req_ready)];
            if (!busy[req[47:40]] && outstanding < max_in_flight && !gap) begin
              req_valid <= 1;
              req_payload <= {req[48] ? line_mem[next[REQ_AW-1:0] + (req_valid && req_ready)] : {LINE_BITS{1'b0}},
                              req[39:0], req[47:40], req[48]};
            end
          end
          drs_ready <= !drs_stall;
          ndr_ready <= !ndr_stall;
        end
      end
      P_COUNTERS: begin
        if (wait_left == 0) begin
          if (counter_ptr == NCOUNTERS) phase <= P_DONE;
          else begin
            csr_addr <= CBASE + counter_ptr;
            csr_r_en <= 1;
            wait_left <= CSR_WAIT;
          end
        end else begin
          csr_r_en <= 0;
          wait_left <= wait_left - 1;
          if (wait_left == 1) begin
            counters[counter_ptr] <= csr_r_data;
            counter_ptr <= counter_ptr + 1;
          end
        end
      end
      P_DONE: begin
        fd = $fopen("results.txt", "w");
        $fwrite(fd, "hang %0d\\ncycles %0d\\nclock_cycles %0d\\nnext %0d\\nstop %0d\\n", hang, cycle,
                clock_cycles, next, stop);
        $fwrite(fd, "compared %0d\\npoisoned %0d\\nmismatches %0d\\noutstanding %0d\\n", compared, poisoned,
                mismatches, outstanding);
        $fwrite(fd, "first_mismatch_clock %0d\\n", first_mismatch_clock);
        $fwrite(fd, "latency_sum %0d\\nlatency_max %0d\\nlatency_min %0d\\n", latency_sum, latency_max,
                latency_min);
        $fwrite(fd, "read_beats %0d\\nread_bursts %0d\\nwrite_beats %0d\\n", read_beats, read_bursts, write_beats);
        for (j = 0; j < NCOUNTERS; j = j + 1) if (!hang) $fwrite(fd, "counter %0d %0d\\n", j, counters[j]);
        for (j = 0; j < KEEP; j = j + 1)
          if (j < mismatches)
            $fwrite(fd, "mismatch %0d %0d %0d %0d %0d %0d %h\\n", mis_kind[j], mis_ndr[j], mis_tag[j],
                    mis_index[j], mis_cycle[j], mis_poison[j], mis_data[j]);
        for (j = 0; j < 256; j = j + 1)
          if (busy[j]) $fwrite(fd, "pending %0d %0d\\n", tag_index[j], tag_cycle[j]);
        $fwrite(fd, "end\\n");
        $fclose(fd);
        $finish;
      end
      default: phase <= P_DONE;
    endcase
  end
endmodule
"""
