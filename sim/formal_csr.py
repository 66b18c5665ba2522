"""Formal harnesses around the CSR file's counters (hw/csr.py `CsrFile`): free events
and a free register bus; the counters' registers are read inside the design.

A counter is 64 bits: no run is long enough to wrap one, so the harness assumes each is
below 2**63 (k-induction would otherwise start next to the wrap)."""

from __future__ import annotations

from amaranth import Module, Mux
from amaranth.hdl import Assert, Assume, Cover

from ..hw import csr
from ..spec import COUNTERS, CSR_COUNTER_CLEAR, ErrorCause
from .formal_bench import Harness, driven, elaborated, previous, sticky


def _csr_bench(h: Harness, m: Module):
    """The real CsrFile with free inputs; returns (counters by name, `clear` and `events`
    as the counters see them: two cycles late, both registered on entry)."""
    dut = csr.CsrFile(lanes=1, axi_data_width=512, default_dram_lines=1 << 20)
    inner = elaborated(m, dut, "dut")
    for name in ("addr", "w_en", "w_data", "r_en"):
        port = getattr(dut.bus, name)
        m.d.comb += port.eq(h.free(len(port), f"bus_{name}"))
    events = h.free(csr.EVENTS.size, "events")
    m.d.comb += dut.events.eq(events)
    clear_now = dut.bus.w_en & (dut.bus.addr == CSR_COUNTER_CLEAR)
    clear = previous(m, previous(m, clear_now, "clear_1"), "clear_2")
    seen = csr.EVENTS(previous(m, previous(m, events, "events_1"), "events_2"))
    counters = {name: driven(inner, f"count_{name}") for name in COUNTERS}
    m.d.comb += [Assume(c < 1 << 63) for c in counters.values()]
    return counters, clear, seen


def csr_counters(h, m):
    """A counter never decreases except to zero on a clear (CSR_COUNTER_CLEAR written);
    each error counter adds exactly the poisoned requests of its cause the cycle reported,
    a decoder's and a DRAM error of one cause in one cycle both."""
    counters, clear, seen = _csr_bench(h, m)
    for name, count in counters.items():
        before = previous(m, count, f"{name}_before")
        m.d.comb += Assert(Mux(clear, count == 0, count >= before))
    for cause in ErrorCause:
        if cause == ErrorCause.NONE:
            continue
        count = counters[f"errors_{cause.name.lower()}"]
        reported = ((seen.decode_error.valid & (seen.decode_error.cause == cause))
                    + (seen.dram_error.valid & (seen.dram_error.cause == cause)))
        m.d.comb += Assert(count == Mux(clear, 0, previous(m, count, f"{cause.name}_count_before") + reported))


def csr_cover(h, m):
    """A counter cleared after counting; an error counter adding two in one cycle."""
    counters, clear, seen = _csr_bench(h, m)
    errors = counters["errors_dram_error"]
    counted = sticky(m, errors != 0, "counted")
    m.d.comb += [Cover(counted & clear & (errors == 0)),
                 Cover(errors - previous(m, errors, "errors_before") == 2)]
