"""The CSR file: region table, DRAM size, last-error status and the 64-bit counters
(register map in smartquant/spec.py, "CSR map")."""

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec import (COUNTERS, CSR_ADDR_BITS, CSR_CACHE_INVALIDATE, CSR_COUNTER_BASE, CSR_COUNTER_CLEAR, CSR_DATA_BITS,
                    CSR_DRAM_LINES, CSR_ERR_ADDR_HI, CSR_ERR_ADDR_LO, CSR_ERR_CAUSE, CSR_ID,
                    CSR_ID_VALUE, CSR_PARAMS, CFG_CODEBOOK_BITS, CFG_CODEBOOK_SHIFT, CFG_LUT, CSR_REGION_BASE, CSR_REGION_STRIDE, LINE_ADDR_BITS,
                    MAX_REGIONS, REGION_BLOCKS, REGION_CONFIG, REGION_META_BASE, REGION_PLANE_BASE,
                    ErrorCause, View)

COUNTER_BITS = 64
_GROUP_BITS = 4                     #: the read select's first stage picks among 2**4 words

#: register bus, seen from the side that issues reads and writes
CSR_BUS = wiring.Signature({
    "addr": Out(CSR_ADDR_BITS), "w_en": Out(1), "w_data": Out(CSR_DATA_BITS),
    "r_en": Out(1), "r_data": In(CSR_DATA_BITS),
})

#: one region-table entry as the datapath sees it
REGION = data.StructLayout({
    "plane_base": 32, "meta_base": 32, "blocks": 32,
    "valid": 1, "symmetric": 1, "scale_format": 2, "log2_group": 4,
    "lut": 1,                           # table-lookup region (spec.CFG_LUT)
    "codebook": CFG_CODEBOOK_BITS,      # its table set's first DRAM line // CODEBOOK_LINES
})

#: one error report: cause and host line address
ERROR_REPORT = data.StructLayout({"valid": 1, "cause": 3, "addr": LINE_ADDR_BITS})

#: the block cache's decisions, one command a cycle at most (blocktags.py)
LOOKUP_EVENTS = data.StructLayout({
    "plane_lookup": 1,       # a quantized read looked for its block ...
    "plane_miss": 1,         # ... and fetched it
    "meta_lookup": 1,        # an fp16 / bf16 read looked for its metadata line ...
    "meta_miss": 1,          # ... and fetched it
})

#: per-cycle events the counters add up
EVENTS = data.StructLayout({
    "read_beat": 1,          # an AXI read data beat was accepted
    "write_beat": 1,         # an AXI write data beat was sent
    "served": 1,             # an unpoisoned DRS line was taken by the host ...
    "served_view": 3,        # ... of this View
    "written": 1,            # an unpoisoned NDR was taken by the host
    "host_stall": 1,
    "dram_stall": 1,
    "decode_error": ERROR_REPORT,
    "dram_error": ERROR_REPORT,
    "lookup": LOOKUP_EVENTS,
})


class CsrFile(wiring.Component):
    """Registers behind the CSR bus; `r_data` is valid `CSR_READ_LATENCY` cycles after
    `r_en`: the bus is registered on entry (the host's bus may come from far away), then
    the word within each group of 16 words and the group are selected, a register after each."""

    def __init__(self, *, lanes: int, axi_data_width: int, default_dram_lines: int):
        self.lanes = lanes
        self.axi_data_width = axi_data_width
        self.default_dram_lines = default_dram_lines
        super().__init__({
            "bus": In(CSR_BUS),
            "regions": Out(data.ArrayLayout(REGION, MAX_REGIONS)),
            "dram_lines": Out(32, init=default_dram_lines),
            "events": In(EVENTS),
            "cache_invalidate": Out(1),     # CSR_CACHE_INVALIDATE written (a cycle's pulse)
        })

    def elaborate(self, platform):
        m = Module()
        bus = Signal(data.StructLayout({"addr": CSR_ADDR_BITS, "w_en": 1, "w_data": CSR_DATA_BITS, "r_en": 1}))
        m.d.sync += [bus.addr.eq(self.bus.addr), bus.w_en.eq(self.bus.w_en), bus.w_data.eq(self.bus.w_data),
                     bus.r_en.eq(self.bus.r_en)]
        beat_bytes = self.axi_data_width // 8
        counters = {name: Signal(COUNTER_BITS, name=f"count_{name}") for name in COUNTERS}
        hi_snapshot = Signal(32)
        err_cause = Signal(4)
        err_addr = Signal(LINE_ADDR_BITS)

        # --- counters (the events registered on entry: they come from all over the chip) ---
        ev = Signal(EVENTS)
        m.d.sync += ev.eq(self.events)
        increments = {
            "dram_bytes_read": ev.read_beat * beat_bytes,
            "dram_bytes_written": ev.write_beat * beat_bytes,
            "lines_written": ev.written,
            "host_stall_cycles": ev.host_stall,
            "dram_stall_cycles": ev.dram_stall,
        }
        for kind in ("plane", "meta"):
            increments[f"{kind}_lookups"] = ev.lookup[f"{kind}_lookup"]
            increments[f"{kind}_misses"] = ev.lookup[f"{kind}_miss"]
        for view in View:
            increments[f"lines_{view.name.lower()}"] = ev.served & (ev.served_view == view)
        for cause in ErrorCause:
            if cause != ErrorCause.NONE:
                increments[f"errors_{cause.name.lower()}"] = (
                    (ev.decode_error.valid & (ev.decode_error.cause == cause))
                    + (ev.dram_error.valid & (ev.dram_error.cause == cause)))
        clear = bus.w_en & (bus.addr == CSR_COUNTER_CLEAR)
        m.d.sync += self.cache_invalidate.eq(bus.w_en & (bus.addr == CSR_CACHE_INVALIDATE))
        for name, counter in counters.items():
            with m.If(clear):
                m.d.sync += counter.eq(0)
            with m.Else():
                m.d.sync += counter.eq(counter + increments[name])

        # --- last error (a DRAM error in the same cycle wins: it is the older request) ---
        for report in (ev.decode_error, ev.dram_error):
            with m.If(report.valid):
                m.d.sync += [err_cause.eq(report.cause), err_addr.eq(report.addr)]
        with m.If(bus.w_en & (bus.addr == CSR_ERR_CAUSE)):
            m.d.sync += err_cause.eq(ErrorCause.NONE)

        # --- writable registers ---
        region_words = {}
        for i in range(MAX_REGIONS):
            base = CSR_REGION_BASE + CSR_REGION_STRIDE * i
            region = self.regions[i]
            config = Signal(CSR_DATA_BITS, name=f"region{i}_config")
            m.d.comb += [region.valid.eq(config[0]), region.symmetric.eq(config[1]),
                         region.scale_format.eq(config[2:4]), region.log2_group.eq(config[4:8]),
                         region.lut.eq(config[CFG_LUT.bit_length() - 1]),
                         region.codebook.eq(config[CFG_CODEBOOK_SHIFT:])]
            for offset, reg in ((REGION_PLANE_BASE, region.plane_base), (REGION_META_BASE, region.meta_base),
                                (REGION_BLOCKS, region.blocks)):
                plain = Signal(32, name=f"region{i}_{offset}")
                m.d.comb += reg.eq(plain)
                region_words[base + offset] = plain
            region_words[base + REGION_CONFIG] = config
        writable = {CSR_DRAM_LINES: self.dram_lines, **region_words}
        with m.If(bus.w_en):
            with m.Switch(bus.addr):
                for addr, reg in writable.items():
                    with m.Case(addr):
                        m.d.sync += reg.eq(bus.w_data)

        # --- reads, two stages: the word within its group of 16, then the group ---
        readable = {
            CSR_ID: CSR_ID_VALUE,
            CSR_PARAMS: self.lanes | ((self.axi_data_width.bit_length() - 1) << 8) | (MAX_REGIONS << 16),
            CSR_ERR_CAUSE: err_cause, CSR_ERR_ADDR_LO: err_addr[:32], CSR_ERR_ADDR_HI: err_addr[32:],
            **writable,
        }
        # (reading a counter's low word snapshots its high word, in the same two stages)
        high_words = {}
        for n, counter in enumerate(counters.values()):
            readable[CSR_COUNTER_BASE + 2 * n] = counter[:32]
            readable[CSR_COUNTER_BASE + 2 * n + 1] = hi_snapshot
            high_words[CSR_COUNTER_BASE + 2 * n] = counter[32:]
        read_group = Signal(CSR_ADDR_BITS - _GROUP_BITS)
        read_valid = Signal()
        m.d.sync += [read_group.eq(bus.addr[_GROUP_BITS:]), read_valid.eq(bus.r_en)]
        group_words = self._select_in_groups(m, readable, bus.addr, "read_group")
        group_highs = self._select_in_groups(m, high_words, bus.addr, "high_group")
        snapshot = Signal()                 # the read is of a counter's low word
        m.d.sync += snapshot.eq(bus.r_en & (bus.addr[0] == 0) & (bus.addr >= CSR_COUNTER_BASE)
                                & (bus.addr < CSR_COUNTER_BASE + 2 * len(counters)))
        with m.If(read_valid):
            m.d.sync += self.bus.r_data.eq(0)
            with m.Switch(read_group):
                for g, word in group_words.items():
                    with m.Case(g):
                        m.d.sync += self.bus.r_data.eq(word)
        with m.If(read_valid & snapshot):
            with m.Switch(read_group):
                for g, word in group_highs.items():
                    with m.Case(g):
                        m.d.sync += hi_snapshot.eq(word)
        return m

    @staticmethod
    def _select_in_groups(m: Module, words: dict, addr, name: str) -> dict:
        """First read stage: per group of 2**_GROUP_BITS addresses, a register holding the
        word at `addr`'s low bits (0 if none); {group: register}."""
        groups = {}
        for address, value in words.items():
            groups.setdefault(address >> _GROUP_BITS, {})[address & ((1 << _GROUP_BITS) - 1)] = value
        selected = {g: Signal(CSR_DATA_BITS, name=f"{name}{g:x}") for g in groups}
        for g, members in groups.items():
            with m.Switch(addr[:_GROUP_BITS]):
                for low, value in members.items():
                    with m.Case(low):
                        m.d.sync += selected[g].eq(value)
                with m.Default():
                    m.d.sync += selected[g].eq(0)
        return selected
