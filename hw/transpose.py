"""Bit-plane transpose: the plane bits of `lanes` weights -> their k-bit view codes r."""

from amaranth import Cat, Module, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODE_BITS, PLANES


class CodeGather(wiring.Component):
    """Combinational: `planes[p]` holds bit i = plane line p's bit of weight i (plane
    line p stores bit-plane 7-p); `r[i]` is weight i's view code at `k` bits
    (1..8): the top k bits of q, then a 1, then zeros (r = q at k = 8).
    Planes at or below line k are ignored, so a block fetched with more lines serves
    any smaller k."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({
            "planes": In(data.ArrayLayout(lanes, PLANES)),
            "k": In(4),
            "r": Out(data.ArrayLayout(CODE_BITS, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        # plane line p (bit 7-p of every code) is kept for p < k; the bucket-middle 1 sits at line p == k
        kept = [Mux(p < self.k, self.planes[p], 0) | Mux(p == self.k, (1 << self.lanes) - 1, 0)
                for p in range(PLANES)]
        m.d.comb += self.r.eq(Cat(*[kept[CODE_BITS - 1 - bit][i] for i in range(self.lanes)
                                    for bit in range(CODE_BITS)]))
        return m
