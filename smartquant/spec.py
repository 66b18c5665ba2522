"""The device contract shared by the RTL (`smartquant.hw`) and the software stack
(`smartquant.sw`): line and block geometry, the host view encoding, the metadata
layout and the region-table fields.  Both sides read these constants; neither
side's *behaviour* lives here (the golden model and the RTL are written
independently), only the numbers they must agree on.  See docs/FORMATS.md.
"""

from __future__ import annotations

import enum

# --- geometry -----------------------------------------------------------------
LINE_BYTES = 64                      #: bytes per DRAM / host line
LINE_BITS = LINE_BYTES * 8           #: 512 bits per line
CODE_BITS = 8                        #: bits per stored weight code q
PLANES = CODE_BITS                   #: bit-planes per block (line j holds plane 7-j)
BLOCK_WEIGHTS = LINE_BITS            #: 512 weights per block (one bit each per plane line)
BLOCK_BYTES = PLANES * LINE_BYTES    #: 512 bytes of planes per block in DRAM
GROUP_SIZES = (32, 64, 128, 256)     #: allowed group sizes G (weights per scale)
DEFAULT_GROUP_SIZE = 128

# --- metadata (DESIGN.md section 3) -------------------------------------------
META_BYTES_PER_GROUP = 4             #: scale (2 bytes, little-endian), zero (u8), reserved (u8)
GROUPS_PER_META_LINE = LINE_BYTES // META_BYTES_PER_GROUP   #: 16
#: the controller's block cache (docs/RTL.md "Block cache"): plane slots (a block's top k
#: plane lines each) and metadata slots (one line each) by default; the software model of
#: which responses a DRAM error poisons (sw/dram_errors.py) assumes these sizes
PLANE_SLOTS = 128
META_SLOTS = 32
SYMMETRIC_ZERO = 128                 #: zero point fixed by symmetric formats


class ScaleFormat(enum.IntEnum):
    """How the 16-bit scale field of a group's metadata is read."""
    FP16 = 0     #: IEEE binary16 bits
    BF16 = 1     #: bfloat16 bits (upper half of a binary32)
    POW2 = 2     #: binary16 bits with a zero mantissa: the scale is a power of two


# --- host views (DESIGN.md section 4) -----------------------------------------
class View(enum.IntEnum):
    """Which view of the store a host line address selects."""
    RAW = 0      #: DRAM lines as stored (read/write); view offset = DRAM line address
    PACKED = 1   #: the top k plane lines of each block, k lines per block
    INT8 = 2     #: r - 128 as int8, 8 lines per block (symmetric regions only)
    FP16 = 3     #: s * (r - z) as binary16 (RNE), 16 lines per block
    BF16 = 4     #: s * (r - z) as bfloat16 (RNE), 16 lines per block


#: Host *line* addresses (byte address >> 6) are LINE_ADDR_BITS wide:
#:   [39:36] view, [35:32] k (1..8; ignored by RAW), [31:0] line offset in the view.
LINE_ADDR_BITS = 40
VIEW_SHIFT = 36
VIEW_BITS = 4
K_SHIFT = 32
K_BITS = 4
OFFSET_BITS = 32


def lines_per_block(view: View, k: int) -> int:
    """Host lines one 512-weight block occupies in a quantized view."""
    if view == View.PACKED:
        return k
    if view == View.INT8:
        return 8
    if view in (View.FP16, View.BF16):
        return 16
    raise ValueError(f"view {View(view).name} has no per-block lines")


def host_line_address(view: View, k: int, offset: int) -> int:
    """Host line address of line `offset` of `view` at `k` bits.

    In a quantized view, block b of a region whose planes start at DRAM line
    `plane_base` (a multiple of PLANES) has its output line j at offset
    `(plane_base // PLANES + b) * lines_per_block(view, k) + j`.
    """
    if not 0 <= offset < (1 << OFFSET_BITS):
        raise ValueError(f"view offset {offset} out of range")
    return (int(view) << VIEW_SHIFT) | (k << K_SHIFT) | offset


def split_host_line_address(addr: int) -> tuple[int, int, int]:
    """(view, k, offset) fields of a host line address (view is not validated)."""
    return ((addr >> VIEW_SHIFT) & ((1 << VIEW_BITS) - 1),
            (addr >> K_SHIFT) & ((1 << K_BITS) - 1),
            addr & ((1 << OFFSET_BITS) - 1))


# --- host request / response streams ------------------------------------------
class Opcode(enum.IntEnum):
    MEM_RD = 0
    MEM_WR = 1


TAG_BITS = 8                         #: request tag width
MAX_REGIONS = 16                     #: region-table entries in the CSRs

#: Host stream payload fields, least significant first (Amaranth StructLayout
#: order); the Verilog top level exposes each payload as one flat vector.
REQ_FIELDS = (("opcode", 1), ("tag", TAG_BITS), ("addr", LINE_ADDR_BITS), ("data", LINE_BITS))
DRS_FIELDS = (("tag", TAG_BITS), ("poison", 1), ("data", LINE_BITS))
NDR_FIELDS = (("tag", TAG_BITS), ("poison", 1))


def pack_fields(fields, **values) -> int:
    """Pack named field values into one integer, first field in the low bits."""
    word, shift = 0, 0
    for name, width in fields:
        value = values.get(name, 0)
        if not 0 <= value < (1 << width):
            raise ValueError(f"field {name}={value} does not fit {width} bits")
        word |= value << shift
        shift += width
    return word


def unpack_fields(fields, word: int) -> dict[str, int]:
    """Inverse of pack_fields."""
    out, shift = {}, 0
    for name, width in fields:
        out[name] = (word >> shift) & ((1 << width) - 1)
        shift += width
    return out


# ==============================================================================
# CSR map (owned by the RTL; docs/RTL.md).  Everything below is part of
# the contract between the RTL (`smartquant.hw.csr`) and whoever programs it
# (testbenches, drivers).
#
# Register bus: 32-bit words at WORD addresses (CSR_ADDR_BITS wide).  A write is
# one cycle with `w_en` high (`addr`, `w_data`); a read is one cycle with `r_en`
# high and `r_data` valid CSR_READ_LATENCY cycles later (held until the next read).  Reads have no side effects
# except the counter snapshot below; unmapped addresses read 0, writes to them
# and to read-only registers are ignored.
# ==============================================================================
CSR_ADDR_BITS = 10                   #: word-address width of the CSR bus
CSR_DATA_BITS = 32
CSR_READ_LATENCY = 3                 #: clock edges from the one that takes `r_en` to valid `r_data`

CSR_ID = 0x000                       #: read-only identification word
CSR_ID_VALUE = 0x5351_0001           #: "SQ", register-map version 1
CSR_PARAMS = 0x001                   #: read-only: [7:0] lanes, [15:8] log2(AXI data bits), [23:16] regions
CSR_DRAM_LINES = 0x002               #: DRAM size in lines: the RAW view's bound (reset: the whole AXI space)
CSR_COUNTER_CLEAR = 0x003            #: write any value: every counter to 0
CSR_ERR_CAUSE = 0x004                #: [3:0] ErrorCause of the last error (0: none); write any value: clear
CSR_ERR_ADDR_LO = 0x005              #: host line address of the last error, bits [31:0]
CSR_ERR_ADDR_HI = 0x006              #: ... bits [39:32]
#: write any value: no block of the block cache is resident any more and the loaded lookup
#: table is forgotten (the next read of every block fetches it); for DRAM contents changed
#: other than through the raw view, and for measurements from a cold cache.  Write it while
#: no request is in flight.
CSR_CACHE_INVALIDATE = 0x007


class ErrorCause(enum.IntEnum):
    """Why a request was answered with poison (CSR_ERR_CAUSE; one counter each).

    When several apply, the first in this order is reported."""
    NONE = 0
    BAD_VIEW = 1          #: view field not a View
    WRITE_TO_VIEW = 2     #: MemWr to a quantized view
    BAD_K = 3             #: k = 0 or k > 8 on a quantized view
    RAW_RANGE = 4         #: raw offset >= CSR_DRAM_LINES
    NO_REGION = 5         #: block in no valid region (includes past a region's end)
    INT8_ASYMMETRIC = 6   #: int8 view of an asymmetric region
    DRAM_ERROR = 7        #: AXI SLVERR / DECERR on the data the request needed


#: 64-bit counters: counter n reads as two words, LO at CSR_COUNTER_BASE + 2n and
#: HI at +2n+1.  Reading LO latches that counter's HI half into a snapshot which
#: the next HI read (of any counter) returns: read LO, then HI.
CSR_COUNTER_BASE = 0x040
COUNTERS = (
    "dram_bytes_read",        #: bytes of AXI read data accepted
    "dram_bytes_written",     #: bytes of AXI write data sent
    "lines_raw",              #: unpoisoned DRS lines served, per view ...
    "lines_packed",
    "lines_int8",
    "lines_fp16",
    "lines_bf16",
    "lines_written",          #: unpoisoned write completions (NDR)
    "host_stall_cycles",      #: cycles a response waited for the host (valid, not ready)
    "dram_stall_cycles",      #: cycles the oldest request waited for DRAM data or a write response
) + tuple(f"errors_{c.name.lower()}" for c in ErrorCause if c != ErrorCause.NONE) + (
    "plane_lookups",          #: quantized reads decided by the block cache ...
    "plane_misses",           #: ... that fetched their block (plane lines)
    "meta_lookups",           #: fp16 / bf16 reads decided by the block cache ...
    "meta_misses",            #: ... that fetched their metadata line
)


def counter_csr(name: str) -> int:
    """Word address of the LO half of counter `name` (HI is the next word)."""
    return CSR_COUNTER_BASE + 2 * COUNTERS.index(name)


#: Region table: region i occupies CSR_REGION_STRIDE words from
#: CSR_REGION_BASE + CSR_REGION_STRIDE * i; all read/write, reset 0 (invalid).
CSR_REGION_BASE = 0x100
CSR_REGION_STRIDE = 4
REGION_PLANE_BASE = 0                #: first plane line (DRAM line address, multiple of 8)
REGION_META_BASE = 1                 #: first metadata line (DRAM line address)
REGION_BLOCKS = 2                    #: 512-weight blocks
REGION_CONFIG = 3                    #: config word, fields below
CFG_VALID = 1 << 0
CFG_SYMMETRIC = 1 << 1
CFG_SCALE_FORMAT_SHIFT = 2           #: [3:2] ScaleFormat
CFG_LOG2_GROUP_SHIFT = 4             #: [7:4] log2(group size), 5..15


def region_config_word(group_size: int, symmetric: bool, scale_format: ScaleFormat,
                       valid: bool = True, codebook_base: int | None = None) -> int:
    """The REGION_CONFIG word of a region; a LUT region names its table set's first
    DRAM line in `codebook_base` (see `lut_config_bits`)."""
    log2_group = group_size.bit_length() - 1
    if group_size != 1 << log2_group or not 5 <= log2_group <= 15:
        raise ValueError(f"group size {group_size} is not a power of two in 32..32768")
    return ((CFG_VALID if valid else 0) | (CFG_SYMMETRIC if symmetric else 0)
            | (int(ScaleFormat(scale_format)) << CFG_SCALE_FORMAT_SHIFT)
            | (log2_group << CFG_LOG2_GROUP_SHIFT)
            | (0 if codebook_base is None else lut_config_bits(codebook_base)))


def region_csr_writes(index: int, plane_base: int, meta_base: int, blocks: int, group_size: int,
                      symmetric: bool, scale_format: ScaleFormat,
                      codebook_base: int | None = None) -> list[tuple[int, int]]:
    """(word address, value) writes that program region `index` (config word last);
    `codebook_base`: the table set of a LUT region, None for an affine one."""
    if not 0 <= index < MAX_REGIONS:
        raise ValueError(f"region index {index} outside 0..{MAX_REGIONS - 1}")
    if plane_base % PLANES:
        raise ValueError(f"plane_base {plane_base} is not a multiple of {PLANES} lines")
    for name, value in (("plane_base", plane_base), ("meta_base", meta_base), ("blocks", blocks)):
        if not 0 <= value < (1 << CSR_DATA_BITS):
            raise ValueError(f"{name}={value} does not fit {CSR_DATA_BITS} bits")
    if plane_base + PLANES * blocks > 1 << CSR_DATA_BITS:
        raise ValueError(f"region's plane lines {plane_base}..{plane_base + PLANES * blocks - 1} "
                         f"pass the {CSR_DATA_BITS}-bit line space (its block lines would wrap)")
    base = CSR_REGION_BASE + CSR_REGION_STRIDE * index
    return [(base + REGION_PLANE_BASE, plane_base), (base + REGION_META_BASE, meta_base),
            (base + REGION_BLOCKS, blocks),
            (base + REGION_CONFIG, region_config_word(group_size, symmetric, scale_format,
                                                      codebook_base=codebook_base))]


# ==============================================================================
# Table-lookup (codebook) regions (docs/RECIPES.md).  A LUT region keeps
# the plane and metadata layout (the zero byte is unused), and its fp16/bf16 views
# answer `s * table_k[c]` instead of `s * (r - z)`: table_k is the region's view-k
# codebook (2**k binary16 entries), c = q >> (8-k) the view code, s the group scale.
# The codebook of all eight views is one CODEBOOK_LINES-line table set in DRAM;
# entry (k, c) sits at index (1 << k) | c (entries 0 and 1 are reserved, zero), so
# view k's table is the contiguous run 2**k .. 2**(k+1) - 1.
# ==============================================================================
CODEBOOK_ENTRY_BYTES = 2                                   #: one binary16 entry
CODEBOOK_ENTRIES = 1 << (CODE_BITS + 1)                    #: 512 (index (1 << k) | c, k = 1..8)
CODEBOOK_LINES = CODEBOOK_ENTRIES * CODEBOOK_ENTRY_BYTES // LINE_BYTES   #: 16
CFG_LUT = 1 << 8                     #: REGION_CONFIG: the region is a table-lookup region
CFG_CODEBOOK_SHIFT = 12              #: REGION_CONFIG [31:12]: codebook base line // CODEBOOK_LINES
CFG_CODEBOOK_BITS = CSR_DATA_BITS - CFG_CODEBOOK_SHIFT


def codebook_index(k: int, c: int) -> int:
    """Entry index of view k's code c in a table set: a 1, then the k bits of c."""
    return (1 << k) | c


def codebook_lines_read(k: int) -> int:
    """Codebook lines a read at view k needs: the lines holding entries 2**k .. 2**(k+1) - 1."""
    return max(1, (1 << k) * CODEBOOK_ENTRY_BYTES // LINE_BYTES)


def lut_config_bits(codebook_base: int) -> int:
    """The REGION_CONFIG bits (OR them into `region_config_word`) of a LUT region whose
    table set starts at DRAM line `codebook_base` (a multiple of CODEBOOK_LINES)."""
    if codebook_base % CODEBOOK_LINES or not 0 <= codebook_base // CODEBOOK_LINES < (1 << CFG_CODEBOOK_BITS):
        raise ValueError(f"codebook base {codebook_base} is not a multiple of {CODEBOOK_LINES} lines "
                         f"below {CODEBOOK_LINES << CFG_CODEBOOK_BITS}")
    return CFG_LUT | ((codebook_base // CODEBOOK_LINES) << CFG_CODEBOOK_SHIFT)
