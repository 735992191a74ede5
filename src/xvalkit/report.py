"""The comparison spreadsheet and the tidy tables, rebuilt from the experiment folder alone.

Because everything is read back from the results pickles, a report works on a finished, a running
or a crashed experiment alike; instances with missing or failed folds say so in `status`.
"""

from __future__ import annotations

import io
import math
from typing import Any

from . import atomic
from .metrics import HIGHER_IS_BETTER, SETS, metric_names
from .store import ExperimentStore

SET_TITLES = {"train": "training", "val": "validation", "test": "test"}
BEST_FILL = "C6EFCE"  # Excel's "good" green
HEADER_FILL = "DDEBF7"


def instance_status(results: dict[str, Any] | None, error: str | None) -> str:
    if results is None:
        return "failed" if error else "missing"
    done, total = len(results["folds"]), results["num_folds"]
    if done == total:
        return "done"
    return f"failed ({done}/{total} folds)" if error else f"partial ({done}/{total} folds)"


def summary_rows(store: ExperimentStore) -> list[dict[str, Any]]:
    """One row per instance: ID, comments, status, folds done, mean and std of every metric."""
    rows = []
    for run in store.instance_ids():
        results, error = store.load_instance(run), store.error_text(run)
        row: dict[str, Any] = {"ID": run}
        if results is not None:
            params = results["parameters"]
            row.update(comment_1=params["comment_1"], comment_2=params["comment_2"],
                       architecture=params["architecture"], framework=params.get("framework", "keras"))
        row["status"] = instance_status(results, error)
        row["folds"] = len(results["folds"]) if results else 0
        if results is not None and results["folds"]:
            for set_name in ("test", "val", "train"):
                for metric in metric_names(results["task_type"]):
                    block = results["summary"][set_name]
                    row[f"{set_name}_mean_{metric}"] = block[f"mean_{metric}"]
                    row[f"{set_name}_std_{metric}"] = block[f"std_{metric}"]
        if error:
            row["error"] = error.strip().splitlines()[-1][:200]
        rows.append(row)
    return rows


def fold_rows(store: ExperimentStore) -> list[dict[str, Any]]:
    """One row per instance and fold: every parameter and every metric (a tidy table)."""
    rows = []
    for run, results in store.load_all().items():
        metrics = metric_names(results["task_type"])
        for fold, record in sorted(results["folds"].items()):
            row = {"ID": run, "fold": fold}
            row.update({f"{s}_{m}": record[f"{s}_{m}"] for s in SETS for m in metrics})
            row.update(epochs=record["epochs"], best_epoch=record["best_epoch"], seed=record["seed"],
                       duration_s=record["duration_s"], device=record["device"],
                       test_items=" ".join(record["test_items"]))
            row.update({f"param_{k}": _cell(v) for k, v in results["parameters"].items()})
            rows.append(row)
    return rows


def _cell(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else repr(value)


def best_rows(rows: list[dict[str, Any]], column: str) -> set[int]:
    """Indices of the rows holding the best value of a metric column (ties all count)."""
    metric = column.rsplit("_", 1)[-1]
    higher = HIGHER_IS_BETTER.get(metric, False) and "_std_" not in column
    values = [(i, r[column]) for i, r in enumerate(rows)
              if isinstance(r.get(column), (int, float)) and not math.isnan(r[column])]
    if not values:
        return set()
    best = (max if higher else min)(v for _, v in values)
    return {i for i, v in values if v == best}


def write_spreadsheet(store: ExperimentStore, rows: list[dict[str, Any]]) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    wb = Workbook()
    ws = wb.active
    ws.title = "summary"
    header_fill = PatternFill("solid", fgColor=HEADER_FILL)
    for j, name in enumerate(columns, start=1):
        title = name
        for s, long in SET_TITLES.items():
            if name.startswith(f"{s}_mean_") or name.startswith(f"{s}_std_"):
                stat, metric = name[len(s) + 1:].split("_", 1)
                title = f"{long} {metric} ({stat})"
        cell = ws.cell(row=1, column=j, value=title)
        cell.font, cell.fill = Font(bold=True), header_fill
        cell.alignment = Alignment(wrap_text=True, vertical="center")
        ws.column_dimensions[get_column_letter(j)].width = max(10, min(40, len(title) + 2))
    best_fill = PatternFill("solid", fgColor=BEST_FILL)
    best = {c: best_rows(rows, c) for c in columns if "_mean_" in c or "_std_" in c}
    for i, row in enumerate(rows):
        for j, name in enumerate(columns, start=1):
            cell = ws.cell(row=i + 2, column=j, value=_cell(row.get(name)))
            if name in best:
                cell.number_format = "0.0000"
                if i in best[name]:
                    cell.fill, cell.font = best_fill, Font(bold=True)
    ws.freeze_panes = "B2"
    buffer = io.BytesIO()
    wb.save(buffer)
    atomic.write_bytes(store.spreadsheet_path, buffer.getvalue())


def write_csv(store: ExperimentStore, rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    atomic.write_text(store.folder / "results.csv", pd.DataFrame(rows).to_csv(index=False))


def refresh(store: ExperimentStore) -> None:
    """Rebuild the spreadsheet and results.csv from the experiment folder."""
    write_spreadsheet(store, summary_rows(store))
    write_csv(store, fold_rows(store))
