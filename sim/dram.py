"""The device DRAM behind the controller's AXI4 master: cocotbext-axi's `AxiRam`
with an added, pipelined read latency and random pause patterns on every channel.

`AxiRam` answers a read burst as soon as its AR beat is accepted and holds at most
two ARs.  `LatencyAxiRam` stamps each accepted AR with its arrival time and lets the
RAM's read process take it only `read_latency` cycles later, with up to
`max_outstanding_reads` ARs queued, so bursts overlap like in a real DRAM (latency
per burst, full bandwidth across bursts).  Reads of the DRAM lines in `error_lines`
answer SLVERR on every beat (sw/image/dram_errors.py says which responses that poisons).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from cocotb.simtime import get_sim_time
from cocotb.triggers import Timer
from cocotbext.axi import AxiBus, AxiRam

from ..spec import LINE_BYTES

AXI_SLVERR = 2          #: RRESP / BRESP of a subordinate error


def random_pauses(rng: random.Random, probability: float, mean_burst: int = 4):
    """Per-cycle pause flags: pauses start with `probability` per cycle and last
    1..2*mean_burst-1 cycles (bursty backpressure, not just single-cycle gaps)."""
    while True:
        if rng.random() < probability:
            for _ in range(rng.randint(1, 2 * mean_burst - 1)):
                yield True
        yield False


class DramLineError(Exception):
    """A read of a line in the error list (cocotbext-axi answers SLVERR for a read that raises)."""


class LatencyAxiRam(AxiRam):
    """`AxiRam` with `read_latency` extra cycles per read burst (pipelined) and SLVERR on
    reads of `error_lines` (DRAM line numbers)."""

    def __init__(self, dut, clock, reset, size: int, clock_period_ns: float,
                 read_latency: int = 0, max_outstanding_reads: int = 16, prefix: str = "axi_",
                 error_lines: Iterable[int] = ()):
        super().__init__(AxiBus.from_prefix(dut, prefix), clock, reset, size=size)
        errors = frozenset(error_lines)
        read_beat = self.read_if._read

        async def read_or_fail(address, length):
            if address // LINE_BYTES in errors:
                raise DramLineError(f"DRAM line {address // LINE_BYTES}")
            return await read_beat(address, length)

        self.read_if._read = read_or_fail
        self.read_latency_ns = read_latency * clock_period_ns
        ar = self.read_if.ar_channel
        ar.queue_occupancy_limit = max_outstanding_reads
        put, recv = ar.queue.put_nowait, ar.recv

        def stamped_put(beat):
            beat.arrival_ns = get_sim_time("ns")
            put(beat)

        async def delayed_recv():
            beat = await recv()
            wait_ns = beat.arrival_ns + self.read_latency_ns - get_sim_time("ns")
            if wait_ns > 0:
                await Timer(wait_ns, "ns")
            return beat

        ar.queue.put_nowait = stamped_put
        ar.recv = delayed_recv

    def channels(self):
        """Every AXI channel model (aw, w, b, ar, r), for pause generators."""
        w, r = self.write_if, self.read_if
        return [w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel]

    def set_random_pauses(self, rng: random.Random, probability: float) -> None:
        """Independent random pause patterns on all five channels."""
        for channel in self.channels():
            channel.set_pause_generator(random_pauses(random.Random(rng.random()), probability))
