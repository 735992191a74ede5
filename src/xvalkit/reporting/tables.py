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

from ..metrics import (HIGHER_IS_BETTER, POOLED_METRICS, SETS, backfill, diverged_folds, metric_names,
                       pooled_test_metrics, summarize, valid_folds)
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
    def diverged(self) -> list[int]:
        """Folds whose model diverged (non-finite predictions): recorded, never averaged."""
        return diverged_folds(self.folds)

    @property
    def two_folds_within(self) -> bool:
        """Two folds validated within their training items (TESS's protocol): no std or test over
        two numbers, the two fold results are the ones to quote."""
        return self.num_folds == 2 and any(f.get("val_sources") for f in self.folds.values())

    @property
    def complete(self) -> bool:
        return self.results is not None and len(self.folds) == self.num_folds and not self.diverged

    @property
    def status(self) -> str:
        if self.results is None:
            return "failed" if self.error else "missing"
        done, total = len(self.folds), self.num_folds
        if self.diverged:
            return f"diverged ({len(self.diverged)}/{total} folds: {', '.join(map(str, self.diverged))})"
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
    selection_metric: str = ""  # '<set>_<metric>' that chose the best ('' : the main metric)
    rope: float = 0.0
    selection: sig.SelectionEstimate | None = None  # the selection procedure's test estimate
    swept: list[str] = field(default_factory=list)  # parameters swept by the experiment's `sweep`

    @property
    def metrics(self) -> tuple[str, ...]:
        return metric_names(self.task_type)

    @property
    def main_higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.main_metric.split("_", 1)[1]]

    @property
    def chooser(self) -> str:
        """The '<set>_<metric>' that chooses the best instance and the pivot's cells."""
        return self.selection_metric or self.main_metric

    @property
    def chosen_on_test(self) -> bool:
        return self.chooser.startswith("test_")

    @property
    def best_candidates(self) -> list[int]:
        """Instances that compete for 'best': the complete ones, or all with folds if none is."""
        done = [i.id for i in self.instances if i.complete and i.folds]
        return done or [i.id for i in self.instances if i.folds]


def _check_metric(column: str, key: str, task_type: str, metrics: tuple[str, ...]) -> None:
    set_name, _, metric = column.partition("_")
    if set_name not in SETS or metric not in metrics:
        from ..errors import XvalError

        choices = ", ".join(f"{s}_{m}" for s in SETS for m in metrics)
        raise XvalError(f"config [report] {key}_{task_type} = {column!r} is not a {task_type} metric; "
                        f"use one of {choices}")


def selection_metric(settings: dict[str, Any], task_type: str) -> str:
    """The metric that chooses the best instance: [report] selection_metric_<task>, else the main metric."""
    return str(settings.get(f"selection_metric_{task_type}") or settings[f"main_metric_{task_type}"])


def collect(store: ExperimentStore, settings: dict[str, Any]) -> ReportData:
    """Read every instance of the folder, choose the best on the selection metric, test the main
    metric of every other instance against it, and estimate the selection procedure.

    `settings`: the [report] section (main_metric_<task>, selection_metric_<task>, rope_<task>,
    significance_level).
    """
    files = store.fold_files()
    instances = [InstanceInfo(run, store.load_instance(run, files.get(run, {})), store.error_text(run))
                 for run in store.instance_ids()]
    task_types = {i.results["task_type"] for i in instances if i.results is not None}
    task_type = task_types.pop() if len(task_types) == 1 else "classification"
    for inst in instances:  # folds recorded by older versions lack the newer metrics (UA)
        for record in (inst.results or {}).get("folds", {}).values():
            backfill(record, task_type)
    main = str(settings[f"main_metric_{task_type}"])
    selection = selection_metric(settings, task_type)
    data = ReportData(instances, task_type, main, float(settings["significance_level"]),
                      varying=varying_parameters(instances), selection_metric=selection,
                      rope=float(settings.get(f"rope_{task_type}", 0.0)))
    for inst in instances:
        data.swept += [n for n in (inst.results or {}).get("swept", ()) if n not in data.swept]
    _check_metric(main, "main_metric", task_type, data.metrics)
    _check_metric(selection, "selection_metric", task_type, data.metrics)
    folds = {i.id: i.folds for i in instances}
    select_higher = HIGHER_IS_BETTER[selection.split("_", 1)[1]]
    chosen = sig.choose_best(folds, selection, select_higher, data.best_candidates)
    two_folds = any(i.two_folds_within for i in instances)
    data.best, data.marks = sig.mark_instances(folds, main, data.main_higher_is_better, data.level,
                                               data.best_candidates, best=chosen, rope=data.rope,
                                               min_folds=3 if two_folds else 2)
    if selection != main:
        data.selection = sig.selection_estimate(folds, main, selection, select_higher, data.best_candidates)
    return data


def evaluation_note(data: ReportData) -> str | None:
    """What the report must say when validation and test left augmented copies out, else None."""
    records = [f for i in data.instances for f in i.folds.values() if f.get("excluded_augmented") is not None]
    if not records:
        return None
    excluded = sum(f["excluded_augmented"]["test"] for f in records)
    return ("Augmented data: training used every datapoint, but validation and test metrics are measured on the "
            f"original datapoints only; the augmented copies (files <stem>_aug<N>) were left out ({excluded} test "
            "datapoints over all folds, see 'test_augmented_excluded' in the folds sheet).")


def varying_parameters(instances: list[InstanceInfo]) -> list[str]:
    """Names of the parameters whose values differ between instances (comments excluded)."""
    return differing_parameters(i.params for i in instances if i.results is not None)


# How the workbook and the plots name the metrics and sets ('test WA (accuracy)')
METRIC_TITLES = {"loss": "loss", "acc": "WA (accuracy)", "ua": "UA (unweighted accuracy)", "f1": "F1",
                 "precision": "precision", "recall": "recall", "mae": "MAE", "rmse": "RMSE", "r2": "R²"}
SET_SHORT = {"train": "train", "val": "validation", "test": "test"}


def metric_text(column: str) -> str:
    """'test_acc' -> 'test WA (accuracy)'."""
    set_name, _, metric = column.partition("_")
    return f"{SET_SHORT.get(set_name, set_name)} {METRIC_TITLES.get(metric, metric)}"


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


def pooled_columns(task_type: str) -> list[str]:
    """'test_pooled_<metric>': the test metrics computed once over every fold's predictions."""
    return [f"test_pooled_{m}" for m in POOLED_METRICS[task_type]]


def _number(value: float | None) -> float | None:
    """A cell's number; None (an empty cell) for NaN: a metric a fold did not record, or no spread."""
    return None if value is None or value != value else value


def summary_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per instance: ID, comments, status, folds, varying parameters, significance, metrics."""
    rows = []
    for inst in data.instances:
        row: dict[str, Any] = {"ID": inst.id}
        row.update({c: inst.params.get(c) for c in COMMENTS})
        row.update(status=inst.status, folds_done=len(inst.folds), num_folds=inst.num_folds)
        row.update({k: cell(inst.params.get(k)) for k in data.varying})
        mark = data.marks.get(inst.id)
        posterior = mark.posterior if mark else None
        verdict = mark.verdict if mark else sig.UNTESTED
        if mark and (mark.why in (sig.IDENTICAL_DIFFERENCES, sig.TWO_FOLDS) or mark.why.startswith(sig.DIVERGED)):
            verdict = f"{sig.UNTESTED}: {mark.why}"
        row.update(significance=verdict,
                   p_value=None if mark is None or math.isnan(mark.p) else mark.p,
                   p_holm=None if mark is None or math.isnan(mark.p_adjusted) else mark.p_adjusted,
                   prob_best_better=posterior.below if posterior else None,
                   prob_equivalent=posterior.within if posterior else None,
                   prob_other_better=posterior.above if posterior else None)
        valid = valid_folds(inst.folds)  # diverged folds are not averaged
        row.update(dict.fromkeys(metric_columns(data.metrics) + pooled_columns(data.task_type)))
        if valid:
            summary = summarize(valid, data.task_type)
            for column in metric_columns(data.metrics):
                set_name, stat, metric = column.split("_", 2)
                if stat == "std" and inst.two_folds_within:
                    continue  # a spread of two numbers: the folds sheet has the two results
                row[column] = _number(summary[set_name][f"{stat}_{metric}"])
            pooled = pooled_test_metrics(valid, data.task_type)
            row.update({f"test_pooled_{m}": _number(v) for m, v in pooled.items()})
        row["error"] = inst.error_line
        rows.append(row)
    return rows


def fold_rows(data: ReportData) -> list[dict[str, Any]]:
    """One row per instance and fold: every metric, timings, the items, every parameter."""
    rows = []
    for inst in data.instances:
        for fold, record in inst.folds.items():
            row: dict[str, Any] = {"ID": inst.id, "fold": fold, "repeat": record.get("repeat", 1),
                                   "fold_in_repeat": record.get("fold_in_repeat", fold)}
            row.update({c: inst.params.get(c) for c in COMMENTS})
            row["status"] = inst.status
            diverged = record.get("diverged")
            row.update({f"{s}_{m}": None if diverged else cell(record.get(f"{s}_{m}"))
                        for m in data.metrics for s in SETS})
            row["diverged"] = diverged or None
            row.update({k: cell(record.get(k)) for k in ("epochs", "best_epoch", "seed", "duration_s", "device")})
            row["test_datapoints"] = len(record["test_true"]) if "test_true" in record else None
            if record.get("excluded_augmented") is not None:
                row["test_augmented_excluded"] = record["excluded_augmented"]["test"]
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


def highlighted_rows(data: ReportData, rows: list[dict[str, Any]], column: str) -> set[int]:
    """Indices of the rows green in a metric column of the summary.

    On a test column, the instance chosen on the selection metric (its test values; greening the
    best test value would be choosing on test, and optimistic); elsewhere the best value among the
    candidates (`best_rows`).
    """
    if column.startswith("test_"):
        return {i for i, r in enumerate(rows) if r["ID"] == data.best and r.get(column) is not None}
    return best_rows(rows, column, set(data.best_candidates))


@dataclass
class Pivot:
    """The main metric over two swept parameters: one cell per pair of values.

    Each cell holds the instance with the best selection metric among those sharing it, and `best`
    is the cell whose instance has the best selection metric: chosen on validation by default, so
    the test values shown did not choose them.
    """

    row_parameter: str
    column_parameter: str
    rows: list[Any]
    columns: list[Any]
    # (row, column) positions -> {'mean', 'std', 'ID', 'count', 'chosen_by' (its selection metric's mean)}
    cells: dict[tuple[int, int], dict[str, Any]]
    chooser: str  # '<set>_<metric>' that chose the cells and the best one
    best: tuple[int, int]


def _mean_column(column: str) -> str:
    set_name, _, metric = column.partition("_")
    return f"{set_name}_mean_{metric}"


def pivot(data: ReportData, summary: list[dict[str, Any]]) -> Pivot | None:
    """The main metric's mean ± std over the first two swept parameters (None if fewer were swept).

    Only instances that swept both parameters count. Values keep the order of their instances' IDs
    (their order in the sweep's lists). Where several instances share a cell (a third swept
    parameter, several swept base instances), the cell shows the one with the best selection metric
    among the complete ones (not the best test value: that would be chosen on test) and says how
    many shared it.
    """
    if len(data.swept) < 2:
        return None
    a, b = data.swept[:2]
    mean_key = _mean_column(data.main_metric)
    std_key = mean_key.replace("_mean_", "_std_", 1)
    chooser_key = _mean_column(data.chooser)
    params = {i.id: i.params for i in data.instances if {a, b} <= set((i.results or {}).get("swept", ()))}
    rows_, columns = [], []
    candidates: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in summary:
        p = params.get(row["ID"])
        if p is None or row.get(mean_key) is None or row["status"] != "done":
            continue
        for values, value in ((rows_, p[a]), (columns, p[b])):
            if not any(repr(v) == repr(value) for v in values):
                values.append(value)
        key = (next(i for i, v in enumerate(rows_) if repr(v) == repr(p[a])),
               next(i for i, v in enumerate(columns) if repr(v) == repr(p[b])))
        candidates.setdefault(key, []).append(row)
    if not candidates:
        return None
    sign = 1.0 if HIGHER_IS_BETTER[data.chooser.split("_", 1)[1]] else -1.0

    def rank(row: dict[str, Any]) -> tuple[float, int]:  # a missing selection value ranks last
        value = row.get(chooser_key)
        return (-math.inf if value is None else sign * value, -row["ID"])

    chosen = {key: max(group, key=rank) for key, group in candidates.items()}
    cells = {key: {"mean": row[mean_key], "std": row[std_key], "ID": row["ID"], "count": len(candidates[key]),
                   "chosen_by": row.get(chooser_key)} for key, row in chosen.items()}
    return Pivot(a, b, rows_, columns, cells, data.chooser, max(chosen, key=lambda k: rank(chosen[k])))
