"""The PyTorch trainer for real: torch classification and regression on the demo data, an experiment
mixing Keras and torch instances, reloading both model kinds, determinism, optimiser overrides."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import xvalkit
from xvalkit.cli import app
from xvalkit.experiment import load_experiment

from .conftest import check_test_metrics, instance, write_experiment

runner = CliRunner()
TORCH = ['framework="torch"']
SMALL_MLP = ["hidden_sizes=(16,)"]
SMALL_CNN = ["channels_1=4", "channels_2=4", "hidden_size=8"]
USER_MODELS = '''
def Tiny_model(input_shape, num_outputs, task_type, *, width=6):
    import math
    from torch import nn
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                         nn.Linear(width, num_outputs))
'''


def xval(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def results_of(folder: Path, dataset: str, run: int) -> dict:
    with open(folder / "results" / f"results_{dataset}_exp1_run{run}.pkl", "rb") as handle:
        return pickle.load(handle)


def run_experiment(tmp: Path, data_folder: Path, instances: dict, **settings) -> Path:
    """Run an experiment with `xval run --cpu`; its experiment folder."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    path = write_experiment(tmp, instances, **settings)
    result = xval("run", path, "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    return tmp / "results" / settings.get("dataset", "demo") / "experiment_1"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, data_folder):
    """Keras and torch EXAMPLE_model, a torch RNN and a torch model from a user's models module."""
    tmp = tmp_path_factory.mktemp("mixed")
    (tmp / "my_models.py").write_text(USER_MODELS)
    folder = run_experiment(tmp, data_folder, {
        1: instance("keras", "EXAMPLE_model", "cnn", *SMALL_CNN),
        2: instance("torch", "EXAMPLE_model", "cnn", *TORCH, *SMALL_CNN),
        3: instance("rnn", "RNN_model", "rnn", *TORCH, 'rnn_type="lstm"', "rnn_units=8", "bidirectional=True"),
        4: instance("user", "Tiny_model", "none", *TORCH),
    }, num_folds=2, extra='models = "my_models.py"\n',
        global_parameters=["num_epochs=2", "patience=2"])
    return folder


def test_mixed_experiment_writes_both_kinds(mixed):
    models = sorted(p.name for p in (mixed / "models").iterdir())
    assert models == [f"demo_exp1_run1_fold{f}.hdf5" for f in (1, 2)] + [
        f"demo_exp1_run{r}_fold{f}.pt" for r in (2, 3, 4) for f in (1, 2)]
    for run in (1, 2, 3, 4):
        for split in ("train", "validation"):
            assert list((mixed / "tensorboard" / f"run{run}" / "fold1" / split).glob("events.out.tfevents.*"))
    keras, torch = results_of(mixed, "demo", 1), results_of(mixed, "demo", 2)
    for results in (keras, torch):
        for fold in results["folds"].values():
            assert set(fold["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
            assert len(fold["history"]["loss"]) == fold["epochs"] and 1 <= fold["best_epoch"] <= fold["epochs"]
            assert fold["test_pred"].shape == (len(fold["test_true"]), 4)
            assert np.allclose(fold["test_pred"].sum(axis=1), 1, atol=1e-5)  # probabilities
            assert fold["device"] == "CPU"  # --cpu, whatever GPUs the machine has
            check_test_metrics(fold, "classification")  # recomputed with scikit-learn, both frameworks
    assert set(keras["folds"][1]) == set(torch["folds"][1])  # same results dict, key for key


def test_mixed_spreadsheet_has_both_frameworks(mixed):
    from openpyxl import load_workbook

    from .test_run import summary_header

    ws = load_workbook(mixed / "demo_exp1_results.xlsx")["summary"]
    header = summary_header(ws)
    rows = list(ws.iter_rows(min_row=3, max_row=6, values_only=True))  # below the two header rows
    column = header.index("parameters that differ framework")
    assert [(r[0], r[column]) for r in rows] == [(1, "keras"), (2, "torch"), (3, "torch"), (4, "torch")]
    assert all(r[header.index("WA (accuracy) test mean")] is not None for r in rows)


@pytest.mark.parametrize("run", [1, 2, 3, 4])
def test_reloaded_models_predict_as_before_saving(mixed, data_folder, run):
    import xvalkit
    from xvalkit.data import load_dataset
    from xvalkit.loading import prepare, preprocessing

    dataset = load_dataset(data_folder, "demo")
    results = results_of(mixed, "demo", run)
    fold = results["folds"][2]
    path = mixed / "models" / fold["model_file"]
    raw = np.concatenate([dataset.predictors[item] for item in fold["test_items"]])
    np.testing.assert_allclose(xvalkit.predict(path, raw), fold["test_pred"], rtol=1e-5, atol=1e-6)
    model = xvalkit.load_model(path)  # the model itself, on prepared inputs
    inputs = prepare(raw, *preprocessing(path))
    if path.suffix == ".pt":
        import torch

        with torch.no_grad():
            out = torch.softmax(model(torch.from_numpy(inputs)), dim=1).numpy()
    else:
        out = model.predict(inputs, verbose=0)
    np.testing.assert_allclose(out, fold["test_pred"], rtol=1e-5, atol=1e-6)


def test_torch_regression_on_demo_pitch(tmp_path, data_folder):
    folder = run_experiment(tmp_path, data_folder, {
        1: instance("cnn", "EXAMPLE_model", "cnn", *TORCH, *SMALL_CNN),
    }, dataset="demo_pitch", task_type="regression", num_folds=2,
        global_parameters=["num_epochs=3", "patience=3", 'save_best_model_metric="val_mae"'])
    results = results_of(folder, "demo_pitch", 1)
    for fold in results["folds"].values():
        assert set(fold["history"]) == {"loss", "mae", "val_loss", "val_mae"}
        assert fold["test_pred"].dtype == np.float32 and fold["test_pred"].shape == (len(fold["test_true"]), 1)
        check_test_metrics(fold, "regression")  # recomputed with scikit-learn
        best = int(np.argmin(fold["history"]["val_mae"])) + 1
        assert fold["best_epoch"] == best
        assert fold["val_mae"] == pytest.approx(fold["history"]["val_mae"][best - 1], rel=1e-4)  # best restored
    assert results["summary"]["test"]["mean_rmse"] > 0


def test_same_seed_same_metrics_on_cpu(tmp_path, data_folder):
    spec = {1: instance("a", "MLP_model", "none", *TORCH, *SMALL_MLP)}
    settings = dict(num_folds=2, global_parameters=["num_epochs=3", "patience=3"], generator=True)
    runs = [results_of(run_experiment(tmp_path / name, data_folder, spec, **settings), "demo", 1)
            for name in ("a", "b")]
    for fold in (1, 2):
        a, b = runs[0]["folds"][fold], runs[1]["folds"][fold]
        assert a["history"] == b["history"]
        assert np.array_equal(a["test_pred"], b["test_pred"])
        assert all(a[k] == b[k] for k in a if k.startswith(("train_", "val_", "test_")) and np.isscalar(a[k]))


def test_overrides_reach_the_torch_optimizer(tmp_path, data_folder):
    from xvalkit.data import load_dataset
    from xvalkit.fold_data import FoldData
    from xvalkit.runner import RunOptions, plan_instances
    from xvalkit.trainers import TrainJob
    from xvalkit.trainers.torch import build

    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    path = write_experiment(tmp_path, {
        1: instance("a", "EXAMPLE_model", "cnn", *TORCH, "learning_rate=0.0123", "regularization_lambda=0.042",
                    'optimizer="sgd"'),
        2: instance("b", "RNN_model", "rnn", *TORCH, 'optimizer="rmsprop"', "rnn_units=4"),
    }, global_parameters=[])
    exp = load_experiment(path, config_file=config)
    dataset = load_dataset(exp.config.data_folder, "demo")
    first, second = plan_instances(exp, RunOptions(), dataset)
    data = FoldData(dataset, first.folds[0], "classification", "conv", "standard", channels_first=True)
    fn = exp.model_function("torch", "EXAMPLE_model", "")
    model, optimizer, l2 = build(TrainJob(first.params, "classification", data, fn, 0, tmp_path / "m.pt"))
    assert type(optimizer).__name__ == "SGD" and l2 == pytest.approx(0.042)
    decayed, plain = optimizer.param_groups
    assert all(g["lr"] == pytest.approx(0.0123) for g in optimizer.param_groups)
    assert decayed["weight_decay"] == pytest.approx(2 * 0.042) and plain["weight_decay"] == 0
    assert len(decayed["params"]) == 4  # 2 conv kernels, hidden and output kernels; no bias or BatchNorm
    data = FoldData(dataset, second.folds[0], "classification", "rnn", "standard")
    fn = exp.model_function("torch", "RNN_model", "")
    model, optimizer, l2 = build(TrainJob(second.params, "classification", data, fn, 0, tmp_path / "m.pt"))
    assert type(optimizer).__name__ == "RMSprop" and l2 == pytest.approx(0.001)  # the model default
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.002)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # config.ini default


def test_early_stopping_follows_keras_rules():
    from xvalkit.trainers.torch import EarlyStopping

    stop = EarlyStopping("val_loss", "min", patience=2)
    decisions = [stop.update(e, {"val_loss": v}, lambda e=e: e) for e, v in enumerate([3, 2, 2.5, 2.1], 1)]
    assert decisions == [False, False, False, True] and stop.best_epoch == 2 and stop.best_state == 2
    stop = EarlyStopping("val_accuracy", "max", patience=1)
    assert [stop.update(e, {"val_accuracy": v}, lambda: e) for e, v in enumerate([0.5, 0.7, 0.6], 1)] == [
        False, False, True]


def test_keras_model_with_framework_torch_is_refused(tmp_path, data_folder):
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    (tmp_path / "my_models.py").write_text(
        "def K_model(input_shape, num_outputs, task_type, *, width=4):\n"
        "    import keras\n"
        "    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_outputs)])\n"
    )
    path = write_experiment(tmp_path, {1: instance("k", "K_model", "none", *TORCH)},
                            extra='models = "my_models.py"\n', global_parameters=[])
    result = runner.invoke(app, ["run", str(path), "--cpu", "--config", str(config)])
    assert result.exit_code == 2, result.output  # a user error, refused before training; not a crash
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "instance 1" in errors[0] and "not a torch.nn.Module" in errors[0], result.output
    assert not (tmp_path / "results").exists()


def test_importing_xvalkit_imports_no_framework():
    code = ("import sys, xvalkit, xvalkit.models.torch_models, xvalkit.loading; "
            "print(any(m in sys.modules for m in ('torch', 'tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


CONSTANT_MODEL = '''
def Constant_model(input_shape, num_outputs, task_type, *, regularization_lambda=0.1, weight=0.02):
    import math
    import torch
    from torch import nn
    layer = nn.Linear(math.prod(input_shape), num_outputs, bias=False)
    with torch.no_grad():
        layer.weight.fill_(weight)
    return nn.Sequential(nn.Flatten(), layer)
'''


def test_logged_loss_holds_the_whole_l2_penalty(tmp_path, data_folder):
    """With every weight equal, every logit is equal: the data loss is exactly ln(classes), whatever
    the inputs, and the logged losses must add Keras' whole penalty λ·Σw² (a learning rate of 1e-30
    keeps the weights where they started)."""
    (tmp_path / "constant_models.py").write_text(CONSTANT_MODEL)
    folder = run_experiment(tmp_path, data_folder, {
        1: instance("l2", "Constant_model", "none", *TORCH, "regularization_lambda=0.5", "weight=0.03"),
    }, models="constant_models.py", num_folds=2, global_parameters=["num_epochs=2", "patience=2", "batch_size=64",
                                                                     "learning_rate=1e-30"])
    results = results_of(folder, "demo", 1)
    for fold in results["folds"].values():
        classes = len(fold["test_pred"][0])
        model = xvalkit.load_model(folder / "models" / fold["model_file"], models_module=tmp_path / "constant_models.py")
        (weight,) = [w.detach().numpy() for w in model.parameters()]
        np.testing.assert_allclose(weight, 0.03, rtol=1e-6)  # the weights did not move
        penalty = 0.5 * float(np.square(weight.astype(np.float64)).sum())
        assert penalty > 0.1  # large beside ln(classes): half of it would be seen
        for key in ("loss", "val_loss"):
            assert fold["history"][key] == pytest.approx([np.log(classes) + penalty] * 2, rel=1e-5), key
        assert fold["test_loss"] == pytest.approx(np.log(classes), rel=1e-5)  # the metric: data loss only
