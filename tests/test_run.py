"""`xval run` for real: Keras training on the demo data, every artifact, resume, debug mode, errors."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.experiment import load_experiment

from .conftest import (assert_plain_modes, check_set_metrics, check_test_metrics, device_matches, expected_device,
                       instance, wait_for, write_experiment)

runner = CliRunner()
# Where the framework is not what a test is about (resume, kill -9): torch, quicker to import and train
TORCH = ['framework="torch"', "hidden_sizes=(8,)"]
TORCH_GLOBAL = ["num_epochs=3", "patience=2", "batch_size=32"]


def xval(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def exp_folder(path: Path) -> Path:
    return path.parent / "results" / "demo" / "experiment_1"


def summary_header(ws) -> list[str]:
    """Titles of the summary sheet's two header rows: 'accuracy test mean' under a merged group."""
    out, group = [], None
    for top, sub in zip((c.value for c in ws[1]), (c.value for c in ws[2])):
        group = top if top is not None else group
        out.append(f"{group} {sub}" if sub is not None else group)
    return out


def load_results(folder: Path, run: int) -> dict:
    with open(folder / "results" / f"results_demo_exp1_run{run}.pkl", "rb") as handle:
        return pickle.load(handle)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_folder):
    """2 instances x 3 folds, run once for the tests of this module that only read."""
    tmp = tmp_path_factory.mktemp("finished")
    config = tmp / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    path = write_experiment(tmp, {
        1: instance("reg 0.001", "EXAMPLE_model", "cnn", 'regularization_lambda="0.001"'),
        2: instance("reg 0.01", "EXAMPLE_model", "cnn", "regularization_lambda=0.01", "learning_rate=0.003",
                    "validation_split=0.4"),
    })
    result = xval("run", path, "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    return path, exp_folder(path), result.output


def test_run_writes_every_artifact(finished):
    path, folder, output = finished
    assert (folder / "experiment_1_description.txt").read_text().strip() == "test experiment"
    code = folder / "code"
    assert (code / path.name).read_text() == path.read_text()
    assert "[training]" in (code / "config.ini").read_text()
    assert '"device": "CPU"' in (code / "provenance.json").read_text()
    models = sorted(p.name for p in (folder / "models").iterdir())
    assert models == [f"demo_exp1_run{r}_fold{f}.hdf5" for r in (1, 2) for f in (1, 2, 3)]
    assert (folder / "tensorboard" / "run1" / "fold1").is_dir()
    assert not list(folder.rglob(".*.tmp*")), "temporary files left behind"
    assert "done 1, 2" in output and "failed none" in output
    assert_plain_modes(folder)  # workbook, csv, models, fold files, plots, logs: readable by the lab


def test_first_run_says_where_it_synthesised_the_demo_and_where_the_results_are(tmp_path):
    """The run's last lines name the experiment folder and the workbook; the first use of the demo
    dataset says that it is synthesised, and where."""
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {tmp_path / 'fresh data'}\n")
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *TORCH)}, num_folds=2,
                            global_parameters=TORCH_GLOBAL)
    result = xval("run", path, "--cpu", "--quiet", "--config", config)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    xvd = tmp_path / "fresh data" / "demo.xvd"
    assert f"dataset 'demo': first use, synthesising the built-in demo data into {xvd}" in lines
    assert xvd.is_dir()
    folder = exp_folder(path)
    assert lines[-2:] == [f"results in {folder}", f"workbook: {folder / 'demo_exp1_results.xlsx'}"]
    assert (folder / "demo_exp1_results.xlsx").is_file()
    again = xval("run", path, "--cpu", "--quiet", "--config", config)
    assert "synthesising" not in again.output and again.output.strip().endswith(f"workbook: {folder / 'demo_exp1_results.xlsx'}")


def test_results_dict_layout(finished):
    _, folder, _ = finished
    r = load_results(folder, 1)
    assert {"parameters", "folds", "summary"} <= set(r)
    assert r["parameters"]["regularization_lambda"] == 0.001  # quoted number became a float
    assert sorted(r["folds"]) == [1, 2, 3]
    for index, fold in r["folds"].items():
        check_test_metrics(fold, "classification")  # recomputed with scikit-learn
        assert set(fold["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert len(fold["history"]["loss"]) == fold["epochs"]
        assert fold["device"] == "CPU" and fold["duration_s"] > 0
        train, val, test = map(set, (fold["train_items"], fold["val_items"], fold["test_items"]))
        assert not (train & val or train & test or val & test)
    assert [r["folds"][f]["seed"] for f in (1, 2, 3)] == [1, 2, 3]  # config.ini seed 0, + the fold number
    tested = sorted(i for f in r["folds"].values() for i in f["test_items"])
    assert tested == [f"spk{i:02d}" for i in range(1, 9)]  # a partition of the speakers
    accs = [f["test_acc"] for f in r["folds"].values()]
    assert r["summary"]["test"]["mean_acc"] == pytest.approx(np.mean(accs))
    assert r["summary"]["test"]["std_acc"] == pytest.approx(np.std(accs, ddof=1))


def test_overrides_take_effect(finished):
    _, folder, _ = finished
    r1, r2 = load_results(folder, 1), load_results(folder, 2)
    # validation_split 0.4 of 8 speakers: 3 validation items (3.2), the default 0.2: 2 (1.6); each of
    # 48 datapoints, so the sets trained and evaluated on have those sizes. (The learning rate's effect
    # on training is checked on a hand-derived case in test_promises.py.)
    for results, n_val in ((r1, 2), (r2, 3)):
        for fold in results["folds"].values():
            assert len(fold["val_items"]) == n_val and fold["n_val"] == 48 * n_val
            assert fold["n_train"] == 48 * (8 - n_val - len(fold["test_items"]))
    assert r2["parameters"]["learning_rate"] == 0.003 and r1["parameters"]["learning_rate"] == 0.001


def test_optimizer_l2_and_split_overrides_reach_keras(tmp_path, data_folder):
    """Each kind of override the original scripts silently dropped must reach the model."""
    from xvalkit.data import load_dataset
    from xvalkit.fold_data import FoldData
    from xvalkit.runner import RunOptions, plan_instances
    from xvalkit.trainers import TrainJob
    from xvalkit.trainers.keras import build

    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    path = write_experiment(tmp_path, {
        1: instance("a", "EXAMPLE_model", "cnn", "learning_rate=0.0123", "regularization_lambda=0.042",
                    'optimizer="sgd"', "validation_split=0.4"),
    })
    exp = load_experiment(path, config_file=config)
    dataset = load_dataset(exp.config.data_folder, "demo")
    (inst,) = plan_instances(exp, RunOptions(), dataset)
    assert all(len(f.val) == round(0.4 * 8) for f in inst.folds)  # split override used by the plan
    data = FoldData(dataset, inst.folds[0], "classification", "conv", "standard")
    model = build(TrainJob(inst.params, "classification", data, exp.model_function("keras", "EXAMPLE_model", ""),
                           0, tmp_path / "m.hdf5"))
    assert type(model.optimizer).__name__ == "SGD"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0123)
    l2 = [layer.kernel_regularizer.l2 for layer in model.layers if getattr(layer, "kernel_regularizer", None)]
    assert l2 and all(v == pytest.approx(0.042) for v in l2)


def test_spreadsheet_read_back(finished):
    from openpyxl import load_workbook

    _, folder, _ = finished
    ws = load_workbook(folder / "demo_exp1_results.xlsx")["summary"]
    header = summary_header(ws)
    rows = list(ws.iter_rows(min_row=3, max_row=4, values_only=True))
    assert len(rows) == 2 and [r[0] for r in rows] == [1, 2]
    assert header[:4] == ["ID", "parameters", "comment_1", "comment_2"]
    # On test columns green marks the instance chosen on validation accuracy; elsewhere the best value.
    validation = [r[header.index("WA (accuracy) validation mean")] for r in rows]
    chosen = validation.index(max(validation))
    for title, higher in (("WA (accuracy) test mean", None), ("loss test mean", None), ("WA (accuracy) test std", None),
                          ("WA (accuracy) validation mean", True), ("loss train mean", False)):
        col = header.index(title)
        values = [r[col] for r in rows]
        best = max(values) if higher else min(values)
        filled = [ws.cell(row=i + 3, column=col + 1).fill.fgColor.rgb.endswith("C6EFCE") for i in range(2)]
        assert filled == ([i == chosen for i in range(2)] if higher is None else [v == best for v in values]), title
    import pandas as pd

    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 6 and {"ID", "fold", "test_acc", "param_learning_rate"} <= set(table.columns)


def test_saved_model_reloads_and_predicts_the_same(finished, data_folder):
    import keras

    from xvalkit.data import load_dataset
    from xvalkit.fold_data import FoldData
    from xvalkit.folds import Fold

    _, folder, _ = finished
    r = load_results(folder, 1)
    fold = r["folds"][2]
    model = keras.models.load_model(folder / "models" / "demo_exp1_run1_fold2.hdf5", compile=False)
    plan = Fold(2, tuple(fold["train_items"]), tuple(fold["val_items"]), tuple(fold["test_items"]))
    data = FoldData(load_dataset(data_folder, "demo"), plan, "classification", "conv", "standard")
    predictions = model.predict(data.test.arrays()[0], verbose=0)
    np.testing.assert_allclose(predictions, fold["test_pred"], rtol=1e-5, atol=1e-6)


def test_train_and_validation_metrics_are_those_of_the_saved_model(finished, data_folder):
    """Every set's metrics, recomputed with scikit-learn from the reloaded best model's predictions
    on the fold's own train and validation items (the test set's are checked from test_pred)."""
    import keras

    from xvalkit.data import load_dataset
    from xvalkit.fold_data import FoldData
    from xvalkit.folds import Fold

    _, folder, _ = finished
    dataset = load_dataset(data_folder, "demo")
    for run in (1, 2):
        for index, fold in load_results(folder, run)["folds"].items():
            model = keras.models.load_model(folder / "models" / fold["model_file"], compile=False)
            plan = Fold(index, tuple(fold["train_items"]), tuple(fold["val_items"]), tuple(fold["test_items"]))
            data = FoldData(dataset, plan, "classification", "conv", "standard")
            for name, part in (("train", data.train), ("val", data.val)):
                x, y = part.arrays()
                check_set_metrics(fold, name, y, model.predict(x, verbose=0), "classification")


def test_rerun_skips_finished_instances(finished):
    path, folder, _ = finished
    config = path.parent / "c.ini"
    before = (folder / "results" / "results_demo_exp1_run1.pkl").stat().st_ino
    result = xval("run", path, "1", "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    assert "all 3 folds already done, skipped" in result.output
    assert (folder / "results" / "results_demo_exp1_run1.pkl").stat().st_ino == before


def test_a_rerun_removes_the_temporary_files_a_killed_run_left(finished):
    """kill -9 between a temporary file's creation and its rename (here of an instance pickle and of a
    fold's running marker) leaves it behind; the next run of the experiment removes it."""
    from .test_atomic import killed_mid_write

    path, folder, _ = finished
    killed_mid_write("file", folder / "results" / "results_demo_exp1_run2.pkl")
    killed_mid_write("file", folder / "results" / "running" / "run2_fold1.json")
    assert len(list(folder.rglob(".*.tmp*"))) == 2
    result = xval("run", path, "2", "--cpu", "--config", path.parent / "c.ini")
    assert result.exit_code == 0, result.output
    assert not list(folder.rglob(".*.tmp*"))


def test_changed_parameters_refuse_to_resume(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *TORCH)}, num_folds=2,
                            global_parameters=TORCH_GLOBAL)
    assert xval("run", path, "--cpu", "--config", config_file).exit_code == 0
    write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *TORCH, "dropout=0.5")}, num_folds=2,
                     global_parameters=TORCH_GLOBAL)
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 2
    assert "instance 1: parameters changed since its saved folds were trained (dropout: 0.2 -> 0.5)" in result.output
    assert xval("run", path, "--cpu", "--overwrite", "--config", config_file).exit_code == 0
    assert load_results(exp_folder(path), 1)["parameters"]["dropout"] == 0.5


def test_generator_mode_and_regression(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: instance("g", "EXAMPLE_model", "cnn", 'save_best_model_metric="val_mae"')},
                            dataset="demo_pitch", task_type="regression", generator=True, num_folds=2)
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 0, result.output
    r = pickle.loads((path.parent / "results/demo_pitch/experiment_1/results/results_demo_pitch_exp1_run1.pkl").read_bytes())
    fold = r["folds"][1]
    assert set(fold["history"]) == {"loss", "mae", "val_loss", "val_mae"}
    for fold in r["folds"].values():
        check_test_metrics(fold, "regression")  # recomputed with scikit-learn


FLAKY_MODELS = '''
calls = 0

def Flaky_model(input_shape, num_outputs, task_type, *, width: int = 4):
    """Builds once (the check before training), then fails: a failure during training."""
    global calls
    calls += 1
    if calls > 1:
        raise RuntimeError("flaky model exploded [at shape (None, 3)]")  # brackets: not rich markup
    import keras
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(x))
'''


def test_failing_instance_is_recorded_and_the_run_goes_on(tmp_path, config_file):
    (tmp_path / "flaky.py").write_text(FLAKY_MODELS)
    path = write_experiment(tmp_path, {1: instance("flaky", "Flaky_model", "none"),
                                       2: instance("ok", "MLP_model", "none", "hidden_sizes=(8,)")},
                            models="flaky.py", global_parameters=["num_epochs=2"], num_folds=2)
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 1
    assert "instance 1 fold 1/2 failed: RuntimeError: flaky model exploded [at shape (None, 3)]" in result.output
    assert "done 2" in result.output and "failed 1" in result.output
    folder = exp_folder(path)
    assert "flaky model exploded" in (folder / "results" / "error_demo_exp1_run1.txt").read_text()
    from openpyxl import load_workbook

    ws = load_workbook(folder / "demo_exp1_results.xlsx")["summary"]
    header = summary_header(ws)
    statuses = {row[0]: row[header.index("status")] for row in ws.iter_rows(min_row=3, max_row=4, values_only=True)}
    assert statuses == {1: "failed", 2: "done"}


BOOM_MODELS = '''
import keras


class BoomError(Exception):
    def __init__(self, what, where):  # not Exception's signature: Keras re-raises it as a RuntimeError
        super().__init__(f"{what} exploded at {where} [training only]")


class Boom(keras.layers.Layer):
    def call(self, x, training=None):
        if training:
            raise BoomError("the boom layer", "its first step")
        return x


def Boom_model(input_shape, num_outputs, task_type):
    inputs = keras.Input(shape=input_shape)
    x = Boom()(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax")(x))
'''


def test_a_keras_error_shows_the_users_message_and_its_file_is_plain_text(tmp_path, config_file):
    """Not Keras' wrapper 'RuntimeError: Exception encountered when calling Boom.call().' nor its
    terminal escape codes: the line says what the user's layer raised, in the run and in `xval status`."""
    (tmp_path / "boom.py").write_text(BOOM_MODELS)
    path = write_experiment(tmp_path, {1: instance("boom", "Boom_model", "none")}, models="boom.py",
                            global_parameters=["num_epochs=1"], num_folds=2)
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 1
    message = "BoomError: the boom layer exploded at its first step [training only]"
    assert f"instance 1 fold 1/2 failed: {message}" in result.output, result.output
    text = (exp_folder(path) / "results" / "error_demo_exp1_run1.txt").read_text()
    assert "\x1b" not in text and "Exception encountered when calling" in text  # the whole story, as plain text
    assert f"{message}\n" in text
    status = xval("status", path, "--config", config_file)
    assert message in status.output, status.output


def test_debug_mode_stops_at_the_first_error_with_traceback(tmp_path, config_file):
    (tmp_path / "flaky.py").write_text(FLAKY_MODELS)
    path = write_experiment(tmp_path, {1: instance("flaky", "Flaky_model", "none"),
                                       2: instance("ok", "MLP_model", "none")},
                            models="flaky.py", global_parameters=["num_epochs=2"], num_folds=2, debug_mode=True)
    proc = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--config", str(config_file)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "flaky model exploded" in proc.stderr
    assert not (exp_folder(path) / "results" / "results_demo_exp1_run2.pkl").exists()


def test_kill_9_mid_run_then_resume(tmp_path, config_file):
    # 150 epochs: about a second a fold (a tiny torch model trains on one thread: threads.py), so the
    # kill after the first fold leaves folds to do
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *TORCH, "num_epochs=150",
                                                   "patience=150")}, num_folds=4,
                            global_parameters=TORCH_GLOBAL)
    results = exp_folder(path) / "results" / "results_demo_exp1_run1.pkl"
    proc = subprocess.Popen([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--config", str(config_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(results.exists, proc, "the first fold's results", timeout=240)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = pickle.loads(results.read_bytes())
    assert 1 <= len(saved["folds"]) < 4, "the run should have been killed after its first fold"
    kept = {k: v["duration_s"] for k, v in saved["folds"].items()}
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 0, result.output
    final = pickle.loads(results.read_bytes())
    assert sorted(final["folds"]) == [1, 2, 3, 4]
    assert {k: final["folds"][k]["duration_s"] for k in kept} == kept  # finished folds were not redone
    assert not list(exp_folder(path).rglob(".*.tmp*"))


@pytest.mark.parametrize("args, message", [
    (["run", "nope.py"], "nope.py: no such experiment file"),
    (["run", "{exp}", "5"], "no instance 5; the instances are 1-2"),
    (["run", "{exp}", "5", "9"], "no instance between 5 and 9; the instances are 1-2"),
    (["run", "nope"], "nope: no such experiment file (looked for nope, nope.py, experiments/nope.py)"),
    (["run", "{exp}", "2", "1"], "the last instance comes before the first"),
    (["run", "{exp}", "--folds", "20"], "num_folds = 20 but the dataset has only 8 foldable items"),
    (["run", "{exp}", "--gpu", "-1"], "a GPU ID is a number >= 0"),
])
def test_cli_errors_are_one_line(tmp_path, config_file, args, message):
    path = write_experiment(tmp_path, {1: instance("a"), 2: instance("b")})
    proc = subprocess.run(
        [sys.executable, "-m", "xvalkit.cli", *[a.format(exp=path) for a in args], "--config", str(config_file)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # nothing trained, nothing written


def test_a_relative_data_folder_is_relative_to_the_config_that_sets_it(tmp_path, data_folder):
    """`xval plan` from another folder wrote ./data/demo.xvd there: the project's config.ini (above
    experiments/) is read, and its `data_folder = data` means <project>/data wherever xval runs."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write_experiment(project / "experiments", {1: instance("a")}, num_folds=2)
    (project / "config.ini").write_text("[paths]\ndata_folder = data\n")
    shutil.copytree(data_folder / "demo.xvd", project / "data" / "demo.xvd")
    proc = subprocess.run([sys.executable, "-m", "xvalkit.cli", "plan", str(path)], capture_output=True, text=True,
                          timeout=300, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert list(elsewhere.iterdir()) == [] and "synthesising" not in proc.stdout
    other = tmp_path / "other" / "c.ini"  # --config: relative to its own folder
    other.parent.mkdir()
    other.write_text("[paths]\ndata_folder = my data\n")
    from xvalkit.config import load_config

    assert load_config(other, cwd=elsewhere).data_folder == other.parent / "my data"
    assert load_config(cwd=elsewhere, experiment=path).data_folder == project / "data"
    assert load_config(cwd=elsewhere).data_folder == Path("data")  # the packaged default: the current folder


def test_injection_in_an_instance_runs_nothing(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: instance("a"), 2: instance("b", "EXAMPLE_model", "cnn",
                                                                     'dropout=__import__("os").system("touch pwned")')})
    proc = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--config", str(config_file)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "instance 2: the value of 'dropout'" in proc.stderr and "never code" in proc.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "results").exists()


def test_gpu_choice_masks_devices_before_the_framework_import(tmp_path):
    code = (
        "from xvalkit.devices import choose_device_early, keras_device, import_keras\n"
        "import os, sys\n"
        "assert 'tensorflow' not in sys.modules\n"
        "choose_device_early(gpu=3, cpu=False)\n"
        "print(os.environ['CUDA_VISIBLE_DEVICES'])\n"
        "import_keras(); print(keras_device())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    masked, device = proc.stdout.strip().split("\n")
    assert masked == "3"  # GPU 3 exposed as the only device: GPU 3 where the machine has it, else the CPU
    assert device_matches(device, expected_device("keras", 3)), device
