"""Metrics from predictions, the same for every framework (scikit-learn's definitions, y_true first).

Classification: loss (cross-entropy of the predicted probabilities), accuracy (WA, weighted
accuracy), UA (unweighted accuracy: recall averaged over the classes present in y_true, scikit-learn's
balanced_accuracy_score), macro F1, precision and recall, and the confusion matrix. The macro F1,
precision and recall run over the classes present in y_true or y_pred of the set (scikit-learn's
default): a class absent from both, common in a grouped fold's test or validation set, is not
counted as a 0, while a class predicted but absent from y_true counts (recall and F1 0; UA leaves
it out). The confusion matrix and the log loss keep every class. Regression: loss (mean squared
error), MAE, RMSE, R². The loss here is the data term alone (no regularisation penalty), so that
it compares across frameworks and architectures.

Pooled test metrics (`pooled_test_metrics`) are computed once over every fold's test predictions:
macro F1 from the summed confusion matrix (Forman and Scholz 2010, "Apples-to-apples in
cross-validation studies", SIGKDD Explorations 12), and out-of-fold RMSE, MAE and R².
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# 'acc' is WA (accuracy); the key keeps its name so that configs, scripts and old results still read.
CLASSIFICATION_METRICS = ("loss", "acc", "ua", "f1", "precision", "recall")
REGRESSION_METRICS = ("loss", "mae", "rmse", "r2")
# Test metrics pooled over the folds' predictions (not averaged over folds), per task.
POOLED_METRICS = {"classification": ("f1",), "regression": ("rmse", "mae", "r2")}
# For each metric, whether higher is better (used to highlight the best results).
HIGHER_IS_BETTER = {"loss": False, "acc": True, "ua": True, "f1": True, "precision": True, "recall": True,
                    "mae": False, "rmse": False, "r2": True}
SETS = ("train", "val", "test")


def metric_names(task_type: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task_type == "classification" else REGRESSION_METRICS


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, num_classes: int) -> dict:
    """Loss, accuracy (WA), UA, macro F1 / precision / recall and the confusion matrix of one set.

    Computed with numpy from the confusion matrix, as scikit-learn defines them (log_loss with
    `labels`, accuracy_score, balanced_accuracy_score,
    precision_recall_fscore_support(average="macro", zero_division=0),
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
    return {
        "loss": float(-np.mean(np.log(proba[np.arange(n), y_true]))),
        **confusion_metrics(matrix),
        "confusion_matrix": matrix,
    }


def confusion_metrics(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy (WA), UA and macro F1 / precision / recall of a confusion matrix (true classes down)."""
    matrix = np.asarray(matrix)
    true_count, pred_count, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    # Macro averages over the classes present in y_true or y_pred (scikit-learn's labels=None),
    # not over every class: a class absent from both would add a 0.
    present = (true_count + pred_count) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, hits / pred_count, 0.0)[present]
        recall = np.where(true_count > 0, hits / true_count, 0.0)
        f1 = np.where(true_count + pred_count > 0, 2 * hits / (true_count + pred_count), 0.0)[present]
    return {
        "acc": float(hits.sum() / matrix.sum()),
        # UA: over the classes of the true labels only; a class only predicted is not a class of the set.
        "ua": float(recall[true_count > 0].mean()),
        "f1": float(f1.mean()),
        "precision": float(precision.mean()),
        "recall": float(recall[present].mean()),
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
    diverge (NaN means when none is left; NaN stds from fewer than two folds: no spread to measure).
    A metric a fold did not record (older versions had no UA) is NaN, never a KeyError."""
    folds = valid_folds(folds)
    summary: dict[str, dict[str, float]] = {}
    for set_name in SETS:
        block = {}
        for metric in metric_names(task_type):
            values = np.array([fold.get(f"{set_name}_{metric}", np.nan) for fold in folds.values()], dtype=float)
            block[f"mean_{metric}"] = float(values.mean()) if len(values) else float("nan")
            block[f"std_{metric}"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        summary[set_name] = block
    return summary


def backfill(record: dict, task_type: str) -> dict:
    """Add, in place, the metrics a fold recorded by an older version lacks (UA): the test ones
    recomputed from its stored test_true / test_pred, the others NaN (shown as missing)."""
    missing = [(s, m) for s in SETS for m in metric_names(task_type) if f"{s}_{m}" not in record]
    if not missing:
        return record
    test = {}
    if any(s == "test" for s, _ in missing) and not record.get("diverged") and "test_pred" in record:
        pred = np.asarray(record["test_pred"])
        test = compute(task_type, record["test_true"], pred, pred.shape[1] if pred.ndim > 1 else 1)
    for set_name, metric in missing:
        record[f"{set_name}_{metric}"] = test.get(metric, float("nan")) if set_name == "test" else float("nan")
    return record


def pooled_test_metrics(folds: dict[int, dict], task_type: str) -> dict[str, float]:
    """The test metrics of POOLED_METRICS computed once over every valid fold's test predictions.

    Classification: macro F1 from the confusion matrix summed over the folds (Forman and Scholz
    2010), equal to scikit-learn's f1_score(average="macro") of the concatenated predictions.
    Regression: RMSE, MAE and R² of the out-of-fold predictions; unlike the mean of fold values,
    R² then compares the errors with the target's spread over all items, not within one fold.
    Empty when no fold has stored predictions.
    """
    records = [f for f in valid_folds(folds).values() if "test_true" in f and "test_pred" in f]
    if not records:
        return {}
    if task_type == "classification":
        matrices = [np.asarray(f["test_confusion_matrix"]) if "test_confusion_matrix" in f
                    else classification_metrics(f["test_true"], f["test_pred"],
                                                np.asarray(f["test_pred"]).shape[1])["confusion_matrix"]
                    for f in records]
        values = confusion_metrics(np.sum(matrices, axis=0))
    else:
        true = np.concatenate([np.asarray(f["test_true"], dtype=float).reshape(len(f["test_true"]), -1) for f in records])
        pred = np.concatenate([np.asarray(f["test_pred"], dtype=float).reshape(len(f["test_true"]), -1) for f in records])
        values = regression_metrics(true, pred)
    return {metric: values[metric] for metric in POOLED_METRICS[task_type]}
