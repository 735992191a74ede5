"""The report's tables, read from the experiment folder alone: plain rows of plain values.

`collect` reads every instance (finished, partial or failed) with its status; the row builders
give one row per instance (`summary_rows`), per instance and fold (`fold_rows`) and the resolved
parameters (`parameter_rows`). Means and stds are recomputed from the fold records, so they always
cover exactly the folds that `folds done` reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import HIGHER_IS_BETTER, SETS, metric_names, summarize
from ..params import differing_parameters
from ..store import ExperimentStore, error_line
from . import significance as sig

COMMENTS = ("comment_1", "comment_2")


@dataclass
class InstanceInfo:
    id: int
    results: dict[str, Any] | None
    error: str | None

    @property
    def folds(self) -> dict[int, dict[str, Any]]:
        return dict(sorted((self.results or {}).get("folds", {}).items()))

    @property
    def params(self) -> dict[str, Any]:
        return (self.results or {}).get("parameters", {})

    @property
    def num_folds(self) -> int | None:
        return (self.results or {}).get("num_folds")

    @property
    def complete(self) -> bool:
        return self.results is not None and len(self.folds) == self.num_folds

    @property
    def status(self) -> str:
        if self.results is None:
            return "failed" if self.error else "missing"
        done, total = len(self.folds), self.num_folds
        if done == total:
            return "done"
        return f"failed ({done}/{total} folds)" if self.error else f"partial ({done}/{total} folds)"

    @property
    def error_line(self) -> str | None:
        return error_line(self.error, 200) if self.error and self.error.strip() else None


@dataclass
class ReportData:
    """Everything the spreadsheet, the csv files and the plots show."""

    instances: list[InstanceInfo]
    task_type: str
    main_metric: str  # '<set>_<metric>', e.g. 'test_acc'
    level: float
    varying: list[str] = field(default_factory=list)
    best: int | None = None
    marks: dict[int, sig.Mark] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        return metric_names(self.task_type)

    @property
    def main_higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.main_metric.split("_", 1)[1]]

    @property
    def best_candidates(self) -> list[int]:
        """Instances that compete for 'best': the complete ones, or all with folds if none is."""
        done = [i.id for i in self.instances if i.complete and i.folds]
        return done or [i.id for i in self.instances if i.folds]


def collect(store: ExperimentStore, main_metrics: dict[str, str], level: float) -> ReportData:
    """Read every instance of the folder and test the main metric against the best instance."""
    instances = [InstanceInfo(run, store.load_instance(run), store.error_text(run)) for run in store.instance_ids()]
    task_types = {i.results["task_type"] for i in instances if i.results is not None}
    task_type = task_types.pop() if len(task_types) == 1 else "classification"
    main = main_metrics[task_type]
    data = ReportData(instances, task_type, main, level, varying=varying_parameters(instances))
    set_name, _, metric = main.partition("_")
    if set_name not in SETS or metric not in data.metrics:
        from ..errors import XvalError

        choices = ", ".join(f"{s}_{m}" for s in SETS for m in data.metrics)
        raise XvalError(f"config [report] main metric {main!r} is not a {task_type} metric; use one of {choices}")
    data.best, data.marks = sig.mark_instances(
        {i.id: i.folds for i in instances}, main, data.main_higher_is_better, level, data.best_candidates
    )
    return data


def varying_parameters(instances: list[InstanceInfo]) -> list[str]:
    """Names of the parameters whose values differ between instances (comments excluded)."""
    return differing_parameters(i.params for i in instances if i.results is not None)


def cell(value: Any) -> Any:
    """A value a spreadsheet or csv cell can hold: numbers, text, booleans; repr for the rest."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return value.item()
    return repr(value)


def metric_columns(metrics: tuple[str, ...]) -> list[str]:
    """'<set>_mean_<metric>' and '<set>_std_<metric>', grouped by metric then set."""
    return [f"{s}_{stat}_{m}" for m in metrics for s in SETS for stat in ("mean", "std")]


def summary_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per instance: ID, comments, status, folds, varying parameters, significance, metrics."""
    rows = []
    for inst in data.instances:
        row: dict[str, Any] = {"ID": inst.id}
        row.update({c: inst.params.get(c) for c in COMMENTS})
        row.update(status=inst.status, folds_done=len(inst.folds), num_folds=inst.num_folds)
        row.update({k: cell(inst.params.get(k)) for k in data.varying})
        mark = data.marks.get(inst.id)
        row.update(significance=mark.verdict if mark else sig.UNTESTED,
                   p_value=None if mark is None or math.isnan(mark.p) else mark.p)
        if inst.folds:
            summary = summarize(inst.folds, data.task_type)
            for column in metric_columns(data.metrics):
                set_name, stat, metric = column.split("_", 2)
                value = summary[set_name][f"{stat}_{metric}"]
                row[column] = None if stat == "std" and len(inst.folds) < 2 else value
        else:
            row.update(dict.fromkeys(metric_columns(data.metrics)))
        row["error"] = inst.error_line
        rows.append(row)
    return rows


def fold_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per instance and fold: every metric, timings, the items, every parameter."""
    rows = []
    for inst in data.instances:
        for fold, record in inst.folds.items():
            row: dict[str, Any] = {"ID": inst.id, "fold": fold}
            row.update({c: inst.params.get(c) for c in COMMENTS})
            row["status"] = inst.status
            row.update({f"{s}_{m}": cell(record.get(f"{s}_{m}")) for m in data.metrics for s in SETS})
            row.update({k: cell(record.get(k)) for k in ("epochs", "best_epoch", "seed", "duration_s", "device")})
            row["test_datapoints"] = len(record["test_true"]) if "test_true" in record else None
            for set_name in SETS:
                row[f"{set_name}_items"] = " ".join(map(str, record.get(f"{set_name}_items", ())))
            row.update({f"param_{k}": cell(v) for k, v in inst.params.items()})
            rows.append(row)
    return rows


def test_confusion(inst: InstanceInfo) -> tuple[np.ndarray, list[str], int] | None:
    """(test confusion matrix summed over the folds done, class names, folds summed), or None.

    Rows are true classes, columns predicted ones. The names are those of the dataset's manifest
    (`classes`, recorded with each fold); a class it does not name keeps its index.
    """
    matrices = [np.asarray(f["test_confusion_matrix"]) for f in inst.folds.values() if "test_confusion_matrix" in f]
    if not matrices:
        return None
    total = np.sum(matrices, axis=0)
    names = next((list(f["classes"]) for f in inst.folds.values() if f.get("classes")), [])
    labels = [str(names[i]) if i < len(names) else str(i) for i in range(total.shape[0])]
    return total, labels, len(matrices)


def parameter_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per instance with every resolved parameter."""
    return [{"ID": i.id, **{k: cell(v) for k, v in i.params.items()}} for i in data.instances]


def best_rows(rows: list[dict[str, Any]], column: str, candidates: set[int] | None = None) -> set[int]:
    """Indices of the rows holding the best value of a metric column (ties all count).

    Higher is better for accuracy, F1, precision, recall and R² means; lower for loss, MAE, RMSE
    and every std. Only rows whose ID is in `candidates` compete (default: all).
    """
    metric = column.rsplit("_", 1)[-1]
    higher = HIGHER_IS_BETTER.get(metric, False) and "_std_" not in column
    values = [(i, r[column]) for i, r in enumerate(rows)
              if (candidates is None or r["ID"] in candidates)
              and isinstance(r.get(column), (int, float)) and not math.isnan(r[column])]
    if not values:
        return set()
    best = (max if higher else min)(v for _, v in values)
    # Ties count, up to float noise (a std of 1e-16 ties with 0).
    return {i for i, v in values if math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)}
