"""Argument parsing the subcommands share."""

from __future__ import annotations

from typing import Callable

from ..errors import SmartquantError


def number_list(kind: Callable[[str], float]) -> Callable[[str], tuple]:
    """A parser of comma-separated numbers ('2,3,4' -> (2, 3, 4)) that raises SmartquantError."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise SmartquantError(f"{text!r} is not a comma-separated list of numbers") from None
    return parse
