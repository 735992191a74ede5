"""What the workbook and the plots look like: print setup, wrapped notes, learning curves after
early stopping, ranges of bands and whiskers, colour names, and no numerical warnings of ours."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from openpyxl import load_workbook
from openpyxl.utils import column_index_from_string, get_column_letter

from xvalkit.reporting.significance import SAME
from xvalkit.reporting.tables import InstanceInfo
from xvalkit.store import ExperimentStore

from .conftest import TINY, instance, write_experiment
from .test_report import crafted, save, xval  # noqa: F401 (crafted: the fixture of known answers)

OFFICE = shutil.which("soffice") or shutil.which("libreoffice")


def _print_area(ws) -> tuple[int, int]:
    """(last row, last column) of the sheet's print area."""
    area = re.fullmatch(r"'?[^!]+'?!\$A\$1:\$([A-Z]+)\$(\d+)", ws.print_area)
    assert area, ws.print_area
    return int(area.group(2)), column_index_from_string(area.group(1))


def _width(ws, first: int, last: int) -> float:
    return sum(ws.column_dimensions[get_column_letter(j)].width or 8.43 for j in range(first, last + 1))


def test_every_sheet_prints_landscape_at_a_readable_width_with_its_header_rows(crafted):
    """3 instances printed as 33 pages: portrait, at 100 %, each sheet cut into column strips. Now a
    sheet is fitted to as few pages across as keep it at about 57 % or more, naming its rows on each."""
    assert xval("report", crafted.folder).exit_code == 0
    wb = load_workbook(crafted.spreadsheet_path)
    assert wb.sheetnames == ["summary", "folds", "parameters", "confusion", "plots"]
    titles = {"summary": "$1:$2", "folds": "$1:$1", "parameters": "$1:$1", "confusion": None, "plots": None}
    for ws in wb.worksheets:
        setup = ws.page_setup
        assert setup.orientation == "landscape", ws.title
        assert ws.sheet_properties.pageSetUpPr.fitToPage, ws.title
        last_row, last_column = _print_area(ws)
        # 220 characters of width: a page at about 57 %; the plots are laid out to one page's width
        across = 1 if ws.title == "plots" else math.ceil(_width(ws, 1, last_column) / 220)
        assert (int(setup.fitToWidth), int(setup.fitToHeight)) == (max(1, across), 0), ws.title  # any pages down
        assert ws.print_title_rows == titles[ws.title], ws.title
        if ws.title in ("summary", "folds") and across > 1:
            assert ws.print_title_cols == {"summary": "$A:$C", "folds": "$A:$B"}[ws.title]
        assert last_row >= ws.max_row and last_column >= ws.max_column, ws.title
    # The confusion sheet's titles spill over the matrices' columns: the print area reaches their end.
    ws = wb["confusion"]
    title = ws.cell(row=1, column=1).value
    assert title.startswith("instance 1:") and _width(ws, 1, _print_area(ws)[1]) >= len(title)
    # The plots sheet's images reach below and beside its cells: the print area covers them.
    ws = wb["plots"]
    last_row, last_column = _print_area(ws)
    for image in ws._images:  # shown at the size of its anchor's extent (EMU: 9525 a pixel)
        shown_width, shown_height = image.anchor.ext.width / 9525, image.anchor.ext.height / 9525
        assert shown_width <= 900
        assert image.anchor._from.row + shown_height / 20 <= last_row and shown_width / 64 <= last_column


@pytest.mark.skipif(not OFFICE, reason="LibreOffice not installed")
def test_the_crafted_workbook_prints_on_a_page_per_sheet_and_two_plots_a_page(crafted, tmp_path):
    assert xval("report", crafted.folder).exit_code == 0
    # A profile of its own under tmp_path, so a LibreOffice already open does not swallow the conversion.
    proc = subprocess.run([OFFICE, f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}", "--headless",
                           "--convert-to", "pdf", "--outdir", str(tmp_path), str(crafted.spreadsheet_path)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    pdf = (tmp_path / crafted.spreadsheet_path.with_suffix(".pdf").name).read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    # summary, folds, parameters and confusion: their rows on one page down, as many across as
    # their fitToWidth; 6 plots, about two a page
    book = load_workbook(crafted.spreadsheet_path)
    across = sum(int(book[name].page_setup.fitToWidth) for name in ("summary", "folds", "parameters", "confusion"))
    assert across <= 8, {name: int(book[name].page_setup.fitToWidth) for name in book.sheetnames}  # 33 pages before
    assert across + 3 <= pages <= across + 4, pages


def test_the_summary_notes_and_the_selection_row_wrap_in_rows_tall_enough(crafted):
    """The notes were single lines of up to 900 characters; the selection row's text ran into the
    next cell and was cut off there."""
    assert xval("report", crafted.folder, "--no-plots").exit_code == 0
    ws = load_workbook(crafted.spreadsheet_path)["summary"]
    merged = {r.min_row: r for r in ws.merged_cells.ranges if r.min_row > 2 and r.min_col == 1}
    notes = [c for c in ws["A"] if isinstance(c.value, str) and len(c.value) > 80]
    assert len(notes) >= 5
    for c in notes:
        assert c.alignment.wrap_text, c.value[:40]
        span = merged[c.row]
        width = _width(ws, span.min_col, span.max_col)
        assert 80 <= width <= 140  # lines about as long as a screen shows without scrolling
        # Room for its lines at 15 points a line and 1.2 characters a unit of column width (the
        # width of a digit): LibreOffice's italic fits about 1.27, Calibri's about 1.3.
        lines = sum(-(-len(part) // int(1.2 * width)) for part in c.value.split("\n"))
        assert ws.row_dimensions[c.row].height >= 15 * lines, c.value[:40]
    selection = next(c.row for c in ws["A"] if c.value == "selection")
    assert ws.cell(row=selection, column=1).coordinate in ws.merged_cells  # its label spans ID and parameters
    for c in ws[selection][2:]:
        if isinstance(c.value, str) and len(c.value) > _width(ws, c.column, c.column):
            assert c.alignment.wrap_text, c.value
            lines = -(-len(c.value) // int(1.2 * _width(ws, c.column, c.column)))
            assert ws.row_dimensions[selection].height >= 15 * lines, c.value


# --- the plots ----------------------------------------------------------------------------------
def _lines(ax) -> dict[str, np.ndarray]:
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()}


def _band_top(ax) -> float:
    """The highest point of the axes' visible mean ± std bands."""
    return max(float(np.nanmax(c.get_paths()[0].vertices[:, 1])) for c in ax.collections if c.get_visible())


def test_learning_curves_after_early_stopping_average_every_fold(tmp_path, config_file):
    """A real run in which folds stop early (patience 0 and a high learning rate: here folds of 3, 2
    and 8 epochs): each epoch's mean is over all folds, a stopped fold's last value carried forward,
    and the caption says so. Before, an epoch averaged the folds still training: a curve jumped
    where the good folds had stopped."""
    from xvalkit.reporting import plots

    epochs = [p for p in TINY if not p.startswith(("num_epochs", "patience"))] + ["num_epochs=8", "patience=0"]
    path = write_experiment(tmp_path, {1: instance("stops early", "EXAMPLE_model", "cnn", "learning_rate=0.03")},
                            num_folds=3, global_parameters=epochs)
    assert xval("run", path, "--cpu", "--config", config_file).exit_code == 0
    store = ExperimentStore(path.parent / "results" / "demo" / "experiment_1", "demo", 1)
    inst = InstanceInfo(1, store.load_instance(1), None)
    histories = [inst.folds[f]["history"] for f in sorted(inst.folds)]
    lengths = sorted(len(h["loss"]) for h in histories)
    assert lengths[0] < lengths[-1], lengths  # some fold stopped before another: the case under test

    plt = plots._pyplot()
    fig = plots.instance_figure(plt, inst, "classification")
    try:
        for ax, name in zip(fig.axes[:2], ("loss", "accuracy")):
            for key, label in ((name, "training"), (f"val_{name}", "validation")):
                expected = [np.mean([h[key][min(e, len(h[key]) - 1)] for h in histories]) for e in range(lengths[-1])]
                np.testing.assert_allclose(_lines(ax)[label], expected, rtol=1e-12, err_msg=f"{label} {name}")
        caption = " ".join(t.get_text() for t in fig.texts)
        stops = [n for n in lengths if n < lengths[-1]]
        assert f"stopped early (after epoch{'s' if len(stops) > 1 else ''} {stops[0]}" in caption, caption
        assert "keeps its last value" in caption and "all 3 folds" in caption, caption
    finally:
        plt.close(fig)


def _crafted_instance(histories: list[dict[str, list[float]]]) -> InstanceInfo:
    folds = {f: {"history": h} for f, h in enumerate(histories, start=1)}
    params = {"comment_1": "c", "comment_2": "d"}
    return InstanceInfo(1, {"folds": folds, "num_folds": len(folds), "parameters": params}, None)


def test_accuracy_bands_stay_within_0_and_1():
    """Mean ± std of accuracies near 1 went above 1.0, a value no fold can have."""
    from xvalkit.reporting import plots

    high = {"loss": [0.5, 0.2], "accuracy": [0.9, 1.0], "val_loss": [0.6, 0.3], "val_accuracy": [0.9, 1.0]}
    low = {"loss": [0.9, 0.8], "accuracy": [0.5, 0.7], "val_loss": [0.9, 0.9], "val_accuracy": [0.4, 0.6]}
    plt = plots._pyplot()
    fig = plots.instance_figure(plt, _crafted_instance([high, high, low]), "classification")
    try:
        accuracy = fig.axes[1]
        assert _lines(accuracy)["training"][-1] == pytest.approx(0.9)  # mean 0.9, std 0.173: the band would reach 1.07
        assert _band_top(accuracy) == pytest.approx(1.0)
        assert _band_top(fig.axes[0]) > 0.8  # loss: unbounded, not clipped
    finally:
        plt.close(fig)


def test_every_bounded_metric_has_its_range_for_bands_and_whiskers():
    """A metric added to metrics.py (UA was) must not be drawn beyond its range: every metric but
    the loss lies in [0, 1], except R² (at most 1) and the errors (at least 0)."""
    import numpy as np

    from xvalkit.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
    from xvalkit.reporting import plots

    for metric in (*CLASSIFICATION_METRICS, *REGRESSION_METRICS):
        if metric == "loss":
            continue
        low, high = plots.clipped_band(metric, np.array([0.95, 0.05]), np.array([0.2, 0.2]))
        lowest, highest = {"r2": (-np.inf, 1.0), "mae": (0.0, np.inf), "rmse": (0.0, np.inf)}.get(metric, (0.0, 1.0))
        assert low.min() >= lowest and high.max() <= highest, metric


def test_the_bar_plot_names_its_colours_as_the_workbook_and_clips_its_whiskers(tmp_path):
    """The plot called 'olive' what the workbook calls yellow; whiskers went above 1.0; the x label
    read 'instance (folds done where not all)'."""
    from matplotlib.colors import to_rgb

    from xvalkit.report import read_tables
    from xvalkit.reporting import plots

    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    save(store, 1, [1.0, 1.0, 0.8])  # mean 0.933, std 0.115: the whisker would reach 1.049
    save(store, 2, [0.9, 0.9, 0.8])  # d = [0.1, 0.1, 0.0]: t = 1.51, p = 0.27: not distinguishable
    save(store, 3, [0.95, 0.95])  # 2 of 3 folds
    assert xval("report", store.folder, "--no-plots").exit_code == 0
    data, summary, _, _ = read_tables(store)
    assert [r["significance"] for r in summary][:2] == ["best", SAME]
    plt = plots._pyplot()
    fig = plots.metric_bar_figure(plt, data, summary)
    try:
        ax = fig.axes[0]
        title = ax.get_title()
        assert "yellow" in title and "olive" not in title, title
        r, g, b = to_rgb(ax.patches[1].get_facecolor())
        assert r > 0.8 and g > 0.7 and b < 0.3, (r, g, b)  # yellow, as the workbook's fill
        notes = " ".join(str(c.value) for c in load_workbook(store.spreadsheet_path)["summary"]["A"] if c.value)
        assert "Yellow" in notes and "olive" not in notes.lower()
        tops = [float(segment[:, 1].max()) for container in ax.containers if hasattr(container, "lines")
                for collection in container.lines[2] for segment in collection.get_segments()]
        assert max(tops) == pytest.approx(1.0)
        assert ax.get_xlabel() == "instance ID"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3 (2/3 folds)"]
    finally:
        plt.close(fig)


def test_curves_of_diverged_folds_draw_without_numerical_warnings():
    """A diverged fold's history is NaN from some epoch on; averaging epochs where no fold had a
    number raised numpy's 'Mean of empty slice' in our plots."""
    from xvalkit.reporting import plots

    nan = float("nan")
    diverged = {"loss": [2.0, nan, nan], "accuracy": [0.3, nan, nan], "val_loss": [2.1, nan, nan],
                "val_accuracy": [0.25, nan, nan]}
    plt = plots._pyplot()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        epochs, mean, std = plots.curve_stats([diverged["loss"], diverged["loss"][:2]])
        fig = plots.instance_figure(plt, _crafted_instance([diverged, diverged]), "classification")
        plt.close(fig)
    assert list(epochs) == [1, 2, 3] and mean[0] == 2.0 and np.isnan(mean[1:]).all() and list(std) == [0.0, 0.0, 0.0]


def test_the_pivot_sheet_prints_with_its_header_rows_and_a_wrapped_note(tmp_path):
    from xvalkit.metrics import summarize

    from .test_report import fold_record

    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    for run, (rate, dropout, acc) in enumerate([(0.01, 0.2, 0.8), (0.01, 0.5, 0.7), (0.001, 0.2, 0.6),
                                                 (0.001, 0.5, 0.9)], start=1):
        folds = {f: fold_record(f, acc + 0.01 * f) for f in (1, 2, 3)}
        parameters = {"comment_1": f"combination {run}", "comment_2": "swept", "architecture": "EXAMPLE_model",
                      "framework": "keras", "learning_rate": rate, "dropout": dropout, "seed": 0}
        store.save_instance(run, {"instance": run, "parameters": parameters, "task_type": "classification",
                                  "dataset": "demo", "num_folds": 3, "fold_plan": {}, "folds": folds,
                                  "swept": ["learning_rate", "dropout"], "summary": summarize(folds, "classification")})
    assert xval("report", store.folder, "--no-plots").exit_code == 0
    ws = load_workbook(store.spreadsheet_path)["pivot"]
    assert ws.page_setup.orientation == "landscape" and ws.print_title_rows == "$1:$2"
    assert _print_area(ws) == (ws.max_row, ws.max_column) == (6, 3)
    note = ws.cell(row=6, column=1)
    assert note.value.startswith("Complete instances only") and note.alignment.wrap_text
    assert note.coordinate in ws.merged_cells
