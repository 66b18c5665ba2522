"""Argument parsing the subcommands share."""

from __future__ import annotations

from typing import Callable, Iterable

from ..atomic import FILE, check_output
from ..errors import SmartquantError
from ..sw.sources import MINILM

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
