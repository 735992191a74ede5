"""Shared test helpers: real experiment modules written to tmp folders, tiny real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("PYTHONHASHSEED", "0")

# CI (CI=true) installs everything the suite needs and runs as root: a test that skips there (an
# extra not installed, LibreOffice missing, no tmpfs mount) would hide that its promise went
# untested, so on CI every skip is a failure that names its reason.
SKIPS_FAIL = bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if SKIPS_FAIL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped on CI, where every test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if SKIPS_FAIL and report.skipped:  # a whole module skipped (importorskip at its top)
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped on CI, where every test must run: {reason}"


# Tiny models: a few seconds per fold on a 2-core CPU.
TINY = ['num_epochs=3', 'patience=2', 'batch_size=32', 'channels_1=4', 'channels_2=4', 'hidden_size=8']


def write_experiment(folder: Path, instances: dict, *, name: str = "exp_test", dataset: str = "demo",
                     num_folds: int = 3, task_type: str = "classification", global_parameters=None,
                     extra: str = "", **settings) -> Path:
    """Write an experiment module as a user would, and a config.ini beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    values = dict(
        short_description="test experiment", dataset=dataset, num_experiment=1, num_folds=num_folds,
        experiment_folder="results", overwrite_results=False, debug_mode=False, task_type=task_type,
        generator=False,
    )
    values.update(settings)
    lines = [f"{key} = {value!r}" for key, value in values.items()]
    lines.append(f"global_parameters = {list(TINY if global_parameters is None else global_parameters)!r}")
    lines.append("experiment = {}")
    lines += [f"experiment[{key}] = {spec!r}" for key, spec in instances.items()]
    path = folder / f"{name}.py"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def instance(comment: str = "c", architecture: str = "EXAMPLE_model", reshaping: str = "cnn", *more: str) -> list[str]:
    return [f'architecture="{architecture}"', f'reshaping_type="{reshaping}"', f'comment_1="{comment}"',
            'comment_2="test"', *more]


@pytest.fixture(scope="session")
def data_folder(tmp_path_factory) -> Path:
    """One data folder for the session: the demo datasets are synthesised there once, up front, so
    that no test's output depends on being the first to use them ('first use, synthesising ...')."""
    from xvalkit.data import load_dataset

    folder = tmp_path_factory.mktemp("data")
    for name in ("demo", "demo_pitch"):
        load_dataset(folder, name)
    return folder


@pytest.fixture
def config_file(tmp_path, data_folder) -> Path:
    path = tmp_path / "test_config.ini"
    path.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    return path


def wait_for(condition, proc, what: str, timeout: float = 900):
    """Poll `condition()` until it returns something true (returned); fail if `proc` ends first.

    Tests trigger on observed progress (an epoch line, a file written), never on a fixed sleep."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def epoch_logged(log: Path, epoch: int = 1) -> bool:
    """Whether logs/run<R>_fold<F>.log already has the line of `epoch`."""
    try:
        return f" epoch {epoch} " in log.read_text()
    except OSError:
        return False


def process_gone(pid: int) -> bool:
    """Exited (or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def child_workers(pid: int) -> list[int]:
    """The multiprocessing (spawn) children of `pid`: the local pool's workers."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return out


_GPU_COUNTS: dict[str, int] = {}


def physical_gpus(framework: str) -> int:
    """GPUs the framework sees with no CUDA_VISIBLE_DEVICES mask, asked in a fresh process
    (this one may have masked them: `xval run --cpu` runs in-process in the tests)."""
    import subprocess
    import sys

    if framework not in _GPU_COUNTS:
        code = {"keras": "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))",
                "torch": "import torch; print(torch.cuda.device_count())"}[framework]
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        _GPU_COUNTS[framework] = int(out.stdout.strip().splitlines()[-1])
    return _GPU_COUNTS[framework]


def expected_device(framework: str, gpu: int | None) -> str:
    """What a fold records as its device when GPU `gpu` (physical id) is asked for, or the CPU."""
    return f"GPU {gpu} (" if gpu is not None and gpu < physical_gpus(framework) else "CPU"


def device_matches(device: str, expected: str) -> bool:
    return device.startswith(expected) if expected.endswith("(") else device == expected


def assert_plain_modes(root: Path) -> None:
    """Every file and folder under `root` has the mode a plain open() / mkdir() gives under this
    process's umask (so others in a lab that shares the folder can read the results)."""
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    wrong = {p.relative_to(root).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in root.rglob("*")
             if stat.S_IMODE(p.stat().st_mode) != (0o777 if p.is_dir() else 0o666) & ~umask}
    assert not wrong, f"umask {oct(umask)}: {wrong}"


def check_test_metrics(fold: dict, task_type: str) -> None:
    """The fold's stored test metrics, recomputed with scikit-learn from its saved test_true / test_pred."""
    check_set_metrics(fold, "test", fold["test_true"], fold["test_pred"], task_type)


def check_set_metrics(fold: dict, set_name: str, y_true, y_pred, task_type: str) -> None:
    """The fold's stored `<set_name>_<metric>` values, recomputed with scikit-learn from `y_true`
    and the model's outputs `y_pred` (probabilities or values)."""
    import numpy as np
    from sklearn import metrics as skm

    y, p = np.asarray(y_true), np.asarray(y_pred, dtype=np.float64)
    stored = {key[len(set_name) + 1:]: value for key, value in fold.items() if key.startswith(f"{set_name}_")}
    if task_type == "classification":
        predicted = p.argmax(axis=1)
        assert stored["acc"] == pytest.approx(skm.accuracy_score(y, predicted))
        assert stored["f1"] == pytest.approx(skm.f1_score(y, predicted, average="macro", zero_division=0))
        assert stored["precision"] == pytest.approx(skm.precision_score(y, predicted, average="macro", zero_division=0))
        assert stored["recall"] == pytest.approx(skm.recall_score(y, predicted, average="macro", zero_division=0))
        import warnings

        with warnings.catch_warnings():  # a class predicted but absent from y: the case UA leaves out
            warnings.simplefilter("ignore")
            assert stored["ua"] == pytest.approx(skm.balanced_accuracy_score(y, predicted))
        assert stored["loss"] == pytest.approx(
            skm.log_loss(y, p / p.sum(axis=1, keepdims=True), labels=range(p.shape[1])), rel=1e-5)
        np.testing.assert_array_equal(stored["confusion_matrix"], skm.confusion_matrix(y, predicted))
    else:
        y, p = y.reshape(len(y), -1), p.reshape(len(y), -1)
        assert stored["loss"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-6)
        assert stored["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-6)
        assert stored["rmse"] == pytest.approx(skm.root_mean_squared_error(y, p), rel=1e-6)
        assert stored["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-6, abs=1e-9)
