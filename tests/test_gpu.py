"""GPU readiness, tested by masking on a machine without a GPU: the GPUs xvalkit believes exist
(a stand-in nvidia-smi on PATH, CUDA_VISIBLE_DEVICES), and the settings every job records from
inside itself before its framework starts (memory growth, torch's memory share, the GPU mask)."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from xvalkit import devices

from .conftest import write_experiment
from .test_run import exp_folder

FAKE_SMI = """#!/bin/sh
echo "GPU 0: NVIDIA Fake A (UUID: GPU-aaaa-1111)"
echo "GPU 1: NVIDIA Fake B (UUID: GPU-bbbb-2222)"
"""
ROOT = Path(__file__).resolve().parents[1]
MLP = ['architecture="MLP_model"', 'reshaping_type="none"', 'framework="torch"', 'comment_1="mlp"', 'comment_2="t"']
QUICK = ["num_epochs=1", "batch_size=64", "tensorboard=False"]


def fake_gpus(tmp_path: Path, script: str = FAKE_SMI) -> dict[str, str]:
    """An environment whose nvidia-smi lists two GPUs (0 and 1), with no inherited GPU mask."""
    folder = tmp_path / "fake-bin"
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(script)
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in devices.GPU_VARIABLES}
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    return env


def xval_run(*args, env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def folds_of(path: Path, runs=(1,)) -> list[dict]:
    out = []
    for run in runs:
        with open(exp_folder(path) / "results" / f"results_demo_exp1_run{run}.pkl", "rb") as handle:
            out += list(pickle.load(handle)["folds"].values())
    return out


@pytest.mark.parametrize("mask, expected", [
    (None, [0, 1]), ("1", [1]), ("GPU-bbbb", [1]), ("1,0", [1, 0]), ("0,7,1", [0]), ("-1", []), ("", []),
])
def test_visible_gpus_from_nvidia_smi_and_the_inherited_mask(tmp_path, monkeypatch, mask, expected):
    env = fake_gpus(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    if mask is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
    assert list(devices.visible_gpus()) == expected
    if expected:
        assert devices.visible_gpus()[expected[0]] == ("NVIDIA Fake A", "NVIDIA Fake B")[expected[0]]


def test_nvidia_smi_without_devices_or_driver_means_no_gpu(tmp_path, monkeypatch):
    env = fake_gpus(tmp_path, "#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.visible_gpus() == {}


def test_driver_proc_entries_where_nvidia_smi_is_missing(tmp_path):
    for bus, model in (("0000:41:00.0", "NVIDIA B"), ("0000:01:00.0", "NVIDIA A")):
        (tmp_path / bus).mkdir()
        (tmp_path / bus / "information").write_text(f"Model: \t {model}\nIRQ: 12\nGPU UUID: \t GPU-{bus}\n")
    assert devices._proc_gpus(str(tmp_path)) == {0: ("NVIDIA A", "GPU-0000:01:00.0"),
                                                 1: ("NVIDIA B", "GPU-0000:41:00.0")}
    assert devices._proc_gpus(str(tmp_path / "absent")) == {}


def test_an_explicit_gpu_that_does_not_exist_is_a_one_line_error(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: MLP}, num_folds=2, global_parameters=QUICK)
    env = fake_gpus(tmp_path)
    for args in (["--gpu", "3"], ["--gpu", "0,3"], ["1", "1", "3"]):  # the third positional: GPU
        proc = xval_run(path, *args, "--config", config_file, env=env, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "GPU 3 is not on this machine; the visible GPUs are: 0 (NVIDIA Fake A), 1 (NVIDIA Fake B)" in lines[0]
    # a scheduler's mask counts: GPU 0 exists but this job was given GPU 1 only
    proc = xval_run(path, "--gpu", "0", "--config", config_file, env={**env, "CUDA_VISIBLE_DEVICES": "1"}, cwd=tmp_path)
    assert proc.returncode == 2 and "visible GPUs are: 1 (NVIDIA Fake B) (CUDA_VISIBLE_DEVICES=1)" in proc.stderr
    # gpu_ID in the file is as explicit when the machine has GPUs
    with_id = write_experiment(tmp_path / "with_id", {1: MLP}, num_folds=2, global_parameters=QUICK, gpu_ID=2)
    proc = xval_run(with_id, "--config", config_file, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "gpu_ID = 2 in" in proc.stderr and "GPU 2 is not on this machine" in proc.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "with_id" / "results").exists()


def test_gpu_id_in_the_file_falls_back_to_the_cpu_with_one_line_where_there_is_no_gpu(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: MLP}, num_folds=2, global_parameters=QUICK, gpu_ID=0)
    env = fake_gpus(tmp_path, "#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    proc = xval_run(path, "--quiet", "--config", config_file, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "GPU" in line]
    assert notes == [f"gpu_ID = 0 in {path}: no GPU on this machine, training on the CPU"], proc.stderr
    assert [f["device"] for f in folds_of(path)] == ["CPU", "CPU"]
    # an error that has nothing to do with the GPU comes alone
    bad = write_experiment(tmp_path / "bad", {1: [*MLP[1:], 'architecture="Nope_model"']},
                           num_folds=2, global_parameters=QUICK, gpu_ID=0)
    proc = xval_run(bad, "--quiet", "--config", config_file, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "Nope_model" in proc.stderr and "GPU" not in proc.stderr, proc.stderr
    # and --gpu 0 there is an error, not a silent fallback
    proc = xval_run(path, "--gpu", "0", "--config", config_file, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "the visible GPUs are: none" in proc.stderr


def test_every_job_sees_memory_growth_and_its_share_before_its_framework_starts(tmp_path, config_file):
    """--gpu 0 --jobs-per-gpu 2: two workers on GPU 0, each capped at half its memory (torch) and
    with TensorFlow's memory growth; a Keras job in this process (--gpu 1): growth, no cap."""
    keras = ['architecture="MLP_model"', 'reshaping_type="none"', 'comment_1="keras"', 'comment_2="t"']
    env = fake_gpus(tmp_path)
    shared = write_experiment(tmp_path / "shared", {1: MLP, 2: MLP + ["dropout=0.2"]}, num_folds=2,
                              global_parameters=QUICK)
    proc = xval_run(shared, "--gpu", "0", "--jobs-per-gpu", "2", "--quiet", "--config", config_file, env=env,
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folds = folds_of(shared, (1, 2))
    assert len({f["pid"] for f in folds}) == 2  # two workers
    for fold in folds:
        assert fold["gpu_settings"] == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                        "TF_FORCE_GPU_ALLOW_GROWTH": "true", "XVAL_GPU_MEMORY_FRACTION": "0.5"}
    alone = write_experiment(tmp_path / "alone", {1: keras}, num_folds=2, global_parameters=QUICK)
    proc = xval_run(alone, "--gpu", "1", "--quiet", "--config", config_file, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for fold in folds_of(alone):
        assert fold["gpu_settings"] == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                        "TF_FORCE_GPU_ALLOW_GROWTH": "true", "XVAL_GPU_MEMORY_FRACTION": None}


def test_a_ray_task_sets_growth_and_its_share_before_the_job(tmp_path, config_file, monkeypatch):
    """What a Ray task runs (executors.ray._execute) with 0.25 GPU per job, called here directly."""
    from xvalkit.executors.ray import _execute
    from xvalkit.experiment import load_experiment
    from xvalkit.runner import RunOptions, make_jobs, prepare

    for name in devices.GPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    path = write_experiment(tmp_path, {1: MLP}, num_folds=2, global_parameters=QUICK)
    exp = load_experiment(path, config_file=config_file)
    _, instances, store = prepare(exp, RunOptions())
    store.write_description(exp.short_description)  # as xval run does first: jobs check the folder is there
    record = _execute(make_jobs(exp, instances[0])[0], 0.25)
    assert record["gpu_settings"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert record["gpu_settings"]["XVAL_GPU_MEMORY_FRACTION"] == "0.25"
    _execute(make_jobs(exp, instances[0])[1], 1.0)  # a whole GPU: no cap left over from the last task
    assert "XVAL_GPU_MEMORY_FRACTION" not in os.environ


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_no_model_survives_its_fold(tmp_path, config_file, framework):
    """Between folds the fold's model and graphs are released (on a GPU, their memory), not left
    for the garbage collector to find some time later (automatic collection is off here)."""
    from xvalkit.experiment import load_experiment
    from xvalkit.jobs import execute
    from xvalkit.runner import RunOptions, make_jobs, prepare

    spec = ['architecture="MLP_model"', 'reshaping_type="none"', f'framework="{framework}"', 'comment_1="a"',
            'comment_2="b"']
    path = write_experiment(tmp_path, {1: spec}, num_folds=2, global_parameters=QUICK)
    exp = load_experiment(path, config_file=config_file)
    _, instances, store = prepare(exp, RunOptions())
    store.write_description(exp.short_description)  # as xval run does first: jobs check the folder is there
    if framework == "keras":
        import keras

        model_type = keras.Model
    else:
        import torch

        model_type = torch.nn.Module
    gc.collect()
    gc.disable()
    try:
        execute(make_jobs(exp, instances[0])[0])
        with warnings.catch_warnings():  # isinstance on torch's deprecated aliases warns
            warnings.simplefilter("ignore")
            alive = [o for o in gc.get_objects() if _is_instance(o, model_type)]
    finally:
        gc.enable()
    assert alive == []


def test_gpu_benchmark_exits_cleanly_without_a_gpu(tmp_path):
    env = fake_gpus(tmp_path, "#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["benchmarks/gpu.py: no NVIDIA GPU on this machine (nvidia-smi -L "
                                                "lists none); nothing measured"]


def _is_instance(obj, kind) -> bool:
    """isinstance, False for a dead weak proxy (other tests leave some among gc's objects)."""
    try:
        return isinstance(obj, kind)
    except ReferenceError:
        return False
