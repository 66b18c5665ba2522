"""Structural check of the stream rule "no output `valid` depends combinationally on the
same stream's `ready`" (docs/FORMAL.md, "Valid never waits on ready").

For a component, every output handshake (a `valid` it drives beside a `ready` it reads:
an `amaranth.lib.stream` port, or an AXI channel's `xvalid` / `xready`) is looped back in
a wrapper, `ready = valid`; a `valid` that depends on its own `ready` then closes a
combinational loop, which Amaranth's netlist builder finds on the exact netlist (bit by
bit, through every submodule) and reports as `CombinationalCycle`.  Every component of
the controller is checked, at small parameters.
"""

from __future__ import annotations

import functools

from amaranth import Elaboratable, Fragment, Module, Signal, Value
from amaranth.back import rtlil
from amaranth.hdl import CombinationalCycle
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow

from ..hw.top import SmartQuantTop

#: the controller at small parameters (one beat a line, 2 + 2 slots, a short job queue)
SMALL_TOP = dict(lanes=16, axi_data_width=512, axi_addr_width=16, axi_id_width=1, plane_slots=2, meta_slots=2,
                 job_depth=4)


def output_handshakes(component: wiring.Component) -> list[tuple[tuple, tuple]]:
    """(valid path, ready path) of every handshake whose `valid` the component drives and
    whose `ready` is a signal (an always-ready stream's is a constant)."""
    members = dict(component.signature.members.flatten())
    pairs = []
    for path, member in members.items():
        name = path[-1]
        if isinstance(name, str) and name.endswith("valid") and member.flow == Flow.Out:
            ready = path[:-1] + (name[:-len("valid")] + "ready",)
            if (ready in members and members[ready].flow == Flow.In
                    and isinstance(Value.cast(_port(component, ready)), Signal)):
                pairs.append((path, ready))
    return pairs


def _port(component, path):
    return functools.reduce(lambda obj, name: obj[name] if isinstance(name, int) else getattr(obj, name),
                            path, component)


class _Loopback(Elaboratable):
    """The component with the handshake's `ready` driven by its own `valid`."""

    def __init__(self, component, valid, ready):
        self.component, self.valid, self.ready = component, valid, ready

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.component
        m.d.comb += _port(self.component, self.ready).eq(_port(self.component, self.valid))
        return m


def valid_ready_loops(component: wiring.Component) -> list[str]:
    """The output handshakes (as `port__valid`) whose `valid` depends on their own `ready`."""
    loops = []
    for valid, ready in output_handshakes(component):
        ports = [value for value in (Value.cast(value) for path, _, value in component.signature.flatten(component)
                                     if path != ready) if isinstance(value, Signal)]
        try:
            rtlil.convert(_Loopback(component, valid, ready), ports=ports)
        except CombinationalCycle:
            loops.append("__".join(str(name) for name in valid))
    return loops


def controller_components(top: SmartQuantTop) -> list[wiring.Component]:
    """Every `wiring.Component` in the controller's hierarchy, the top included."""
    found, fragments = [], [Fragment.get(top, None)]
    while fragments:
        fragment = fragments.pop()
        found += [o for o in fragment.origins or () if isinstance(o, wiring.Component) and o not in found]
        fragments += [sub for sub, *_ in fragment.subfragments]
    return found
