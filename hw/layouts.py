"""Stream payloads between the controller's stages (internal to hw/)."""

from amaranth import Cat, Const, Value
from amaranth.lib import data, enum

from ..spec import CFG_CODEBOOK_BITS, LINE_ADDR_BITS, TAG_BITS


class Kind(enum.Enum, shape=3):
    """What a decoded request asks of the datapath."""
    ERROR = 0       #: answered with poison, no DRAM access
    RAW_RD = 1
    RAW_WR = 2
    PACKED = 3
    INT8 = 4
    FP16 = 5
    BF16 = 6
    LUT_LOAD = 7    #: load view k's codebook entries from a plane slot into the lookup tables (no response)


def is_fp(kind):
    """fp16 / bf16: dequantized lanes at a time, from a plane slot and a metadata slot."""
    return kind.as_value().matches(Kind.FP16, Kind.BF16)


def is_quantized(kind):
    """A view of a region's bit-planes: packed, int8, fp16 or bf16."""
    return kind.as_value().matches(Kind.PACKED, Kind.INT8, Kind.FP16, Kind.BF16)


def needs_plane(kind):
    """Served from a plane slot: a quantized view or a raw read."""
    return is_quantized(kind) | (kind == Kind.RAW_RD)


def holds_plane(kind):
    """A job of this kind reads a plane slot (and holds a reference to it until its last step)."""
    return needs_plane(kind) | (kind == Kind.LUT_LOAD)


#: fields every request carries from decode to response
COMMON_FIELDS = {
    "kind": Kind,
    "write": 1,                 # MemWr (answered by NDR), else MemRd (DRS)
    "tag": TAG_BITS,
    "addr": LINE_ADDR_BITS,     # host line address, for error reports
    "cause": 3,                 # ErrorCause when kind == ERROR
    "line": 4,                  # output line j within the block
    "k": 4,
    "scale_bf16": 1,            # the region's scale bits are bfloat16
    "scale_pow2": 1,            # ... binary16 with the mantissa read as zero
    "log2_group": 4,
    "first_group": 4,           # the block's first group within its metadata line
    "lut": 1,                   # fp16 / bf16 of a table-lookup region: s * table_k[c]
}

#: decode -> fetch: a request with its DRAM addresses (line addresses); a MemWr's payload
#: goes from the decoder to the DRAM port in a queue of its own (decode.write_data)
COMMAND = data.StructLayout({
    **COMMON_FIELDS,
    "plane_line": 32,           # first plane line of the block, or the raw line
    "meta_line": 32,            # the block's metadata line
    "codebook": CFG_CODEBOOK_BITS,   # a LUT region's table set: first DRAM line // CODEBOOK_LINES
    # what the issue stage must fetch when this command's turn comes: the misses of the
    # block cache, decided in command order by its lookup (blocktags.py, the decoder's last stages)
    "fetch_plane": 1,           # a plane read: no resident block with >= k lines
    "fetch_meta": 1,            # a metadata read: the line is not resident
    "fetch_table": 1,           # a table load first: the lookup tables hold another (codebook, k)
    "plane_slot": 8,            # the plane slot hit, or the one the fetch fills
    "meta_slot": 8,             # the metadata slot hit, or the one the fetch fills
})

#: fetch -> respond, in request order: where the request's data will be
JOB = data.StructLayout({
    **COMMON_FIELDS,
    "plane_slot": 8, "plane_alloc": 1,   # block buffer; alloc: first job using it
    "meta_slot": 8, "meta_alloc": 1,
    "last_step": 8,             # the response stage's steps for this job, minus one
})


def pack(layout: data.StructLayout, **fields) -> Value:
    """A value of `layout` built from one value per field (zero-extended to its width) in
    one expression: Icarus leaves parts of a struct assigned field by field unknown until
    their own inputs change, which an output assembled whole avoids."""
    if set(fields) != {name for name, _ in layout}:
        raise ValueError(f"pack: fields {sorted(fields)} are not those of the layout")
    pieces = []
    for name, field in sorted(layout, key=lambda item: item[1].offset):
        value = Value.cast(fields[name])
        pieces.append(Cat(value, Const(0, field.width - len(value))) if len(value) < field.width
                      else value[:field.width])
    return Cat(pieces)
