"""`xval reproduce`: folds trained again from the folder's record, with real Keras and torch training."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import TINY, instance, write_experiment
from xvalkit.cli import app
from xvalkit.comparison import DIFFERENT, IDENTICAL, WITHIN, FoldResult, compare, history_parting
from xvalkit.environment import differences

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

MODELS = '''
from torch import nn


def Tiny_torch(input_shape, num_outputs, task_type, *, hidden=8):
    size = 1
    for n in input_shape:
        size *= n
    return nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))
'''


def xval(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# `xval reproduce` is called without --cpu: the module's `xval run --cpu` masked the GPUs of this
# process already, and --cpu here would only add the warning that frameworks were imported first.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An experiment with a Keras and a torch instance (the latter from the user's models module),
    run once on its own data folder (tests here change the data)."""
    from xvalkit.data import load_dataset

    root = tmp_path_factory.mktemp("reproduce")
    data = root / "data"
    load_dataset(data, "demo")
    (root / "my_models.py").write_text(MODELS)
    config = root / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n")
    spec = {1: instance("keras", "EXAMPLE_model", "cnn", *TINY[3:]), 2: ['architecture="Tiny_torch"', 'reshaping_type="none"', 'comment_1="torch"',
                                      'comment_2="t"', 'framework="torch"']}
    path = write_experiment(root, spec, num_folds=3, global_parameters=TINY[:3], models="my_models.py")
    result = xval("run", path, "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    return {"path": path, "config": config, "data": data, "folder": root / "results" / "demo" / "experiment_1"}


def copy_of(trained, tmp_path) -> Path:
    """A copy of the experiment folder (edited by a test), named as xval finds a folder's experiment."""
    target = tmp_path / "demo" / "experiment_1"
    shutil.copytree(trained["folder"], target)
    return target


def edit_fold(folder: Path, instance_id: int, fold: int, change) -> None:
    path = folder / "results" / "folds" / f"demo_exp1_run{instance_id}_fold{fold}.pkl"
    saved = pickle.loads(path.read_bytes())
    change(saved["record"])
    path.write_bytes(pickle.dumps(saved))


def verdict_line(output: str, label: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"{label}: ") and "training it again" not in line)


# --- what a run records ---------------------------------------------------------------------------

def test_a_fold_records_its_environment_seeds_and_data(trained):
    import torch

    saved = pickle.loads((trained["folder"] / "results" / "folds" / "demo_exp1_run2_fold1.pkl").read_bytes())
    record = saved["record"]
    files = sorted((trained["data"] / "demo.xvd").iterdir())
    assert record["data_sha256"] == {f"demo.xvd/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    env = record["environment"]
    assert env["packages"]["torch"] == metadata.version("torch") and env["device"] == "CPU"
    assert env["determinism"]["torch_deterministic_algorithms"] is True and env["determinism"]["cudnn_deterministic"] is True
    assert env["determinism"]["torch_threads"] == torch.get_num_threads()
    assert env["seeds"] == {"python": record["seed"], "numpy": record["seed"], "torch": record["seed"],
                            "batch_order": record["seed"]}
    keras_env = pickle.loads((trained["folder"] / "results" / "folds" / "demo_exp1_run1_fold1.pkl").read_bytes())["record"]["environment"]
    assert keras_env["determinism"]["tf_op_determinism"] is True and keras_env["packages"]["keras"] == metadata.version("keras")
    import tensorflow as tf  # installed as tensorflow or tensorflow-cpu, whose wheel names it tensorflow_cpu

    assert tf.__version__ in (keras_env["packages"].get("tensorflow"), keras_env["packages"].get("tensorflow-cpu"))
    run = json.loads(next((trained["folder"] / "code" / "runs").glob("*.json")).read_text())
    assert run["pip_freeze"]["numpy"] == metadata.version("numpy") and len(run["pip_freeze"]) > 20
    assert run["experiment_file"] == "exp_test.py"


# --- reproducing ----------------------------------------------------------------------------------

def test_keras_and_torch_folds_come_out_bit_for_bit_from_the_snapshot(trained):
    """In a process of its own, as a user runs it: the training, not a cache of this process, repeats."""
    current = trained["path"].parent / "my_models.py"
    text = current.read_text()
    current.write_text("raise RuntimeError('the current models module, not the snapshot')\n")  # must not be used
    from xvalkit.threads import BLAS_VARIABLES, PLANNED_VARIABLE

    # a user's shell: not the thread settings an earlier in-process run of this worker left in os.environ
    # (with XVAL_THREADS set, importing Keras sets its share over the recorded TensorFlow threads)
    leaked = {*BLAS_VARIABLES, PLANNED_VARIABLE, "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"}
    env = {**{k: v for k, v in os.environ.items() if k not in leaked}, "PYTHONPATH": str(ROOT / "src")}
    try:
        proc = subprocess.run([sys.executable, "-m", "xvalkit.cli", "reproduce", str(trained["path"]), "--cpu",
                               "--config", str(trained["config"])], capture_output=True, text=True, env=env,
                              timeout=900)
    finally:
        current.write_text(text)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    chosen = [line for line in output.splitlines() if "(chosen at random)" in line]
    assert [line.split()[1] for line in chosen] == ["1", "2"], output  # one fold of each instance
    for instance_id in (1, 2):
        fold = next(line.split()[3] for line in chosen if line.split()[1] == str(instance_id))
        line = verdict_line(output, f"instance {instance_id} fold {fold}")
        assert line.split(": ")[1] == IDENTICAL and "bit for bit" in line, output
    assert "reproduced 2 of 2 fold(s)" in output


def test_a_fold_is_trained_again_with_the_code_of_its_own_run_after_a_later_run_changed_it(trained, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(trained["path"].parent, root, ignore=shutil.ignore_patterns("data"))
    models = root / "my_models.py"
    models.write_text(MODELS.replace("nn.ReLU()", "nn.Tanh()"))  # what the next run trains with
    path = root / "exp_test.py"
    path.write_text(path.read_text() + "experiment[3] = ['architecture=\"Tiny_torch\"', 'reshaping_type=\"none\"', "
                    "'comment_1=\"new\"', 'comment_2=\"t\"', 'framework=\"torch\"']\n")
    assert xval("run", path, 3, "--config", trained["config"]).exit_code == 0
    previous = list((root / "results" / "demo" / "experiment_1" / "code" / "previous").iterdir())
    assert len(previous) == 1  # the first run's code, moved aside by the run that trained instance 3
    result = xval("reproduce", path, 2, 1, "--config", trained["config"])
    assert result.exit_code == 0, result.output
    assert f"from the code in code/previous/{previous[0].name}/" in result.output, result.output
    assert verdict_line(result.output, "instance 2 fold 1").startswith(f"instance 2 fold 1: {IDENTICAL}")


def test_a_metric_edited_in_the_record_comes_out_different(trained, tmp_path):
    folder = copy_of(trained, tmp_path)
    edit_fold(folder, 2, 2, lambda record: record.update(test_acc=record["test_acc"] + 0.01))
    result = xval("reproduce", folder, 2, 2)
    assert result.exit_code == 1, result.output
    line = verdict_line(result.output, "instance 2 fold 2")
    assert line.startswith(f"instance 2 fold 2: {DIFFERENT}: test_acc") and "was the record edited?" in line, line


def test_a_changed_data_file_is_named_before_any_training(trained, tmp_path):
    predictors = trained["data"] / "demo.xvd" / "predictors.npy"
    kept = tmp_path / "kept.npy"
    shutil.copy2(predictors, kept)
    changed = bytearray(predictors.read_bytes())
    changed[-1] ^= 1
    (tmp_path / "changed.npy").write_bytes(bytes(changed))
    os.replace(tmp_path / "changed.npy", predictors)  # a new file: processes that map the old one keep it
    try:
        result = xval("reproduce", trained["folder"], 1, 1)
    finally:
        os.replace(kept, predictors)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset 'demo'"), result.output
    assert "changed since instance 1 fold 1 was trained: demo.xvd/predictors.npy (" in lines[0], result.output


def test_another_recorded_torch_version_is_named_and_judged_within_tolerance(trained, tmp_path):
    folder = copy_of(trained, tmp_path)
    edit_fold(folder, 2, 3, lambda record: record["environment"]["packages"].update(torch="2.11.0"))
    result = xval("reproduce", folder, 2, 3)
    assert result.exit_code == 0, result.output
    line = verdict_line(result.output, "instance 2 fold 3")
    assert line.startswith(f"instance 2 fold 3: {WITHIN}: bit for bit in fact; environment differs: "
                           f"torch 2.11.0 -> {metadata.version('torch')}"), line


def test_a_reproduction_reads_each_data_file_once(trained, tmp_path, monkeypatch):
    """The data is hashed for the check and those hashes serve the new fold's record and the next
    fold's check: over the folds of one `xval reproduce` each file is read once, not once for each
    check and again for each record (1.2 s per GB each time)."""
    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)  # a folder no earlier fold of this process has hashed
    then = os.stat(trained["data"]).st_mtime - 60  # written well before, not just now (data_digest.RACY_NS)
    for path in data.rglob("*"):
        os.utime(path, (then, then))
    folder = copy_of(trained, tmp_path)
    for instance_id, fold in [(i, f) for i in (1, 2) for f in (1, 2, 3)]:  # whichever fold is drawn
        edit_fold(folder, instance_id, fold, lambda record: record.update(data_folder=str(data)))
    read = []
    real = hashlib.file_digest

    def counting(handle, digest):
        read.append(Path(handle.name).relative_to(data).as_posix() if Path(handle.name).is_relative_to(data) else None)
        return real(handle, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    result = xval("reproduce", folder)  # a fold of each instance, in this one command
    assert result.exit_code == 0, result.output
    assert "reproduced 2 of 2 fold(s)" in result.output, result.output
    files = sorted(f"demo.xvd/{p.name}" for p in (data / "demo.xvd").iterdir())
    assert sorted(name for name in read if name) == files


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root (CI runs as root)")
def test_a_folder_of_another_user_runs_its_code_only_with_trust_code(trained, tmp_path):
    folder = copy_of(trained, tmp_path)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)
    refused = xval("reproduce", folder, 2, 1)
    assert refused.exit_code == 2, refused.output
    first = refused.output.splitlines()[0]
    assert first.startswith(f"error: {folder} was not created by you") and "--trust-code" in first, refused.output
    assert len(refused.output.strip().splitlines()) == 1  # nothing ran
    trusted = xval("reproduce", folder, 2, 1, "--trust-code")
    assert trusted.exit_code == 0, trusted.output
    assert verdict_line(trusted.output, "instance 2 fold 1").startswith(f"instance 2 fold 1: {IDENTICAL}")


def test_a_fold_that_is_not_there_is_one_line(trained):
    result = xval("reproduce", trained["folder"], 2, 9)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {trained['folder']}: instance 2 has no finished fold 9; its finished folds: 1-3"


def test_a_torch_fold_records_the_threads_it_trained_with_and_is_trained_again_with_them(trained, tmp_path):
    """threads.py decides a torch fold's threads from its model and this machine's cores: the
    record keeps what training used, and a reproduction on another machine uses that, not its own."""
    from xvalkit.report import open_store
    from xvalkit.reproduce import Chosen, fold_job

    store, _ = open_store(str(trained["path"]), config_file=str(trained["config"]))
    saved = store.read(store.fold_path(2, 1))
    assert saved["record"]["environment"]["determinism"]["torch_threads"] == saved["record"]["threads"] == 1  # tiny
    saved["record"]["threads"] = 7
    job = fold_job(store, Chosen(2, 1, False), saved, str(trained["data"]), None, False, tmp_path)
    assert job.params["threads"] == 7


def test_torch_on_a_gpu_gets_and_records_cublas_fixed_workspace(monkeypatch):
    """The GPU path of the settings, which only set and read flags (no GPU needed): cuBLAS reads its
    workspace setting when CUDA starts it, so it must be in the environment before the first fold."""
    from xvalkit.determinism import CUBLAS_WORKSPACE, torch_deterministic

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    settings = torch_deterministic("cuda:0")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE == ":4096:8"
    assert settings["cublas_workspace_config"] == CUBLAS_WORKSPACE and settings["deterministic"] is True
    assert "cuda" in settings and "cudnn" in settings and "cublas_workspace_config" not in torch_deterministic("cpu")


# --- the comparison, a pure function --------------------------------------------------------------

def result(acc=0.75, loss=0.5, history=None, predictions=(0.2, 0.8), weight=1.0, best=2) -> FoldResult:
    history = history or {"loss": [1.0, 0.8, 0.7], "accuracy": [0.5, 0.6, 0.7], "val_loss": [1.1, 0.9, 0.85],
                          "val_accuracy": [0.4, 0.5, 0.6]}
    return FoldResult({"test_acc": acc, "test_loss": loss, "val_acc": 0.6}, history, np.array(predictions),
                      {"dense/kernel": np.array([weight, -2.0])}, best)


def test_the_same_numbers_in_the_same_environment_are_identical():
    verdict = compare(result(), result(), [])
    assert verdict.kind == IDENTICAL and verdict.reproduced
    assert verdict.detail == "metrics on every set, history of 3 epochs, 2 test predictions, 1 weight tensors, bit for bit"


def test_any_difference_in_the_same_environment_is_different():
    verdict = compare(result(), result(acc=0.75 + 1e-9), [])
    assert verdict.kind == DIFFERENT and not verdict.reproduced
    assert verdict.detail == ("test_acc 0.75 recorded, 0.750000001 reproduced; the histories agree on all 3 epochs "
                              "(was the record edited?)")


def test_histories_that_part_name_the_epoch_and_by_how_much():
    history = {"loss": [1.0, 0.8, 0.7], "accuracy": [0.5, 0.6, 0.7], "val_loss": [1.1, 0.99, 0.9],
               "val_accuracy": [0.4, 0.5, 0.6]}
    verdict = compare(result(), result(acc=0.70, history=history, weight=1.2), ["device CPU -> GPU 0 (NVIDIA H200)"])
    assert verdict.kind == DIFFERENT
    assert verdict.detail == ("test_acc 0.75 recorded, 0.7 reproduced; weights differ (dense/kernel); "
                              "the histories part at epoch 2: val_loss 0.9 -> 0.99 (+10.00%); "
                              "environment differs: device CPU -> GPU 0 (NVIDIA H200)")


def test_small_differences_in_another_environment_are_within_tolerance():
    history = {"loss": [1.0, 0.801, 0.7], "accuracy": [0.5, 0.6, 0.71], "val_loss": [1.1, 0.9, 0.85],
               "val_accuracy": [0.4, 0.5, 0.6]}
    reproduced = result(acc=0.76, loss=0.505, history=history, predictions=(0.21, 0.79), weight=1.01)
    verdict = compare(result(), reproduced, ["torch 2.13.0 -> 2.11.0"])
    assert verdict.kind == WITHIN and verdict.reproduced
    assert verdict.detail.startswith("metrics within ±0.02 (acc) and ±2% (loss), test_acc using 50% of its tolerance; "
                                     "history within ±2% / ±0.02 at every epoch; ")
    assert verdict.detail.endswith("; environment differs: torch 2.13.0 -> 2.11.0")
    # the same gaps where the environment is the same are a failure to reproduce
    assert compare(result(), reproduced, []).kind == DIFFERENT


def test_beyond_tolerance_in_another_environment_is_different():
    verdict = compare(result(), result(acc=0.80), ["torch 2.13.0 -> 2.11.0"])
    assert verdict.kind == DIFFERENT and verdict.detail.startswith("test_acc 0.75 recorded, 0.8 reproduced;")
    assert compare(result(), result(acc=0.76), [], deterministic=False).kind == WITHIN  # Keras on a GPU


def test_a_history_that_runs_longer_parts_where_the_other_stopped():
    longer = {"loss": [1.0, 2.0], "val_loss": [1.0, 2.0]}
    assert history_parting({"loss": [1.0], "val_loss": [1.0]}, longer, exact=True) == \
        "epoch 2: the reproduction trained on, the record had stopped"


def test_environment_differences_name_every_field():
    now = {"python": "3.11.9", "xvalkit": "0.1.0", "platform": "Linux", "cpu": "AMD EPYC", "cpu_count": 2,
           "device": "CPU", "gpu_driver": None, "packages": {"torch": "2.13.0", "numpy": "2.1.0"},
           "packages_sha256": "a", "determinism": {"torch_threads": 2}, "seeds": {"torch": 1}}
    before = {**now, "device": "GPU 0 (NVIDIA H200)", "gpu_driver": "580.1", "packages": {"torch": "2.11.0", "numpy": "2.1.0"},
              "packages_sha256": "b", "determinism": {"torch_threads": 16}}
    assert differences(before, now, {"torch": "2.11.0", "scipy": "1.14"}, {"torch": "2.13.0", "scipy": "1.15"}) == [
        "device GPU 0 (NVIDIA H200) -> CPU", "GPU driver 580.1 -> None", "torch 2.11.0 -> 2.13.0",
        "torch_threads 16 -> 2", "scipy 1.14 -> 1.15"]
    assert differences(now, now) == []
    assert differences({**now, "packages_sha256": "c"}, now) == ["other installed packages"]
    assert differences(None, now) == ["not recorded (the fold was trained before xvalkit recorded its environment)"]


def test_the_package_list_is_what_a_fresh_interpreter_sees_not_what_an_import_added(tmp_path, monkeypatch):
    """Ray puts its vendored psutil and colorama on sys.path when imported: a run record made after
    some import of ray listed them, and a reproduction in a fresh process named them as removed."""
    import sys

    from xvalkit.environment import installed_packages

    vendored = tmp_path / "thirdparty_files"
    (vendored / "vendoredpkg-9.9.dist-info").mkdir(parents=True)
    (vendored / "vendoredpkg-9.9.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: vendoredpkg\nVersion: 9.9\n")
    monkeypatch.setattr(sys, "path", [str(vendored), *sys.path])
    installed_packages.cache_clear()
    try:
        packages = installed_packages()
    finally:
        installed_packages.cache_clear()
    assert "vendoredpkg" not in packages
    assert packages["numpy"] == metadata.version("numpy") and packages["xvalkit"]
