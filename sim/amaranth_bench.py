"""The third backend: the same trace replay and scoreboard on Amaranth's own simulator
(no Verilog, no cocotb), with a small cycle-stepped AXI4 RAM in place of cocotbext-axi.
Much slower than Verilator; meant for small traces and for debugging the RTL in Python.
`SteppedAxiRam` and `CsrBus` are also the AXI RAM and register-bus driver of the
Amaranth-simulator tests (tests/hw_bench.py)."""

from __future__ import annotations

import collections
import random

from amaranth.sim import Simulator

from ..spec import CSR_READ_LATENCY, LINE_BYTES
from ..sw.image.trace import Trace
from .dram import AXI_SLVERR, random_pauses
from .host import BusCounters, HostModel
from .scoreboard import Scoreboard
from .testbench import BenchConfig, run_segments

AR = ("arvalid", "araddr", "arlen", "arsize", "arid")
R = ("rready",)
AW = ("awvalid", "awaddr", "awlen", "awsize", "awid")
W = ("wvalid", "wdata", "wstrb", "wlast")
B = ("bready",)
SAMPLED = AR + R + AW + W + B


class SteppedAxiRam:
    """AXI4 RAM stepped once per clock edge: INCR bursts, `read_latency` cycles per read
    burst (pipelined, up to `max_outstanding` ARs), random pauses on all five channels,
    addresses wrapping at `size` like cocotbext-axi's AxiRam, SLVERR on read beats of
    `error_lines` (DRAM line numbers) and, with `write_errors`, on writes touching them
    (their data not written)."""

    def __init__(self, size: int, beat_bytes: int, read_latency: int, rng: random.Random,
                 stall: float, max_outstanding: int = 16, error_lines=(), write_errors: bool = False):
        self.mem = bytearray(size)
        self.error_lines = frozenset(error_lines)
        self.write_errors = write_errors
        self.beat_bytes = beat_bytes
        self.read_latency = read_latency
        self.max_outstanding = max_outstanding
        self.pauses = {ch: random_pauses(random.Random(rng.random()), stall) if stall else None
                       for ch in ("ar", "r", "aw", "w", "b")}
        self.reads = collections.deque()     # [arrival cycle, id, address, beats left]
        self.writes = collections.deque()    # [id, address, failed]
        self.responses = collections.deque() # (id, bresp) of finished write bursts
        self.out = dict(arready=0, rvalid=0, rdata=0, rlast=0, rid=0, rresp=0,
                        awready=0, wready=0, bvalid=0, bid=0, bresp=0)

    def _paused(self, channel: str) -> bool:
        pauses = self.pauses[channel]
        return pauses is not None and next(pauses)

    def _word(self, address: int) -> int:
        address %= len(self.mem)
        return int.from_bytes(self.mem[address:address + self.beat_bytes], "little")

    def edge(self, cycle: int, s: dict) -> None:
        """Account the handshakes of this edge (`s`: sampled manager signals), then set
        `out` for the next cycle."""
        out = self.out
        if out["arready"] and s["arvalid"]:
            self.reads.append([cycle, s["arid"], s["araddr"], s["arlen"] + 1])
        if out["rvalid"] and s["rready"]:
            burst = self.reads[0]
            burst[2] += self.beat_bytes
            burst[3] -= 1
            if burst[3] == 0:
                self.reads.popleft()
        if out["awready"] and s["awvalid"]:
            first, end = s["awaddr"], s["awaddr"] + (s["awlen"] + 1) * self.beat_bytes
            failed = self.write_errors and any(
                line in self.error_lines for line in range(first % len(self.mem) // LINE_BYTES,
                                                           (end - 1) % len(self.mem) // LINE_BYTES + 1))
            self.writes.append([s["awid"], first, failed])
        if out["wready"] and s["wvalid"]:
            burst = self.writes[0]
            address = burst[1] % len(self.mem)
            data = s["wdata"].to_bytes(self.beat_bytes, "little")
            for i in range(self.beat_bytes):
                if s["wstrb"] >> i & 1 and not burst[2]:
                    self.mem[address + i] = data[i]
            burst[1] += self.beat_bytes
            if s["wlast"]:
                ident, _, failed = self.writes.popleft()
                self.responses.append((ident, AXI_SLVERR if failed else 0))
        if out["bvalid"] and s["bready"]:
            self.responses.popleft()
        out["arready"] = int(len(self.reads) < self.max_outstanding and not self._paused("ar"))
        ready = self.reads and cycle >= self.reads[0][0] + self.read_latency and not self._paused("r")
        out["rvalid"] = int(bool(ready))
        if ready:
            _, ident, address, left = self.reads[0]
            failed = address % len(self.mem) // LINE_BYTES in self.error_lines
            out.update(rdata=self._word(address), rlast=int(left == 1), rid=ident,
                       rresp=AXI_SLVERR if failed else 0)
        out["awready"] = int(not self._paused("aw"))
        out["wready"] = int(bool(self.writes) and not self._paused("w"))
        out["bvalid"] = int(bool(self.responses) and not self._paused("b"))
        if self.responses:
            out["bid"], out["bresp"] = self.responses[0]


class CsrBus:
    """The register bus (`SmartQuantTop.csr`) through Amaranth's simulator context; the
    interface of the cocotb bench's `CsrPort`."""

    def __init__(self, ctx, bus):
        self.ctx, self.bus = ctx, bus

    async def write(self, addr: int, value: int) -> None:
        """One write cycle."""
        self.ctx.set(self.bus.addr, addr)
        self.ctx.set(self.bus.w_data, value)
        self.ctx.set(self.bus.w_en, 1)
        await self.ctx.tick()
        self.ctx.set(self.bus.w_en, 0)

    async def read(self, addr: int) -> int:
        """`r_en` for a cycle, `r_data` `CSR_READ_LATENCY` cycles later."""
        self.ctx.set(self.bus.addr, addr)
        self.ctx.set(self.bus.r_en, 1)
        await self.ctx.tick()
        self.ctx.set(self.bus.r_en, 0)
        await self.ctx.tick().repeat(CSR_READ_LATENCY - 1)
        return self.ctx.get(self.bus.r_data)


def run_trace_amaranth(trace: Trace, config: BenchConfig, top) -> dict:
    """Replay a (loaded) trace on an Amaranth `SmartQuantTop` instance in Amaranth's
    simulator; returns the same stats as the cocotb bench."""
    rng = random.Random(config.seed)
    beat_bytes = len(top.axi.rdata) // 8
    ram = SteppedAxiRam(-(-trace.dram_bytes // 4096) * 4096, beat_bytes, config.read_latency, rng, config.stall,
                        error_lines=trace.dram_errors)
    if trace.settings.get("load_via_host"):
        ram.mem[:] = random.Random(config.seed + 1).randbytes(len(ram.mem))
    else:
        dram = trace.load_image().dram.tobytes()
        ram.mem[:len(dram)] = dram
    scoreboard = Scoreboard(trace)
    model = HostModel(scoreboard, config.host_settings(), rng)
    bus = BusCounters(beat_bytes=beat_bytes)
    result = {}
    axi = {name: getattr(top.axi, name) for name in SAMPLED + tuple(ram.out)}

    async def bench(ctx):
        async def replay(start, stop):
            model.begin(start, stop)
            finished = False
            while not finished:
                values = await ctx.tick().sample(
                    top.req.ready, top.drs.valid, top.drs.payload.as_value(), top.ndr.valid,
                    top.ndr.payload.as_value(), *(axi[n] for n in SAMPLED))
                req_ready, drs_valid, drs_payload, ndr_valid, ndr_payload = values[2:7]
                sampled = dict(zip(SAMPLED, values[7:]))
                finished = model.edge(req_ready, drs_valid, lambda: drs_payload, ndr_valid, lambda: ndr_payload)
                bus.cycles += 1
                bus.read_beats += bool(ram.out["rvalid"] and sampled["rready"])
                bus.read_bursts += bool(ram.out["arready"] and sampled["arvalid"])
                bus.write_beats += bool(ram.out["wready"] and sampled["wvalid"])
                ram.edge(model.cycle, sampled)
                for name, value in ram.out.items():
                    ctx.set(axi[name], value)
                if model.req_payload is not None:
                    ctx.set(top.req.payload.as_value(), model.req_payload)
                ctx.set(top.req.valid, model.req_valid)
                ctx.set(top.drs.ready, model.drs_ready)
                ctx.set(top.ndr.ready, model.ndr_ready)

        result.update(await run_segments(config, trace, scoreboard, CsrBus(ctx, top.csr), replay, bus))

    sim = Simulator(top)
    sim.add_clock(4e-9)
    sim.add_testbench(bench)
    sim.run()
    result["simulator"] = "amaranth"
    return result
