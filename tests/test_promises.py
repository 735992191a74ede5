"""Promises of the README checked end to end on cases whose answers are derived by hand.

The "bias" dataset: 8 items of 6 datapoints, every target 1.0, and models whose output is a bias
alone (the inputs are multiplied by 0). With plain SGD, one batch per epoch and MSE, the bias after
each epoch is known exactly: b <- b - lr * 2 (b - 1), from b = 0. So is every validation MAE, the
best epoch and what the restored model predicts. The predictors carry known values (item k,
datapoint d, feature f: k + 10 f + 0.1 d), so the normalisation statistics are known too.
"""

from __future__ import annotations

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
