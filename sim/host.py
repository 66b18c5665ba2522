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
from ..spec import LINE_BYTES
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


class HostPort:
    """Replays trace requests [start, stop) on the DUT's host streams."""

    def __init__(self, dut, scoreboard: Scoreboard, settings: HostSettings, rng: random.Random):
        self.dut = dut
        self.scoreboard = scoreboard
        self.trace = scoreboard.trace
        self.settings = settings
        self.rng = rng
        self.bus = BusCounters(beat_bytes=len(dut.axi__rdata) // 8)
        self.cycle = 0
        dut.req__valid.value = 0
        dut.drs__ready.value = 0
        dut.ndr__ready.value = 0

    def _payload(self, index: int) -> int:
        trace = self.trace
        return spec.pack_fields(spec.REQ_FIELDS, opcode=int(trace.opcode[index]), tag=int(trace.tag[index]),
                                addr=int(trace.addr[index]),
                                data=int.from_bytes(trace.line[index].tobytes(), "little")
                                if trace.opcode[index] == spec.Opcode.MEM_WR else 0)

    async def replay(self, start: int, stop: int) -> None:
        """Issue requests [start, stop) and wait for all their responses (or the first
        mismatch plus a margin); raise HangError if the device stops making progress."""
        dut, sb, settings, rng = self.dut, self.scoreboard, self.settings, self.rng
        edge = RisingEdge(dut.clk)
        next_index, driving = start, False
        drs_ready = ndr_ready = False
        last_progress = self.cycle
        while True:
            await edge
            self.cycle += 1
            cycle = self.cycle
            # --- sample the handshakes of the edge that just happened
            if driving and dut.req__ready.value:
                sb.accepted(next_index, cycle)
                next_index += 1
                driving = False
                last_progress = cycle
            if drs_ready and dut.drs__valid.value:
                beat = spec.unpack_fields(spec.DRS_FIELDS, int(dut.drs__payload.value))
                sb.responded("drs", beat["tag"], beat["poison"], beat["data"].to_bytes(LINE_BYTES, "little"), cycle)
                last_progress = cycle
            if ndr_ready and dut.ndr__valid.value:
                beat = spec.unpack_fields(spec.NDR_FIELDS, int(dut.ndr__payload.value))
                sb.responded("ndr", beat["tag"], beat["poison"], None, cycle)
                last_progress = cycle
            if dut.axi__rvalid.value and dut.axi__rready.value:
                self.bus.read_beats += 1
            if dut.axi__arvalid.value and dut.axi__arready.value:
                self.bus.read_bursts += 1
            if dut.axi__wvalid.value and dut.axi__wready.value:
                self.bus.write_beats += 1
            self.bus.cycles += 1
            # --- stop conditions
            mismatch = sb.first_mismatch
            if mismatch and cycle - mismatch.cycle >= settings.cycles_after_mismatch:
                break
            if next_index == stop and not driving and not sb.outstanding:
                break
            if cycle - last_progress > settings.watchdog_cycles:
                raise HangError(self._hang_report(next_index, stop))
            # --- drive the next cycle
            if not driving and next_index < stop:
                tag = int(self.trace.tag[next_index])
                if (tag not in sb.outstanding and len(sb.outstanding) < settings.max_in_flight
                        and rng.random() >= settings.request_gap):
                    dut.req__payload.value = self._payload(next_index)
                    dut.req__valid.value = 1
                    driving = True
            if not driving:
                dut.req__valid.value = 0
            drs_ready = rng.random() >= settings.response_stall
            ndr_ready = rng.random() >= settings.response_stall
            dut.drs__ready.value = drs_ready
            dut.ndr__ready.value = ndr_ready
        dut.req__valid.value = 0

    def _hang_report(self, next_index: int, stop: int) -> str:
        outstanding = sorted(self.scoreboard.outstanding.values(), key=lambda v: v[1])
        oldest = (f"; oldest outstanding: {self.trace.describe(outstanding[0][0])} since cycle {outstanding[0][1]}"
                  if outstanding else "")
        return (f"hang: no progress for {self.settings.watchdog_cycles} cycles at cycle {self.cycle}, "
                f"{len(outstanding)} responses outstanding, {stop - next_index} requests not accepted{oldest}")


class CsrPort:
    """The register bus: a write takes one cycle; read data is valid the cycle after r_en."""

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
        await self.edge
        return int(self.dut.csr__r_data.value)
