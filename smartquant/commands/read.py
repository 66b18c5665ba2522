"""`smartquant read IMAGE --tensor NAME --view fp16 --bits 4 -o out.npy`: one tensor as the
device serves it (the golden decoder).  fp16 -> float16 (out, in); bf16 -> float32 (out, in);
int8 -> int8 (out, in); packed -> uint8 (blocks, k, 64) plane lines."""

from __future__ import annotations

import numpy as np

from ..atomic import FILE, atomic_file, check_output
from ..spec import View
from ..sw.image.golden import view_array
from ..sw.image.image import Image


def register(subparsers) -> None:
    p = subparsers.add_parser("read", help="read one tensor of an image at k bits", description=__doc__)
    p.add_argument("image", metavar="IMAGE", help="image directory")
    p.add_argument("--tensor", required=True, metavar="NAME")
    p.add_argument("--view", choices=("packed", "int8", "fp16", "bf16"), default="fp16")
    p.add_argument("--bits", type=int, default=8, metavar="K", help="precision k in 1..8 (default 8)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.npy")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output(args.output, FILE, inputs=[args.image])
    array = view_array(Image.load(args.image), args.tensor, View[args.view.upper()], args.bits)
    with atomic_file(args.output) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
    print(f"{args.output}: {args.tensor} {args.view} k={args.bits}, {array.dtype} {array.shape}")
    return 0
