"""Scoreboard: every response of the device against the trace's expected line,
bit for bit, with the first mismatch described for a person (no simulator needed
here, so it is shared by every backend)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..spec import LINE_BYTES, Opcode
from ..sw.image.trace import Trace

#: differing bytes listed in a mismatch message
SHOWN_BYTES = 8


@dataclasses.dataclass
class Mismatch:
    index: int          #: request number in the trace
    cycle: int
    text: str


class Scoreboard:
    """Matches responses to outstanding requests by tag and compares them.

    Data of a poisoned read is not compared (CXL poison marks it meaningless)."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.outstanding: dict[int, tuple[int, int]] = {}   # tag -> (request index, accept cycle)
        self.compared = 0
        self.poisoned = 0
        self.mismatches: list[Mismatch] = []
        self.latencies: list[int] = []
        self.received = np.zeros_like(trace.line)    #: u8[n, 64] DRS data as it arrived, by request

    def accepted(self, index: int, cycle: int) -> None:
        tag = int(self.trace.tag[index])
        assert tag not in self.outstanding, f"tag {tag} reused while outstanding"
        self.outstanding[tag] = (index, cycle)

    def responded(self, channel: str, tag: int, poison: int, data: bytes | None, cycle: int) -> None:
        """A DRS (`data` given) or NDR (`data` None) beat seen at `cycle`."""
        if tag not in self.outstanding:
            self._fail(-1, cycle, f"{channel.upper()} with tag {tag} that has no request outstanding")
            return
        index, accept_cycle = self.outstanding.pop(tag)
        self.compared += 1
        self.latencies.append(cycle - accept_cycle)
        expect_write = self.trace.opcode[index] == Opcode.MEM_WR
        expected_poison = int(self.trace.poison[index])
        self.poisoned += poison
        where = self.trace.describe(index)
        if expect_write != (data is None):
            self._fail(index, cycle, f"{where}: answered on {channel.upper()}")
        elif poison != expected_poison:
            self._fail(index, cycle, f"{where}: poison {poison}, expected {expected_poison}")
        elif data is not None and not poison:
            self.received[index] = np.frombuffer(data, np.uint8)
            expected = self.trace.line[index].tobytes()
            if data != expected:
                self._fail(index, cycle, f"{where}: {describe_difference(data, expected)}")

    def _fail(self, index: int, cycle: int, text: str) -> None:
        self.mismatches.append(Mismatch(index, cycle, f"cycle {cycle}: {text}"))

    def latency_summary(self) -> dict:
        """Request latency in cycles (accepted to response): mean, min, max (0 without responses)."""
        latencies = np.array(self.latencies or [0])
        return {"mean": float(latencies.mean()), "min": int(latencies.min()), "max": int(latencies.max())}

    @property
    def first_mismatch(self) -> Mismatch | None:
        return self.mismatches[0] if self.mismatches else None


def describe_difference(got: bytes, expected: bytes) -> str:
    """'3 bytes differ: [5] 0x12 != 0x34, ...' (got != expected)."""
    a = np.frombuffer(got, np.uint8)
    b = np.frombuffer(expected, np.uint8)
    differing = np.flatnonzero(a != b)
    shown = ", ".join(f"[{i}] {a[i]:#04x} != {b[i]:#04x}" for i in differing[:SHOWN_BYTES])
    more = f", ... ({len(differing)} of {LINE_BYTES})" if len(differing) > SHOWN_BYTES else ""
    return f"{len(differing)} bytes differ (got != expected): {shown}{more}"
