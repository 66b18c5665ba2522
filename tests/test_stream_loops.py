"""The stream rule no property over traces can state: no output `valid` depends
combinationally on the same stream's `ready` (sim/stream_loops.py), for every component
of the controller, and the check catching a component that breaks it."""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from smartquant.hw.top import SmartQuantTop
from smartquant.sim import stream_loops


def test_no_component_drives_valid_from_its_own_ready():
    components = stream_loops.controller_components(SmartQuantTop(**stream_loops.SMALL_TOP))
    checked = {type(c).__name__: c for c in components if stream_loops.output_handshakes(c)}
    assert {"SmartQuantTop", "AddressDecoder", "BypassQueue", "FetchIssue", "DramPort", "Responder",
            "LineGather", "LinePacker", "OutputRouter"} <= set(checked)
    assert (("axi", "arvalid"), ("axi", "arready")) in stream_loops.output_handshakes(checked["SmartQuantTop"])
    loops = {name: stream_loops.valid_ready_loops(c) for name, c in checked.items()}
    assert not any(loops.values()), loops


class _Forward(wiring.Component):
    """A stream passed through, and an AXI-style `arvalid` / `arready` pair; `fault`: each
    offers only while its consumer is ready."""

    def __init__(self, fault: bool):
        self.fault = fault
        super().__init__({"input": In(stream.Signature(8)), "output": Out(stream.Signature(8)),
                          "arvalid": Out(1), "arready": In(1), "request": In(1)})

    def elaborate(self, platform):
        m = Module()
        gate, ar_gate = (self.output.ready, self.arready) if self.fault else (1, 1)
        m.d.comb += [self.output.valid.eq(self.input.valid & gate), self.output.payload.eq(self.input.payload),
                     self.input.ready.eq(self.output.ready), self.arvalid.eq(self.request & ar_gate)]
        return m


def test_a_valid_waiting_on_its_ready_is_caught():
    assert stream_loops.valid_ready_loops(_Forward(fault=True)) == ["output__valid", "arvalid"]
    assert stream_loops.valid_ready_loops(_Forward(fault=False)) == []
