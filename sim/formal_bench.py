"""What every formal harness is built from: the reset-less top module with free inputs,
shadow registers, and the property record that `smartquant prove` runs (docs/FORMAL.md).

A harness is verification code, not hardware: it lives in sim/ and reads hw/, never the
reverse.  The other side of each port is left free (inputs of the harness's top) and
constrained by `Assume` to legal behaviour only; shadow counters and one-cycle-old copies
(registers of the harness) state what the design must do.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from amaranth import ClockDomain, Elaboratable, Module, Signal, Value
from amaranth.hdl import Assume


class Harness(Elaboratable):
    """A top module built by `build(harness)` in a reset-less `sync` domain (the solver
    starts from the registers' initial values); signals made by `free` are its inputs."""

    def __init__(self, build: Callable[["Harness", Module], None]):
        self._free = []
        self.module = Module()
        self.module.domains.sync = domain = ClockDomain("sync", reset_less=True)
        self._free.append(domain.clk)
        build(self, self.module)

    def free(self, shape, name: str) -> Signal:
        """An input the solver picks anew every cycle."""
        signal = Signal(shape, name=name)
        self._free.append(signal)
        return signal

    def free_inputs(self) -> list:
        return list(self._free)

    def elaborate(self, platform):
        return self.module


@dataclasses.dataclass(frozen=True)
class FormalProperty:
    """One sby job: `build` adds the checks to a fresh Harness."""
    name: str
    component: str
    kind: str                   #: "prove" (k-induction at `depth`), "bmc" or "cover" (search to `depth`)
    depth: int                  #: cycles
    builder: Callable[[Harness, Module], None]

    @property
    def description(self) -> str:
        return " ".join((self.builder.__doc__ or "").split())

    def build(self) -> Harness:
        return Harness(self.builder)


def previous(m: Module, value, name: str) -> Signal:
    """`value` one cycle ago (its initial value in the first cycle)."""
    before = Signal(value.shape(), name=name)
    m.d.sync += before.eq(value)
    return before


def delayed(m: Module, value, cycles: int, name: str) -> Signal:
    """`value` `cycles` cycles ago, through a chain of `previous` registers named `name`0, 1, ..."""
    for n in range(cycles):
        value = previous(m, value, f"{name}{n}")
    return value


def in_a_row(m: Module, value, cycles: int, name: str) -> Value:
    """`value` in this cycle and in each of the `cycles` - 1 before it (registers `name`0, 1, ...)."""
    held = earlier = value
    for n in range(cycles - 1):
        earlier = previous(m, earlier, f"{name}{n}")
        held = held & earlier
    return held


def kept_until_taken(m: Module, valid, ready, payload, name: str) -> Value:
    """The stream rules this cycle: if `payload` was offered (`valid`) and not taken
    (`ready`) last cycle, it is offered again, unchanged."""
    waiting = previous(m, valid & ~ready, f"{name}_waiting")
    payload_before = previous(m, payload, f"{name}_payload_before")
    return ~waiting | (valid & (payload == payload_before))


def shadow_count(m: Module, up, down, name: str, width: int) -> Signal:
    """A shadow counter: +1 on `up`, -1 on `down`, wrapping at `width` bits."""
    count = Signal(width, name=name)
    m.d.sync += count.eq(count + up - down)
    return count


def sticky(m: Module, condition, name: str) -> Signal:
    """A register that rises the cycle after `condition` first holds and stays high."""
    seen = Signal(name=name)
    with m.If(condition):
        m.d.sync += seen.eq(1)
    return seen


def constant(h: Harness, m: Module, shape, name: str) -> Signal:
    """A value the solver picks once: free in the first cycle, then held."""
    value, first = h.free(shape, name), Signal(init=1, name=f"{name}_first")
    m.d.sync += first.eq(0)
    m.d.comb += Assume(first | (value == previous(m, value, f"{name}_before")))
    return value


def elaborated(m: Module, component, name: str) -> Module:
    """`component` elaborated here as submodule `name`, so that the harness can read the
    registers it drives (`driven`)."""
    component._MustUse__silence = True          # elaborated here, not by the harness's parent
    inner = component.elaborate(None)
    m.submodules[name] = inner
    return inner


def driven(inner: Module, name: str) -> Signal:
    """The signal called `name` that module `inner` (not its submodules) drives: an internal
    register a k-induction invariant must name (Amaranth keeps no public index of them)."""
    found = [s for s in inner._driving.keys() if s.name == name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} signals named {name!r} driven by the module")
    return found[0]


def stream_source(h: Harness, m: Module, port, name: str):
    """Drive the stream `port` (an input of the design) from free inputs that keep the
    stream rules: `valid` held and the payload stable until `ready`.  Returns (valid,
    payload) as the design sees them."""
    valid, payload = h.free(1, f"{name}_valid"), h.free(len(Value.cast(port.payload)), f"{name}_payload")
    m.d.comb += [port.valid.eq(valid), port.payload.eq(payload),
                 Assume(kept_until_taken(m, valid, port.ready, payload, name))]
    return valid, port.payload

