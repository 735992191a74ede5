"""The metrics equal scikit-learn's on random cases (they are computed with numpy for speed)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from xvalkit.metrics import classification_metrics, regression_metrics


@pytest.mark.parametrize("seed", range(40))
def test_classification_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 8))
    n = int(rng.integers(1, 60))
    y = rng.integers(0, int(rng.integers(1, classes + 1)), n)
    proba = rng.dirichlet(np.ones(classes) * 0.3, n)
    if seed % 4 == 0:  # some perfect predictions, some exact zeros
        proba[: n // 2] = np.eye(classes)[y[: n // 2]]
    got = classification_metrics(y, proba, classes)
    clipped = np.clip(proba, 1e-12, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    pred = clipped.argmax(axis=1)
    labels = np.arange(classes)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert got["acc"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["f1"] == pytest.approx(f1, abs=1e-12)
    assert got["precision"] == pytest.approx(precision, abs=1e-12)
    assert got["recall"] == pytest.approx(recall, abs=1e-12)
    assert got["loss"] == pytest.approx(skm.log_loss(y, clipped, labels=labels), rel=1e-9, abs=1e-12)
    assert np.array_equal(got["confusion_matrix"], skm.confusion_matrix(y, pred, labels=labels))


def test_absent_classes_are_not_averaged_as_zeros():
    got = classification_metrics([0, 0, 1, 1], np.eye(3)[[0, 0, 1, 1]], 3)
    assert (got["acc"], got["f1"], got["precision"], got["recall"]) == (1.0, 1.0, 1.0, 1.0)
    assert got["confusion_matrix"].shape == (3, 3)


@pytest.mark.parametrize("seed", range(30))
def test_regression_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n, outputs = int(rng.integers(2, 40)), int(rng.integers(1, 4))
    y = rng.normal(size=(n, outputs))
    pred = y + rng.normal(scale=0.5, size=(n, outputs))
    if seed % 5 == 0:  # a constant output, predicted exactly in one case and not in the other
        y[:, 0] = 1.5
        pred[:, 0] = 1.5 if seed % 10 == 0 else 1.4
    got = regression_metrics(y, pred)
    assert got["loss"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-9, abs=1e-12)
    assert np.isnan(regression_metrics(y[:1], pred[:1])["r2"])  # one datapoint: no R²
