"""Bit-plane transpose: the plane bits of `lanes` weights -> their k-bit view codes r."""

from amaranth import Cat, Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec import CODE_BITS, PLANES

#: which plane lines a view keeps and where its bucket-middle 1 sits (bit p: plane line p)
VIEW_MASKS = data.StructLayout({"keep": PLANES, "middle": PLANES})


def view_masks(k):
    """`VIEW_MASKS` of view k (1..8): keep lines p < k, the 1 at line k (none at k = 8).
    A value to register before `CodeGather`, so that its selects start at flip-flops."""
    return Cat(Cat(*[p < k for p in range(PLANES)]), Cat(*[p == k for p in range(PLANES)]))


class CodeGather(wiring.Component):
    """Combinational: `planes[p]` holds bit i = plane line p's bit of weight i (plane
    line p stores bit-plane 7-p); `r[i]` is weight i's view code at k bits, given
    `masks` = `view_masks(k)`: the top k bits of q, then a 1, then zeros (r = q at k = 8).
    Planes at or below line k are ignored, so a block fetched with more lines serves
    any smaller k."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({
            "planes": In(data.ArrayLayout(lanes, PLANES)),
            "masks": In(VIEW_MASKS),
            "r": Out(data.ArrayLayout(CODE_BITS, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        kept = [(self.planes[p] & self.masks.keep[p].replicate(self.lanes)) | self.masks.middle[p].replicate(self.lanes)
                for p in range(PLANES)]
        m.d.comb += self.r.eq(Cat(*[kept[CODE_BITS - 1 - bit][i] for i in range(self.lanes)
                                    for bit in range(CODE_BITS)]))
        return m
