"""The AXI4 manager port: one flat signature with the standard lower-case channel names,
so the Verilog ports read `axi__arvalid` etc. and cocotbext-axi binds them by prefix."""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

AXI_BURST_INCR = 1
AXI_RESP_OKAY = 0


def axi4_signature(*, addr_width: int, data_width: int, id_width: int) -> wiring.Signature:
    """AXI4 manager signature (Out: driven by the manager); lock/cache/prot/qos omitted."""
    return wiring.Signature({
        "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
        "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
        "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })
