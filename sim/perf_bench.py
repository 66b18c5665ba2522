"""The cocotb test behind `smartquant bench` (sim/bench.py): one simulation measures a
list of bench points one after another on the same device and DRAM model, so the
simulator starts once for a whole sweep.

A point is a trace replayed at one DRAM read latency, one number of read bursts the
DRAM model holds at once and one stall probability.  Per
point the usual co-verification run (`testbench.run_segments`: region table, replay,
bit-exact scoreboard, counters checked against the bus) gives the stats, plus the
cycles of the first request accepted and of the first and last response, which the
throughput and latency figures need.  Each point starts from a cold block cache
(CSR_CACHE_INVALIDATE), so that points replaying the same trace measure the same.  Each point's stats are appended as one JSON
line to the results file as soon as it is done (the caller shows progress from it).

Environment: SMARTQUANT_PERF, a JSON object of `PerfConfig` fields.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random

import cocotb
from cocotb.clock import Clock

from .. import spec
from ..sw.image.image import Image
from ..sw.image.trace import load_trace
from .dram import LatencyAxiRam
from .host import CsrPort, HostModel, HostPort
from .scoreboard import Scoreboard
from .testbench import CLOCK_PERIOD_NS, BenchConfig, reset, run_segments

ENV = "SMARTQUANT_PERF"


@dataclasses.dataclass
class PerfPoint:
    trace: str                  #: trace directory; its image must be `PerfConfig.image`
    read_latency: int           #: DRAM read latency, cycles per burst
    stall: float                #: pause probability per cycle on every AXI channel and host stream
    seed: int = 0
    max_in_flight: int = 256    #: host requests outstanding (256: every tag)
    dram_outstanding: int = 16  #: read bursts the DRAM model holds at once (LatencyAxiRam's default)


@dataclasses.dataclass
class PerfConfig:
    image: str                  #: image directory loaded into the DRAM model once
    results: str                #: JSON-lines file, one stats object per point, in order
    points: list[dict]          #: `PerfPoint` fields

    @classmethod
    def from_env(cls) -> "PerfConfig":
        return cls(**json.loads(os.environ[ENV]))


class TimedScoreboard(Scoreboard):
    """A scoreboard that also remembers the cycle of the first request accepted and of
    the first and last response (host-model cycles, counted from the replay's start)."""

    def __init__(self, trace):
        super().__init__(trace)
        self.first_accept = self.first_response = self.last_response = None

    def accepted(self, index: int, cycle: int) -> None:
        super().accepted(index, cycle)
        if self.first_accept is None:
            self.first_accept = cycle

    def responded(self, channel: str, tag: int, poison: int, data: bytes | None, cycle: int) -> None:
        super().responded(channel, tag, poison, data, cycle)
        if self.first_response is None:
            self.first_response = cycle
        self.last_response = cycle


def set_stall(ram: LatencyAxiRam, rng: random.Random, stall: float) -> None:
    """Random pauses on every AXI channel, or none (a cleared channel left unpaused)."""
    if stall:
        ram.set_random_pauses(rng, stall)
        return
    for channel in ram.channels():
        channel.clear_pause_generator()
        channel.pause = False


async def measure_point(dut, ram: LatencyAxiRam, csr: CsrPort, point: PerfPoint) -> dict:
    """Replay one point's trace; the co-verification stats plus first/last cycles."""
    trace = load_trace(point.trace)
    config = BenchConfig(trace=point.trace, stats="", seed=point.seed, stall=point.stall,
                         read_latency=point.read_latency, max_in_flight=point.max_in_flight)
    rng = random.Random(point.seed)
    ram.read_latency_ns = point.read_latency * CLOCK_PERIOD_NS
    ram.read_if.ar_channel.queue_occupancy_limit = point.dram_outstanding
    set_stall(ram, rng, point.stall)
    await csr.write(spec.CSR_CACHE_INVALIDATE, 1)      # every point from a cold block cache
    scoreboard = TimedScoreboard(trace)
    host = HostPort(dut, HostModel(scoreboard, config.host_settings(), rng))
    stats = await run_segments(config, trace, scoreboard, csr, host.replay, host.bus)
    stats.update(dram_outstanding=point.dram_outstanding, read_beats=host.bus.read_beats,
                 first_accept_cycle=scoreboard.first_accept,
                 first_response_cycle=scoreboard.first_response, last_response_cycle=scoreboard.last_response)
    return stats


@cocotb.test()
async def measure_points(dut):
    """Measure every point of SMARTQUANT_PERF in order; fail on the first point that fails."""
    config = PerfConfig.from_env()
    dram = Image.load(config.image).dram
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    ram = LatencyAxiRam(dut, dut.clk, dut.rst, size=-(-dram.size // 4096) * 4096,
                        clock_period_ns=CLOCK_PERIOD_NS)
    ram.write(0, dram.tobytes())
    csr = CsrPort(dut)
    await reset(dut)
    for fields in config.points:
        stats = await measure_point(dut, ram, csr, PerfPoint(**fields))
        with open(config.results, "a") as results:
            results.write(json.dumps(stats) + "\n")
        assert stats["passed"], stats["error"]
