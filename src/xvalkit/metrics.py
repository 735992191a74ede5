"""Metrics from predictions, the same for every framework (scikit-learn, y_true first).

Classification: loss (cross-entropy of the predicted probabilities), accuracy, macro F1,
precision and recall, and the confusion matrix. The macro averages run over the classes present
in y_true or y_pred of the set (scikit-learn's default): a class absent from both, common in a
grouped fold's test or validation set, is not counted as a 0. The confusion matrix and the log
loss keep every class. Regression: loss (mean squared error), MAE,
RMSE, R². The loss here is the data term alone (no regularisation penalty), so that it compares
across frameworks and architectures.
"""

from __future__ import annotations

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
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).reshape(-1)
    proba = np.asarray(proba, dtype=np.float64).reshape(len(y_true), -1)
    proba = np.clip(proba, 1e-12, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)
    y_pred = proba.argmax(axis=1)
    labels = np.arange(num_classes)
    # Macro averages over the classes present in y_true or y_pred (labels=None), not all classes.
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "loss": float(skm.log_loss(y_true, proba, labels=labels)),
        "acc": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(y_true.shape)
    mse = float(skm.mean_squared_error(y_true, y_pred))
    return {
        "loss": mse,
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mse)),
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
    }


def compute(task_type: str, y_true, y_pred, num_outputs: int) -> dict:
    if task_type == "classification":
        return classification_metrics(y_true, y_pred, num_outputs)
    return regression_metrics(y_true, y_pred)


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
