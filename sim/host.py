"""The CXL host side of the testbench: drives M2S requests with many tags in flight
and random valid gaps, applies random backpressure to the DRS/NDR response streams,
and hands every response to the scoreboard.  One coroutine does all of it once per
clock edge (cheaper than one per stream), and it also counts the AXI read-bus beats.
"""

from __future__ import annotations

import dataclasses
import random

from cocotb.triggers import RisingEdge

from .. import spec
from ..spec import CSR_READ_LATENCY, LINE_BYTES
from .scoreboard import Scoreboard


class HangError(AssertionError):
    """The watchdog saw no request accepted and no response for too long."""


@dataclasses.dataclass
class HostSettings:
    max_in_flight: int = 64          #: requests outstanding at most (tags are the trace's)
    request_gap: float = 0.0         #: probability of holding valid low on a cycle it could be high
    response_stall: float = 0.0      #: probability of holding DRS / NDR ready low on a cycle
    watchdog_cycles: int = 20000     #: cycles without progress that fail the run as a hang
    cycles_after_mismatch: int = 64  #: cycles simulated past the first mismatch (for waveforms)


@dataclasses.dataclass
class BusCounters:
    """AXI activity seen on the bus (beats, bursts) over `cycles`."""
    beat_bytes: int
    cycles: int = 0
    read_beats: int = 0
    read_bursts: int = 0
    write_beats: int = 0

    @property
    def bytes_read(self) -> int:
        return self.read_beats * self.beat_bytes

    @property
    def bytes_written(self) -> int:
        return self.write_beats * self.beat_bytes


class HostModel:
    """The host's behaviour, cycle by cycle, independent of the simulator: which request
    to offer, when to hold ready low, what each handshake means for the scoreboard, and
    when a segment is done or hung.  A backend calls `edge(...)` with what it sampled at
    each clock edge, then drives `req_valid` / `req_payload` / `drs_ready` / `ndr_ready`."""

    def __init__(self, scoreboard: Scoreboard, settings: HostSettings, rng: random.Random):
        self.scoreboard = scoreboard
        self.trace = scoreboard.trace
        self.settings = settings
        self.rng = rng
        self.cycle = 0
        self.req_valid = self.drs_ready = self.ndr_ready = False
        self.req_payload: int | None = None     #: new payload to drive, None: unchanged
        self.next_index = self.stop = 0
        self.last_progress = 0

    def begin(self, start: int, stop: int) -> None:
        self.next_index, self.stop, self.last_progress = start, stop, self.cycle

    def payload(self, index: int) -> int:
        trace = self.trace
        return spec.pack_fields(spec.REQ_FIELDS, opcode=int(trace.opcode[index]), tag=int(trace.tag[index]),
                                addr=int(trace.addr[index]),
                                data=int.from_bytes(trace.line[index].tobytes(), "little")
                                if trace.opcode[index] == spec.Opcode.MEM_WR else 0)

    def edge(self, req_ready, drs_valid, drs_payload, ndr_valid, ndr_payload) -> bool:
        """Account one clock edge; `*_payload` are callables (read only on a handshake).
        Returns True when the segment is finished; raises HangError when stuck."""
        sb, settings = self.scoreboard, self.settings
        self.cycle += 1
        cycle = self.cycle
        if self.req_valid and req_ready:
            sb.accepted(self.next_index, cycle)
            self.next_index += 1
            self.req_valid = False
            self.last_progress = cycle
        if self.drs_ready and drs_valid:
            beat = spec.unpack_fields(spec.DRS_FIELDS, drs_payload())
            sb.responded("drs", beat["tag"], beat["poison"], beat["data"].to_bytes(LINE_BYTES, "little"), cycle)
            self.last_progress = cycle
        if self.ndr_ready and ndr_valid:
            beat = spec.unpack_fields(spec.NDR_FIELDS, ndr_payload())
            sb.responded("ndr", beat["tag"], beat["poison"], None, cycle)
            self.last_progress = cycle
        mismatch = sb.first_mismatch
        if (mismatch and cycle - mismatch.cycle >= settings.cycles_after_mismatch) or \
                (self.next_index == self.stop and not self.req_valid and not sb.outstanding):
            self.req_valid = self.drs_ready = self.ndr_ready = False
            return True
        if cycle - self.last_progress > settings.watchdog_cycles:
            raise HangError(self._hang_report())
        self.req_payload = None
        if not self.req_valid and self.next_index < self.stop:
            tag = int(self.trace.tag[self.next_index])
            if (tag not in sb.outstanding and len(sb.outstanding) < settings.max_in_flight
                    and self.rng.random() >= settings.request_gap):
                self.req_payload = self.payload(self.next_index)
                self.req_valid = True
        self.drs_ready = self.rng.random() >= settings.response_stall
        self.ndr_ready = self.rng.random() >= settings.response_stall
        return False

    def _hang_report(self) -> str:
        return hang_report(self.trace, self.settings.watchdog_cycles, self.cycle,
                           list(self.scoreboard.outstanding.values()), self.stop - self.next_index)


def hang_report(trace, watchdog_cycles: int, cycle: int, outstanding: list[tuple[int, int]],
                not_accepted: int) -> str:
    """The hang message: `outstanding` holds (request index, accept cycle) of the requests
    still waiting for a response; it names the oldest."""
    outstanding = sorted(outstanding, key=lambda v: v[1])
    oldest = (f"; oldest outstanding: {trace.describe(outstanding[0][0])} since cycle {outstanding[0][1]}"
              if outstanding else "")
    return (f"hang: no progress for {watchdog_cycles} cycles at cycle {cycle}, "
            f"{len(outstanding)} responses outstanding, {not_accepted} requests not accepted{oldest}")


class HostPort:
    """cocotb face of HostModel: replays trace requests on the DUT's host streams and
    counts AXI beats on the same clock edges."""

    def __init__(self, dut, model: HostModel):
        self.dut = dut
        self.model = model
        self.bus = BusCounters(beat_bytes=len(dut.axi__rdata) // 8)
        dut.req__valid.value = 0
        dut.drs__ready.value = 0
        dut.ndr__ready.value = 0

    async def replay(self, start: int, stop: int) -> None:
        """Issue requests [start, stop) and wait for all their responses (or the first
        mismatch plus a margin); raise HangError if the device stops making progress."""
        dut, model, bus = self.dut, self.model, self.bus
        edge = RisingEdge(dut.clk)
        model.begin(start, stop)
        finished = False
        while not finished:
            await edge
            finished = model.edge(dut.req__ready.value, dut.drs__valid.value, lambda: int(dut.drs__payload.value),
                                  dut.ndr__valid.value, lambda: int(dut.ndr__payload.value))
            bus.cycles += 1
            bus.read_beats += bool(dut.axi__rvalid.value and dut.axi__rready.value)
            bus.read_bursts += bool(dut.axi__arvalid.value and dut.axi__arready.value)
            bus.write_beats += bool(dut.axi__wvalid.value and dut.axi__wready.value)
            if model.req_payload is not None:
                dut.req__payload.value = model.req_payload
            dut.req__valid.value = model.req_valid
            dut.drs__ready.value = model.drs_ready
            dut.ndr__ready.value = model.ndr_ready


class CsrPort:
    """The register bus: a write takes one cycle; read data is valid `CSR_READ_LATENCY`
    cycles after r_en."""

    def __init__(self, dut):
        self.dut = dut
        self.edge = RisingEdge(dut.clk)
        dut.csr__w_en.value = 0
        dut.csr__r_en.value = 0

    async def write(self, addr: int, value: int) -> None:
        self.dut.csr__addr.value = addr
        self.dut.csr__w_data.value = value
        self.dut.csr__w_en.value = 1
        await self.edge
        self.dut.csr__w_en.value = 0

    async def read(self, addr: int) -> int:
        self.dut.csr__addr.value = addr
        self.dut.csr__r_en.value = 1
        await self.edge
        self.dut.csr__r_en.value = 0
        for _ in range(CSR_READ_LATENCY):   # one edge spare: r_data holds, whichever side of an edge a read sees
            await self.edge
        return int(self.dut.csr__r_data.value)
