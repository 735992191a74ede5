"""The thread policy (threads.py): what real folds train with under each slot plan, the override,
and the single-threaded report and drawer children."""

from __future__ import annotations

from pathlib import Path

from xvalkit.threads import TINY_MODEL_PARAMETERS, cores

from .conftest import instance, wait_for, write_experiment
from .test_run import exp_folder, load_results
from .test_scale import run_cli

# 32 x 64 inputs (demo): MLP (64,) has 131 k parameters, (8,) 16 k: over and under the tiny-model line.
assert 32 * 64 * 8 < TINY_MODEL_PARAMETERS < 32 * 64 * 64
INSTANCES = {1: instance("torch big", "MLP_model", "none", 'framework="torch"', "hidden_sizes=(64,)"),
             2: instance("torch tiny", "MLP_model", "none", 'framework="torch"', "hidden_sizes=(8,)"),
             3: instance("keras tiny", "MLP_model", "none", 'framework="keras"', "hidden_sizes=(8,)")}


def recorded_threads(path: Path) -> dict[int, set[int]]:
    """{instance: the thread counts its folds recorded}."""
    folder = exp_folder(path)
    return {run: {fold["threads"] for fold in load_results(folder, run)["folds"].values()} for run in INSTANCES}


def test_folds_record_the_threads_of_their_slot_plan_and_the_override(tmp_path, config_file):
    path = write_experiment(tmp_path, INSTANCES, num_folds=2, global_parameters=["num_epochs=1", "tensorboard=False"])
    result = run_cli("run", path, "--cpu", "-q", "--config", config_file)  # one slot, in this process: every core
    assert result.returncode == 0, result.stderr
    assert recorded_threads(path) == {1: {cores()}, 2: {1}, 3: {cores()}}  # a tiny torch model: one thread

    result = run_cli("run", path, "--cpu", "--cpu-workers", "2", "--overwrite", "-q", "--config", config_file)
    assert result.returncode == 0, result.stderr
    half = max(1, cores() // 2)
    assert recorded_threads(path) == {1: {half}, 2: {1}, 3: {half}}

    result = run_cli("run", path, "--cpu", "-p", "threads=3", "--overwrite", "-q", "--config", config_file)
    assert result.returncode == 0, result.stderr
    assert recorded_threads(path) == {1: {3}, 2: {3}, 3: {3}}  # asked for: model size regardless
    plan = run_cli("plan", path, "--cpu-workers", "2", "-p", "threads=3", "--config", config_file)
    assert "over 2 slot(s): CPU, CPU, 3 thread(s) each;" in plan.stdout

    # how to run, not what to train: another thread count resumes (nothing to redo) instead of refusing
    result = run_cli("run", path, "--cpu", "-p", "threads=1", "--config", config_file)
    assert result.returncode == 0, result.stderr
    assert "all 2 folds already done, skipped" in result.stderr


def test_a_negative_thread_count_is_one_clear_line(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: INSTANCES[2]}, num_folds=2, global_parameters=[])
    result = run_cli("plan", path, "-p", "threads=-1", "--config", config_file)
    assert result.returncode == 2
    assert "threads=-1 must be 0 (xvalkit decides) or a number of threads" in result.stderr
    assert "Traceback" not in result.stderr


def child_environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)


def test_report_and_drawer_children_run_one_blas_thread(tmp_path):
    from xvalkit.reporting.background import ReportRefresher
    from xvalkit.reporting.drawer import PlotDrawer
    from xvalkit.store import ExperimentStore

    store = ExperimentStore(tmp_path / "experiment_1", "demo", 1)
    drawer = PlotDrawer(store, "classification")
    refresher = ReportRefresher(store, 0.0)
    try:
        refresher.request()
        child = wait_for(lambda: refresher._child, None, "the report child")
        for pid in (drawer._child.pid, child.pid):
            env = child_environment(pid)
            assert {env.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")} == {"1"}
    finally:
        drawer.close()
        refresher.close(final=False)
