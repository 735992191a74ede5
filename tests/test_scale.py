"""Parallel folds: local CPU workers, worker crashes, per-worker GPU masking, Ray, plan and status."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import (child_workers, device_matches, epoch_logged, expected_device, instance, process_gone,
                       wait_for, write_experiment)
from .test_run import exp_folder, load_results, summary_header, xval

TWO_BY_TWO = {1: instance("a"), 2: instance("b", "EXAMPLE_model", "cnn", "dropout=0.3")}
# Where the framework is not what a test is about (the pool, kills, Ctrl-C): torch, whose import and
# folds take a fraction of Keras' (Keras in workers: the GPU test below, tests/test_faults.py).
TORCH = ['framework="torch"', "hidden_sizes=(8,)"]
TORCH_GLOBAL = ["num_epochs=3", "patience=2", "batch_size=32"]
TORCH_TWO_BY_TWO = {1: instance("a", "MLP_model", "none", *TORCH),
                    2: instance("b", "MLP_model", "none", *TORCH, "dropout=0.3")}


def run_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "xvalkit.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def fold_metrics(folder: Path) -> dict:
    out = {}
    for run in (1, 2):
        for index, fold in load_results(folder, run)["folds"].items():
            out[(run, index)] = fold
    return out


def test_two_cpu_workers_give_the_results_of_one(tmp_path, config_file):
    one = write_experiment(tmp_path / "one", TORCH_TWO_BY_TWO, num_folds=2, global_parameters=TORCH_GLOBAL)
    two = write_experiment(tmp_path / "two", TORCH_TWO_BY_TWO, num_folds=2, global_parameters=TORCH_GLOBAL)
    assert xval("run", one, "--cpu", "--config", config_file).exit_code == 0
    result = run_cli("run", two, "--cpu", "--cpu-workers", "2", "--quiet", "--config", config_file)
    assert result.returncode == 0, result.stderr
    assert "2 CPU workers" in result.stderr
    a, b = fold_metrics(exp_folder(one)), fold_metrics(exp_folder(two))
    assert a.keys() == b.keys() == {(1, 1), (1, 2), (2, 1), (2, 2)}
    pids = {fold["pid"] for fold in b.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # two reused workers, not this process
    for key in a:
        assert a[key]["test_items"] == b[key]["test_items"] and a[key]["seed"] == b[key]["seed"]
        # Same seeds and data; only the CPU thread count differs (float summation order), so the
        # metrics agree to a small tolerance rather than bit for bit.
        assert a[key]["epochs"] == b[key]["epochs"]
        for metric in ("train_loss", "val_loss", "test_loss"):
            assert b[key][metric] == pytest.approx(a[key][metric], rel=2e-3, abs=2e-3), (key, metric)
        np.testing.assert_allclose(b[key]["test_pred"], a[key]["test_pred"], atol=5e-3)


def test_each_gpu_worker_sees_only_its_gpu(tmp_path, config_file):
    from .test_gpu import fake_gpus  # an nvidia-smi that lists GPUs 0 and 1: --gpu checks they exist

    path = write_experiment(tmp_path, TWO_BY_TWO, num_folds=2)
    result = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--gpu", "0,1", "--quiet",
                             "--config", str(config_file)], capture_output=True, text=True, timeout=600,
                            env=fake_gpus(tmp_path))
    assert result.returncode == 0, result.stderr
    folds = fold_metrics(exp_folder(path))
    seen = {fold["cuda_visible_devices"] for fold in folds.values()}
    assert seen == {"0", "1"}  # checked from inside each job: one GPU per worker
    by_pid = {}
    for fold in folds.values():
        by_pid.setdefault(fold["pid"], set()).add(fold["cuda_visible_devices"])
    assert all(len(v) == 1 for v in by_pid.values())  # a worker never changes GPU
    for fold in folds.values():  # GPU 0 / GPU 1 where the machine has them, else the CPU
        expected = expected_device("keras", int(fold["cuda_visible_devices"]))
        assert device_matches(fold["device"], expected), (fold["device"], expected)


def test_a_killed_worker_is_replaced_and_its_fold_redone(tmp_path, config_file):
    # 60 epochs (seconds): the fold is still training when its first epoch is seen; it is stopped there
    # (SIGSTOP) so that it cannot finish before the SIGKILL, which then hits a fold half-way through.
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *TORCH, "num_epochs=60",
                                                   "patience=60")}, num_folds=2,
                            global_parameters=TORCH_GLOBAL)
    folder = exp_folder(path)
    proc = subprocess.Popen([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--cpu-workers", "2",
                             "--quiet", "--config", str(config_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(lambda: epoch_logged(folder / "logs" / "run1_fold1.log"), proc, "the first epoch of fold 1")
        victim = json.loads((folder / "results" / "running" / "run1_fold1.json").read_text())["pid"]
        os.kill(victim, signal.SIGSTOP)
        record = folder / "results" / "folds" / "demo_exp1_run1_fold1.pkl"
        assert not record.exists(), "fold 1 finished before its worker was stopped: make it longer"
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    results = load_results(folder, 1)
    assert sorted(results["folds"]) == [1, 2]
    assert results["folds"][1]["pid"] != victim  # fold 1 was redone by another worker
    assert results["folds"][1]["epochs"] == 60
    assert "done in" in (folder / "logs" / "run1_fold1.log").read_text()  # the retry's log, complete


def test_kill_9_of_the_runner_with_workers_then_resume(tmp_path, config_file):
    # 20 epochs: a fold takes about a second, so the kill after two finished folds leaves work to do
    path = write_experiment(tmp_path, TORCH_TWO_BY_TWO, num_folds=3,
                            global_parameters=["num_epochs=20", "patience=20", "batch_size=32"])
    folds_dir = exp_folder(path) / "results" / "folds"
    proc = subprocess.Popen([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--cpu-workers", "2",
                             "--quiet", "--config", str(config_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(list(folds_dir.glob("*.pkl"))) >= 2, proc, "two finished folds")
        workers = child_workers(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert len(workers) == 2
    # The orphaned workers finish their fold (or not) and exit once they find their parent gone.
    wait_for(lambda: all(process_gone(pid) for pid in workers), None, "the orphaned workers to exit")
    finished = {p.name for p in folds_dir.glob("*.pkl")}
    assert 2 <= len(finished) < 6  # killed with work left (6 jobs; at most 2 running at the kill)
    before = {name: (folds_dir / name).read_bytes() for name in finished}
    result = run_cli("run", path, "--cpu", "--cpu-workers", "2", "--quiet", "--config", config_file)
    assert result.returncode == 0, result.stderr
    for run in (1, 2):
        assert sorted(load_results(exp_folder(path), run)["folds"]) == [1, 2, 3]
    for name, data in before.items():  # folds finished before the kill were kept, not redone
        assert (folds_dir / name).read_bytes() == data
    for pkl in exp_folder(path).rglob("*.pkl"):
        pickle.loads(pkl.read_bytes())  # nothing half-written


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_cleanly_and_says_what_was_abandoned(tmp_path, config_file, workers):
    # 3 folds x 1000 epochs: far from done when the first epoch is seen
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *TORCH, "num_epochs=1000",
                                                   "patience=1000")}, num_folds=3,
                            global_parameters=TORCH_GLOBAL)
    folder = exp_folder(path)
    proc = subprocess.Popen([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--cpu-workers", workers,
                             "--quiet", "--config", str(config_file)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: epoch_logged(folder / "logs" / "run1_fold1.log"), proc, "the first epoch of fold 1")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "abandoned (will be redone) instance 1 fold 1/3" in err
    assert not list((folder / "results" / "running").glob("*.json"))
    assert not list((folder / "results" / "folds").glob("*.pkl"))  # no fold of 30 epochs finished
    assert not list(folder.rglob("*.pt")) and not list(folder.rglob(".*.tmp*"))  # nothing half-done
    assert "Traceback" not in err


def test_a_long_keras_run_trains_in_a_worker_replaced_as_it_grows(tmp_path, config_file, monkeypatch):
    """Keras keeps about 5 MB of every model it trains in a process: from KERAS_WORKER_FROM planned
    folds, a Keras run on one device trains in a worker process, replaced once it has grown by
    RECYCLE_GROWTH_MB (here set so that every worker is replaced after one fold); torch stays here."""
    from xvalkit import devices, runner
    from xvalkit.executors import local

    monkeypatch.setattr(devices, "_parent_off_gpus", False)  # restored after: the run sets it in this process
    monkeypatch.setattr(runner, "KERAS_WORKER_FROM", 2)
    monkeypatch.setattr(local, "RECYCLE_GROWTH_MB", -1e9)
    keras = write_experiment(tmp_path / "k", {1: instance("k", "MLP_model", "none", "hidden_sizes=(8,)")},
                             global_parameters=["num_epochs=1"], num_folds=2)
    plan = xval("plan", keras, "--config", config_file)
    assert plan.exit_code == 0 and "2 job(s) over 1 slot(s): CPU (in a worker process" in plan.output, plan.output
    result = xval("run", keras, "--cpu", "--config", config_file)
    assert result.exit_code == 0, result.output
    assert "in a worker process" in result.output
    folds = load_results(exp_folder(keras), 1)["folds"]
    pids = [folds[f]["pid"] for f in (1, 2)]
    assert len(set(pids)) == 2 and os.getpid() not in pids  # one worker per fold, neither this process
    assert all(folds[f]["test_acc"] >= 0 for f in (1, 2)) and folds[1]["device"] == "CPU"
    torch = write_experiment(tmp_path / "t", TORCH_TWO_BY_TWO, global_parameters=TORCH_GLOBAL, num_folds=2)
    assert xval("run", torch, "--cpu", "--config", config_file).exit_code == 0
    assert {f["pid"] for f in load_results(exp_folder(torch), 1)["folds"].values()} == {os.getpid()}


def test_a_worker_is_replaced_once_it_has_grown_past_the_limit():
    from xvalkit.executors.local import LocalPoolExecutor, Worker, resident_mb

    assert 10 < resident_mb() < 100_000  # this process, in MB
    pool = LocalPoolExecutor([], recycle_mb=100)
    worker = Worker.__new__(Worker)  # the bookkeeping only: no process
    worker.first_mb, worker.stop = None, lambda: None
    assert pool._small_enough(worker, 500) and worker.first_mb == 500  # its first job sets the base
    assert pool._small_enough(worker, 600) and pool.recycled == 0
    assert not pool._small_enough(worker, 601) and pool.recycled == 1


def test_plan_validates_without_training(tmp_path, config_file):
    path = write_experiment(tmp_path, TWO_BY_TWO, num_folds=2)
    result = run_cli("plan", path, "--gpu", "0,1", "--config", config_file)
    assert result.returncode == 0, result.stderr
    assert "dropout" in result.stdout  # the parameter that differs
    assert "4 job(s) over 2 slot(s): GPU 0, GPU 1" in result.stdout
    assert "valid" in result.stdout
    assert not (tmp_path / "results").exists()
    bad = write_experiment(tmp_path, {1: instance("a", "EXAMPLE_model", "none")}, name="bad", num_folds=2)
    result = run_cli("plan", bad, "--config", config_file)
    assert result.returncode == 0 and "`xval plan --build` builds each one now" in result.stdout  # not built
    result = run_cli("plan", bad, "--build", "--config", config_file)
    assert result.returncode == 2
    assert "instance 1: architecture 'EXAMPLE_model' cannot be built" in result.stderr


HEAVY = ("torch", "tensorflow", "keras", "sklearn", "scipy", "matplotlib", "openpyxl")


def modules_after(*args) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `xval ARGS` in a fresh interpreter; its output and the HEAVY modules it imported."""
    code = ("import json, sys\nfrom xvalkit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nelse:\n    code = 0\n"
            f"print('IMPORTED', json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})), "
            "file=sys.stderr)\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=600)
    line = next(line for line in result.stderr.splitlines() if line.startswith("IMPORTED "))
    return result, json.loads(line[len("IMPORTED "):])


def test_plan_and_status_import_no_framework_nor_scikit_learn(tmp_path, config_file):
    """`xval plan` and `xval status` list what would run and where things stand without importing
    torch, TensorFlow, Keras, scikit-learn (or matplotlib, openpyxl): seconds saved at every call."""
    keras_and_torch = {1: instance("k", "MLP_model", "none"), 2: instance("t", "MLP_model", "none", *TORCH)}
    path = write_experiment(tmp_path, keras_and_torch, num_folds=2, global_parameters=TORCH_GLOBAL)
    assert run_cli("run", path, "2", "--config", config_file).returncode == 0  # a fold record for status to read
    for args in (("plan", path), ("plan", path, "--cpu-workers", "2"), ("status", path)):
        result, imported = modules_after(*args, "--config", config_file)
        assert result.returncode == 0, result.stderr
        assert imported == [], f"xval {args[0]} imported {imported}"
    assert "2 job(s) over 1 slot(s)" in modules_after("plan", path, "--config", config_file)[0].stdout


def test_plan_and_status_show_comments_and_errors_as_written(tmp_path, config_file):
    """Comments and error lines are text, not rich markup: '[x]' stays, '[/x]' does not stop the table."""
    from xvalkit.store import ExperimentStore

    path = write_experiment(tmp_path, {1: instance("lr [x] (bold)", "MLP_model", "none", *TORCH),
                                       2: instance("[/b] closes nothing", "MLP_model", "none", *TORCH)},
                            global_parameters=TORCH_GLOBAL, num_folds=2)
    result = run_cli("plan", path, "--config", config_file)
    assert result.returncode == 0, result.stderr
    assert "lr [x] (bold)" in result.stdout and "[/b] closes nothing" in result.stdout
    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    store.save_error(2, "Traceback (most recent call last):\nValueError: expected [/batch] first\n")
    result = run_cli("status", path, "--config", config_file)
    assert result.returncode == 0, result.stderr
    assert "ValueError: expected [/batch] first" in result.stdout and "[/b] closes nothing" in result.stdout


def test_status_shows_done_failed_and_pending(tmp_path, config_file):
    from .test_run import FLAKY_MODELS

    (tmp_path / "flaky.py").write_text(FLAKY_MODELS)
    path = write_experiment(tmp_path, {1: instance("ok", "MLP_model", "none", "hidden_sizes=(8,)"),
                                       2: instance("flaky", "Flaky_model", "none"),
                                       3: instance("later", "MLP_model", "none")},
                            models="flaky.py", global_parameters=["num_epochs=2"], num_folds=2)
    assert xval("run", path, "1", "2", "--cpu", "--config", config_file).exit_code == 1
    result = run_cli("status", path, "--config", config_file)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[0].isdigit():
            rows[int(cells[0])] = cells
    assert rows[1][2:6] == ["1, 2", "-", "-", "-"] and rows[1][6] == "-"  # done
    assert rows[2][2] == "-" and rows[2][5] == "1, 2" and "flaky model exploded" in rows[2][6]  # failed
    assert rows[3][2:6] == ["-", "-", "-", "1, 2"]  # never run: pending
