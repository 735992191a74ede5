"""The metrics equal scikit-learn's on random cases (they are computed with numpy for speed), and the
issue-30 cases by hand: UA against macro recall, pooled against fold-mean metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from xvalkit.metrics import (backfill, classification_metrics, diverged_folds, pooled_test_metrics, regression_metrics,
                             summarize)


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
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": the case UA is for
        warnings.simplefilter("ignore")
        assert got["ua"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
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


def test_ua_averages_recall_over_the_true_classes_only():
    # Issue 30: 50 datapoints of class 0, 50 of class 1, one class-0 datapoint predicted as class 2.
    y = np.array([0] * 50 + [1] * 50)
    pred = y.copy()
    pred[0] = 2
    got = classification_metrics(y, np.eye(3)[pred], 3)
    # By hand: WA 99/100; UA (49/50 + 50/50) / 2 = 0.99; macro recall also counts class 2 (recall 0):
    # (0.98 + 1 + 0) / 3 = 0.66; macro F1 (2 x 49 / 99 + 1 + 0) / 3 = 0.6633.
    assert got["acc"] == pytest.approx(0.99) and got["ua"] == pytest.approx(0.99)
    assert got["recall"] == pytest.approx(0.66) and got["f1"] == pytest.approx((98 / 99 + 1) / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert got["ua"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def _fold(true, pred, task_type: str) -> dict:
    """A fold record with its test predictions and the metrics computed from them."""
    if task_type == "classification":
        values = classification_metrics(true, pred, pred.shape[1])
    else:
        values = regression_metrics(true, pred)
    return {"test_true": true, "test_pred": pred, **{f"test_{k}": v for k, v in values.items()}}


@pytest.mark.parametrize("seed", range(10))
def test_pooled_macro_f1_is_the_f1_of_the_summed_confusion_matrix(seed):
    # Forman and Scholz (2010): F1 from the TP / FP / FN summed over folds = scikit-learn's macro F1
    # of the concatenated out-of-fold predictions; unequal folds and absent classes make it differ from
    # the mean of the fold F1s.
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 6))
    folds = {}
    for f in range(1, int(rng.integers(2, 6)) + 1):
        n = int(rng.integers(3, 30))
        folds[f] = _fold(rng.integers(0, classes, n), rng.dirichlet(np.ones(classes), n), "classification")
    true = np.concatenate([fold["test_true"] for fold in folds.values()])
    pred = np.concatenate([fold["test_pred"].argmax(axis=1) for fold in folds.values()])
    pooled = pooled_test_metrics(folds, "classification")
    assert pooled == {"f1": pytest.approx(skm.f1_score(true, pred, average="macro", zero_division=0), abs=1e-12)}
    # A diverged fold is left out, as from the means.
    folds[99] = {"diverged": "loss NaN at epoch 1", "test_true": true, "test_pred": np.eye(classes)[true]}
    assert pooled_test_metrics(folds, "classification") == pooled


def test_pooled_regression_metrics_by_hand_and_against_scikit_learn():
    # Issue 30, error sds 0.5 / 2 / 1 in three folds of 4: errors of exactly ±sd give fold RMSEs 0.5, 2
    # and 1 (mean 3.5 / 3 = 1.1667), while the pooled RMSE is sqrt((0.25 + 4 + 1) / 3) = 1.3229.
    folds = {f: _fold(np.arange(4.0), np.arange(4.0) + sd * np.array([1, -1, 1, -1]), "regression")
             for f, sd in enumerate((0.5, 2.0, 1.0), start=1)}
    assert summarize(folds, "regression")["test"]["mean_rmse"] == pytest.approx(3.5 / 3)
    pooled = pooled_test_metrics(folds, "regression")
    assert pooled["rmse"] == pytest.approx(math.sqrt(1.75)) and pooled["mae"] == pytest.approx(3.5 / 3)
    # One speaker per fold, each with a narrow target range (-1, 0, 1 around 0, 10, 20) and errors
    # (1.2, -1.2, 0): every fold's R² is 1 - 2.88 / 2 = -0.44, but out of fold the targets span 0 to 21:
    # R² = 1 - 3 x 2.88 / (3 x 2 + 3 x (100 + 0 + 100)) = 1 - 8.64 / 606 = 0.98574.
    folds = {f: _fold(c + np.array([-1.0, 0, 1]), c + np.array([0.2, -1.2, 1]), "regression")
             for f, c in enumerate((0.0, 10.0, 20.0), start=1)}
    assert [fold["test_r2"] for fold in folds.values()] == pytest.approx([-0.44] * 3)
    assert summarize(folds, "regression")["test"]["mean_r2"] == pytest.approx(-0.44)
    pooled = pooled_test_metrics(folds, "regression")
    assert pooled["r2"] == pytest.approx(1 - 8.64 / 606)
    true = np.concatenate([fold["test_true"] for fold in folds.values()])
    pred = np.concatenate([fold["test_pred"] for fold in folds.values()])
    assert pooled == pytest.approx({"rmse": skm.root_mean_squared_error(true, pred),
                                    "mae": skm.mean_absolute_error(true, pred), "r2": skm.r2_score(true, pred)})


def test_a_fold_recorded_before_ua_gets_it_from_its_stored_predictions():
    y = np.array([0, 0, 0, 1])
    old = _fold(y, np.eye(2)[[0, 0, 1, 1]], "classification")
    old.update({f"{s}_{m}": 0.5 for s in ("train", "val") for m in ("loss", "acc", "f1", "precision", "recall")})
    del old["test_ua"]
    backfill(old, "classification")
    assert old["test_ua"] == pytest.approx(skm.balanced_accuracy_score(y, [0, 0, 1, 1]))  # (2/3 + 1) / 2
    assert math.isnan(old["val_ua"]) and math.isnan(old["train_ua"])  # no predictions kept: missing
    summary = summarize({1: old, 2: dict(old)}, "classification")
    assert math.isnan(summary["val"]["mean_ua"]) and summary["test"]["mean_ua"] == pytest.approx(5 / 6)


def test_one_fold_has_no_std():
    fold = _fold(np.arange(4.0), np.arange(4.0) + 0.5, "regression")
    fold.update({f"{s}_{m}": 0.1 for s in ("train", "val") for m in ("loss", "mae", "rmse", "r2")})
    with warnings.catch_warnings():  # nor numpy's "Degrees of freedom <= 0" on the console
        warnings.simplefilter("error")
        summary = summarize({1: fold}, "regression")
    assert summary["test"]["mean_rmse"] == pytest.approx(0.5)
    assert math.isnan(summary["test"]["std_rmse"])  # not 0.0: one fold has no spread to measure


def test_float32_predictions_are_scored_in_float64():
    # Keras and PyTorch predict in float32, whose softmax rows do not sum exactly to 1: the metrics are
    # computed in float64 from those values, equal to scikit-learn's on the float64 copies to 1e-12
    # (float32 arithmetic would be off by about 1e-7). Labels may come as a column.
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 200)
    proba = rng.dirichlet(np.ones(4), 200).astype(np.float32)
    assert not np.allclose(proba.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    normalized = proba.astype(np.float64) / proba.astype(np.float64).sum(axis=1, keepdims=True)
    got = classification_metrics(y.reshape(-1, 1), proba, 4)
    assert got["loss"] == pytest.approx(skm.log_loss(y, normalized, labels=range(4)), rel=1e-12)
    assert np.array_equal(got["confusion_matrix"], skm.confusion_matrix(y, normalized.argmax(axis=1), labels=range(4)))
    target = rng.normal(50.0, 3.0, (300, 2)).astype(np.float32)
    pred = (target + rng.normal(0, 1.0, target.shape)).astype(np.float32)
    got = regression_metrics(target, pred)
    target64, pred64 = target.astype(np.float64), pred.astype(np.float64)
    assert got["loss"] == pytest.approx(skm.mean_squared_error(target64, pred64), rel=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(target64, pred64), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(target64, pred64), rel=1e-12)


def test_summary_std_is_the_sample_std_over_the_folds():
    # ddof=1 over the folds, by hand: test RMSE 0.5, 2, 1 -> mean 7/6, sample std sqrt(((-2/3)^2 + (5/6)^2
    # + (-1/6)^2) / 2) = sqrt(7/12); two folds 0.5, 2 -> |0.5 - 2| / sqrt(2).
    folds = {f: {"test_rmse": value} for f, value in enumerate((0.5, 2.0, 1.0), start=1)}
    summary = summarize(folds, "regression")["test"]
    assert summary["mean_rmse"] == pytest.approx(7 / 6) and summary["std_rmse"] == pytest.approx(math.sqrt(7 / 12))
    del folds[3]
    assert summarize(folds, "regression")["test"]["std_rmse"] == pytest.approx(1.5 / math.sqrt(2))
    with warnings.catch_warnings():  # no folds left: NaN, without numpy's "Mean of empty slice"
        warnings.simplefilter("error")
        empty = summarize({1: {"diverged": "loss NaN at epoch 1", "test_rmse": 0.5}}, "regression")
    assert all(math.isnan(value) for block in empty.values() for value in block.values())


def test_backfill_recomputes_only_from_predictions_of_a_model_that_did_not_diverge():
    y = np.array([0, 0, 0, 1])
    # Only the test UA is missing (train and validation complete): recomputed.
    old = _fold(y, np.eye(2)[[0, 0, 1, 1]], "classification")
    old.update({f"{s}_{m}": 0.5 for s in ("train", "val") for m in ("loss", "acc", "ua", "f1", "precision", "recall")})
    del old["test_ua"]
    assert backfill(old, "classification")["test_ua"] == pytest.approx(5 / 6)
    # No stored predictions: missing (NaN), not an error.
    bare = {f"{s}_{m}": 0.5 for s in ("train", "val", "test") for m in ("loss", "acc", "f1", "precision", "recall")}
    backfill(bare, "classification")
    assert all(math.isnan(bare[f"{s}_ua"]) for s in ("train", "val", "test"))
    # A diverged model's predictions are NaN: its metrics stay NaN, never scores of argmax(NaN).
    diverged = {"diverged": "predictions NaN", "test_true": y, "test_pred": np.full((4, 2), np.nan),
                **{f"{s}_{m}": math.nan for s in ("train", "val", "test")
                   for m in ("loss", "acc", "f1", "precision", "recall")}}
    backfill(diverged, "classification")
    assert math.isnan(diverged["test_ua"])
    assert diverged_folds({1: old, 2: diverged, 3: {**old, "diverged": None}}) == [2]


def test_backfill_of_a_single_output_regression_fold():
    # One output: test_pred is 1-D; the missing test metrics are recomputed, as scikit-learn defines them.
    true, pred = np.array([1.0, 2.0, 4.0, 7.0]), np.array([1.5, 2.0, 3.0, 7.5])
    record = {"test_true": true, "test_pred": pred, "test_loss": 0.375}
    backfill(record, "regression")
    assert record["test_loss"] == 0.375  # kept as recorded
    assert record["test_mae"] == pytest.approx(skm.mean_absolute_error(true, pred))
    assert record["test_rmse"] == pytest.approx(skm.root_mean_squared_error(true, pred))
    assert record["test_r2"] == pytest.approx(skm.r2_score(true, pred))
    assert math.isnan(record["val_r2"])


def test_pooled_metrics_of_folds_recorded_without_a_confusion_matrix_or_predictions():
    # Older fold records hold the predictions without the confusion matrix: it is rebuilt from them.
    rng = np.random.default_rng(5)
    folds = {f: _fold(rng.integers(0, 3, 12), rng.dirichlet(np.ones(3), 12), "classification") for f in (1, 2, 3)}
    del folds[1]["test_confusion_matrix"], folds[3]["test_confusion_matrix"]
    true = np.concatenate([fold["test_true"] for fold in folds.values()])
    pred = np.concatenate([fold["test_pred"].argmax(axis=1) for fold in folds.values()])
    assert pooled_test_metrics(folds, "classification")["f1"] == pytest.approx(
        skm.f1_score(true, pred, average="macro", zero_division=0), abs=1e-12)
    # Two outputs: the pooled R² is scikit-learn's uniform average over the outputs (RMSE: the root of
    # the averaged MSE, as in test_regression_metrics_match_scikit_learn); a fold that kept no
    # predictions takes no part.
    folds = {f: _fold(rng.normal(size=(5, 2)) * [1, 10], rng.normal(size=(5, 2)) * [1, 10], "regression")
             for f in (1, 2)}
    folds[3] = {"test_true": rng.normal(size=(5, 2)), "test_rmse": 1.0}
    true = np.concatenate([folds[f]["test_true"] for f in (1, 2)])
    pred = np.concatenate([folds[f]["test_pred"] for f in (1, 2)])
    assert pooled_test_metrics(folds, "regression") == pytest.approx(
        {"rmse": np.sqrt(skm.mean_squared_error(true, pred)), "mae": skm.mean_absolute_error(true, pred),
         "r2": skm.r2_score(true, pred)}, rel=1e-12)
