"""Faults of real machines on real small filesystems: a full disk, a read-only or vanished folder
stop the run with one line and keep every finished fold; a killed worker and an allocation
failure are the instance's failures, with readable lines.

The filesystems are size-limited tmpfs mounts (root only: the tests skip elsewhere; CI runs as
root). Faults are triggered at a known point by a real models module: its model acts (fills the
disk, deletes the folder, waits to be killed, allocates too much) in its first training step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xvalkit.cli import FAULT_EXIT, app
from xvalkit.faults import fault_from
from xvalkit.store import error_line

from .conftest import write_experiment

runner = CliRunner()

MODELS = '''
import os, resource, shutil, time
import torch
from torch import nn

MARKERS = {markers!r}   # outside the small filesystem: each action happens once
FILLER = {filler!r}     # on the small filesystem
VANISH = {vanish!r}     # the experiment folder


class Net(nn.Module):
    def __init__(self, input_shape, num_outputs, action):
        super().__init__()
        size = 1
        for n in input_shape:
            size *= n
        self.linear = nn.Linear(size, num_outputs)
        self.action = action

    def forward(self, x):
        if self.training and torch.is_grad_enabled():  # training, not the check before it
            act(self.action)
        return self.linear(x.flatten(1))


def once(name):
    marker = os.path.join(MARKERS, name)
    if os.path.exists(marker):
        return False
    open(marker, "w").close()
    return True


def act(action):
    if action == "fill" and once("filled"):
        with open(FILLER, "wb") as handle:  # a full disk: write until the kernel refuses
            try:
                while True:
                    handle.write(b"x" * 65536)
                    handle.flush()
            except OSError:
                pass
    elif action == "vanish" and once("vanished"):
        shutil.rmtree(VANISH)
    elif action == "stuck":  # until the test has killed this worker twice
        deadline = time.time() + 300
        while not os.path.exists(os.path.join(MARKERS, "release")) and time.time() < deadline:
            time.sleep(0.05)
    elif action == "hog":  # a real memory limit on this worker, then more than it allows
        pages = int(open("/proc/self/statm").read().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + (256 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        torch.ones(4 << 30, dtype=torch.uint8)


def Act_model(input_shape, num_outputs, task_type, *, action="none"):
    return Net(input_shape, num_outputs, action)
'''

FAST = ["framework='torch'", "num_epochs=2", "patience=2", "batch_size=64"]


def act_instance(comment: str, action: str = "none") -> list[str]:
    return ['architecture="Act_model"', 'reshaping_type="none"', f'comment_1="{comment}"', 'comment_2="faults"',
            f'action="{action}"']


@pytest.fixture
def tmpfs():
    """mount(path, size) -> path: a size-limited tmpfs, unmounted at teardown whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited tmpfs (CI runs as root)")
    mounted: list[Path] = []

    def mount(path: Path, size: str = "3m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def setup(tmp_path: Path, config_file: Path, instances: dict, **settings) -> tuple[Path, Path]:
    """(experiment file, experiment folder) with the results on tmp_path/small."""
    small = tmp_path / "small"
    markers = tmp_path / "markers"
    markers.mkdir()
    folder = small / "demo" / "experiment_1"
    (tmp_path / "models.py").write_text(MODELS.format(markers=str(markers), filler=str(small / "filler"),
                                                      vanish=str(folder)))
    path = write_experiment(tmp_path, instances, experiment_folder="small", models="models.py",
                            global_parameters=FAST, num_folds=2, **settings)
    return path, folder


def xval(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def snapshot(folder: Path, run: int) -> dict[str, bytes]:
    """The finished folds of instance `run`: fold records and models, byte for byte."""
    files = [*(folder / "results" / "folds").glob(f"*_run{run}_fold*.pkl"), *(folder / "models").glob(f"*_run{run}_*")]
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(files)}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_stopped_by_fault(code: int, output: str, cause: str) -> str:
    assert code == FAULT_EXIT, output
    lines = error_lines(output)
    assert len(lines) == 1, output
    assert cause in lines[0] and "rerun the same command to resume" in lines[0], output
    assert "failed" not in output and "Traceback" not in output, output  # no instance marked failed
    return lines[0]


def test_full_disk_stops_the_run_then_the_same_command_completes_it(tmp_path, config_file, tmpfs):
    path, folder = setup(tmp_path, config_file, {1: act_instance("a"), 2: act_instance("fills", "fill"),
                                                 3: act_instance("c")})
    small = tmpfs(tmp_path / "small", "3m")
    code, output = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    line = assert_stopped_by_fault(code, output, "no space left on device")
    assert str(small) in line and "while writing" in line and "free there now" in line
    assert "instance 1 done" in output and "instance 3" not in output  # stopped at the first fault
    kept = snapshot(folder, 1)
    assert len([k for k in kept if k.endswith(".pkl")]) == 2
    assert not list(folder.rglob(".*.tmp*")), "a temporary file was left behind"
    assert not (folder / "results" / "error_demo_exp1_run2.txt").exists()
    assert not list((folder / "results" / "folds").glob("*_run2_*"))

    (small / "filler").unlink()  # space freed: the same command completes the experiment
    code, output = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert code == 0, output
    assert "done 2, 3; skipped (already done) 1" in output
    assert snapshot(folder, 1) == kept  # the folds finished before the fault were not touched
    assert len(list((folder / "results" / "folds").glob("*.pkl"))) == 6
    for curves in ("train", "validation"):  # the stopped attempt's TensorBoard files are gone
        assert len(list((folder / "tensorboard" / "run2" / "fold1" / curves).iterdir())) == 1


def test_full_disk_in_a_local_worker_stops_the_run(tmp_path, config_file, tmpfs):
    path, folder = setup(tmp_path, config_file, {1: act_instance("fills", "fill"), 2: act_instance("b"),
                                                 3: act_instance("c")})
    small = tmpfs(tmp_path / "small", "3m")
    code, output = xval("run", path, "--cpu-workers", "2", "--quiet", "--config", config_file)
    line = assert_stopped_by_fault(code, output, "no space left on device")
    assert str(small) in line
    assert not list((folder / "results").glob("error_*")) and "done 3" not in output
    kept = {run: snapshot(folder, run) for run in (1, 2, 3)}
    assert not list(folder.rglob(".*.tmp*"))
    (small / "filler").unlink()
    code, output = xval("run", path, "--cpu-workers", "2", "--quiet", "--config", config_file)
    assert code == 0, output
    for run, files in kept.items():
        assert {k: v for k, v in snapshot(folder, run).items() if k in files} == files
    assert len(list((folder / "results" / "folds").glob("*.pkl"))) == 6


def test_read_only_results_folder(tmp_path, config_file, tmpfs):
    path, folder = setup(tmp_path, config_file, {1: act_instance("a"), 2: act_instance("b")})
    small = tmpfs(tmp_path / "small", "3m")
    code, output = xval("run", path, "1", "--cpu", "--quiet", "--config", config_file)
    assert code == 0, output
    kept = snapshot(folder, 1)
    remount(small, "ro")
    code, output = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    line = assert_stopped_by_fault(code, output, "read-only file system")
    assert str(folder) in line
    remount(small, "rw")
    code, output = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert code == 0 and "done 2; skipped (already done) 1" in output, output
    assert snapshot(folder, 1) == kept


def test_vanished_experiment_folder_is_not_silently_recreated(tmp_path, config_file):
    path, folder = setup(tmp_path, config_file, {1: act_instance("a"), 2: act_instance("deletes", "vanish"),
                                                 3: act_instance("c")})
    code, output = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert_stopped_by_fault(code, output, "vanished")
    assert not folder.exists(), "a new, empty experiment folder was made in place of the vanished one"
    code, output = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert code == 0 and "done 1, 2, 3" in output, output


def test_killed_worker_and_allocation_failure_are_instance_failures(tmp_path, config_file):
    """--cpu-workers 2: instance 1's fold 1 is killed from outside (SIGKILL, what the kernel's
    out-of-memory killer sends) twice; instance 2 allocates more than its worker's address-space
    limit; instance 3 is fine. The run goes on and records both failures with readable lines."""
    path, folder = setup(tmp_path, config_file, {1: act_instance("stuck", "stuck"), 2: act_instance("hog", "hog"),
                                                 3: act_instance("ok")})
    marker = folder / "results" / "running" / "run1_fold1.json"
    proc = subprocess.Popen([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu-workers", "2", "--quiet",
                             "--config", str(config_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        killed: list[int] = []
        deadline = time.time() + 240
        while len(killed) < 2 and time.time() < deadline and proc.poll() is None:
            try:
                pid = int(json.loads(marker.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
                continue
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)
        assert len(killed) == 2, "the fold was not retried in a new worker after the first kill"
        (tmp_path / "markers" / "release").touch()  # fold 2 of instance 1 may go on
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, output
    assert "instance 1 fold 1/2 failed: killed by signal 9 (out of memory?)" in output
    memory_line = next(line for line in output.splitlines() if line.startswith("instance 2 fold"))
    assert "failed: RuntimeError:" in memory_line and "allocate" in memory_line, memory_line
    assert "done 3" in output and "failed 1, 2" in output
    assert "killed by signal 9" in (folder / "results" / "error_demo_exp1_run1.txt").read_text()


def test_failure_line_is_the_first_line_of_a_multi_line_message():
    """h5py's full-disk message spans lines; the old failure line showed its last fragment."""
    message = ("[Errno 28] Can't close file (file write failed: time = Wed Nov 25 14:45:43 2026\n"
               ", filename = '/x/models/.demo_exp1_run1_fold1.hdf5.abc.tmp.hdf5', file descriptor = 3, "
               "errno = 28, error message = 'No space left on device', buf = 0x1)")
    try:
        raise OSError(message)
    except OSError as exc:
        import traceback

        text = traceback.format_exc()
        fault = fault_from(exc, ["/x"])
    assert error_line(text) == "OSError: [Errno 28] Can't close file (file write failed: time = Wed Nov 25 14:45:43 2026"
    # errno and file found in the text: the fault names the target, not the temporary file
    assert fault is not None and str(fault).startswith("/x/models/demo_exp1_run1_fold1.hdf5: no space left on device")


def test_a_permission_error_outside_our_folders_is_the_instance_own():
    assert fault_from(PermissionError(13, "Permission denied", "/etc/somewhere"), ["/results"]) is None
    assert fault_from(PermissionError(13, "Permission denied", "/results/models/x.pt"), ["/results"]) is not None


def _write_tone(path: Path, seconds: float, sr: int = 16000) -> None:
    t = np.arange(int(seconds * sr)) / sr
    samples = (0.5 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sr)
        handle.writeframes(samples.tobytes())


def test_augment_on_a_full_output_disk(tmp_path, tmpfs):
    source = tmp_path / "in"
    for k in range(3):
        _write_tone(source / f"s{k}" / f"x{k}.wav", 1.0)
    out = tmpfs(tmp_path / "out", "400k")  # 24-bit wavs of 1 s: 48 kB each, 3 x 5 of them do not fit
    code, output = xval("augment", source, out, "4", "--seed", "1", "--jobs", "1")
    assert code == FAULT_EXIT, output
    lines = error_lines(output)
    assert len(lines) == 1 and "no space left on device" in lines[0] and str(out) in lines[0], output
    assert not list(out.rglob(".*.tmp*")) and not (out / "augment_log.json").exists()
    import soundfile as sf

    for wav in out.rglob("*.wav"):  # every output written is whole
        assert sf.info(str(wav)).frames > 0
    remount(out, "size=4m")
    code, output = xval("augment", source, out, "4", "--seed", "1", "--jobs", "1", "--overwrite")
    assert code == 0, output
    assert len(list(out.rglob("*.wav"))) == 15 and (out / "augment_log.json").is_file()


def test_preprocess_on_a_full_data_disk(tmp_path, tmpfs):
    data = tmpfs(tmp_path / "data", "64k")
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n")
    wavs = tmp_path / "wavs"
    code, output = xval("preprocess", "demo", "--output", wavs, "--jobs", "1", "--config", config)
    assert code == FAULT_EXIT, output
    lines = error_lines(output)
    assert len(lines) == 1 and "no space left on device" in lines[0] and "a dataset file" in lines[0], output
    assert not list(data.glob("*.xvd")) and not list(data.glob(".*")), list(data.iterdir())
    remount(data, "size=1g")  # tmpfs takes memory only as files grow
    code, output = xval("preprocess", "demo", "--output", wavs, "--jobs", "1", "--config", config)
    assert code == 0, output
    assert (data / "demo_audio.xvd").is_dir()


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as handle:  # unbuffered: close() has nothing left
        try:
            while True:
                handle.write(b"x" * 4096)
        except OSError:
            pass


def test_framework_writers_on_a_full_disk_are_recognised(tmp_path, tmpfs):
    """h5py (Keras .hdf5) and torch.save report a full disk in their own words (h5py: a multi-line
    message with the temporary file's name; torch: a RuntimeError over the OSError); both are
    recognised as a full disk and name the model file, not the temporary one."""
    import keras
    import torch

    from xvalkit import atomic

    small = tmpfs(tmp_path / "small", "256k")
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(256)(inputs))
    target = small / "models" / "demo_exp1_run1_fold1.hdf5"
    target.parent.mkdir()
    _fill(small)
    with pytest.raises(Exception) as h5py_error:
        with atomic.atomic_path(target, suffix=".hdf5") as tmp:
            model.save(tmp)
    with pytest.raises(Exception) as torch_error:
        atomic.write_with(small / "models" / "x.pt", lambda handle: torch.save({"w": torch.zeros(100_000)}, handle))
    for error, name in ((h5py_error.value, target.name), (torch_error.value, "x.pt")):
        fault = fault_from(error, [small])
        assert fault is not None, repr(error)
        assert str(fault).startswith(f"{small / 'models' / name}: no space left on device"), str(fault)
        assert "while writing a fold model" in str(fault)
    assert not list(small.rglob(".*.tmp*"))


def test_vanished_data_folder_is_not_refilled_with_a_built_in_dataset(tmp_path):
    from xvalkit.faults import EnvironmentFault
    from xvalkit.jobs import dataset_for

    gone = tmp_path / "data"
    with pytest.raises(EnvironmentFault, match="the data folder vanished"):
        dataset_for(str(gone), "demo")
    assert not gone.exists()


def test_a_full_disk_seen_by_tensorflows_file_writer_is_a_fault(tmp_path):
    """Keras' TensorBoard callback writes through TensorFlow, whose error is no OSError: seen once
    as 'instance 1 fold 1/2 failed: ResourceExhaustedError: <events file>; No space left on device'
    when the disk filled during an epoch rather than at a model's save."""
    from xvalkit.devices import import_keras

    import_keras()
    import tensorflow as tf

    events = tmp_path / "tensorboard" / "run1" / "fold1" / "validation" / "events.out.tfevents.1.vm.2.1"
    full = tf.errors.ResourceExhaustedError(None, None, f"{events}; No space left on device")
    fault = fault_from(full, [tmp_path])
    assert fault is not None and "no space left on device" in str(fault) and "free some space" in str(fault)
    assert fault_from(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor"), [tmp_path]) is None
