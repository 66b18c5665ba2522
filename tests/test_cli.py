import subprocess
import sys

from smartquant.cli import build_parser


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no subcommands registered"
    for name in sub.choices:
        out = subprocess.run([sys.executable, "-m", "smartquant.cli", name, "--help"],
                             capture_output=True, text=True)
        assert out.returncode == 0, (name, out.stderr)
        assert "usage: smartquant" in out.stdout
