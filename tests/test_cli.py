import json
import re
import subprocess
import sys

import pytest

from smartquant.cli import build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices, "no subcommands registered"
    for name in sub.choices:
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        assert exited.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: smartquant {name}"), name
    help_run = subprocess.run([sys.executable, "-m", "smartquant.cli", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "usage: smartquant" in help_run.stdout    # the module entry point


def test_no_help_text_refers_to_issue_numbers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert not re.search(r"\bissue\s*#?\d", command.format_help(), re.IGNORECASE), name


def test_trace_order_is_checked_before_anything_is_written(tiny_image_dir, tmp_path):
    out = tmp_path / "trace"
    bad = subprocess.run([sys.executable, "-m", "smartquant.cli", "trace", str(tiny_image_dir), "-o", str(out),
                          "--order", "streams:0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "smartquant trace: error: order 'streams:0': S must be >= 1"]
    assert not out.exists()
    good = subprocess.run([sys.executable, "-m", "smartquant.cli", "trace", str(tiny_image_dir), "-o", str(out),
                           "--order", "window:2", "--views", "packed:2"], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert json.loads((out / "trace.json").read_text())["settings"]["order"] == "window:2"


def test_quantize_and_demo_pin_torch_to_one_thread_unless_told(monkeypatch):
    """The quantizers' small steps run best on one thread on a shared machine; an explicit
    OMP_NUM_THREADS is left to torch."""
    import torch
    from smartquant.commands.common import one_torch_thread
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        one_torch_thread()
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        one_torch_thread()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
