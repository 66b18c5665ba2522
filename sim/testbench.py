"""The cocotb test that replays a golden trace against `smartquant_top`
(run it through `smartquant.sim.runner`, which sets the environment below).

Environment: SMARTQUANT_BENCH, a JSON object of `BenchConfig` fields (trace path,
seed, stall probabilities, read latency, stats path).  Per trace segment the bench
programs the region table through the CSR port, replays the requests and drains
them; at the end it reads the performance counters and writes the stats JSON, pass
or fail, before failing the test on the first mismatch or a hang.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from .. import spec
from ..sw.image.trace import load_trace
from .dram import LatencyAxiRam
from .host import CsrPort, HangError, HostModel, HostPort, HostSettings
from .scoreboard import Scoreboard

CLOCK_PERIOD_NS = 4
ENV = "SMARTQUANT_BENCH"


@dataclasses.dataclass
class BenchConfig:
    trace: str
    stats: str
    seed: int = 0
    stall: float = 0.0               #: pause probability per cycle on every AXI channel and host stream
    read_latency: int = 0            #: extra DRAM read latency, cycles per burst
    max_in_flight: int = 64
    watchdog_cycles: int = 20000
    responses: str = ""              #: if set, save the DRS lines received here (.npy, u8[requests, 64])

    def host_settings(self) -> HostSettings:
        return HostSettings(max_in_flight=self.max_in_flight, request_gap=self.stall,
                            response_stall=self.stall, watchdog_cycles=self.watchdog_cycles)

    @classmethod
    def from_env(cls) -> "BenchConfig":
        return cls(**json.loads(os.environ[ENV]))


async def reset(dut) -> None:
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)


def region_writes(regions: list[dict]) -> list[tuple[int, int]]:
    """CSR writes that program a segment's region table; unused entries invalid."""
    writes = []
    for index in range(spec.MAX_REGIONS):
        if index < len(regions):
            region = regions[index]
            writes += spec.region_csr_writes(index, region["plane_base"], region["meta_base"], region["blocks"],
                                             region["group_size"], region["symmetric"],
                                             spec.ScaleFormat(region["scale_format"]),
                                             codebook_base=region.get("codebook_base"))
        else:
            writes.append((spec.CSR_REGION_BASE + spec.CSR_REGION_STRIDE * index + spec.REGION_CONFIG, 0))
    return writes


async def read_counters(csr: CsrPort) -> dict[str, int]:
    """Every 64-bit performance / error counter of the CSR map (LO read first, then HI)."""
    counters = {}
    for name in spec.COUNTERS:
        low = await csr.read(spec.counter_csr(name))
        counters[name] = low | (await csr.read(spec.counter_csr(name) + 1)) << 32
    return counters


def counter_disagreement(counters: dict[str, int], scoreboard, bus_bytes_read: int) -> str | None:
    """The CSR counters checked against what the bench saw: DRAM bytes read on the bus
    and the number of poisoned responses."""
    errors = sum(v for name, v in counters.items() if name.startswith("errors_"))
    if counters["dram_bytes_read"] != bus_bytes_read:
        return f"CSR dram_bytes_read {counters['dram_bytes_read']} != {bus_bytes_read} bytes seen on the AXI bus"
    if errors != scoreboard.poisoned:
        return f"CSR error counters sum to {errors}, but {scoreboard.poisoned} responses were poisoned"
    return None


async def run_segments(config: BenchConfig, trace, scoreboard, csr, replay, bus) -> dict:
    """The run every backend shares: DRAM size and counter clear, then per segment the
    region table and `await replay(start, stop)`, then the counters; the stats, with
    `error` naming the first mismatch, a hang or a counter disagreement."""
    started, error, counters = time.perf_counter(), None, {}
    await csr.write(spec.CSR_DRAM_LINES, trace.dram_bytes // spec.LINE_BYTES)
    await csr.write(spec.CSR_COUNTER_CLEAR, 1)
    try:
        for segment in trace.segments:
            for addr, value in region_writes(segment.regions):
                await csr.write(addr, value)
            await replay(segment.start, segment.stop)
            if scoreboard.first_mismatch:
                break
        counters = await read_counters(csr)
    except HangError as exc:
        error = str(exc)
    if scoreboard.first_mismatch and error is None:
        error = scoreboard.first_mismatch.text
    if error is None:
        error = counter_disagreement(counters, scoreboard, bus.bytes_read)
    if config.responses:
        np.save(config.responses, scoreboard.received)
    return summarize(config, trace, scoreboard, bus, counters, time.perf_counter() - started, error)


def summarize(config, trace, scoreboard, bus, counters, wall_s, error) -> dict:
    first = scoreboard.first_mismatch
    return {
        "passed": error is None,
        "error": error,
        "first_mismatch": first.text if first else None,
        "mismatches": len(scoreboard.mismatches),
        "requests": len(trace),
        "lines_compared": scoreboard.compared,
        "poisoned": scoreboard.poisoned,
        "cycles": bus.cycles,
        "dram_bytes_read_bus": bus.bytes_read,
        "dram_read_bursts": bus.read_bursts,
        "dram_bytes_written_bus": bus.bytes_written,
        "read_bus_utilisation": bus.read_beats / max(bus.cycles, 1),
        "latency_cycles": scoreboard.latency_summary(),
        "counters": counters,
        "wall_s": wall_s,
        "cycles_per_s": bus.cycles / max(wall_s, 1e-9),
        "settings": dataclasses.asdict(config),
    }


@cocotb.test()
async def replay_trace(dut):
    """Replay the trace named in SMARTQUANT_BENCH; compare every response bit for bit."""
    config = BenchConfig.from_env()
    trace = load_trace(config.trace)
    rng = random.Random(config.seed)
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    ram = LatencyAxiRam(dut, dut.clk, dut.rst, size=-(-trace.dram_bytes // 4096) * 4096,
                        clock_period_ns=CLOCK_PERIOD_NS, read_latency=config.read_latency,
                        error_lines=trace.dram_errors)
    if config.stall:
        ram.set_random_pauses(rng, config.stall)
    if trace.settings.get("load_via_host"):
        # junk everywhere, so a line the host failed to write is caught
        ram.write(0, random.Random(config.seed + 1).randbytes(ram.size))
    else:
        ram.write(0, trace.load_image().dram.tobytes())       # back door
    scoreboard = Scoreboard(trace)
    host = HostPort(dut, HostModel(scoreboard, config.host_settings(), rng))
    csr = CsrPort(dut)
    await reset(dut)
    stats = await run_segments(config, trace, scoreboard, csr, host.replay, host.bus)
    with open(config.stats, "w") as f:
        json.dump(stats, f, indent=2)
    assert stats["passed"], stats["error"]
