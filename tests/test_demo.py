"""`smartquant demo` end to end at a small size (the full run is the README's main job)."""

import json
import subprocess
import sys

import pytest

from smartquant.cli import main


@pytest.mark.slow
def test_demo_reports_every_plan_coverified(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--pairs", "4", "--uniform", "3", "--budgets", "3"]) == 0
    report = json.loads((out / "demo.json").read_text())
    plans = [r["plan"] for r in report["rows"]]
    assert plans == ["uniform 3", "static 3", "dynamic 3"]
    layer_lines = sum(16 * e["blocks"] for e in json.loads((out / "image" / "manifest.json").read_text())["tensors"]
                      if e["name"].startswith("encoder.layer.0."))
    for row in report["rows"]:
        assert row["rtl_exact"] and row["rtl_mismatches"] == 0
        assert row["rtl_lines"] == layer_lines
        assert 0 < row["vs_int8"] < 1
    assert all((out / "plots" / name).stat().st_size > 0 for name in ("quality_vs_bits.png", "quality_vs_dram.png"))
    printed = capsys.readouterr().out
    assert "rtl_exact" in printed and "dynamic 3" in printed


@pytest.mark.parametrize("args, message", [
    (["--layer", "6"], "encoder layers 0..5"),
    (["--budgets", "9"], "budget"),
    (["--uniform", "0"], "outside 1..8"),
    (["--pairs", "x"], "invalid int value"),
])
def test_demo_bad_settings_are_one_line_errors(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "demo", "-o", str(tmp_path / "d"), *args],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "d").exists()
