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
