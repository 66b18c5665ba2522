"""Argument parsing the subcommands share."""

from __future__ import annotations

import argparse
import os
from typing import Callable, Iterable

from ..atomic import FILE, check_output
from ..errors import SmartquantError
from ..sw.store.sources import MINILM

#: the output options subcommands share, and the kind of output each names
OUTPUT_OPTIONS = {"json": FILE, "waves": FILE, "plot": "plots", "workdir": "synth"}


def number_list(kind: Callable[[str], float]) -> Callable[[str], tuple]:
    """A parser of comma-separated numbers ('2,3,4' -> (2, 3, 4)) that raises SmartquantError."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise SmartquantError(f"{text!r} is not a comma-separated list of numbers") from None
    return parse


def one_torch_thread() -> None:
    """Run torch on one thread unless OMP_NUM_THREADS says otherwise: the quantizers' column
    loops take small steps, and on a 2-core machine shared with other jobs torch's default
    threads made `smartquant quantize minilm` 5-10x slower (docs/PTQ.md)."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch
        torch.set_num_threads(1)


def check_output_options(args, inputs: Iterable = ()) -> None:
    """check_output for each output option given in `args` (OUTPUT_OPTIONS), before any work:
    none may overlap `inputs` or another of them."""
    inputs, taken = list(inputs), []
    for option, kind in OUTPUT_OPTIONS.items():
        path = getattr(args, option, None)
        if path is not None:
            taken.append(check_output(path, kind, inputs=inputs, outputs=taken))


def source_input(spec: str) -> str | None:
    """The path a SRC argument reads (None for the packaged `minilm`)."""
    return None if spec == MINILM else spec


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type=`: an integer >= `minimum` (seeds, counts, cycles), else a one-line
    argparse error naming the option, before the command runs."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def probability(text: str) -> float:
    """An argparse `type=`: a probability per cycle in [0, 1) (1 would stall forever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value
