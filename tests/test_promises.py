"""Promises of the README checked end to end on cases whose answers are derived by hand.

The "bias" dataset: 8 items of 6 datapoints, every target 1.0, and models whose output is a bias
alone (the inputs are multiplied by 0). With plain SGD, one batch per epoch and MSE, the bias after
each epoch is known exactly: b <- b - lr * 2 (b - 1), from b = 0. So is every validation MAE, the
best epoch and what the restored model predicts. The predictors carry known values (item k,
datapoint d, feature f: k + 10 f + 0.1 d), so the normalisation statistics are known too.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xvalkit.data import load_dataset, save_dataset

from .conftest import instance, write_experiment
from .test_run import xval

ITEMS = [f"b{k}" for k in range(1, 9)]
PER_ITEM, TIME, FEATURES = 6, 2, 3
BIAS_MODELS = '''
def Bias_keras(input_shape, num_outputs, task_type, *, unused=0):
    import keras
    inputs = keras.Input(shape=input_shape)
    zeros = keras.layers.Rescaling(0.0)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_outputs, kernel_initializer="zeros")(zeros))


def Bias_torch(input_shape, num_outputs, task_type, *, unused=0):
    import torch

    class Bias(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(num_outputs))

        def forward(self, x):
            return self.bias.expand(x.shape[0], num_outputs) + 0 * x.reshape(x.shape[0], -1)[:, :1]

    return Bias()
'''
SGD_ONE_BATCH = ['optimizer="sgd"', "batch_size=1000", "num_epochs=3", "patience=3",
                 'save_best_model_metric="val_mae"', 'save_best_model_mode="min"', "tensorboard=False"]


def item_number(item: str) -> int:
    return int(item[1:])


def bias_predictors() -> dict[str, np.ndarray]:
    k = np.array([item_number(i) for i in ITEMS], dtype=np.float32)
    d = np.arange(PER_ITEM, dtype=np.float32)
    f = np.arange(FEATURES, dtype=np.float32)
    return {item: np.broadcast_to(k[i] + 10 * f + 0.1 * d[:, None, None], (PER_ITEM, TIME, FEATURES)).copy()
            for i, item in enumerate(ITEMS)}


def bias_after(lr: float, epochs: int) -> list[float]:
    """The bias after each epoch, by hand: one full-batch SGD step on mean((b - 1)^2) per epoch."""
    b, out = 0.0, []
    for _ in range(epochs):
        b -= lr * 2 * (b - 1.0)
        out.append(b)
    return out


@pytest.fixture(scope="module")
def bias(tmp_path_factory):
    """One run of 5 instances x 2 folds on the bias dataset; (experiment folder, data folder)."""
    tmp = tmp_path_factory.mktemp("bias")
    data = tmp / "data"
    save_dataset(data, "bias", bias_predictors(), {i: np.ones(PER_ITEM, np.float32) for i in ITEMS},
                 {"task_type": "regression"})
    (tmp / "bias_models.py").write_text(BIAS_MODELS)
    config = tmp / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=tmp, check=True)
    path = write_experiment(tmp, {
        # lr 1.25: the error is multiplied by -1.5 each epoch, so epoch 1 is the best and the last the worst
        1: instance("keras diverging", "Bias_keras", "none", 'framework="keras"', "learning_rate=1.25"),
        2: instance("torch diverging", "Bias_torch", "none", 'framework="torch"', "learning_rate=1.25"),
        # lr 0.25: the error halves each epoch, the last epoch is the best
        3: instance("keras converging", "Bias_keras", "none", 'framework="keras"', "learning_rate=0.25"),
        4: instance("torch no normalisation", "Bias_torch", "none", 'framework="torch"', "learning_rate=0.25",
                    'normalization="none"'),
        # patience 1 < epochs: Keras stops early at epoch 2 and must still restore epoch 1
        5: instance("keras stops early", "Bias_keras", "none", 'framework="keras"', "learning_rate=1.25",
                    "patience=1"),
    }, dataset="bias", task_type="regression", num_folds=2, models="bias_models.py",
        global_parameters=SGD_ONE_BATCH)
    subprocess.run([*git, "add", path.name, "bias_models.py"], cwd=tmp, check=True)
    subprocess.run([*git, "commit", "-qm", "experiment"], cwd=tmp, check=True)
    path.write_text(path.read_text() + "# changed after the commit\n")  # a dirty tree: provenance has the diff
    result = xval("run", path, "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    return tmp / "results" / "bias" / "experiment_1", data


def bias_results(folder: Path, run: int) -> dict:
    return pickle.loads((folder / "results" / f"results_bias_exp1_run{run}.pkl").read_bytes())


# --- point 10: the best epoch's weights are restored before evaluation ----------------------------
@pytest.mark.parametrize("run", [1, 2, 5])
def test_best_epoch_weights_are_restored_when_the_best_is_not_the_last(bias, run):
    folder, _ = bias
    biases = bias_after(1.25, 3)
    assert biases == [2.5, -1.25, 4.375]  # errors 1.5, -2.25, 3.375: epoch 1 is the best
    epochs = 2 if run == 5 else 3
    for fold in bias_results(folder, run)["folds"].values():
        assert fold["epochs"] == epochs and fold["best_epoch"] == 1
        assert fold["history"]["val_mae"] == pytest.approx([1.5, 2.25, 3.375][:epochs])
        # evaluated with epoch 1's weights, not the last epoch's
        assert fold["val_mae"] == pytest.approx(fold["history"]["val_mae"][0])
        np.testing.assert_allclose(fold["test_pred"], 2.5, rtol=1e-6)
        assert fold["test_mae"] == pytest.approx(1.5) and fold["test_loss"] == pytest.approx(2.25)


# --- point 3: the learning rate override changes the training --------------------------------------
def test_learning_rate_override_sets_the_step(bias):
    folder, _ = bias
    assert bias_after(0.25, 3) == [0.5, 0.75, 0.875]
    for run in (3, 4):
        for fold in bias_results(folder, run)["folds"].values():
            assert fold["best_epoch"] == fold["epochs"] == 3
            assert fold["history"]["val_mae"] == pytest.approx([0.5, 0.25, 0.125])
            np.testing.assert_allclose(fold["test_pred"], 0.875, rtol=1e-6)


# --- point 9: standardisation fitted on the training items only; normalization = "none" ------------
def test_standardisation_uses_the_training_items_only(bias):
    folder, _ = bias
    results = bias_results(folder, 1)
    assert results["parameters"]["normalization"] == "standard"
    for fold in results["folds"].values():
        k = np.array([item_number(i) for i in fold["train_items"]], dtype=float)
        # value k + 10 f + 0.1 d over a full grid of train items x datapoints: means and variances add
        mean = k.mean() + 10 * np.arange(FEATURES) + 0.1 * 2.5
        std = np.sqrt(k.var() + 0.01 * 35 / 12)  # var(0..5) = 35/12
        np.testing.assert_allclose(fold["normalization"]["mean"], mean, rtol=1e-5)
        np.testing.assert_allclose(fold["normalization"]["std"], np.full(FEATURES, std), rtol=1e-5)
        assert fold["n_train"] == PER_ITEM * len(k)


def test_fold_data_prepares_inputs_with_train_statistics_or_none(bias):
    from xvalkit.fold_data import FoldData
    from xvalkit.folds import Fold

    _, data = bias
    dataset = load_dataset(data, "bias")
    plan = Fold(1, ("b1", "b2", "b3"), ("b4",), ("b8",))
    standard = FoldData(dataset, plan, "regression", "none", "standard")
    x_test, _ = standard.test.arrays()
    # b8 standardised with the mean (2 + 10 f + 0.25) and std sqrt(2/3 + 35/1200) of b1..b3
    expected = (bias_predictors()["b8"] - (2 + 10 * np.arange(FEATURES) + 0.25)) / np.sqrt(2 / 3 + 35 / 1200)
    np.testing.assert_allclose(x_test, expected, rtol=1e-5)
    plain = FoldData(dataset, plan, "regression", "none", "none")
    assert plain.normalizer is None
    np.testing.assert_array_equal(plain.test.arrays()[0], bias_predictors()["b8"])
    np.testing.assert_array_equal(plain.train.batch(np.array([0, 7]))[0],
                                  np.stack([bias_predictors()["b1"][0], bias_predictors()["b2"][1]]))


def test_normalization_none_reaches_the_fold_record(bias):
    folder, _ = bias
    results = bias_results(folder, 4)
    assert results["parameters"]["normalization"] == "none"
    assert all(fold["normalization"] is None for fold in results["folds"].values())


# --- point 15: the code snapshot, code/previous/ and git provenance --------------------------------
def test_snapshot_records_git_commit_and_diff_and_keeps_older_code(bias, tmp_path_factory):
    folder, _ = bias
    root = folder.parents[2]  # the experiment file's folder: a git repository (see the fixture)
    experiment = root / "exp_test.py"
    code = folder / "code"
    info = json.loads((code / "provenance.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert info["git_commit"] == head and len(head) == 40
    assert info["git_dirty"] is True
    diff = (code / "git.diff").read_text()
    assert "+# changed after the commit" in diff and "exp_test.py" in diff
    assert (code / "exp_test.py").read_bytes() == experiment.read_bytes()
    assert info["code_sha256"]["exp_test.py"] == hashlib.sha256(experiment.read_bytes()).hexdigest()
    # every fold names the run that trained it, and that run's record lists it
    assert info["folds_to_train"] == {str(run): [1, 2] for run in range(1, 6)}
    assert {fold["run_id"] for run in range(1, 6) for fold in bias_results(folder, run)["folds"].values()} == \
        {info["run_id"]}
    assert json.loads((code / "runs" / f"{info['run_id']}.json").read_text()) == info
    old = experiment.read_bytes()
    config = root / "c.ini"

    # A changed experiment file (a comment: the parameters are the same, the folds are kept), and a
    # run that trains nothing: the snapshot and provenance.json still describe the folds on disk.
    experiment.write_text(old.decode() + "# changed again\n")
    result = xval("run", experiment, "2", "4", "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    assert "all 2 folds already done" in result.output
    assert json.loads((code / "provenance.json").read_text()) == info
    assert (code / "exp_test.py").read_bytes() == old and not (code / "previous").exists()
    records = [json.loads(p.read_text()) for p in sorted((code / "runs").glob("*.json"))]
    assert [r["run_id"] for r in records][0] == info["run_id"] and len(records) == 2
    assert records[1]["folds_to_train"] == {} and records[1]["instances"] == [2, 3, 4]
    assert records[1]["code_sha256"]["exp_test.py"] == hashlib.sha256(experiment.read_bytes()).hexdigest()

    # A run that trains (instance 3 again) with that code: the older snapshot moves aside.
    result = xval("run", experiment, "3", "--overwrite", "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    (previous,) = (code / "previous").iterdir()  # the older snapshot, under its time stamp
    assert previous.name == info["time"].replace(":", "")
    assert (previous / "exp_test.py").read_bytes() == old
    assert json.loads((previous / "provenance.json").read_text()) == info
    assert (code / "exp_test.py").read_text().endswith("# changed again\n")
    latest = json.loads((code / "provenance.json").read_text())
    assert latest["folds_to_train"] == {"3": [1, 2]} and len(list((code / "runs").glob("*.json"))) == 3
    assert {f["run_id"] for f in bias_results(folder, 3)["folds"].values()} == {latest["run_id"]}
    assert {f["run_id"] for f in bias_results(folder, 4)["folds"].values()} == {info["run_id"]}


# --- point 11: `xval run` checks every instance and builds every model before training -------------
def test_a_bad_last_instance_stops_the_run_before_any_training(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: instance("ok", "MLP_model", "none", "hidden_sizes=(4,)"),
                                       2: instance("ok too", "MLP_model", "none"),
                                       3: instance("bad", "EXAMPLE_model", "none")},  # conv model on 2-d input
                            num_folds=2, global_parameters=["num_epochs=1"])
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 2, result.output
    assert "instance 3: architecture 'EXAMPLE_model' cannot be built" in result.output
    folder = tmp_path / "results" / "demo" / "experiment_1"
    trained = [p for p in folder.rglob("*") if p.suffix in (".log", ".hdf5", ".pt", ".pkl")] if folder.exists() else []
    assert trained == []  # not one fold started


# --- point 13: loading a dataset never unpickles ------------------------------------------------
class _Trap:
    """Unpickling this touches the file: a dataset that ran code when loaded would leave it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_npz_with_an_object_array_is_refused_and_never_unpickled(tmp_path, capsys):
    data = tmp_path / "data"
    marker = tmp_path / "unpickled"
    data.mkdir()  # an .npz dataset (the format before .xvd folders), as a foreign one would come
    np.savez(data / "evil_target.npz", **{i: np.zeros(2, np.int64) for i in ("a", "b", "c")})
    predictors = data / "evil_predictors.npz"
    trap = np.empty(2, dtype=object)
    trap[:] = [_Trap(marker), _Trap(marker)]
    np.savez(predictors, a=trap, b=np.zeros((2, 3, 4), np.float32), c=np.zeros((2, 3, 4), np.float32))
    with np.load(predictors, allow_pickle=True) as npz:  # the trap works when one does unpickle
        npz["a"]
    assert marker.exists()
    marker.unlink()
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n")
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none")}, dataset="evil", num_folds=2)
    proc = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--config", str(config)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(predictors) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()  # nothing was unpickled
    assert not (tmp_path / "results").exists()


# --- point 14: num_folds = 1, test_split with k >= 2, multi-output regression, one-hot targets -----
def test_test_split_is_ignored_with_k_folds(tmp_path, config_file):
    from xvalkit.experiment import load_experiment
    from xvalkit.runner import RunOptions, plan_instances

    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", "test_split=0.5"),
                                       2: instance("b", "MLP_model", "none", "test_split=0.125")}, num_folds=4,
                            global_parameters=[])
    exp = load_experiment(path, config_file=config_file)
    for inst in plan_instances(exp, RunOptions(), load_dataset(exp.config.data_folder, "demo")):
        assert [len(f.test) for f in inst.folds] == [2, 2, 2, 2]  # 8 items / 4 folds, whatever test_split
        assert sorted(i for f in inst.folds for i in f.test) == [f"spk{i:02d}" for i in range(1, 9)]


def test_single_split_with_multi_output_regression(tmp_path):
    """num_folds = 1 end to end, on 2 regression outputs: targets (1, -2), lr 0.25. The loss is the
    mean over both outputs, so each bias moves by lr (b - t) per epoch: b = t (1 - 0.75^epoch)."""
    data = tmp_path / "data"
    save_dataset(data, "bias2", bias_predictors(), {i: np.tile([1.0, -2.0], (PER_ITEM, 1)).astype(np.float32)
                                                    for i in ITEMS})
    (tmp_path / "bias_models.py").write_text(BIAS_MODELS)
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n")
    path = write_experiment(tmp_path, {
        1: instance("keras", "Bias_keras", "none", "learning_rate=0.25"),
        2: instance("torch", "Bias_torch", "none", 'framework="torch"', "learning_rate=0.25"),
    }, dataset="bias2", task_type="regression", num_folds=1, models="bias_models.py",
        global_parameters=SGD_ONE_BATCH + ["validation_split=0.375", "test_split=0.25"])
    result = xval("run", path, "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "results" / "bias2" / "experiment_1"
    for run in (1, 2):
        r = pickle.loads((folder / "results" / f"results_bias2_exp1_run{run}.pkl").read_bytes())
        (fold,) = r["folds"].values()
        assert (len(fold["test_items"]), len(fold["val_items"]), len(fold["train_items"])) == (2, 3, 3)
        assert sorted(fold["train_items"] + fold["val_items"] + fold["test_items"]) == ITEMS
        assert fold["test_pred"].shape == (2 * PER_ITEM, 2) and fold["test_true"].shape == (2 * PER_ITEM, 2)
        np.testing.assert_allclose(fold["test_pred"], np.tile([0.578125, -1.15625], (2 * PER_ITEM, 1)), rtol=1e-6)
        # MSE over both outputs: ((1 - 0.578125)^2 + (2 - 1.15625)^2) / 2
        assert fold["test_loss"] == pytest.approx((0.421875 ** 2 + 0.84375 ** 2) / 2)
        assert fold["test_mae"] == pytest.approx((0.421875 + 0.84375) / 2)
        assert np.isnan(r["summary"]["test"]["std_mae"])  # one fold: no spread (issue 30.7), not 0.0
    assert (folder / "bias2_exp1_results.xlsx").is_file()


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, data_folder):
    """The demo dataset with one-hot targets beside the demo itself, and the demo in generator mode:
    torch and Keras MLPs with one batch per epoch (so that the batch order cannot matter)."""
    tmp = tmp_path_factory.mktemp("demo_runs")
    demo = load_dataset(data_folder, "demo")
    save_dataset(data_folder, "demo_onehot", demo.predictors,
                 {i: np.eye(4, dtype=np.float32)[y] for i, y in demo.targets.items()}, demo.manifest)
    one_batch = ["num_epochs=2", "patience=2", "batch_size=1000", "tensorboard=False"]
    spec = {1: instance("keras", "MLP_model", "none", "hidden_sizes=(8,)", "dropout=0.0"),
            2: instance("torch", "MLP_model", "none", 'framework="torch"', "hidden_sizes=(8,)", "dropout=0.0"),
            # Keras, same seed, small batches (shuffling and dropout at work): same results as instance 4
            3: instance("keras a", "MLP_model", "none", "hidden_sizes=(8,)", "batch_size=32"),
            4: instance("keras b", "MLP_model", "none", "hidden_sizes=(8,)", "batch_size=32")}
    out = {}
    for name, dataset, generator, instances in (("memory", "demo", False, spec),
                                                ("generator", "demo", True, {k: spec[k] for k in (1, 2)}),
                                                ("onehot", "demo_onehot", False, {2: spec[2]})):
        config = tmp / f"{name}.ini"
        config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
        path = write_experiment(tmp / name, instances, dataset=dataset, generator=generator, num_folds=2,
                                global_parameters=one_batch)
        result = xval("run", path, "--cpu", "--config", config)
        assert result.exit_code == 0, result.output
        folder = tmp / name / "results" / dataset / "experiment_1" / "results"
        out[name] = {run: pickle.loads((folder / f"results_{dataset}_exp1_run{run}.pkl").read_bytes())
                     for run in instances}
    return out


# --- point 12: generator mode gives the in-memory results; Keras same-seed determinism ------------
@pytest.mark.parametrize("run", [1, 2])  # Keras, torch
def test_generator_mode_gives_the_same_results(demo_runs, run):
    memory, generator = demo_runs["memory"][run], demo_runs["generator"][run]
    for index in (1, 2):
        a, b = memory["folds"][index], generator["folds"][index]
        assert a["test_items"] == b["test_items"]
        np.testing.assert_allclose(b["test_pred"], a["test_pred"], atol=1e-5)
        np.testing.assert_allclose(b["history"]["loss"], a["history"]["loss"], rtol=1e-5)
        np.testing.assert_allclose(b["history"]["val_loss"], a["history"]["val_loss"], rtol=1e-5)
        assert b["test_acc"] == a["test_acc"]


def test_keras_same_seed_same_results(demo_runs):
    a, b = demo_runs["memory"][3], demo_runs["memory"][4]
    for index in (1, 2):
        assert a["folds"][index]["seed"] == b["folds"][index]["seed"] == index  # config seed 0 + fold
        assert a["folds"][index]["history"] == b["folds"][index]["history"]
        np.testing.assert_array_equal(a["folds"][index]["test_pred"], b["folds"][index]["test_pred"])


def test_one_hot_targets_train_as_class_indices(demo_runs):
    plain, onehot = demo_runs["memory"][2], demo_runs["onehot"][2]
    for index in (1, 2):
        a, b = plain["folds"][index], onehot["folds"][index]
        assert b["test_true"].dtype == np.int64 and b["test_true"].ndim == 1
        np.testing.assert_array_equal(b["test_true"], a["test_true"])
        np.testing.assert_array_equal(b["test_pred"], a["test_pred"])  # torch on the CPU: bit for bit
        assert b["history"] == a["history"]
