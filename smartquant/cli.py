"""The `smartquant` command: a thin face over sw/, hw/ and sim/.

Each subcommand lives in `smartquant.commands.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func` to a function
taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SmartquantError

#: subcommand modules, in the order `smartquant --help` lists them
COMMANDS = [
    "quantize", "inspect", "read", "trace", "sim", "synth", "prove", "rtl", "recipe", "eval", "bench", "regress", "demo",
]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with its errors on one line, `smartquant CMD: error: ...`, exit 2 (as a
    SmartquantError prints them), without the usage block (`--help` shows it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="smartquant",
        description="CXL model store with runtime-configurable weight precision: "
                    "quantize, inspect, simulate, co-verify, synthesise.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"smartquant.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SmartquantError as exc:
        print(f"smartquant {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smartquant: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
