"""`--backend ray` against real clusters started with Ray's own CLI (`ray start`), as users meet them.

One head node (token authentication on, as `ray start` turns it on when a token exists), then a
worker node joined with `ray start --address`, both on this machine with one CPU each. The tests
stop only the processes they started: every node is started in a new session, so its daemons share
one process group, and its Ray workers are that group's children (never `ray stop`, which would stop
every Ray on the machine). They wait on observed state (nodes alive in the GCS, a fold's log line),
never on fixed sleeps.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from xvalkit.errors import XvalError
from xvalkit.executors.ray_address import check_cluster, find_token

from .conftest import instance, write_experiment
from .test_faults import tmpfs  # noqa: F401  (a fixture, for the full-disk test below)
from .test_run import exp_folder, load_results, summary_header, xval

pytest.importorskip("ray", reason="the ray extra is not installed")
if not sys.platform.startswith("linux"):
    pytest.skip("the tests find their Ray processes in /proc", allow_module_level=True)

RAY = str(Path(sys.executable).with_name("ray"))
MLP = ['framework="torch"', "hidden_sizes=(8,)", "batch_size=32"]
TIMEOUT = 300  # seconds: generous, for a loaded 2-core machine; every wait ends on observed state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live (non-zombie) process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) "
            if fields[0] != "Z":
                table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def wait_for(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Cluster:
    """Ray nodes started with `ray start` in a private HOME (its token) and temp dir."""

    def __init__(self, root: Path):
        self.root = root
        self.home, self.tmp = root / "home", root / "t"
        self.home.mkdir(parents=True)
        self.tmp.mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
        self.env.update(HOME=str(self.home), RAY_TMPDIR=str(self.tmp), RAY_USAGE_STATS_ENABLED="0")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.groups: dict[str, int] = {}  # node name -> process group of its daemons

    def ray(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([RAY, *args], env=env or self.env, capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def start_node(self, name: str, *args: str, env: dict | None = None) -> None:
        """`ray start` in a new session: the node's daemons keep its process group."""
        proc = subprocess.Popen([RAY, "start", "--num-cpus", "1", "--object-store-memory", str(200 * 2**20),
                                 "--disable-usage-stats",
                                 "--dashboard-agent-listen-port", str(free_port()), *args],
                                env=env or self.env, start_new_session=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.groups[name] = proc.pid
        out = proc.communicate(timeout=TIMEOUT)[0]
        assert proc.returncode == 0, out[-3000:]

    def start_head(self) -> None:
        self.ray("get-auth-token", "--generate")  # ~/.ray/auth_token: `ray start` then enables token auth
        self.start_node("head", "--head", "--port", str(self.port), "--ray-client-server-port", str(free_port()),
                        "--include-dashboard", "false", "--dashboard-port", str(free_port()))

    def add_worker_node(self, name: str) -> None:
        # joining a token cluster takes RAY_AUTH_MODE=token (Ray enables it by itself only for a head)
        self.start_node(name, "--address", self.address, env={**self.env, "RAY_AUTH_MODE": "token"})

    def alive_nodes(self) -> int:
        import grpc
        from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

        token = (self.home / ".ray" / "auth_token").read_text().strip()
        with grpc.insecure_channel(self.address) as channel:
            reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo(
                gcs_service_pb2.GetAllNodeInfoRequest(), timeout=30, metadata=[("authorization", f"Bearer {token}")])
        return sum(node.state == gcs_pb2.GcsNodeInfo.ALIVE for node in reply.node_info_list)

    def processes(self, name: str) -> set[int]:
        """A node's daemons (its process group) and their children (Ray workers, own groups)."""
        table = process_table()
        group = {pid for pid, (_, pgid) in table.items() if pgid == self.groups[name]}
        return group | {pid for pid, (ppid, _) in table.items() if ppid in group}

    def node_of(self, pid: int) -> str | None:
        table = process_table()
        for name, pgid in self.groups.items():
            if pid in table and (table[pid][1] == pgid or table.get(table[pid][0], (0, 0))[1] == pgid):
                return name
        return None

    def kill_node(self, name: str) -> set[int]:
        pids = self.processes(name)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not (pids & set(process_table())), f"node {name} to die", timeout=60)
        del self.groups[name]
        return pids

    def stop(self) -> None:
        for name in list(self.groups):
            self.kill_node(name)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    # a short path: Ray's unix sockets live under the temp dir (at most 107 characters)
    nodes = Cluster(Path(tempfile.mkdtemp(prefix="xvr", dir="/tmp")))
    try:
        nodes.start_head()
        wait_for(lambda: nodes.alive_nodes() == 1, "the head node")
        yield nodes
    finally:
        nodes.stop()


def xval_run(cluster: Cluster, path: Path, config: Path, *args: str, env: dict | None = None, wait: bool = True):
    command = [sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--backend", "ray", "--quiet",
               "--config", str(config), *args]
    proc = subprocess.Popen(command, env=env or cluster.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def fold_records(path: Path) -> dict:
    return {fold: record for fold, record in load_results(exp_folder(path), 1)["folds"].items()}


def assert_same_results(a: dict, b: dict) -> None:
    """Same folds, items and seeds; metrics equal up to float summation order (thread counts differ)."""
    assert a.keys() == b.keys()
    for fold in a:
        for key in ("train_items", "val_items", "test_items", "seed", "epochs"):
            assert a[fold][key] == b[fold][key], (fold, key)
        for metric in ("train_loss", "val_loss", "test_loss", "test_acc"):
            assert b[fold][metric] == pytest.approx(a[fold][metric], rel=2e-3, abs=2e-3), (fold, metric)
        np.testing.assert_allclose(b[fold]["test_pred"], a[fold]["test_pred"], atol=5e-3)


# --- Ray started in this process (ray.init), as a script or a notebook starts it -------------------
# These two live here, not in test_scale.py / test_faults.py, so that the one xdist worker that runs
# this file runs every Ray test: one Ray cluster at a time on the machine. They come before the
# tests of the `cluster` fixture, which keeps its nodes until the end of the file.
@pytest.fixture
def local_ray(monkeypatch):
    import ray

    # for this test only: a `ray start` worker node of the cluster tests below refuses to start with it
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def test_ray_backend_on_loopback(tmp_path, config_file, local_ray):
    from .test_scale import TWO_BY_TWO, fold_metrics

    path = write_experiment(tmp_path, TWO_BY_TWO, num_folds=2)
    result = xval("run", path, "--backend", "ray", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    folds = fold_metrics(exp_folder(path))
    assert len(folds) == 4 and all(f["pid"] != os.getpid() for f in folds.values())
    from openpyxl import load_workbook

    ws = load_workbook(exp_folder(path) / "demo_exp1_results.xlsx")["summary"]
    rows = list(ws.iter_rows(min_row=3, max_row=4, values_only=True))  # below the two header rows
    assert [r[0] for r in rows] == [1, 2]
    assert [r[summary_header(ws).index("status")] for r in rows] == ["done", "done"]


def test_full_disk_in_a_ray_task_stops_the_run(tmp_path, config_file, tmpfs):
    import ray

    from . import test_faults as faults

    path, folder = faults.setup(tmp_path, config_file, {1: faults.act_instance("fills", "fill"),
                                                        2: faults.act_instance("b")})
    small = tmpfs(tmp_path / "small", "3m")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        code, output = faults.xval("run", path, "--backend", "ray", "--quiet", "--config", config_file)
    finally:
        ray.shutdown()
    line = faults.assert_stopped_by_fault(code, output, "no space left on device")
    assert str(small) in line
    assert not list((folder / "results").glob("error_*"))


def test_the_ray_nodes_benchmark_runs(tmp_path):
    # here, not in test_benchmarks.py: it starts a cluster, before the `cluster` fixture's below
    from .test_benchmarks import NUMBER, figures, ratio_rounding, run_benchmark

    out = run_benchmark(tmp_path, "ray_nodes.py", TMPDIR="/tmp")  # Ray's sockets need a short path
    assert "2 folds x 1 epochs (torch MLP, demo data)" in out
    ((one,),) = figures(rf"1 node  \(head, 1 CPU\): +{NUMBER} s wall", out)
    ((two, ratio),) = figures(rf"2 nodes \(head \+ worker, 1 CPU each\): +{NUMBER} s wall   \({NUMBER}x\)", out)
    assert ratio == pytest.approx(one / two, abs=ratio_rounding(one, two, digits=1))


def test_the_token_is_found_where_ray_documents_it(tmp_path, monkeypatch):
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_token() == (None, str(tmp_path / ".ray" / "auth_token"))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert find_token() == ("from-home", str(tmp_path / ".ray" / "auth_token"))
    (tmp_path / "elsewhere").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert find_token() == ("from-path", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", " from-env ")
    assert find_token() == ("from-env", "RAY_AUTH_TOKEN")


def test_no_cluster_at_the_address_is_one_line(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(XvalError, match=f"no Ray cluster answers at {address}.*ray start --head"):
        check_cluster(address)
    check_cluster(None)  # no address, no RAY_ADDRESS: a local Ray will be started, nothing to check


def test_auth_mode_disabled_against_a_token_cluster_is_one_line(cluster, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(XvalError, match="requires token authentication but RAY_AUTH_MODE=disabled is set"):
        check_cluster(cluster.address)


def test_a_missing_or_wrong_token_is_one_line(cluster, tmp_path, config_file):
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *MLP)}, num_folds=2,
                            global_parameters=["num_epochs=1"])
    no_token = {**cluster.env, "HOME": str(tmp_path)}  # a client without ~/.ray/auth_token
    # the address from RAY_ADDRESS, as Ray's own tools read it
    result = xval_run(cluster, path, config_file, env={**no_token, "RAY_ADDRESS": cluster.address})
    assert result.returncode == 2, result.stderr
    assert (f"error: --backend ray: the Ray cluster at {cluster.address} requires token authentication and no "
            f"token was found") in result.stderr
    assert "ray get-auth-token" in result.stderr and "RAY_AUTH_TOKEN" in result.stderr
    assert "gcs_client" not in result.stderr and "Unauthenticated" not in result.stderr  # no gRPC wall
    result = xval_run(cluster, path, config_file, "--address", cluster.address,
                      env={**no_token, "RAY_AUTH_TOKEN": "0" * 64})
    assert result.returncode == 2, result.stderr
    assert f"the Ray cluster at {cluster.address} rejected the token from RAY_AUTH_TOKEN" in result.stderr
    assert "gcs_client" not in result.stderr
    assert not list((exp_folder(path) / "results").rglob("*.pkl"))


def test_ray_workers_are_recycled_like_the_local_pools(tmp_path, config_file, monkeypatch):
    """A Ray worker process trains at most MAX_CALLS folds (Ray's max_calls, the local pool's
    period), then a fresh one takes over, so Keras' memory kept per model cannot grow one without
    bound; each task trains with the one CPU it asks Ray for. Here MAX_CALLS = 2, 6 folds, 1 CPU."""
    from collections import Counter

    import ray

    from xvalkit.executors import ray as ray_executor

    monkeypatch.setattr(ray_executor, "MAX_CALLS", 2)
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *MLP),
                                       2: instance("b", "MLP_model", "none", *MLP)},
                            num_folds=3, global_parameters=["num_epochs=1", "tensorboard=False"])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        result = xval("run", path, "--backend", "ray", "--quiet", "--config", config_file)
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    folds = [f for run in (1, 2) for f in load_results(exp_folder(path), run)["folds"].values()]
    pids = Counter(f["pid"] for f in folds)
    assert len(folds) == 6 and max(pids.values()) <= 2 and len(pids) >= 3, pids
    assert {f["threads"] for f in folds} == {1}


def test_auto_gives_the_results_of_a_local_run(cluster, tmp_path, config_file):
    spec = {1: instance("a", "MLP_model", "none", *MLP)}
    settings = dict(num_folds=2, global_parameters=["num_epochs=3", "patience=3"])
    local = write_experiment(tmp_path / "local", spec, **settings)
    auto = write_experiment(tmp_path / "auto", spec, **settings)
    done = xval("run", local, "--cpu", "--quiet", "--config", config_file)  # in this process, one after the other
    assert done.exit_code == 0, done.output
    # `auto`: the cluster `ray start` last started here (RAY_TMPDIR: this one); the token from ~/.ray/auth_token
    result = xval_run(cluster, auto, config_file, "--address", "auto")
    assert result.returncode == 0, result.stderr
    assert "device: Ray (auto)" in result.stderr
    assert_same_results(fold_records(local), fold_records(auto))


BROKEN_MODELS = '''
import math
import os
from pathlib import Path

ATTEMPTS = Path(__file__).with_name("attempts.txt")


def Broken_model(input_shape, num_outputs, task_type, *, width: int = 4):
    """Builds (the check before training), then raises as soon as it trains: a Python error."""
    import torch

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(math.prod(input_shape), num_outputs)

        def forward(self, x):
            if self.training:
                with open(ATTEMPTS, "a") as handle:
                    handle.write(f"{os.getpid()}\\n")
                try:  # restated by a wrapper, as Keras does: the line must show the user's message
                    raise ValueError("broken model refuses to train")
                except ValueError as inner:
                    raise RuntimeError(f"Exception encountered when calling Broken.forward(). {inner}") from None
            return self.out(x.flatten(1))

    return Broken()
'''


def test_a_python_error_in_a_fold_is_recorded_not_retried(cluster, tmp_path, config_file):
    (tmp_path / "broken.py").write_text(BROKEN_MODELS)
    path = write_experiment(tmp_path, {1: instance("broken", "Broken_model", "none", 'framework="torch"'),
                                       2: instance("ok", "MLP_model", "none", *MLP)},
                            models="broken.py", num_folds=2, global_parameters=["num_epochs=2"])
    result = xval_run(cluster, path, config_file, "--address", cluster.address)
    assert result.returncode == 1, result.stderr
    assert "instance 1 fold 1/2 failed: ValueError: broken model refuses to train" in result.stderr, result.stderr
    assert "done 2" in result.stderr and "failed 1" in result.stderr
    assert len((tmp_path / "attempts.txt").read_text().split()) == 2  # one attempt per fold: no retry
    folder = exp_folder(path)
    assert "broken model refuses to train" in (folder / "results" / "error_demo_exp1_run1.txt").read_text()
    from openpyxl import load_workbook

    ws = load_workbook(folder / "demo_exp1_results.xlsx")["summary"]
    status = summary_header(ws).index("status")
    assert {r[0]: r[status] for r in ws.iter_rows(min_row=3, max_row=4, values_only=True)} == {1: "failed", 2: "done"}


GATED_MODELS = '''
import math
import os
import time
from pathlib import Path

HERE = Path(__file__).parent


def Gated_model(input_shape, num_outputs, task_type):
    """A linear model whose training waits, after its first step, until the test opens the gate: a fold
    stays mid-training for as long as the test needs, however fast or slow the machine."""
    import torch

    class Gated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(math.prod(input_shape), num_outputs)
            self.steps = 0

        def forward(self, x):
            if self.training:
                self.steps += 1
                if self.steps == 2:
                    (HERE / f"training_{os.getpid()}").touch()
                    while not (HERE / "gate").exists():
                        time.sleep(0.05)
            return self.out(x.flatten(1))

    return Gated()
'''


def test_folds_spread_over_two_nodes_and_a_node_lost_mid_fold_is_retried_elsewhere(cluster, tmp_path, config_file):
    cluster.add_worker_node("worker")  # `ray start --address`, as on a second machine
    wait_for(lambda: cluster.alive_nodes() == 2, "the worker node to join")
    (tmp_path / "gated.py").write_text(GATED_MODELS)
    epochs = 3
    path = write_experiment(tmp_path, {1: instance("a", "Gated_model", "none", 'framework="torch"', "batch_size=32")},
                            models="gated.py", num_folds=2, global_parameters=[f"num_epochs={epochs}",
                                                                               f"patience={epochs}"])
    folder = exp_folder(path)
    proc = xval_run(cluster, path, config_file, "--address", cluster.address, wait=False)

    def training_folds() -> dict[str, str]:
        """node -> the fold it trains, among folds held at the gate (their running marker names the process)."""
        out = {}
        for marker in (folder / "results" / "running").glob("*.json"):
            try:
                pid = json.loads(marker.read_text())["pid"]
            except (OSError, ValueError):
                continue
            if (tmp_path / f"training_{pid}").exists():
                out[cluster.node_of(pid)] = marker.stem  # run1_fold<F>
        return out

    # one CPU per node and two folds: Ray runs one on each node at once
    def one_on_each_node():
        assert proc.poll() is None, proc.communicate()[1]
        folds = training_folds()
        return folds if {"head", "worker"} <= set(folds) else None

    running = wait_for(one_on_each_node, "a fold training on each node")
    fold = int(running["worker"].rsplit("fold", 1)[1])
    fold_file = folder / "results" / "folds" / f"demo_exp1_run1_fold{fold}.pkl"
    killed = cluster.kill_node("worker")  # the worker node's daemons and Ray workers, kill -9
    assert not fold_file.exists(), "the fold finished before its node was killed"
    (tmp_path / "gate").touch()  # both folds may go on: the head's, and the lost one wherever Ray retries it
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    records = fold_records(path)
    assert sorted(records) == [1, 2]
    assert records[fold]["pid"] not in killed and records[fold]["epochs"] == epochs  # trained again, whole
    for pkl in folder.rglob("*.pkl"):
        pickle.loads(pkl.read_bytes())  # every fold file whole
    assert not list(folder.rglob(".*.tmp*"))
    assert sorted(p.name for p in (folder / "models").iterdir()) == [f"demo_exp1_run1_fold{f}.pt" for f in (1, 2)]
