"""The comparison workbook (openpyxl): sheets summary, folds, parameters, confusion and plots.

summary: one row per instance under a two-row header: ID, a link to its parameters, comments,
status and folds done, the parameters that differ between instances, the significance of the main
metric against the best instance, then one coloured group per metric with the training /
validation / test mean and std. The best value of each metric column is green; instances not
significantly different from the best on the main metric are yellow. confusion (classification):
each instance's test confusion matrix summed over its folds, classes named as the dataset's manifest
names them.

Imported on first use by report.refresh (openpyxl is not needed to import xvalkit).
"""

from __future__ import annotations

import io
import math
from functools import cache
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.comments import Comment
from openpyxl.drawing.image import Image
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.hyperlink import Hyperlink
from openpyxl.worksheet.pagebreak import Break

from . import significance as sig
from .page_layout import print_setup, text_reach, wrap_row, wrapped_note
from .tables import (METRIC_TITLES, SET_SHORT, Pivot, ReportData, cell, evaluation_note, highlighted_rows,
                     metric_columns, metric_text, pivot, pooled_columns, test_confusion)

BEST_FILL = "C6EFCE"  # Excel's "good" green
SAME_FILL = "FFEB9C"  # Excel's "neutral" yellow: not significantly different from the best
HEADER_FILL = "DDEBF7"
VARYING_FILL = "FCE4D6"
# One light colour per metric group (cycled).
GROUP_FILLS = ("E2EFDA", "FFF2CC", "DDEBF7", "EDE1F5", "FBE2D5", "D9F2F2")
NUMBER_FORMAT = "0.0000"
PROBABILITY_COLUMNS = ("p_value", "p_holm", "prob_best_better", "prob_equivalent", "prob_other_better")
HEADER_ROWS = 2
# The header rows each sheet repeats on every printed page.
TITLE_ROWS = {"summary": f"1:{HEADER_ROWS}", "pivot": "1:2", "folds": "1:1", "parameters": "1:1"}
# Repeated on each page across a wide sheet: what names the row (ID, comment_1 / fold)
TITLE_COLUMNS = {"summary": "A:C", "pivot": "A:A", "folds": "A:B", "parameters": "A:A"}
NOTE_FONT = {"italic": True, "color": "555555"}
# The plots sheet: images this wide at most (pixels), over rows and columns of the default size. A
# landscape page (A4 or Letter, fitted to this width) holds about PAGE_ROWS rows.
PLOT_WIDTH, ROW_PIXELS, COLUMN_PIXELS, PAGE_ROWS = 900, 20, 64, 34


# One style object per distinct style, shared by its cells: openpyxl validates every attribute of a
# new one, which was half of a large workbook's styling time (a thousand confusion matrices). The
# file is the same: the workbook keeps each distinct style once either way.
@cache
def _font(**kwargs) -> Font:
    return Font(**kwargs)


@cache
def _solid(colour: str) -> PatternFill:
    return PatternFill("solid", fgColor=colour)


@cache
def _alignment(**kwargs) -> Alignment:
    return Alignment(**kwargs)


def build_workbook(data: ReportData, summary: list[dict[str, Any]], folds: list[dict[str, Any]],
                   parameters: list[dict[str, Any]], ratio_note: str) -> Workbook:
    """Every sheet but `plots`, whose images may still be drawn meanwhile (finish_workbook adds it)."""
    wb = Workbook()
    ws = wb.active
    ws.title = "summary"
    param_row = {row["ID"]: i + 2 for i, row in enumerate(parameters)}
    _summary_sheet(ws, data, summary, param_row, ratio_note)
    grid = pivot(data, summary)
    if grid is not None:
        _pivot_sheet(wb.create_sheet("pivot"), data, grid)
    _table_sheet(wb.create_sheet("folds"), [{k: v for k, v in r.items() if not k.startswith("param_")} for r in folds],
                 frozen="C2")
    _table_sheet(wb.create_sheet("parameters"), parameters, frozen="B2", highlight=set(data.varying))
    for sheet in wb.worksheets:
        print_setup(sheet, TITLE_ROWS.get(sheet.title), title_columns=TITLE_COLUMNS.get(sheet.title))
    if data.task_type == "classification":
        ws = wb.create_sheet("confusion")
        print_setup(ws, None, None, _confusion_sheet(ws, data))
    return wb


def finish_workbook(wb: Workbook, plots: list[Path], note: str | None = None) -> bytes:
    """The workbook's file, its `plots` sheet showing `plots` (PNG files) under `note` (which of them)."""
    ws = wb.create_sheet("plots")
    print_setup(ws, None, *_plots_sheet(ws, plots, note), across=1)  # the plots are laid out to a page's width
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def _header(cell_, title: str, fill: str) -> None:
    cell_.value = title
    cell_.font = _font(bold=True)
    cell_.fill = _solid(fill)
    cell_.alignment = _alignment(horizontal="center", vertical="center", wrap_text=True)


def _summary_sheet(ws, data: ReportData, rows: list[dict[str, Any]], param_row: dict[int, int], ratio_note: str) -> None:
    main_set, _, main_metric = data.main_metric.partition("_")
    main_column = f"{main_set}_mean_{main_metric}"
    # (key, group title or None, sub-header, fill)
    layout: list[tuple[str, str | None, str, str]] = [
        ("ID", None, "ID", HEADER_FILL), ("parameters", None, "parameters", HEADER_FILL),
        ("comment_1", None, "comment_1", HEADER_FILL), ("comment_2", None, "comment_2", HEADER_FILL),
        ("status", None, "status", HEADER_FILL), ("folds_done", None, "folds done", HEADER_FILL),
    ]
    layout += [(k, "parameters that differ", k, VARYING_FILL) for k in data.varying]
    sig_title = f"{SET_SHORT[main_set]} {METRIC_TITLES[main_metric]} vs best"
    layout += [("significance", sig_title, "verdict", SAME_FILL), ("p_value", sig_title, "p", SAME_FILL),
               ("p_holm", sig_title, "p (Holm)", SAME_FILL),
               ("prob_best_better", sig_title, "P(best better)", SAME_FILL),
               ("prob_equivalent", sig_title, f"P(within ±{data.rope:g})", SAME_FILL),
               ("prob_other_better", sig_title, "P(this better)", SAME_FILL)]
    pooled = pooled_columns(data.task_type)
    for g, metric in enumerate(data.metrics):
        fill = GROUP_FILLS[g % len(GROUP_FILLS)]
        layout += [(c, METRIC_TITLES.get(metric, metric), f"{SET_SHORT[c.split('_')[0]]} {c.split('_')[1]}", fill)
                   for c in metric_columns((metric,))]
        layout += [(c, METRIC_TITLES.get(metric, metric), "test pooled", fill) for c in pooled if c.endswith(f"_{metric}")]
    layout.append(("error", None, "error", HEADER_FILL))

    # Two header rows: groups merged across, single columns merged down.
    j = 1
    while j <= len(layout):
        key, group, sub, fill = layout[j - 1]
        if group is None:
            _header(ws.cell(row=1, column=j), sub, fill)
            ws.merge_cells(start_row=1, start_column=j, end_row=2, end_column=j)
            j += 1
            continue
        span = 1
        while j + span <= len(layout) and layout[j + span - 1][1] == group:
            span += 1
        _header(ws.cell(row=1, column=j), group, fill)
        if span > 1:
            ws.merge_cells(start_row=1, start_column=j, end_row=1, end_column=j + span - 1)
        for c in range(j, j + span):
            _header(ws.cell(row=2, column=c), layout[c - 1][2], fill)
        j += span

    numbers = set(metric_columns(data.metrics) + pooled)
    best = {key: highlighted_rows(data, rows, key) for key, *_ in layout if key in numbers}
    best_fill, same_fill = _solid(BEST_FILL), _solid(SAME_FILL)
    group_start = {j for j, (key, *_ ) in enumerate(layout, start=1) if key.startswith("train_mean_")}
    thin = Border(left=Side(style="thin", color="999999"))
    for i, row in enumerate(rows):
        r = i + 1 + HEADER_ROWS
        same = row.get("significance") == sig.SAME
        for j, (key, *_rest) in enumerate(layout, start=1):
            c = ws.cell(row=r, column=j)
            if key == "parameters":
                c.value = "parameters"
                # An internal link (location, not a URL) works in Excel and LibreOffice alike.
                c.hyperlink = Hyperlink(ref=c.coordinate, location=f"'parameters'!A{param_row[row['ID']]}",
                                        display="parameters")
                c.style = "Hyperlink"
                continue
            c.value = cell(row.get(key))
            if key in best:
                c.number_format = NUMBER_FORMAT
                if i in best[key]:
                    c.fill, c.font = best_fill, _font(bold=True)
                    if key.startswith("test_") and "_std_" not in key and c.value is not None:
                        c.comment = _optimistic_comment(data)
                elif same and key == main_column:
                    c.fill = same_fill
            elif key in PROBABILITY_COLUMNS:
                c.number_format = "0.000"
            elif key == "significance" and same:
                c.fill = same_fill
            elif key == "significance" and row.get(key) == sig.BEST:
                c.fill, c.font = best_fill, _font(bold=True)
            if j in group_start:
                c.border = thin
            if key == "status" and row.get(key) != "done":
                c.font = _font(color="C00000")
    for j, (key, group, sub, _fill) in enumerate(layout, start=1):
        values = [len(str(v)) for v in (cell(r.get(key)) for r in rows) if v is not None]
        longest = max([len(sub) + 2, 7] + [min(v, 40) for v in values])
        width = 11 if key in best or key in PROBABILITY_COLUMNS else longest + 1
        ws.column_dimensions[get_column_letter(j)].width = min(width, 42)
    ws.row_dimensions[2].height = 30
    ws.freeze_panes = ws.cell(row=HEADER_ROWS + 1, column=5)  # ID to comment_2 stay in view

    start = len(rows) + HEADER_ROWS + 2
    if data.selection is not None:  # below a blank row: not an instance
        _selection_row(ws, data, layout, start, main_column)
        ws.merge_cells(start_row=start, start_column=1, end_row=start, end_column=2)  # room for its label
        wrap_row(ws, start, first_column=3)  # its texts stay in their own cells
        start += 2
    for n, text in enumerate(_notes(data, ratio_note)):
        wrapped_note(ws, start + n, text, _font(**NOTE_FONT), last_column=len(layout))


def _optimistic_comment(data: ReportData) -> Comment:
    """The note on the best instance's test values: optimistic, and what to quote instead."""
    quote = "the selection row below, the estimate to quote" if data.selection is not None else \
        "a selection metric other than the main metric gives the selection row, the estimate to quote"
    return Comment(f"Optimistic: this instance was chosen on the mean {metric_text(data.chooser)} over all "
                   "folds, and each fold's test items are validation items of other folds, so its test "
                   f"values took part in the choice. See {quote}.", "xvalkit", width=300, height=110)


def _selection_row(ws, data: ReportData, layout, r: int, main_column: str) -> None:
    """The row of the selection procedure: in each fold the instance best on the selection metric,
    its test value; mean and std over the folds, under the main metric's columns."""
    est = data.selection
    columns = {key: j for j, (key, *_rest) in enumerate(layout, start=1)}
    set_name, _, metric = main_column.partition("_mean_")
    ws.cell(row=r, column=1, value="selection").font = _font(bold=True, italic=True)
    picked = ", ".join(f"{f}:{i}" for f, i in est.picks.items())
    ws.cell(row=r, column=columns["comment_1"],
            value=f"headline estimate: selection procedure (best {metric_text(data.selection_metric)} per fold)")
    ws.cell(row=r, column=columns["comment_2"], value=f"fold:instance {picked}")
    ws.cell(row=r, column=columns["folds_done"], value=len(est.values))
    for key, value in ((main_column, est.mean), (f"{set_name}_std_{metric}", est.std)):
        c = ws.cell(row=r, column=columns[key], value=None if value != value else value)
        c.number_format, c.font = NUMBER_FORMAT, _font(bold=True, italic=True)


def _notes(data: ReportData, ratio_note: str) -> list[str]:
    level = data.level
    best_id = "none" if data.best is None else f"ID {data.best}"
    main, chooser = metric_text(data.main_metric), metric_text(data.chooser)
    notes = []
    if data.selection is not None:
        est = data.selection
        spread = "" if est.std != est.std else f" ± {est.std:.4f}"
        notes += [f"Headline estimate (the one to quote): {main} {est.mean:.4f}{spread} over {len(est.values)} folds, the "
                  f"selection row: in each fold the instance with the best {chooser} is taken and its {main} "
                  "recorded; its mean estimates what choosing the best instance this way gives on new items, "
                  "without the optimism of the best test mean (the test items took no part in the choice)."]
    if data.chosen_on_test:
        notes.append(f"Warning: the best instance is chosen on a test metric ({chooser}): its test values and the "
                     "selection row are optimistic. Set [report] selection_metric_<task> to a validation metric.")
    notes += [
        f"Green: on the test columns, the instance chosen on {chooser} ({best_id}), not the best test value "
        "(choosing on test would be optimistic); on the other columns the best value among complete instances "
        "(highest for accuracy (WA), UA, F1, precision, recall, R²; lowest for loss, MAE, RMSE and for every std).",
        f"The best instance ({best_id}) is the one with the best mean {chooser} among complete instances; every "
        f"other instance is compared with it on {main}. Its test values are optimistic: the mean {chooser} over "
        "all folds used every item, each fold's test items being validation items of other folds.",
        f"p: corrected resampled paired t-test of Nadeau and Bengio (2003) over the folds both instances completed "
        f"on the same test items (with repeats: over all k x r folds, Bouckaert and Frank 2004), two-sided, level {level:g}. "
        f"p (Holm): adjusted with Holm's step-down procedure over the instances tested. Yellow ('{sig.SAME}'): "
        f"Holm p >= {level:g}, the folds cannot tell it from the best (which does not make it equivalent); "
        f"'{sig.DIFFERENT}' / '{sig.BETTER}': Holm p < {level:g}; '{sig.UNTESTED}': fewer than 2 common folds, or "
        f"'{sig.UNTESTED}: {sig.IDENTICAL_DIFFERENCES}': the same difference in every fold (no variance to test). "
        f"{ratio_note}",
        f"P(...): Bayesian correlated t-test (Benavoli, Corani, Demsar and Zaffalon 2017): posterior probabilities "
        f"that the best is better by more than {data.rope:g}, that the two are within ±{data.rope:g} "
        f"(practically equivalent), or that this instance is better by more than {data.rope:g}.",
        _metrics_note(data.task_type),
        "A fold whose model diverged (NaN or infinite predictions) has no metrics: it is not averaged, its "
        "instance is 'diverged', neither tested nor a candidate for the best (reason in the folds sheet).",
        "Instances not 'done' are averaged over the folds done only (see 'folds done'); they do not compete for "
        "the best unless no instance is complete.",
    ]
    augmented = evaluation_note(data)
    if augmented:
        notes.append(augmented)
    protocols = sorted({f["protocol"] for i in data.instances for f in i.folds.values() if f.get("protocol")})
    if protocols:
        notes.append("Folds: " + "; ".join(protocols) + ".")
    return notes


def _metrics_note(task_type: str) -> str:
    if task_type == "classification":
        return ("WA (weighted accuracy): accuracy. UA (unweighted accuracy): recall averaged over the classes present "
                "in the fold's true labels (scikit-learn's balanced_accuracy_score); F1, precision and recall are "
                "macro averages over the classes in the true labels or the predictions. Mean and std: over the "
                "folds; test pooled F1: macro F1 of the test confusion matrix summed over the folds (Forman and "
                "Scholz 2010).")
    return ("Mean and std: over the folds. Test pooled: RMSE, MAE and R² of every fold's test predictions taken "
            "together (out-of-fold), not the mean of fold values: a fold's R² compares its errors with that fold's "
            "target spread only.")


def _pivot_sheet(ws, data: ReportData, grid: Pivot) -> None:
    """The main metric over two swept parameters: 'mean ± std' per cell, the best cell green; cells and
    the best one chosen on the selection metric (Pivot)."""
    title, chooser = metric_text(data.main_metric), metric_text(grid.chooser)
    ws.cell(row=1, column=1, value=f"{title}: mean ± std over folds, by {grid.row_parameter} (rows) and "
                                   f"{grid.column_parameter} (columns)").font = _font(bold=True)
    _header(ws.cell(row=2, column=1), f"{grid.row_parameter} \\ {grid.column_parameter}", VARYING_FILL)
    for j, value in enumerate(grid.columns, start=2):
        _header(ws.cell(row=2, column=j), repr(value), VARYING_FILL)
    for i, value in enumerate(grid.rows, start=3):
        _header(ws.cell(row=i, column=1), repr(value), VARYING_FILL)
    shared = False
    for (r, c), info in grid.cells.items():
        std = "" if info["std"] is None else f" ± {info['std']:.4f}"
        of = f", best {chooser} of {info['count']}" if info["count"] > 1 else ""
        text = f"{info['mean']:.4f}{std} (ID {info['ID']}{of})"
        shared |= info["count"] > 1
        target = ws.cell(row=r + 3, column=c + 2, value=text)
        target.alignment = _alignment(horizontal="center")
        chosen = "-" if info["chosen_by"] is None else f"{info['chosen_by']:.4f}"
        why = (f"the best {chooser} ({chosen}) of the {info['count']} instances sharing this cell"
               if info["count"] > 1 else f"{chooser} {chosen}")
        best = (r, c) == grid.best
        if best:
            target.fill, target.font = _solid(BEST_FILL), _font(bold=True)
            why += f"; green: the best {chooser} of the sheet (its {title} is optimistic: see the summary)"
        target.comment = Comment(f"ID {info['ID']}, {why}. Shown: its {title}, which did not choose it.",
                                 "xvalkit", width=300, height=90)
    ws.column_dimensions["A"].width = max(18, len(grid.row_parameter) + len(grid.column_parameter) + 6)
    for j in range(2, len(grid.columns) + 2):
        ws.column_dimensions[get_column_letter(j)].width = 30
    note = (f"Complete instances only; green: the cell whose instance has the best {chooser}, chosen on it and "
            f"not on {title} (choosing on test would be optimistic).")
    if shared:
        note += (f" Several instances share a cell where more than {grid.row_parameter} and "
                 f"{grid.column_parameter} vary: the cell shows the one with the best {chooser}.")
    wrapped_note(ws, len(grid.rows) + 4, note, _font(**NOTE_FONT), last_column=len(grid.columns) + 1)


def _table_sheet(ws, rows: list[dict[str, Any]], frozen: str, highlight: set[str] = frozenset()) -> None:
    """A plain table: one bold header row, number formats, widths, a filter, frozen panes."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    for j, name in enumerate(columns, start=1):
        _header(ws.cell(row=1, column=j), name, VARYING_FILL if name in highlight else HEADER_FILL)
        values = [cell(r.get(name)) for r in rows]
        for i, value in enumerate(values, start=2):
            c = ws.cell(row=i, column=j, value=value)
            if isinstance(value, float):
                c.number_format = NUMBER_FORMAT
        longest = max([len(name) + 2] + [len(str(v)) + 1 for v in values if v is not None])
        ws.column_dimensions[get_column_letter(j)].width = max(8, min(longest, 50))
    if columns:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{len(rows) + 1}"
    ws.freeze_panes = frozen


def _confusion_sheet(ws, data: ReportData) -> int:
    """Per instance, its test confusion matrix summed over the folds done: true classes down,
    predicted across, named as the dataset's manifest names them; the diagonal is green. Returns
    the last column its texts reach."""
    row, titles = 1, []  # the rows of the titles
    widest = 12
    for inst in data.instances:
        confusion = test_confusion(inst)
        if confusion is None:
            continue
        total, labels, folds = confusion
        comments = " / ".join(str(inst.params.get(k, "")) for k in ("comment_1", "comment_2"))
        titles.append(row)
        ws.cell(row=row, column=1, value=f"instance {inst.id}: {comments} (test, summed over {folds} folds)").font = _font(bold=True)
        _header(ws.cell(row=row + 1, column=1), "true \\ predicted", HEADER_FILL)
        ws.row_dimensions[row + 1].height = 30  # room for the wrapped corner title
        for j, label in enumerate(labels, start=2):
            _header(ws.cell(row=row + 1, column=j), label, HEADER_FILL)
        for i, label in enumerate(labels):
            _header(ws.cell(row=row + 2 + i, column=1), label, HEADER_FILL)
            for j, value in enumerate(total[i], start=2):
                c = ws.cell(row=row + 2 + i, column=j, value=int(value))
                c.alignment = _alignment(horizontal="center")
                if j - 2 == i:
                    c.fill = _solid(BEST_FILL)
        widest = max([widest] + [len(label) + 2 for label in labels])
        row += len(labels) + 3
    if row == 1:
        ws.cell(row=1, column=1, value="No test confusion matrix yet: no fold is done.")
        titles.append(1)
    for j in range(1, ws.max_column + 1):
        ws.column_dimensions[get_column_letter(j)].width = min(widest, 30)
    return max([ws.max_column] + [text_reach(ws, r) for r in titles])


def _plots_sheet(ws, plots: list[Path], note: str | None = None) -> tuple[int, int] | tuple[()]:
    """The plots one below the other, each under its file name, below `note`; a page break before a
    plot that would not fit on the printed page any more. Returns the last row and column the images
    reach (empty where there are none)."""
    if not plots:
        ws.cell(row=1, column=1, value="No plots yet: `xval report EXP` (or the end of `xval run`) draws them.")
        return ()
    row, page_used, widest = 1, 0, 0
    for line in (note or "").splitlines():  # a row each: the printed page is as wide as a plot
        ws.cell(row=row, column=1, value=line).font = _font(**NOTE_FONT)
        row = page_used = row + 1
    row, page_used = (row + 1, page_used + 1) if note else (row, page_used)
    for path in plots:
        image = Image(str(path))
        scale = min(1.0, PLOT_WIDTH / image.width)
        image.width, image.height = int(image.width * scale), int(image.height * scale)
        rows = 2 + int(image.height / ROW_PIXELS) + 1
        if page_used and page_used + rows > PAGE_ROWS:
            ws.row_breaks.append(Break(id=row - 1))
            page_used = 0
        ws.cell(row=row, column=1, value=path.name)
        ws.add_image(image, f"A{row + 1}")
        row, page_used, widest = row + rows, page_used + rows, max(widest, image.width)
    return row - 1, math.ceil(widest / COLUMN_PIXELS)
