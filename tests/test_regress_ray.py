"""`smartquant regress --ray` against a real one-node Ray cluster (sim/ray_cluster.py,
sim/regress.py): an unreachable address is a one-line error before any Verilog, the
documented `ray://HOST:10001` client form runs jobs, and a cluster stopped mid-run
gives the summary of the finished jobs and exit 3 (its jobs slowed down in the driver, so
the cluster is always killed with jobs left).

The cluster is `ray start --head --block` bound to 127.0.0.1 (every port chosen free,
one CPU, no dashboard) in its own process group, stopped by the test; each regress runs
in a subprocess, so Ray's driver state never enters the pytest process."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
#: Ray otherwise replaces 127.0.0.1 by this machine's network address when binding and connecting
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
CLUSTER_START_S = 120       #: a loaded 2-core machine starts Ray in 10-40 s
REGRESS_S = 600             #: a cold Verilator build alone can take minutes
PORT_FLAGS = ("--port", "--ray-client-server-port", "--node-manager-port", "--object-manager-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
              "--metrics-export-port", "--dashboard-port")
WORKER_PORTS = 16


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind((LOOPBACK, 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def accepts(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
        return True
    except OSError:
        return False


class LocalCluster:
    """A one-node Ray cluster on 127.0.0.1; `stop()` ends its process group and removes its temp dir."""

    def __init__(self):
        ports = free_ports(len(PORT_FLAGS) + WORKER_PORTS)
        named = dict(zip(PORT_FLAGS, ports))
        # short: Ray's Unix socket paths under it must stay below 108 characters
        self.temp_dir = tempfile.mkdtemp(prefix="sqray", dir="/tmp")
        command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                   "--node-ip-address", LOOPBACK, "--dashboard-host", LOOPBACK, "--num-cpus", "1",
                   "--include-dashboard=false", "--include-log-monitor=false", "--disable-usage-stats",
                   "--object-store-memory", str(100 * 2**20), "--temp-dir", self.temp_dir,
                   "--worker-port-list", ",".join(map(str, ports[len(PORT_FLAGS):]))]
        for flag, port in named.items():
            command += [flag, str(port)]
        self.gcs_port, self.client_port = named["--port"], named["--ray-client-server-port"]
        self.log = open(Path(self.temp_dir) / "ray-start.log", "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env={**os.environ, **LOOPBACK_ONLY})
        wait_for(lambda: accepts(self.client_port) or self.process.poll() is not None,
                 CLUSTER_START_S, "the Ray client server")
        assert self.process.poll() is None, (Path(self.temp_dir) / "ray-start.log").read_text()

    def kill(self):
        """SIGKILL to the whole process group at once: the cluster lost, not shut down."""
        os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self):
        """SIGTERM to `ray start --block` (it stops every Ray process it started), then
        SIGKILL to what is left of its process group; once."""
        if self.log.closed:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def cluster():
    started = LocalCluster()
    try:
        yield started
    finally:
        started.stop()


def regress(*args: str, python: str = "", env: dict | None = None, **popen) -> subprocess.Popen:
    """`smartquant regress ARGS` in a subprocess (after running `python` there, if given)."""
    code = f"import sys\n{python}\nfrom smartquant import cli\nsys.exit(cli.main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, "regress", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **LOOPBACK_ONLY, **(env or {})}, **popen)


#: in the subprocess: any Verilog generation is a failure with its own exit code
NO_VERILOG = ("from smartquant.sim import runner\n"
              "def no_verilog(*a, **k):\n    sys.exit(97)\n"
              "runner.design_verilog = no_verilog")

#: in the subprocess: each job waits 3 s before it starts (on a tiny image a job takes ~0.2 s);
#: the wrapper is pickled by value, and on the worker the import finds the unpatched job
SLOW_JOBS = ("import time\nfrom smartquant.sim import regress\n"
             "def run_job(*args, **kwargs):\n    time.sleep(3)\n"
             "    from smartquant.sim.regress import run_job as unpatched\n"
             "    return unpatched(*args, **kwargs)\n"
             "regress.run_job = run_job")


def test_client_address_defaults_to_port_10001_and_local_has_nothing_to_probe():
    from smartquant.sim import ray_cluster
    assert ray_cluster.bootstrap_endpoint("ray://head.example") == ("head.example", 10001)
    assert ray_cluster.bootstrap_endpoint("ray://[::1]:10002") == ("::1", 10002)
    assert ray_cluster.bootstrap_endpoint("local") is None


@pytest.mark.parametrize("failures, connects", [(1, True), (2, False)])
def test_a_failed_client_server_start_is_tried_once_more(monkeypatch, failures, connects):
    import ray
    from smartquant.errors import SmartquantError
    from smartquant.sim import ray_cluster
    calls = []

    def init(**kwargs):
        calls.append(kwargs["address"])
        if len(calls) <= failures:
            raise ConnectionAbortedError("Initialization failure from server:\nTraceback ...")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    if connects:
        assert ray_cluster.connect("local") is ray
    else:
        with pytest.raises(SmartquantError, match=r"at local \(2 attempts\): ConnectionAbortedError"):
            ray_cluster.connect("local")
    assert calls == ["local"] * ray_cluster.CONNECT_ATTEMPTS


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_address_is_one_line_before_any_verilog(tiny_image_dir, scheme):
    closed_port = free_ports(1)[0]
    start = time.monotonic()
    process = regress(str(tiny_image_dir), "--seeds", "1", "--ray", f"{scheme}{LOOPBACK}:{closed_port}",
                      python=NO_VERILOG)
    out, err = process.communicate(timeout=60)
    elapsed = time.monotonic() - start
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines == [f"smartquant regress: error: cannot reach the Ray cluster at {scheme}{LOOPBACK}:{closed_port} "
                     f"({LOOPBACK}:{closed_port}: Connection refused)"], err
    assert out == "" and elapsed < 30


def summary_line(stdout: str, config: str) -> list[str]:
    """The words of `config`'s row in the printed summary table."""
    rows = [line.split() for line in stdout.splitlines() if line.split()[:1] == [config]]
    assert len(rows) == 1, stdout
    return rows[0]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["ray://", "gcs"])
def test_a_cluster_address_runs_the_jobs(cluster, tiny_image_dir, tmp_path, form):
    port = cluster.client_port if form == "ray://" else cluster.gcs_port
    address = f"{form if form == 'ray://' else ''}{LOOPBACK}:{port}"
    process = regress(str(tiny_image_dir), "--seeds", "2", "--ray", address, "--json", str(tmp_path / "r.json"))
    out, err = process.communicate(timeout=REGRESS_S)
    assert process.returncode == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["summary"] == [{"config": "default", "jobs": 2, "passed": 2, "failed": 0, "failing_seeds": []}]
    assert all(job["passed"] and job["requests"] > 0 and job["cycles"] > 0 for job in result["jobs"])
    assert summary_line(out, "default") == ["default", "2", "2", "0", "-"]


@pytest.mark.slow
def test_cluster_stopped_mid_run_prints_the_finished_jobs_and_exits_3(cluster, tiny_image_dir, tmp_path):
    """Also the documented `ray://HOST:10001` form: the jobs before the kill pass."""
    seeds, keep = 6, tmp_path / "keep"
    process = regress(str(tiny_image_dir), "--seeds", str(seeds), "--ray", f"ray://{LOOPBACK}:{cluster.client_port}",
                      "--keep", str(keep), "--json", str(tmp_path / "r.json"), python=SLOW_JOBS,
                      env={"RAY_CLIENT_RECONNECT_GRACE_PERIOD": "5"})
    try:
        # one CPU: jobs run one after another, so the second job's trace means the first
        # finished 3 s ago, and the third cannot finish within 3 s of it
        wait_for(lambda: (keep / "default-seed1").exists() or process.poll() is not None, REGRESS_S,
                 "the second job to start")
        assert process.poll() is None, process.communicate()
        cluster.kill()
        out, err = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 3, err
    result = json.loads((tmp_path / "r.json").read_text())
    finished = len(result["jobs"])
    assert 1 <= finished < seeds
    assert result["summary"] == [{"config": "default", "jobs": finished, "passed": finished, "failed": 0,
                                  "failing_seeds": []}]
    assert summary_line(out, "default") == ["default", str(finished), str(finished), "0", "-"]
    assert f"Ray cluster lost after {finished} of {seeds} jobs" in err
    assert result["cluster_lost"] in err
