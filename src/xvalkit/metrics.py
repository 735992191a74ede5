"""Metrics from predictions, the same for every framework (scikit-learn's definitions, y_true first).

Classification: loss (cross-entropy of the predicted probabilities), accuracy, macro F1,
precision and recall, and the confusion matrix. The macro averages run over the classes present
in y_true or y_pred of the set (scikit-learn's default): a class absent from both, common in a
grouped fold's test or validation set, is not counted as a 0. The confusion matrix and the log
loss keep every class. Regression: loss (mean squared error), MAE,
RMSE, R². The loss here is the data term alone (no regularisation penalty), so that it compares
across frameworks and architectures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

CLASSIFICATION_METRICS = ("loss", "acc", "f1", "precision", "recall")
REGRESSION_METRICS = ("loss", "mae", "rmse", "r2")
# For each metric, whether higher is better (used to highlight the best results).
HIGHER_IS_BETTER = {"loss": False, "acc": True, "f1": True, "precision": True, "recall": True,
                    "mae": False, "rmse": False, "r2": True}
SETS = ("train", "val", "test")


def metric_names(task_type: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task_type == "classification" else REGRESSION_METRICS


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, num_classes: int) -> dict:
    """Loss, accuracy, macro F1 / precision / recall and the confusion matrix of one set.

    Computed with numpy from the confusion matrix, as scikit-learn defines them (log_loss with
    `labels`, accuracy_score, precision_recall_fscore_support(average="macro", zero_division=0),
    confusion_matrix with `labels`): the same numbers (tests/test_metrics.py compares them on random
    cases), without scikit-learn's input validation, which cost more than the arithmetic (about
    10 ms per set, 30 per fold: the largest part of xvalkit's own cost per fold at sweep scale).
    """
    y_true = np.asarray(y_true).reshape(-1).astype(np.int64, copy=False)
    proba = np.asarray(proba, dtype=np.float64).reshape(len(y_true), -1)
    proba = np.clip(proba, 1e-12, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)
    y_pred = proba.argmax(axis=1)
    n, c = len(y_true), max(num_classes, proba.shape[1])
    matrix = np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)[:num_classes, :num_classes]
    true_count, pred_count, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    # Macro averages over the classes present in y_true or y_pred (scikit-learn's labels=None),
    # not over every class: a class absent from both would add a 0.
    present = (true_count + pred_count) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, hits / pred_count, 0.0)[present]
        recall = np.where(true_count > 0, hits / true_count, 0.0)[present]
        f1 = np.where(true_count + pred_count > 0, 2 * hits / (true_count + pred_count), 0.0)[present]
    return {
        "loss": float(-np.mean(np.log(proba[np.arange(n), y_true]))),
        "acc": float(hits.sum() / n),
        "f1": float(f1.mean()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "confusion_matrix": matrix,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MSE (the loss), MAE, RMSE and R² of one set, averaged uniformly over the outputs, as
    scikit-learn's mean_squared_error, mean_absolute_error and r2_score (force_finite) define them."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(y_true.shape)
    error = y_true - y_pred
    mse = float(np.mean(np.square(error)))
    r2 = float("nan")
    if len(y_true) > 1:
        residual = np.sum(np.square(error), axis=0)
        total = np.sum(np.square(y_true - y_true.mean(axis=0)), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # A constant output: 1 when predicted exactly, else 0 (scikit-learn's force_finite).
            scores = np.where(total > 0, 1 - residual / total, np.where(residual == 0, 1.0, 0.0))
        r2 = float(np.mean(scores))
    return {
        "loss": mse,
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(mse)),
        "r2": r2,
    }


def compute(task_type: str, y_true, y_pred, num_outputs: int) -> dict:
    if task_type == "classification":
        return classification_metrics(y_true, y_pred, num_outputs)
    return regression_metrics(y_true, y_pred)


def diverged_folds(folds: Mapping[int, Mapping[str, Any]]) -> list[int]:
    """The folds whose model diverged (non-finite predictions: recorded, never averaged). An instance
    with any is 'diverged' everywhere: the console, `xval status`, the csv files and the workbook."""
    return [index for index, fold in folds.items() if fold.get("diverged")]


def valid_folds(folds: dict[int, dict]) -> dict[int, dict]:
    """The folds whose model did not diverge (a diverged fold has no metrics to average)."""
    return {index: fold for index, fold in folds.items() if not fold.get("diverged")}


def summarize(folds: dict[int, dict], task_type: str) -> dict[str, dict[str, float]]:
    """{'train'|'val'|'test': {'mean_<metric>', 'std_<metric>'}} over the given folds that did not
    diverge (NaN means when none is left)."""
    folds = valid_folds(folds)
    summary: dict[str, dict[str, float]] = {}
    for set_name in SETS:
        block = {}
        for metric in metric_names(task_type):
            values = np.array([fold[f"{set_name}_{metric}"] for fold in folds.values()], dtype=float)
            block[f"mean_{metric}"] = float(values.mean()) if len(values) else float("nan")
            block[f"std_{metric}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary[set_name] = block
    return summary
