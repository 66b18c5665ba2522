"""`smartquant regress` (sim/regress.py): seeds in parallel processes, a corrupted
configuration reported with its seed and replay command, the Ray path's missing-extra error."""

import json
import subprocess
import sys


from smartquant import cli
from smartquant.sim import regress


def test_the_seed_alone_draws_the_workload(tiny_image):
    a, b = (regress.draw_job(config, 7, tiny_image, 3) for config in ("default", "narrow"))
    assert {**a.__dict__, "config": None} == {**b.__dict__, "config": None}
    jobs = regress.make_jobs(tiny_image, ["default"], list(range(12)), 3)
    assert len({(j.order, j.stall, j.read_latency, tuple(j.views)) for j in jobs}) > 6
    assert all(len(j.tensors) == 3 and j.views for j in jobs)


def test_two_seeds_in_two_processes_pass(tiny_image, tiny_image_dir):
    jobs = regress.make_jobs(tiny_image, ["default"], [0, 1], tensors_per_job=2)
    seen = []
    results = regress.run_regress(jobs, tiny_image_dir, workers=2, on_result=seen.append)
    assert [r["seed"] for r in results] == [0, 1] and len(seen) == 2
    for result in results:
        assert result["passed"], result["error"]
        assert result["requests"] > 0 and result["cycles"] > 0
    assert regress.summary(results) == [{"config": "default", "jobs": 2, "passed": 2, "failed": 0,
                                         "failing_seeds": []}]


def test_corrupted_configuration_fails_with_its_seed_and_replay(tiny_image_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "smartquant.cli", "regress", str(tiny_image_dir), "--configs", "corrupt",
                          "--seeds", "1", "--first-seed", "5", "--jobs", "1", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["summary"] == [{"config": "corrupt", "jobs": 1, "passed": 0, "failed": 1, "failing_seeds": [5]}]
    job = result["jobs"][0]
    assert not job["passed"] and "bytes differ" in job["error"]
    assert f"request {job['corrupted_request']} " in job["error"]
    assert "--configs corrupt --seed 5" in job["replay"] and job["replay"] in out.stdout


def test_ray_without_the_extra_is_a_clear_error(tiny_image_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)      # import ray -> ImportError
    code = cli.main(["regress", str(tiny_image_dir), "--seeds", "1", "--ray", "auto"])
    assert code == 2
    assert "pip install 'smartquant[cluster]'" in capsys.readouterr().err


def test_unknown_configuration_is_bad_input(tiny_image_dir, capsys):
    assert cli.main(["regress", str(tiny_image_dir), "--configs", "fastest"]) == 2
    assert "unknown configuration 'fastest'" in capsys.readouterr().err
