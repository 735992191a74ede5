"""`xval report`: the workbook read back, the significance test on folders with a known answer,
partial and crashed experiments, the csv tables, the plots, and one real run."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.metrics import summarize
from xvalkit.reporting.significance import BETTER, DIFFERENT, SAME, UNTESTED, corrected_t_test, mark_instances
from xvalkit.store import ExperimentStore

from .conftest import TINY, instance, write_experiment
from .test_run import summary_header as headers

runner = CliRunner()
ITEMS = [f"it{i}" for i in range(1, 7)]  # 6 items of 10 datapoints; fold F tests items 2F-1 and 2F
PER_ITEM = 10


def xval(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


N_TEST, N_TRAIN = 20, 80  # recorded sizes, as real runs record them: ratio 0.25


def fold_record(fold: int, test_acc: float, task_type: str = "classification", epochs: int = 4) -> dict:
    """A fabricated fold record: test 2 items, train the other 4, no validation. Its recorded sizes
    (20 test and 80 train datapoints: ratio 0.25) differ from the estimate from its items (20 / 40 =
    0.5), so the known answers below hold only if the recorded sizes are the ones used."""
    test = ITEMS[2 * fold - 2: 2 * fold]
    record = {"train_items": [i for i in ITEMS if i not in test], "val_items": [], "test_items": test,
              "n_test": N_TEST, "n_train": N_TRAIN, "n_val": 0,
              "seed": fold, "duration_s": 1.5, "device": "CPU", "epochs": epochs, "best_epoch": epochs - 1,
              "test_true": np.zeros(len(test) * PER_ITEM, dtype=int), "test_pred": np.zeros((20, 2))}
    if task_type == "classification":
        # Validation follows test (the best is chosen on validation accuracy by default).
        for s, base in (("train", 0.95), ("val", test_acc - 0.05), ("test", test_acc)):
            record.update({f"{s}_acc": base, f"{s}_f1": base - 0.01, f"{s}_precision": base - 0.02,
                           f"{s}_recall": base - 0.03, f"{s}_loss": 1.0 - base})
            record[f"{s}_confusion_matrix"] = np.array([[5, 5], [0, 10]])
        record["history"] = {"loss": [1.0, 0.8, 0.6, 0.5][:epochs], "accuracy": [0.5, 0.6, 0.7, 0.8][:epochs],
                             "val_loss": [1.1, 0.9, 0.8, 0.85][:epochs], "val_accuracy": [0.5, 0.55, 0.6, 0.6][:epochs]}
    else:
        record["test_pred"] = np.zeros(len(test) * PER_ITEM)
        for s, base in (("train", 0.5), ("val", test_acc + 0.05), ("test", test_acc)):
            record.update({f"{s}_rmse": base, f"{s}_loss": base ** 2, f"{s}_mae": base * 0.8, f"{s}_r2": 1 - base})
        record["history"] = {"loss": [1.0, 0.5][:epochs], "mae": [0.9, 0.4][:epochs],
                             "val_loss": [1.1, 0.6][:epochs], "val_mae": [1.0, 0.5][:epochs]}
    return record


def save(store: ExperimentStore, run: int, values: list[float], task_type: str = "classification",
         num_folds: int = 3, **params) -> None:
    folds = {f: fold_record(f, v, task_type) for f, v in enumerate(values, start=1)}
    parameters = {"comment_1": f"instance {run}", "comment_2": "crafted", "architecture": "EXAMPLE_model",
                  "framework": "keras", "learning_rate": 0.001, "seed": 0, **params}
    store.save_instance(run, {"instance": run, "parameters": parameters, "task_type": task_type, "dataset": "demo",
                              "num_folds": num_folds, "fold_plan": {}, "folds": folds,
                              "summary": summarize(folds, task_type)})


@pytest.fixture
def crafted(tmp_path) -> ExperimentStore:
    """Known answers, main metric test accuracy, recorded n_test/n_train = 20/80 = 0.25 on every fold.

    1: [0.8, 0.9, 1.0] the best (mean 0.9)
    2: [0.7, 0.7, 0.7] d = [0.1, 0.2, 0.3]: t = 0.2 / sqrt((1/3 + 1/4) 0.01) = 2.6186, 2 df, p = 0.12012: same
    3: [0.1, 0.1, 0.2] d = [0.7, 0.8, 0.8]: t = 17.39, p = 0.0033: different
    4: [0.95, 0.95] partial (2 of 3 folds): higher mean but does not compete for the best;
       d = [-0.15, -0.05]: t = -0.1 / sqrt((1/2 + 1/4) 0.005) = -1.63299, 1 df,
       p = 1 - 2 atan(1.63299) / pi = 0.34980: same
    5: failed before any fold (an error file only): untested
    6: failed after its first fold (a partial pickle and an error file): untested, 1 common fold
    """
    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    save(store, 1, [0.8, 0.9, 1.0])
    save(store, 2, [0.7, 0.7, 0.7], learning_rate=0.01)
    save(store, 3, [0.1, 0.1, 0.2], dropout=0.5)
    save(store, 4, [0.95, 0.95])
    store.save_error(5, "Traceback (most recent call last):\nRuntimeError: boom\n")
    save(store, 6, [0.99])
    store.save_error(6, "Traceback (most recent call last):\nMemoryError: out of memory\n")
    return store


def t2_p(t: float) -> float:
    """Two-sided p of Student's t with 2 degrees of freedom, in closed form."""
    return 1 - abs(t) / math.sqrt(t * t + 2)


def read_summary(store: ExperimentStore):
    from openpyxl import load_workbook

    wb = load_workbook(store.spreadsheet_path)
    ws = wb["summary"]
    names = headers(ws)
    rows = [r for r in ws.iter_rows(min_row=3, values_only=True) if isinstance(r[0], int)]
    return wb, ws, names, rows


def is_filled(ws, row: int, col: int, colour: str) -> bool:
    fill = ws.cell(row=row, column=col).fill
    return fill.fill_type == "solid" and fill.fgColor.rgb.endswith(colour)


# --- the test itself ----------------------------------------------------------------------------
def test_corrected_t_test_known_answers():
    r = corrected_t_test([0.8, 0.9, 1.0], [0.7, 0.7, 0.7], test_train_ratio=0.5)
    assert r.t == pytest.approx(0.2 / math.sqrt((1 / 3 + 0.5) * 0.01))
    assert r.t == pytest.approx(2.190890, abs=1e-6) and r.df == 2 and r.k == 3
    assert r.p == pytest.approx(t2_p(r.t), abs=1e-9)
    # The uncorrected paired t-test (ratio 0) is far more eager: t = 0.2 / sqrt(0.01 / 3) = 3.46.
    plain = corrected_t_test([0.8, 0.9, 1.0], [0.7, 0.7, 0.7], test_train_ratio=0.0)
    assert plain.t == pytest.approx(3.4641, abs=1e-4) and plain.p < r.p
    # Against scipy's paired t-test when uncorrected.
    from scipy import stats

    a, b = [0.61, 0.72, 0.66, 0.70, 0.64], [0.60, 0.65, 0.66, 0.62, 0.58]
    ref = stats.ttest_rel(a, b)
    got = corrected_t_test(a, b, 0.0)
    assert got.t == pytest.approx(ref.statistic) and got.p == pytest.approx(ref.pvalue)
    # Symmetric, and the correction scales t by sqrt(1/k / (1/k + ratio)).
    assert corrected_t_test(b, a, 0.25).t == pytest.approx(-corrected_t_test(a, b, 0.25).t)
    assert corrected_t_test(a, b, 0.25).t == pytest.approx(ref.statistic * math.sqrt(0.2 / 0.45))


def test_corrected_t_test_edge_cases():
    same = corrected_t_test([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 0.5)
    assert (same.t, same.p) == (0.0, 1.0)
    shifted = corrected_t_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7], 0.5)  # constant difference 0.1
    assert math.isnan(shifted.t) and math.isnan(shifted.p)  # untested: identical differences (issue 12)
    with pytest.raises(ValueError, match="at least 2"):
        corrected_t_test([0.5], [0.4], 0.5)
    with pytest.raises(ValueError, match="different lengths"):
        corrected_t_test([0.5, 0.6], [0.4], 0.5)


def test_marks_use_common_folds_with_the_same_test_items():
    folds = {1: {f: fold_record(f, v) for f, v in enumerate([0.8, 0.9, 1.0], 1)},
             2: {f: fold_record(f, v) for f, v in enumerate([0.7, 0.7, 0.7], 1)},
             3: {1: fold_record(1, 0.5)}}
    folds[2][3] = dict(folds[2][3], test_items=["x1", "x2"])  # fold 3 of 2: other items
    best, marks = mark_instances(folds, "test_acc", True, 0.05)
    assert best == 1
    assert marks[2].k == 2  # folds 1 and 2 only: d = [0.1, 0.2]
    # d = [0.1, 0.2]: t = 0.15 / sqrt((1/2 + 1/4) 0.005) = 2.44949, 1 df: p = 1 - 2 atan(t) / pi
    assert marks[2].ratio == pytest.approx(0.25)  # the recorded sizes, not the items' estimate 0.5
    assert marks[2].t == pytest.approx(2.449490, abs=1e-6)
    assert marks[2].p == pytest.approx(1 - 2 * math.atan(2.449490) / math.pi, abs=1e-6)
    assert marks[3].verdict == UNTESTED and "1 common fold" in marks[3].why
    # Lower is better (a loss): the best is then the smallest mean.
    best, _ = mark_instances(folds, "test_loss", False, 0.05, candidates=[1, 2])
    assert best == 1  # loss = 1 - acc: instance 1 has the lowest


# --- the workbook -------------------------------------------------------------------------------
def test_report_of_a_crafted_folder(crafted, tmp_path):
    result = xval("report", crafted.folder)
    assert result.exit_code == 0, result.output
    assert "demo_exp1_results.xlsx" in result.output
    wb, ws, names, rows = read_summary(crafted)
    assert wb.sheetnames == ["summary", "folds", "parameters", "confusion", "plots"]
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert names[:6] == ["ID", "parameters", "comment_1", "comment_2", "status", "folds done"]
    # The parameters that differ between instances, and only those, appear on the summary.
    assert "parameters that differ learning_rate" in names and "parameters that differ dropout" in names
    assert not any(n.endswith(" seed") or n.endswith(" architecture") for n in names)
    assert [c.value for c in ws[2]][names.index("WA (accuracy) train mean")] == "train mean"
    assert {str(r) for r in ws.merged_cells.ranges} >= {"A1:A2", "B1:B2"}
    assert ws.freeze_panes == "E3"
    col = {n: i for i, n in enumerate(names)}
    status = {r[0]: r[col["status"]] for r in rows}
    assert status == {1: "done", 2: "done", 3: "done", 4: "partial (2/3 folds)", 5: "failed",
                      6: "failed (1/3 folds)"}
    assert {r[0]: r[col["folds done"]] for r in rows} == {1: 3, 2: 3, 3: 3, 4: 2, 5: 0, 6: 1}
    assert {r[0]: r[col["error"]] for r in rows}[6] == "MemoryError: out of memory"
    assert rows[5][col["WA (accuracy) test std"]] is None  # no std from a single fold
    # Means are over the folds done; the partial instance's higher mean does not win.
    assert rows[3][col["WA (accuracy) test mean"]] == pytest.approx(0.95)
    # Test columns: green marks the instance chosen on validation accuracy (1), whatever their values.
    for title in ("WA (accuracy) test mean", "loss test mean", "WA (accuracy) test std", "F1 test mean", "F1 test pooled"):
        marked = [is_filled(ws, i + 3, col[title] + 1, "C6EFCE") for i in range(len(rows))]
        assert marked == [r[0] == 1 for r in rows], title
    for title, pick in (("WA (accuracy) validation std", min), ("F1 validation mean", max), ("loss train mean", min)):
        j = col[title]
        complete = [r[j] for r in rows if r[col["status"]] == "done"]
        best = pick(complete)
        marked = [is_filled(ws, i + 3, j + 1, "C6EFCE") for i in range(len(rows))]
        assert marked == [r[col["status"]] == "done" and r[j] == best for r in rows], title
    assert marked.count(True) == 3  # train loss is the same for every complete instance: ties all marked
    # Significance marks.
    sig_col, p_col = col["test WA (accuracy) vs best verdict"], col["test WA (accuracy) vs best p"]
    verdicts = {r[0]: r[sig_col] for r in rows}
    assert verdicts == {1: "best", 2: SAME, 3: DIFFERENT, 4: SAME, 5: UNTESTED, 6: UNTESTED}
    p = {r[0]: r[p_col] for r in rows}
    assert p[2] == pytest.approx(t2_p(0.2 / math.sqrt((1 / 3 + 0.25) * 0.01)), abs=1e-6)
    assert p[2] == pytest.approx(0.120117, abs=1e-6)
    assert p[3] == pytest.approx(t2_p(0.7666667 / math.sqrt((1 / 3 + 0.25) * 0.0033333)), abs=1e-4)
    assert p[4] == pytest.approx(1 - 2 * math.atan(0.1 / math.sqrt(0.75 * 0.005)) / math.pi, abs=1e-9)
    assert p[4] == pytest.approx(0.349802, abs=1e-6)
    mean_col = col["WA (accuracy) test mean"]
    assert [is_filled(ws, i + 3, mean_col + 1, "FFEB9C") for i in range(6)] == [False, True, False, True, False, False]
    notes = " ".join(str(c.value) for c in ws["A"] if isinstance(c.value, str))
    assert "Nadeau and Bengio (2003)" in notes and "level 0.05" in notes and "here 0.25 to 0.25" in notes
    # The link to the instance's parameters.
    link = ws.cell(row=4, column=2).hyperlink
    assert link is not None and link.location == "'parameters'!A3"
    params = wb["parameters"]
    assert params["A3"].value == 2 and [c.value for c in params[1]][:3] == ["ID", "comment_1", "comment_2"]
    folds = wb["folds"]
    fold_header = [c.value for c in folds[1]]
    assert folds.max_row == 1 + 3 + 3 + 3 + 2 + 1
    assert {"ID", "fold", "test_acc", "val_f1", "train_loss", "test_items"} <= set(fold_header)
    assert folds.cell(row=2, column=fold_header.index("test_items") + 1).value == "it1 it2"


def test_an_instance_reads_only_the_fold_files_its_pickle_lacks(crafted):
    """A report reads an instance's pickle and only the fold files finished since it was rebuilt
    (a killed run): the others' records are in the pickle (reading them all was a second copy of a
    1000-instance folder's records, 40 % of its report's reading)."""
    from xvalkit.reporting.tables import InstanceInfo

    (crafted.results_dir / "folds").mkdir(parents=True, exist_ok=True)
    crafted.fold_path(1, 1).write_bytes(b"not a pickle: never read")  # fold 1 is in instance 1's pickle
    crafted.save_fold(4, 3, {"comment_1": "instance 4"}, "classification", 3, fold_record(3, 0.5))
    assert list(crafted.load_instance(1)["folds"]) == [1, 2, 3]
    four = InstanceInfo(4, crafted.load_instance(4), None)
    assert list(four.folds) == [1, 2, 3] and four.status == "done"
    assert four.results["summary"]["test"]["mean_acc"] == pytest.approx((0.95 + 0.95 + 0.5) / 3)


def test_csv_tables_and_load_results(crafted):
    import pandas as pd

    import xvalkit

    assert xval("report", crafted.folder, "--no-plots").exit_code == 0
    results = pd.read_csv(crafted.folder / "results.csv")
    summary = pd.read_csv(crafted.folder / "summary.csv")
    assert len(results) == 12 and len(summary) == 6
    assert {"ID", "fold", "test_acc", "param_learning_rate", "status"} <= set(results.columns)
    assert {"ID", "status", "folds_done", "test_mean_acc", "test_std_acc", "significance", "p_value",
            "param_seed"} <= set(summary.columns)
    loaded = xvalkit.load_results(crafted.folder)
    folds, table = loaded
    assert list(folds["ID"]) == list(results["ID"]) and list(table["ID"]) == [1, 2, 3, 4, 5, 6]
    assert table.set_index("ID").loc[2, "significance"] == SAME
    assert folds.loc[folds["ID"] == 1, "test_acc"].tolist() == [0.8, 0.9, 1.0]
    assert not (crafted.folder / "plots").exists()


def test_ua_wa_and_pooled_metrics_in_the_csv_files_and_the_workbook(crafted):
    """Issue 30: UA and WA under those names beside macro F1, and F1 pooled from the summed confusion
    matrix beside the mean of fold F1s. The crafted folds were recorded without UA (as before it
    existed): their test UA comes from the stored predictions, the others are missing, nothing crashes."""
    import pandas as pd

    assert xval("report", crafted.folder, "--no-plots").exit_code == 0
    results = pd.read_csv(crafted.folder / "results.csv")
    summary = pd.read_csv(crafted.folder / "summary.csv").set_index("ID")
    assert {"test_acc", "test_ua", "test_f1"} <= set(results.columns)
    assert {"test_mean_ua", "test_std_ua", "test_pooled_f1"} <= set(summary.columns)
    # Stored predictions: every test datapoint of class 0 predicted 0, so UA = recall of class 0 = 1.
    assert (results["test_ua"] == 1.0).all() and results["val_ua"].isna().all()
    # Each fold's matrix [[5, 5], [0, 10]], summed over 3 folds [[15, 15], [0, 30]]:
    # F1 = (2 x 15 / (30 + 15) + 2 x 30 / (30 + 45)) / 2 = (2/3 + 4/5) / 2.
    assert summary.loc[1, "test_pooled_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert summary.loc[1, "test_mean_f1"] == pytest.approx(0.89)  # the mean of fold F1s, beside it
    _, ws, names, rows = read_summary(crafted)
    col = {n: i for i, n in enumerate(names)}
    assert {"WA (accuracy) test mean", "UA (unweighted accuracy) test mean", "F1 test pooled"} <= set(col)
    first = rows[0]
    assert first[col["UA (unweighted accuracy) test mean"]] == 1.0
    assert first[col["UA (unweighted accuracy) validation mean"]] is None  # not recorded: empty, not NaN
    assert first[col["F1 test pooled"]] == pytest.approx((2 / 3 + 4 / 5) / 2)
    notes = " ".join(str(c.value) for c in ws["A"] if isinstance(c.value, str))
    assert "balanced_accuracy_score" in notes and "Forman and Scholz 2010" in notes


# --- validation and test disagree (issue 34): the report's own choices ---------------------------
def save_disagreeing(store: ExperimentStore, run: int, test: list[float], val: list[float], swept=(), **params) -> None:
    """An instance whose validation accuracy does not follow its test accuracy."""
    folds = {}
    for f, (t, v) in enumerate(zip(test, val), start=1):
        record = fold_record(f, t)
        record.update(val_acc=v, val_f1=v, val_ua=v, val_loss=1 - v)
        folds[f] = record
    parameters = {"comment_1": f"instance {run}", "comment_2": "crafted", "architecture": "EXAMPLE_model",
                  "framework": "keras", "seed": 0, **params}
    store.save_instance(run, {"instance": run, "parameters": parameters, "task_type": "classification",
                              "dataset": "demo", "num_folds": len(test), "fold_plan": {}, "folds": folds,
                              "summary": summarize(folds, "classification"), "swept": list(swept)})


@pytest.fixture
def disagreeing(tmp_path) -> ExperimentStore:
    """1 is the best on validation, 2 on test; 1 beats 3 on test, 2 beats 1.

    1: test [0.60, 0.70, 0.65] val 0.90 in every fold
    2: test [0.90, 0.95, 0.92] val 0.50
    3: test [0.50, 0.52, 0.58] val [0.60, 0.95, 0.60]: the best on validation in fold 2 only
    """
    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    save_disagreeing(store, 1, [0.60, 0.70, 0.65], [0.90, 0.90, 0.90], learning_rate=0.1)
    save_disagreeing(store, 2, [0.90, 0.95, 0.92], [0.50, 0.50, 0.50], learning_rate=0.01)
    save_disagreeing(store, 3, [0.50, 0.52, 0.58], [0.60, 0.95, 0.60], learning_rate=0.001)
    return store


def test_the_report_chooses_the_best_on_validation_not_test(disagreeing):
    assert xval("report", disagreeing.folder, "--no-plots").exit_code == 0
    _, ws, names, rows = read_summary(disagreeing)
    col = {n: i for i, n in enumerate(names)}
    verdicts = {r[0]: r[col["test WA (accuracy) vs best verdict"]] for r in rows}
    assert verdicts[1] == "best" and verdicts[2] != "best"
    # The test columns' green marks instance 1 (chosen on validation), not 2 (the best test mean).
    j = col["WA (accuracy) test mean"]
    assert [is_filled(ws, i + 3, j + 1, "C6EFCE") for i in range(3)] == [True, False, False]
    comment = ws.cell(row=3, column=j + 1).comment
    assert comment is not None and "Optimistic" in comment.text
    # The selection row, the headline: per fold the validation-best (1, 3, 1), their test values
    # 0.60, 0.52, 0.65.
    selection = next(r for r in ws.iter_rows(values_only=True) if r[0] == "selection")
    assert selection[col["comment_2"]] == "fold:instance 1:1, 2:3, 3:1"
    assert selection[j] == pytest.approx((0.60 + 0.52 + 0.65) / 3)
    assert selection[col["WA (accuracy) test std"]] == pytest.approx(np.std([0.60, 0.52, 0.65], ddof=1))
    notes = [str(c.value) for c in ws["A"] if isinstance(c.value, str) and c.value.startswith("Headline")]
    assert notes and f"{(0.60 + 0.52 + 0.65) / 3:.4f}" in notes[0]


def test_the_posterior_columns_point_the_right_way(disagreeing):
    from scipy import stats

    assert xval("report", disagreeing.folder, "--no-plots").exit_code == 0
    _, _, names, rows = read_summary(disagreeing)
    col = {n: i for i, n in enumerate(names)}
    by_id = {r[0]: r for r in rows}
    best = [0.60, 0.70, 0.65]
    for other, values in ((2, [0.90, 0.95, 0.92]), (3, [0.50, 0.52, 0.58])):
        # The posterior of mean(other - best): Student's t, 2 df, scale sqrt((1/3 + 20/80) var(d)); rope 0.01.
        d = np.subtract(values, best)
        scale = math.sqrt((1 / 3 + 0.25) * np.var(d, ddof=1))
        best_better = stats.t.cdf(-0.01, 2, loc=d.mean(), scale=scale)
        other_better = stats.t.sf(0.01, 2, loc=d.mean(), scale=scale)
        row = by_id[other]
        assert row[col["test WA (accuracy) vs best P(best better)"]] == pytest.approx(best_better, abs=1e-9)
        assert row[col["test WA (accuracy) vs best P(this better)"]] == pytest.approx(other_better, abs=1e-9)
    # 2 is far better on test than the best, 3 far worse: the probabilities say so, not the reverse.
    assert by_id[2][col["test WA (accuracy) vs best P(this better)"]] > 0.9
    assert by_id[3][col["test WA (accuracy) vs best P(best better)"]] > 0.9


def test_the_pivot_chooses_its_cells_and_its_best_cell_on_validation(tmp_path):
    """learning_rate x dropout, a third swept parameter (seed) sharing the cells. In the cell
    (0.1, 0.0) the test-best (10101) has the worse validation: the cell shows 10102's test value. The
    cell (0.01, 0.5) has the best test values of the sheet but the worst validation; the green cell is
    (0.01, 0.0), whose instance has the best validation."""
    from openpyxl import load_workbook

    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    swept = ("learning_rate", "dropout", "seed")
    cells = {  # ID: (learning_rate, dropout, seed, test, val)
        1010101: (0.1, 0.0, 1, 0.95, 0.50), 1010102: (0.1, 0.0, 2, 0.55, 0.70),
        1010201: (0.1, 0.5, 1, 0.60, 0.60),
        1020101: (0.01, 0.0, 1, 0.58, 0.90),
        1020201: (0.01, 0.5, 1, 0.99, 0.40),
    }
    for run, (lr, dropout, seed, test, val) in cells.items():
        save_disagreeing(store, run, [test - 0.02, test, test + 0.02], [val] * 3, swept=swept,
                         learning_rate=lr, dropout=dropout, seed=seed)
    assert xval("report", store.folder).exit_code == 0
    ws = load_workbook(store.spreadsheet_path)["pivot"]
    text = {(i, j): ws.cell(row=i, column=j).value for i in (3, 4) for j in (2, 3)}
    assert [ws.cell(row=i, column=1).value for i in (3, 4)] == ["0.1", "0.01"]
    assert [ws.cell(row=2, column=j).value for j in (2, 3)] == ["0.0", "0.5"]
    assert text[(3, 2)].startswith("0.5500 ± 0.0200 (ID 1010102, best validation WA (accuracy) of 2)")
    assert text[(4, 3)].startswith("0.9900")
    green = [key for key in text if is_filled(ws, *key, "C6EFCE")]
    assert green == [(4, 2)] and text[(4, 2)].startswith("0.5800 ± 0.0200 (ID 1020101")
    assert "validation WA (accuracy) 0.9000" in ws.cell(row=4, column=2).comment.text
    assert (store.folder / "plots" / "demo_exp1_pivot.png").is_file()


def test_importing_xvalkit_stays_light():
    code = "import sys, xvalkit; assert 'pandas' not in sys.modules; print(callable(xvalkit.load_results))"
    proc = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr


def test_public_api_is_listed_for_completion_and_help():
    """dir(xvalkit) drives tab completion and help(xvalkit): the lazily imported functions are there,
    and listing them imports nothing heavy."""
    code = ("import sys, pydoc, xvalkit; names = dir(xvalkit); assert 'pandas' not in sys.modules; "
            "print(sorted(set(xvalkit.__all__) & set(names))); print(pydoc.render_doc(xvalkit, renderer=pydoc.plaintext))")
    proc = subprocess.run([__import__("sys").executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    listed, doc = proc.stdout.split("\n", 1)
    assert listed == "['load_model', 'load_results', 'predict']"
    functions = doc.split("FUNCTIONS", 1)[1]
    for signature in ("load_model(path", "predict(path", "load_results(target"):
        assert signature in functions, functions


def test_regression_lowest_rmse_is_best(tmp_path):
    store = ExperimentStore(tmp_path / "exp" / "demo_pitch" / "experiment_2", "demo_pitch", 2)
    save(store, 1, [0.30, 0.40], "regression", num_folds=2)
    save(store, 2, [0.20, 0.25], "regression", num_folds=2)
    assert xval("report", store.folder, "--no-plots").exit_code == 0
    _, ws, names, rows = read_summary(store)
    col = {n: i for i, n in enumerate(names)}
    for title, best_id in (("RMSE test mean", 2), ("R² test mean", 2), ("MAE test std", 2)):
        j = col[title]
        assert [is_filled(ws, i + 3, j + 1, "C6EFCE") for i in range(2)] == [best_id == 1, best_id == 2], title
    assert {r[0]: r[col["test RMSE vs best verdict"]] for r in rows}[2] == "best"


def test_plots_are_drawn_and_embedded(crafted):
    from openpyxl import load_workbook

    assert xval("report", crafted.folder).exit_code == 0
    plots = sorted(p.name for p in (crafted.folder / "plots").iterdir())
    assert plots == ["demo_exp1_run1.png", "demo_exp1_run2.png", "demo_exp1_run3.png", "demo_exp1_run4.png",
                     "demo_exp1_run6.png", "demo_exp1_test_acc.png"]
    assert all((crafted.folder / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    assert len(load_workbook(crafted.spreadsheet_path)["plots"]._images) == 6
    assert not list(crafted.folder.rglob(".*.tmp*"))


def _instance(run: int, epochs: int, task_type: str = "classification", validation: bool = True, classes: int = 2):
    """An instance of 3 folds with ragged histories (early stopping) and, classifying, a confusion matrix."""
    from xvalkit.reporting.tables import InstanceInfo

    rng = np.random.default_rng(run)
    metric = "accuracy" if task_type == "classification" else "mae"
    folds = {}
    for fold in (1, 2, 3):
        length = max(1, epochs - fold + 1)  # epochs 0: folds recorded without a history
        names = ["loss", metric] + (["val_loss", f"val_{metric}"] if validation else [])
        record = {"history": {name: list(rng.random(length) + run) for name in names} if epochs else {}}
        if task_type == "classification":
            record.update(test_confusion_matrix=rng.integers(0, 30, (classes, classes)),
                          classes=[f"class{k}" for k in range(classes)])
        folds[fold] = record
    return InstanceInfo(run, {"folds": folds, "num_folds": 3, "parameters": {"comment_1": "c", "comment_2": str(run)}},
                        None)


def test_an_instance_plot_drawn_into_a_reused_figure_equals_one_drawn_anew():
    """Instance plots update one figure per layout in place; nothing of the instance drawn before
    (limits, markers, legend entries, matrix numbers, title) may show in the next one."""
    import io

    from matplotlib.image import imread

    from xvalkit.reporting import plots

    plt = plots._pyplot()
    instances = [(_instance(1, 6), "classification"), (_instance(2, 1), "classification"),
                 (_instance(3, 4, validation=False), "classification"), (_instance(4, 9, classes=3), "classification"),
                 (_instance(5, 0), "classification"), (_instance(8, 3), "classification"),  # 5: no curves
                 (_instance(6, 5, "regression"), "regression"),
                 (_instance(7, 1, "regression", validation=False), "regression")]

    def pixels(fig):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=40)
        return imread(io.BytesIO(buffer.getvalue()))

    reused = {task: plots.InstancePlotter(plt, task) for task in ("classification", "regression")}
    try:
        for inst, task in instances:
            fresh = plots.instance_figure(plt, inst, task)
            expected = pixels(fresh)
            plt.close(fresh)
            assert np.array_equal(pixels(reused[task].figure(inst)), expected), f"instance {inst.id}"
    finally:
        for plotter in reused.values():
            plotter.close()


def test_axis_labels_placed_once_per_layout_land_where_matplotlib_places_them(monkeypatch):
    """InstancePlotter places the epoch / predicted / true labels once per layout instead of
    at every draw: the pixels equal matplotlib's own placement, for every kind of instance."""
    import io

    from matplotlib.image import imread

    from xvalkit.reporting import plots

    plt = plots._pyplot()
    instances = [(_instance(1, 6), "classification"), (_instance(2, 1), "classification"),
                 (_instance(3, 40, validation=False), "classification"),
                 (_instance(4, 9, classes=3), "classification"), (_instance(5, 0), "classification"),
                 (_instance(6, 5, "regression"), "regression"), (_instance(7, 120, "regression"), "regression")]

    def pixels(inst, task):
        plotter = plots.InstancePlotter(plt, task)
        try:
            buffer = io.BytesIO()
            plotter.figure(inst).savefig(buffer, format="png", dpi=plots.DPI)
            return imread(io.BytesIO(buffer.getvalue()))
        finally:
            plotter.close()

    placed_once = [pixels(inst, task) for inst, task in instances]
    monkeypatch.setattr(plots.InstancePlotter, "_fix_label_places", staticmethod(lambda *args: None))
    for (inst, task), image in zip(instances, placed_once):
        assert np.array_equal(image, pixels(inst, task)), f"instance {inst.id}"


def test_the_report_child_yields_to_training(crafted):
    """The background report runs niced in the runner's session: a session of its own would be
    scheduled as a peer of the runner (Linux's autogroup), its nice ignored against training; in a
    process group of its own, so that Ctrl-C at the terminal is the runner's to handle."""
    import os

    from xvalkit.reporting.background import ReportRefresher

    refresher = ReportRefresher(crafted, interval=0)
    try:
        refresher.request()
        _wait(lambda: refresher._child is not None, "the report child's start")
        child = refresher._child.pid
        assert os.getsid(child) == os.getsid(0) and os.getpgid(child) != os.getpgid(0)
        _wait(lambda: os.getpriority(os.PRIO_PROCESS, child) >= 10, "the report child's nice")  # set once started
    finally:
        refresher.close(final=True)
    assert crafted.spreadsheet_path.is_file()


def test_a_kept_plot_is_one_whose_png_is_whole_and_signed_with_its_instance(crafted):
    """An instance plot carries its signature in the PNG: `xval report` keeps an unchanged plot,
    and redraws one left truncated or empty (a power cut) or drawn for other folds."""
    from matplotlib.image import imread

    assert xval("report", crafted.folder).exit_code == 0
    folder = crafted.folder / "plots"
    whole = (folder / "demo_exp1_run2.png").read_bytes()
    (folder / "demo_exp1_run2.png").write_bytes(whole[: len(whole) // 2])  # truncated
    (folder / "demo_exp1_run3.png").write_bytes(b"")  # empty
    before = (folder / "demo_exp1_run4.png").read_bytes()
    save(crafted, 4, [0.95, 0.95, 0.5])  # its third fold came in: another plot
    kept = (folder / "demo_exp1_run1.png").stat().st_ino  # an atomic rewrite is a new inode, whatever the clock
    assert xval("report", crafted.folder).exit_code == 0
    assert (folder / "demo_exp1_run1.png").stat().st_ino == kept
    assert (folder / "demo_exp1_run2.png").read_bytes() == whole
    assert imread(folder / "demo_exp1_run3.png").shape == imread(folder / "demo_exp1_run1.png").shape
    assert (folder / "demo_exp1_run4.png").read_bytes() != before

    from xvalkit.reporting import plots
    from xvalkit.reporting.tables import InstanceInfo

    for run in (1, 2, 3, 4):
        expected = plots.signature(InstanceInfo(run, crafted.load_instance(run), None))
        assert plots.drawn_signature(folder / f"demo_exp1_run{run}.png") == expected, run
    (folder / "demo_exp1_run2.png").write_bytes(whole[:-1])
    assert plots.drawn_signature(folder / "demo_exp1_run2.png") is None


def test_a_report_is_written_again_only_when_something_it_shows_or_wrote_changed(crafted, tmp_path):
    """`xval report` of an unchanged folder keeps the report as it is (a thousand instances' took 15 s
    to write again, identical); any change to its results, settings, flags or files rebuilds it."""
    import os

    from openpyxl import load_workbook

    def report(*extra):
        result = xval("report", crafted.folder, *extra)
        assert result.exit_code == 0, result.output
        return "up to date" not in result.output

    def written() -> int:  # atomic writes give a rewritten workbook a new inode
        return crafted.spreadsheet_path.stat().st_ino

    assert report()
    first = written()
    assert not report() and written() == first
    assert not xval("report", crafted.folder, "--no-plots").output.count("up to date")  # other flags
    assert report() and not report()
    # A new fold: rebuilt, and the workbook shows it.
    crafted.save_fold(4, 3, {"comment_1": "instance 4"}, "classification", 3, fold_record(3, 0.5))
    assert report()
    _, ws, names, rows = read_summary(crafted)
    assert {r[0]: r[names.index("folds done")] for r in rows}[4] == 3
    assert not report()
    # A deleted plot, a workbook saved by another program, a touched csv: rebuilt, the files back.
    (crafted.folder / "plots" / "demo_exp1_run2.png").unlink()
    assert report() and (crafted.folder / "plots" / "demo_exp1_run2.png").is_file()
    load_workbook(crafted.spreadsheet_path).save(crafted.spreadsheet_path)
    assert report()
    os.utime(crafted.folder / "summary.csv", ns=(0, 0))
    assert report() and not report()
    # Other [report] settings: rebuilt with them.
    config = tmp_path / "r.ini"
    config.write_text("[report]\nsignificance_level = 0.3\n")
    assert report("--config", config)
    assert "level 0.3" in " ".join(str(c.value) for c in read_summary(crafted)[1]["A"] if isinstance(c.value, str))
    assert not report("--config", config) and report()
    # A removed error file, --force, a missing or broken state: rebuilt.
    crafted.clear_error(5)
    assert report() and not report()
    assert report("--force")
    (crafted.results_dir / "report_state.json").write_text("{broken")
    assert report() and not report()


def test_the_report_state_follows_every_source_file_of_xvalkit(tmp_path):
    """A report built by other code is built again: the code stamp follows every source file of
    the package (an editable install changes without a new version)."""
    from pathlib import Path

    import xvalkit
    from xvalkit.reporting import freshness

    assert freshness.code_stamp() == freshness.tree_stamp(Path(xvalkit.__file__).resolve().parent)
    tree = tmp_path / "package"
    (tree / "reporting").mkdir(parents=True)
    (tree / "report.py").write_text("A = 1\n")
    (tree / "reporting" / "plots.py").write_text("B = 2\n")
    stamps = [freshness.tree_stamp(tree)]
    assert freshness.tree_stamp(tree) == stamps[0]
    (tree / "reporting" / "plots.py").write_text("B = 3\n")  # edited in place: same size, new mtime
    stamps.append(freshness.tree_stamp(tree))
    (tree / "reporting" / "tables.py").write_text("")  # a new module
    stamps.append(freshness.tree_stamp(tree))
    assert len(set(stamps)) == 3


def _wait(condition, what: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_drawer_draws_finished_instances_at_idle_priority_and_the_report_keeps_them(crafted):
    """During a run, PlotDrawer draws each finished instance's plot in a child that runs only on
    CPU time nothing else wants (SCHED_IDLE); the final report then keeps those plots."""
    import os

    from xvalkit import report
    from xvalkit.reporting import plots
    from xvalkit.reporting.drawer import PlotDrawer

    drawer = PlotDrawer(crafted, "classification")
    try:
        child = drawer._child.pid
        _wait(lambda: os.sched_getscheduler(child) == os.SCHED_IDLE, "the drawer at idle priority")
        for run in (1, 2, 6):
            drawer.add(run, crafted.load_instance(run))
        paths = [crafted.folder / "plots" / f"demo_exp1_run{run}.png" for run in (1, 2, 6)]
        _wait(lambda: all(plots.drawn_signature(p) for p in paths), "the drawer's plots")
    finally:
        drawer.close()
    assert drawer._child.returncode == 0  # it left at the end of its input
    drawn = {p: p.stat().st_ino for p in paths}  # an atomic rewrite is a new inode, whatever the clock
    report.refresh(crafted, plots=True)
    assert {p: p.stat().st_ino for p in paths} == drawn
    assert (crafted.folder / "plots" / "demo_exp1_run3.png").is_file()  # the report drew the rest
    assert not list(crafted.folder.rglob(".*.tmp*"))


def test_a_refresh_beside_a_drawer_leaves_the_instance_plots_to_it(crafted):
    """With a drawer, the refreshes during a run draw only the summary plots (a refresh that drew a
    thousand instance plots took a minute of both cores) and show the instance plots drawn so far."""
    from openpyxl import load_workbook

    from xvalkit import report
    from xvalkit.reporting import plots
    from xvalkit.reporting.tables import InstanceInfo

    files = report.refresh(crafted, plots=True, instance_plots=False)
    assert [p.name for p in files.plots] == ["demo_exp1_test_acc.png"]
    assert sorted(p.name for p in (crafted.folder / "plots").iterdir()) == ["demo_exp1_test_acc.png"]
    plots._draw_instances([InstanceInfo(2, crafted.load_instance(2), None)], "classification",
                          crafted.folder / "plots", crafted.prefix)  # as the drawer does
    files = report.refresh(crafted, plots=True, instance_plots=False)
    assert [p.name for p in files.plots] == ["demo_exp1_test_acc.png", "demo_exp1_run2.png"]
    assert len(load_workbook(crafted.spreadsheet_path)["plots"]._images) == 2


def test_closing_the_drawer_drops_its_backlog(crafted):
    """The run's end does not wait for the drawer's backlog (the final report draws it on every
    core): closing waits for the plot in hand only, or, with none in hand, stops the child at once."""
    import signal

    from xvalkit.reporting.drawer import PlotDrawer

    drawer = PlotDrawer(crafted, "classification")  # closed while it still imports: stopped at once
    drawer.close()
    assert drawer._child.returncode == -signal.SIGKILL  # killed, not waited for through its imports
    drawer = PlotDrawer(crafted, "classification")
    for _ in range(200):
        drawer.add(1, crafted.load_instance(1))
        drawer.add(2, crafted.load_instance(2))
    _wait(lambda: (crafted.folder / "plots" / "demo_exp1_run1.png").is_file(), "the first plot")
    drawer.close()
    assert drawer._child.returncode == 0 and not drawer._pending
    assert not list(crafted.folder.rglob(".*.tmp*"))


def test_a_run_hands_each_finished_instance_to_the_drawer(tmp_path, config_file, monkeypatch):
    """A run of many instances hands each one to the PlotDrawer as it finishes; whoever draws a
    plot, the drawer or the final report, every plot ends up drawn for its instance's folds."""
    from xvalkit import runner
    from xvalkit.reporting import plots
    from xvalkit.reporting.drawer import PlotDrawer
    from xvalkit.reporting.tables import InstanceInfo

    handed = []

    class Observed(PlotDrawer):
        def add(self, run, results):
            handed.append(run)
            super().add(run, results)

    monkeypatch.setattr(runner, "EAGER_FROM", 3)
    monkeypatch.setattr(runner, "PlotDrawer", Observed)
    path = write_experiment(tmp_path, {1: ['architecture="MLP_model"', 'reshaping_type="none"']}, num_folds=2,
                            global_parameters=["num_epochs=2", 'framework="torch"', "tensorboard=False",
                                               "batch_size=64"],
                            extra="sweep = {1: ['learning_rate=[0.01, 0.001, 0.1]']}\n")
    result = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    store = ExperimentStore(path.parent / "results" / "demo" / "experiment_1", "demo", 1)
    assert sorted(handed) == store.instance_ids() == [101, 102, 103]
    for run in handed:
        expected = plots.signature(InstanceInfo(run, store.load_instance(run), None))
        assert plots.drawn_signature(store.folder / "plots" / f"demo_exp1_run{run}.png") == expected
    assert not list(store.folder.rglob(".*.tmp*"))


def test_curve_stats_with_early_stopping():
    from xvalkit.reporting.plots import curve_stats

    # The second fold stopped after epoch 2: its last value, 4.0, stands in for epoch 3.
    epochs, mean, std = curve_stats([[1.0, 2.0, 3.0], [3.0, 4.0]])
    assert list(epochs) == [1, 2, 3] and list(mean) == [2.0, 3.0, 3.5]
    assert std[0] == pytest.approx(math.sqrt(2)) and std[2] == pytest.approx(math.sqrt(0.5))
    epochs, mean, std = curve_stats([[1.0, 2.0]])
    assert list(mean) == [1.0, 2.0] and list(std) == [0.0, 0.0]  # one fold: no spread


# --- resolving EXP ------------------------------------------------------------------------------
def test_report_resolves_module_name_and_folder(tmp_path, monkeypatch):
    path = write_experiment(tmp_path / "experiments", {1: instance("a")}, name="exp7")
    folder = path.parent / "results" / "demo" / "experiment_1"
    store = ExperimentStore(folder, "demo", 1)
    save(store, 1, [0.5, 0.6, 0.7])
    monkeypatch.chdir(tmp_path)
    for target in ("exp7", "experiments/exp7.py", str(folder)):
        store.spreadsheet_path.unlink(missing_ok=True)
        result = xval("report", target, "--no-plots")
        assert result.exit_code == 0, (target, result.output)
        assert store.spreadsheet_path.is_file()
    for target, message in (("nope", "(looked for nope, nope.py, experiments/nope.py); nor an experiment folder"),
                            (str(tmp_path), "no results/ in it"),
                            ("experiments/nope.py", "experiments/nope.py: no such experiment file; nor")):  # not .../nope.py.py
        result = xval("report", target)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) <= 2


def test_config_sets_the_level_and_main_metric(crafted, tmp_path):
    config = tmp_path / "r.ini"
    config.write_text('[report]\nsignificance_level = 0.3\nmain_metric_classification = "test_f1"\n')
    assert xval("report", crafted.folder, "--no-plots", "--config", config).exit_code == 0
    _, ws, names, rows = read_summary(crafted)
    verdicts = {r[0]: r[names.index("test F1 vs best verdict")] for r in rows}
    # f1 = acc - 0.01: the same raw p-values 0.120117 (2), 0.00328 (3), 0.349802 (4); Holm over the
    # three: 0.00328 x 3 = 0.0098, then 0.120117 x 2 = 0.2402 (below 0.3), then 0.349802 x 1 (not below 0.3).
    assert verdicts[2] == DIFFERENT
    assert verdicts[4] == SAME
    config.write_text("[report]\nsignificance_level = 5\n")
    result = xval("report", crafted.folder, "--no-plots", "--config", config)
    assert result.exit_code == 2 and "significance_level = 5" in result.output


def test_a_test_selection_metric_is_warned(crafted, tmp_path):
    config = tmp_path / "r.ini"
    config.write_text('[report]\nselection_metric_classification = "test_acc"\n')
    result = xval("report", crafted.folder, "--no-plots", "--config", config)
    assert result.exit_code == 0, result.output
    assert "selection_metric_classification = 'test_acc' chooses the best instance on a test metric" in result.output
    assert "'val_acc'" in result.output
    _, ws, _, _ = read_summary(crafted)
    notes = " ".join(str(c.value) for c in ws["A"] if isinstance(c.value, str))
    assert "Warning: the best instance is chosen on a test metric (test WA (accuracy))" in notes
    # `xval plan` / `run` show the notes of the config they load.
    from xvalkit.config import load_config

    assert any("chooses the best instance on a test metric" in n for n in load_config(config).notes)
    # The default (a validation metric) says nothing.
    assert not any("test metric" in n for n in load_config().notes)
    result = xval("report", crafted.folder, "--no-plots")
    assert "chooses the best instance on a test metric" not in result.output


# --- a real run, then the report ----------------------------------------------------------------
def test_real_run_then_report(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: instance("a"), 2: instance("b", "EXAMPLE_model", "cnn", "dropout=0.5")},
                            num_folds=2, global_parameters=[p for p in TINY if not p.startswith("num_epochs")] + ["num_epochs=2"])
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 0, result.output
    folder = path.parent / "results" / "demo" / "experiment_1"
    # The run's last refresh drew the plots.
    assert sorted(p.name for p in (folder / "plots").iterdir()) == [
        "demo_exp1_run1.png", "demo_exp1_run2.png", "demo_exp1_test_acc.png"]
    result = xval("report", path, "--config", config_file)
    assert result.exit_code == 0, result.output
    store = ExperimentStore(folder, "demo", 1)
    wb, ws, names, rows = read_summary(store)
    assert [r[0] for r in rows] == [1, 2] and "parameters that differ dropout" in names
    col = names.index("WA (accuracy) test mean")
    values = [r[col] for r in rows]
    assert [is_filled(ws, i + 3, col + 1, "C6EFCE") for i in range(2)] == [v == max(values) for v in values]
    # The verdict and p, derived here from the fold records: t of the differences over the 2 folds
    # with the recorded sizes, 1 degree of freedom, two-sided (scipy's t distribution).
    from scipy import stats

    runs = {run: store.load_folds(run) for run in (1, 2)}
    # The best is chosen on mean validation accuracy (the default selection metric; ties: the lower ID).
    val = {run: np.mean([runs[run][f]["record"]["val_acc"] for f in (1, 2)]) for run in (1, 2)}
    best = 1 if val[1] >= val[2] else 2
    other = 3 - best
    d = np.array([runs[best][f]["record"]["test_acc"] - runs[other][f]["record"]["test_acc"] for f in (1, 2)])
    ratio = np.mean([runs[r][f]["record"]["n_test"] / runs[r][f]["record"]["n_train"] for r in (1, 2) for f in (1, 2)])
    assert ratio == pytest.approx(4 * 48 / (2 * 48))  # 4 test, 2 validation and 2 train speakers of 48
    by_id = {r[0]: r for r in rows}
    verdict_col, p_col = names.index("test WA (accuracy) vs best verdict"), names.index("test WA (accuracy) vs best p")
    assert by_id[best][verdict_col] == "best"
    if d.var(ddof=1) > 0:
        t = d.mean() / math.sqrt((1 / 2 + ratio) * d.var(ddof=1))
        p = 2 * stats.t.sf(abs(t), 1)
        assert by_id[other][p_col] == pytest.approx(p, rel=1e-6)
        assert by_id[other][verdict_col] == (SAME if p >= 0.05 else DIFFERENT if d.mean() > 0 else BETTER)
    folds, summary = __import__("xvalkit").load_results(folder)
    assert len(folds) == 4 and len(summary) == 2
    assert np.allclose(sorted(summary["test_mean_acc"]), sorted(values))


@pytest.mark.skipif(not (shutil.which("soffice") or shutil.which("libreoffice")), reason="LibreOffice not installed")
def test_workbook_converts_with_libreoffice(crafted, tmp_path):
    assert xval("report", crafted.folder).exit_code == 0
    office = shutil.which("soffice") or shutil.which("libreoffice")
    # LibreOffice writes csv in a legacy 8-bit encoding unless its filter options ask for UTF-8 (76):
    # field separator 44 (,), text delimiter 34 ("), character set 76 (UTF-8). A profile of its own
    # under tmp_path, so a LibreOffice already open on this machine does not swallow the conversion.
    proc = subprocess.run([office, f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}", "--headless",
                           "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76",
                           "--outdir", str(tmp_path / "out"), str(crafted.spreadsheet_path)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "out" / "demo_exp1_results.csv").read_text(encoding="utf-8")
    assert "comment_1" in text and "partial (2/3 folds)" in text
    assert "R²" in text  # the legend under the table, decoded as UTF-8 (LibreOffice's default wrote byte 0xb2)


def test_a_slow_refresh_spaces_out_the_next_during_a_run():
    """The background report waits `refresh_seconds`, or 5 times the last refresh when that is longer
    (a workbook of a thousand instances): refreshes take at most a fifth of a core from training."""
    from xvalkit.reporting.background import refresh_wait

    assert refresh_wait(30, 0.0) == 30  # the first refresh, or quick ones: the configured interval
    assert refresh_wait(30, 2.0) == 30
    assert refresh_wait(30, 20.0) == 100  # 20 s to rebuild: the next one 100 s after it started
    assert refresh_wait(0, 0.5) == 2.5
