"""Results as plain-text tables and JSON files (the CLI's output formats)."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from .atomic import atomic_file


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text, right-aligned numbers; floats with 4 significant digits."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    cells = [[cell(v) for v in row] for row in rows]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False
               for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric)).rstrip()
    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def print_rows(headers: Sequence[str], rows: Sequence[dict], json_path: str | os.PathLike | None = None) -> None:
    """Print the `headers` columns of result rows as a table; write all of them as JSON if asked."""
    print(format_table(headers, [[r[h] for h in headers] for r in rows]))
    if json_path:
        write_json(json_path, list(rows))
