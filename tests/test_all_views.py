"""Every (view, k) of every tensor: `smartquant trace --all-views` and `smartquant regress --views`
(sw/image/trace.py all_views, sim/regress.py)."""

import dataclasses
import json
import re

from smartquant import cli, spec
from smartquant.spec import View
from smartquant.sim import regress
from smartquant.sw.image.trace import all_views, load_trace


def test_all_views_are_the_quantized_views_at_the_image_ks(tiny_image):
    assert all_views(tiny_image) == [(v, k) for v in (View.PACKED, View.INT8, View.FP16, View.BF16)
                                     for k in range(1, spec.CODE_BITS + 1)]
    four = dataclasses.replace(tiny_image, info={"views": [8, 2, 3, 4, 99]})
    assert all_views(four) == [(v, k) for v in (View.PACKED, View.INT8, View.FP16, View.BF16) for k in (2, 3, 4, 8)]


def test_trace_all_views_reads_every_combination_and_names_them(tiny_image, tiny_image_dir, tmp_path, capsys):
    assert cli.main(["trace", str(tiny_image_dir), "-o", str(tmp_path / "t"), "--all-views"]) == 0
    out = capsys.readouterr().out
    trace = load_trace(tmp_path / "t")
    seen = {spec.split_host_line_address(int(a))[:2] for a in trace.addr}
    symmetric = sum(e.symmetric for e in tiny_image.entries)
    assert 0 < symmetric < len(tiny_image.entries)
    assert seen == {(int(v), k) for v, k in all_views(tiny_image)}
    assert len(trace) == sum(e.blocks * spec.lines_per_block(v, k) for e in tiny_image.entries
                             for v, k in all_views(tiny_image) if v != View.INT8 or e.symmetric)
    assert re.search(rf"^int8:5 +{symmetric}$", out, re.M)
    assert re.search(rf"^fp16:5 +{len(tiny_image.entries)}$", out, re.M)
    assert cli.main(["trace", str(tiny_image_dir), "-o", str(tmp_path / "u"), "--all-views", "--views", "raw"]) == 2
    assert "give --views or --all-views, not both" in capsys.readouterr().err


def test_regress_views_makes_one_job_per_combination_over_every_readable_tensor(tiny_image, tmp_path):
    views = [(View.FP16, 3), (View.INT8, 8), (View.PACKED, 2)]
    jobs = regress.make_jobs(tiny_image, ["default", "narrow"], [4, 5], views=views)
    assert len(jobs) == 2 * 2 * 3 and len({job.key() for job in jobs}) == len(jobs)
    everything = sorted(e.name for e in tiny_image.entries)
    for job in jobs:
        assert job.view_given and len(job.views) == 1
        assert job.tensors == ([n for n in everything if tiny_image.entry(n).symmetric]
                               if job.views == ["int8:8"] else everything)
        assert job.stall == regress.draw_job(job.config, job.seed, tiny_image, 2).stall
        assert f"--seed {job.seed} " in regress.replay_command(job, "img", 2)
        assert regress.replay_command(job, "img", 2).endswith(f"--views {job.views[0]}")
    assert len({regress.kept_trace_dir(tmp_path, job) for job in jobs}) == len(jobs)
    asymmetric = dataclasses.replace(tiny_image, entries=[e for e in tiny_image.entries if not e.symmetric])
    assert [j.views for j in regress.make_jobs(asymmetric, ["default"], [0], views=views)] == [["fp16:3"], ["packed:2"]]


def test_regress_runs_two_combinations_of_one_seed_in_two_processes(tiny_image_dir, tmp_path, capsys):
    code = cli.main(["regress", str(tiny_image_dir), "--views", "bf16:4,packed:6", "--seeds", "1", "--jobs", "2",
                     "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr()
    assert "2 (view, k) combinations" in capsys.readouterr().out
    jobs = json.loads((tmp_path / "r.json").read_text())["jobs"]
    assert sorted(tuple(j["views"]) for j in jobs) == [("bf16:4",), ("packed:6",)]
    assert all(j["passed"] and j["requests"] > 0 for j in jobs)
    assert len({j["requests"] for j in jobs}) == 2
