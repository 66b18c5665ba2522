"""`smartquant eval`: the table, JSON and plots on a small sample; bad settings exit 2."""

import json

import pytest

from smartquant.atomic import MARKER
from smartquant.cli import main


def test_eval_small_sample(minilm_image_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(["eval", str(minilm_image_dir), "--pairs", "3", "--calibration", "2", "--uniform", "4,8",
               "--budgets", "3", "--json", str(out), "--plot", str(tmp_path / "plots")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "uniform 8" in text and "dynamic 3" in text and "spearman" in text
    rows = json.loads(out.read_text())["rows"]
    assert [r["plan"] for r in rows] == ["uniform 4", "uniform 8", "static 3", "dynamic 3"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [MARKER, "quality_vs_bits.png",
                                                                      "quality_vs_dram.png"]


@pytest.mark.parametrize("flags, message", [(["--budgets", "0.5"], "budget 0.5 bits per weight outside 1..8"),
                                            (["--budgets", "1.5"], "below the smallest allowed k=2"),
                                            (["--uniform", "9"], "uniform k=9 outside 1..8"),
                                            (["--budgets", "three"], "not a comma-separated list")])
def test_eval_bad_settings(minilm_image_dir, flags, message, capsys):
    assert main(["eval", str(minilm_image_dir)] + flags) == 2
    assert message in capsys.readouterr().err


def test_eval_unknown_model(minilm_image_dir, capsys):
    assert main(["eval", str(minilm_image_dir), "--model", "gpt-17", "--pairs", "2"]) == 2
    assert "unknown model 'gpt-17'" in capsys.readouterr().err


def test_eval_never_writes_over_its_pairs_file(minilm_image_dir, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("paraphrase\tA cat sleeps.\tA cat naps.\n")
    assert main(["eval", str(minilm_image_dir), "--pairs-from", str(pairs), "--json", str(pairs)]) == 2
    assert "pairs.tsv" in capsys.readouterr().err
    assert pairs.read_text() == "paraphrase\tA cat sleeps.\tA cat naps.\n"
