"""The report's tables (reporting/tables.py) read back as plain rows, without the workbook: what each
instance's row says, which cells are green, the pivot, the fold rows. Fast: the mutation tests of
tables.py run these (scripts/mutation.py); test_report.py checks the same numbers in the workbook.

Known answers by hand or from scipy / statsmodels on the crafted folders of test_report.py."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from xvalkit.errors import XvalError
from xvalkit.metrics import summarize
from xvalkit.reporting import significance as sig
from xvalkit.reporting import tables
from xvalkit.store import ExperimentStore

from .test_report import crafted, disagreeing, fold_record, save, save_disagreeing  # noqa: F401 (fixtures)

SETTINGS = {"main_metric_classification": "test_acc", "selection_metric_classification": "val_acc",
            "main_metric_regression": "test_rmse", "selection_metric_regression": "val_rmse",
            "significance_level": 0.05, "rope_classification": 0.01, "rope_regression": 0.0}


def report(store: ExperimentStore, **settings):
    data = tables.collect(store, {**SETTINGS, **settings})
    rows = tables.summary_rows(data)
    return data, rows, {row["ID"]: row for row in rows}


def t2_p(t: float) -> float:
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_the_rows_of_the_crafted_folder(crafted):  # noqa: F811
    data, rows, by_id = report(crafted)
    assert [row["ID"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert {i: by_id[i]["status"] for i in by_id} == {1: "done", 2: "done", 3: "done", 4: "partial (2/3 folds)",
                                                      5: "failed", 6: "failed (1/3 folds)"}
    assert {i: (by_id[i]["folds_done"], by_id[i]["num_folds"]) for i in by_id} == {
        1: (3, 3), 2: (3, 3), 3: (3, 3), 4: (2, 3), 5: (0, None), 6: (1, 3)}
    assert data.best_candidates == [1, 2, 3] and data.best == 1 and not data.chosen_on_test
    assert data.varying == ["learning_rate", "dropout"]
    assert (by_id[2]["learning_rate"], by_id[2]["dropout"], by_id[3]["dropout"]) == (0.01, None, 0.5)
    assert (by_id[1]["comment_1"], by_id[1]["comment_2"]) == ("instance 1", "crafted")
    assert by_id[6]["error"] == "MemoryError: out of memory" and by_id[5]["error"] == "RuntimeError: boom"
    assert by_id[1]["error"] is None
    # Means and sample stds over the folds done.
    assert by_id[1]["test_mean_acc"] == pytest.approx(0.9) and by_id[1]["test_std_acc"] == pytest.approx(0.1)
    assert by_id[3]["val_std_acc"] == pytest.approx(statistics.stdev([0.05, 0.05, 0.15]))
    assert by_id[4]["test_mean_acc"] == pytest.approx(0.95) and by_id[6]["test_std_acc"] is None  # one fold
    assert all(by_id[5][column] is None for column in tables.metric_columns(data.metrics))
    # Backfilled UA: the stored predictions are all right on class 0 (UA 1); validation UA was not recorded.
    assert by_id[1]["test_mean_ua"] == 1.0 and by_id[1]["val_mean_ua"] is None
    # Pooled F1 from the summed matrix [[15, 15], [0, 30]]: (2 x 15 / 45 + 2 x 30 / 75) / 2.
    assert by_id[1]["test_pooled_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2) and by_id[5]["test_pooled_f1"] is None
    # The significance columns: the t-tests by hand, Holm from statsmodels, the posterior from scipy.
    from scipy import stats
    from statsmodels.stats import multitest

    assert {i: by_id[i]["significance"] for i in by_id} == {1: sig.BEST, 2: sig.SAME, 3: sig.DIFFERENT, 4: sig.SAME,
                                                            5: sig.UNTESTED, 6: sig.UNTESTED}
    d3 = [0.7, 0.8, 0.8]
    p = {2: t2_p(0.2 / math.sqrt((1 / 3 + 0.25) * 0.01)),
         3: t2_p(np.mean(d3) / math.sqrt((1 / 3 + 0.25) * np.var(d3, ddof=1))),
         4: 1 - 2 * math.atan(0.1 / math.sqrt(0.75 * 0.005)) / math.pi}
    assert {i: by_id[i]["p_value"] for i in p} == pytest.approx(p, abs=1e-9)
    holm = multitest.multipletests(list(p.values()), method="holm")[1]
    assert [by_id[i]["p_holm"] for i in p] == pytest.approx(list(holm), abs=1e-9)
    assert all(by_id[i][c] is None for i in (1, 5, 6) for c in ("p_value", "p_holm", "prob_best_better"))
    scale = math.sqrt((1 / 3 + 0.25) * 0.01)
    below, above = stats.t.cdf(-0.01, 2, loc=-0.2, scale=scale), stats.t.sf(0.01, 2, loc=-0.2, scale=scale)
    assert (by_id[2]["prob_best_better"], by_id[2]["prob_equivalent"], by_id[2]["prob_other_better"]) == pytest.approx(
        (below, 1 - below - above, above), abs=1e-9)
    # The selection procedure: instance 1 has the best validation in every fold.
    assert data.selection.picks == {1: 1, 2: 1, 3: 1} and data.selection.mean == pytest.approx(0.9)


def test_green_cells_follow_the_choice_on_validation(crafted):  # noqa: F811
    data, rows, _ = report(crafted)
    index = {row["ID"]: i for i, row in enumerate(rows)}
    # Test columns: the chosen instance only; elsewhere the best value among the complete instances
    # (4 is partial: its validation std 0 ties with 2's but does not compete).
    assert tables.highlighted_rows(data, rows, "test_mean_acc") == {index[1]}
    assert tables.highlighted_rows(data, rows, "test_std_acc") == {index[1]}
    assert tables.highlighted_rows(data, rows, "val_std_acc") == {index[2]}
    assert tables.highlighted_rows(data, rows, "val_mean_acc") == {index[1]}
    assert tables.highlighted_rows(data, rows, "train_mean_loss") == {index[1], index[2], index[3]}  # ties all


def test_when_validation_and_test_disagree_the_choice_is_on_validation(disagreeing):  # noqa: F811
    # 1 is the best on validation, 2 on test; the green is 1's.
    data, rows, by_id = report(disagreeing)
    assert data.best == 1 and by_id[1]["significance"] == sig.BEST and by_id[2]["significance"] != sig.BEST
    assert tables.highlighted_rows(data, rows, "test_mean_acc") == {0}
    assert data.selection.picks == {1: 1, 2: 3, 3: 1}
    assert data.selection.mean == pytest.approx((0.60 + 0.52 + 0.65) / 3)
    # Chosen on test (a configuration the report warns about): then the test-best.
    data, rows, _ = report(disagreeing, selection_metric_classification="test_acc")
    assert data.chosen_on_test and data.best == 2 and data.selection is None
    assert tables.highlighted_rows(data, rows, "test_mean_acc") == {1}


def test_best_rows_direction_ties_and_candidates():
    rows = [{"ID": 1, "val_mean_acc": 0.7, "val_std_acc": 0.02, "val_mean_rmse": 0.5},
            {"ID": 2, "val_mean_acc": 0.7 + 1e-12, "val_std_acc": 0.01, "val_mean_rmse": math.nan},
            {"ID": 3, "val_mean_acc": 0.9, "val_std_acc": None, "val_mean_rmse": 0.4},
            {"ID": 4, "val_mean_acc": 0.5, "val_std_acc": 1e-17, "val_mean_rmse": "n/a"}]
    assert tables.best_rows(rows, "val_mean_acc") == {2}
    assert tables.best_rows(rows, "val_mean_acc", {1, 2}) == {0, 1}  # equal up to float noise: both
    assert tables.best_rows(rows, "val_std_acc", {1, 2}) == {1}  # a std: lower is better
    assert tables.best_rows(rows, "val_std_acc") == {3}  # 1e-17 ties with nothing but is the least
    assert tables.best_rows(rows, "val_mean_rmse") == {2}  # lower; NaN and text skipped
    assert tables.best_rows(rows, "val_mean_rmse", {2, 4}) == set()
    stds = [{"ID": 1, "val_std_acc": 0.0}, {"ID": 2, "val_std_acc": 1e-16}, {"ID": 3, "val_std_acc": 1e-6}]
    assert tables.best_rows(stds, "val_std_acc") == {0, 1}  # float noise ties with 0


def test_regression_the_lowest_rmse_is_best(tmp_path):
    store = ExperimentStore(tmp_path / "exp" / "demo_pitch" / "experiment_2", "demo_pitch", 2)
    save(store, 1, [0.30, 0.40], "regression", num_folds=2)
    save(store, 2, [0.20, 0.25], "regression", num_folds=2)
    data, rows, by_id = report(store)
    assert data.task_type == "regression" and data.best == 2 and not data.main_higher_is_better
    assert tables.highlighted_rows(data, rows, "val_mean_r2") == {1} and tables.highlighted_rows(data, rows, "val_mean_mae") == {1}
    assert by_id[1]["test_mean_rmse"] == pytest.approx(0.35) and by_id[1]["test_std_rmse"] == pytest.approx(0.1 / math.sqrt(2))
    assert tables.pooled_columns("regression") == ["test_pooled_rmse", "test_pooled_mae", "test_pooled_r2"]


def test_a_metric_the_task_does_not_have_is_one_line(crafted):  # noqa: F811
    with pytest.raises(XvalError, match=r"^config \[report\] main_metric_classification = 'test_rmse' is not a "
                                        r"classification metric; use one of train_loss, train_acc, .*test_recall$"):
        tables.collect(crafted, {**SETTINGS, "main_metric_classification": "test_rmse"})
    with pytest.raises(XvalError, match=r"selection_metric_classification = 'final_acc' is not"):
        tables.collect(crafted, {**SETTINGS, "selection_metric_classification": "final_acc"})


def test_fold_rows_and_a_diverged_fold(tmp_path):
    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    save(store, 1, [0.8, 0.9, 1.0])
    folds = {f: fold_record(f, v) for f, v in enumerate([0.7, 0.6, 0.5], start=1)}
    folds[2].update({f"{s}_{m}": math.nan for s in ("train", "val", "test")
                     for m in ("loss", "acc", "f1", "precision", "recall")}, diverged="non-finite predictions")
    folds[3].update(excluded_augmented={"test": 7, "val": 3}, repeat=2, fold_in_repeat=1)
    del folds[1]["test_true"], folds[1]["test_pred"], folds[1]["val_items"]  # an older, leaner record
    store.save_instance(2, {"instance": 2, "parameters": {"comment_1": "c", "learning_rate": 0.5}, "task_type": "classification",
                            "dataset": "demo", "num_folds": 3, "fold_plan": {}, "folds": folds,
                            "summary": summarize(folds, "classification")})
    data, rows, by_id = report(store)
    two = next(i for i in data.instances if i.id == 2)
    assert two.diverged == [2] and not two.complete and two.status == "diverged (1/3 folds: 2)"
    assert data.best_candidates == [1] and by_id[2]["significance"] == f"{sig.UNTESTED}: {sig.DIVERGED} 2"
    assert by_id[2]["test_mean_acc"] == pytest.approx(0.6)  # folds 1 and 3 only
    fold_rows = {(r["ID"], r["fold"]): r for r in tables.fold_rows(data)}
    assert len(fold_rows) == 6
    first = fold_rows[(1, 1)]
    assert (first["repeat"], first["fold_in_repeat"], first["status"], first["test_acc"], first["diverged"]) == (
        1, 1, "done", 0.8, None)
    assert (first["test_datapoints"], first["test_items"], first["train_items"], first["param_learning_rate"]) == (
        20, "it1 it2", "it3 it4 it5 it6", 0.001)
    assert (first["epochs"], first["seed"], first["device"], first["comment_1"]) == (4, 1, "CPU", "instance 1")
    assert "test_augmented_excluded" not in first
    bad = fold_rows[(2, 2)]
    assert bad["diverged"] == "non-finite predictions" and bad["test_acc"] is None and bad["val_loss"] is None
    assert (fold_rows[(2, 3)]["repeat"], fold_rows[(2, 3)]["fold_in_repeat"]) == (2, 1)
    assert fold_rows[(2, 3)]["test_augmented_excluded"] == 7
    assert (first["best_epoch"], first["duration_s"]) == (3, 1.5)
    assert (fold_rows[(2, 1)]["test_datapoints"], fold_rows[(2, 1)]["val_items"]) == (None, "")
    note = tables.evaluation_note(data)
    assert note.startswith("Augmented data: training used every datapoint, but validation and test metrics are "
                           "measured on the original datapoints only") and "(7 test datapoints" in note
    assert tables.parameter_rows(data)[1] == {"ID": 2, "comment_1": "c", "learning_rate": 0.5}


def test_the_confusion_matrix_summed_over_the_folds_with_its_class_names(crafted):  # noqa: F811
    data = tables.collect(crafted, SETTINGS)
    one = next(i for i in data.instances if i.id == 1)
    matrix, labels, count = tables.test_confusion(one)
    assert np.array_equal(matrix, [[15, 15], [0, 30]]) and labels == ["0", "1"] and count == 3
    one.folds[2]["classes"] = ["neutral"]  # a class the manifest does not name keeps its index
    # (InstanceInfo.folds is rebuilt on each access from the results: change the record there)
    one.results["folds"][2]["classes"] = ["neutral"]
    assert tables.test_confusion(one)[1] == ["neutral", "1"]
    assert tables.test_confusion(next(i for i in data.instances if i.id == 5)) is None
    assert tables.evaluation_note(data) is None


def test_cells_hold_plain_values():
    assert tables.cell(np.float32(0.5)) == 0.5 and type(tables.cell(np.int64(3))) is int
    assert tables.cell([1, 2]) == "[1, 2]" and tables.cell((8,)) == "(8,)" and tables.cell(None) is None
    assert tables.cell(np.array([1, 2])) == "array([1, 2])" and tables.cell(True) is True


def test_two_folds_validated_within_training_items_show_no_std_and_no_test(tmp_path):
    store = ExperimentStore(tmp_path / "results" / "tess" / "experiment_1", "tess", 1)
    for run, values in ((1, [0.9, 0.8]), (2, [0.6, 0.5])):
        save(store, run, values, num_folds=2)
        results = store.load_instance(run)
        for record in results["folds"].values():
            record["val_sources"] = ["train items"]
        store.save_instance(run, results)
    # Beside them, two instances run with 3 folds (the best, 4, on validation): their 3 common folds are tested.
    save(store, 3, [0.7, 0.7, 0.7])
    save(store, 4, [0.8, 0.9, 1.0])
    data, rows, by_id = report(store)
    assert [i.two_folds_within for i in data.instances] == [True, True, False, False] and data.best == 4
    assert by_id[1]["test_mean_acc"] == pytest.approx(0.85) and by_id[1]["test_std_acc"] is None
    assert by_id[2]["significance"] == f"{sig.UNTESTED}: {sig.TWO_FOLDS}"
    assert by_id[3]["significance"] == sig.SAME and by_id[3]["p_value"] == pytest.approx(
        t2_p(0.2 / math.sqrt((1 / 3 + 0.25) * 0.01)), abs=1e-9)


def test_the_pivot_chooses_its_cells_and_its_best_cell_on_validation(tmp_path):
    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    swept = ("learning_rate", "dropout", "seed")
    # The cells of test_report.py's pivot test: ID = 1, learning_rate index, dropout index, seed (2 digits
    # each) -> (test, val). (0.1, 0.0): 1010101 the test-best, 1010102 the validation-best.
    learning_rates, dropouts = (0.1, 0.01), (0.0, 0.5)
    for run, (test, val) in {1010101: (0.95, 0.50), 1010102: (0.55, 0.70), 1010201: (0.60, 0.60),
                             1020101: (0.58, 0.90), 1020201: (0.99, 0.40)}.items():
        lr, dropout, seed = learning_rates[run // 10000 % 100 - 1], dropouts[run // 100 % 100 - 1], run % 100
        save_disagreeing(store, run, [test - 0.02, test, test + 0.02], [val] * 3, swept=swept,
                         learning_rate=lr, dropout=dropout, seed=seed)
    save(store, 7, [0.99] * 3, learning_rate=0.1, dropout=0.0)  # not swept (no 'swept' recorded): not in the pivot
    # Partial (2 of 3 folds) with the best validation: not in the pivot either.
    save_disagreeing(store, 1010103, [0.99, 0.99], [0.99, 0.99], swept=swept, learning_rate=0.1, dropout=0.0, seed=3)
    partial = store.load_instance(1010103)
    store.save_instance(1010103, {**partial, "num_folds": 3})
    # In the cell (0.1, 0.5): a tie on validation with 1010201 (the lower ID wins), and one without
    # validation values (ranked last).
    save_disagreeing(store, 1010202, [0.70] * 3, [0.60] * 3, swept=swept, learning_rate=0.1, dropout=0.5, seed=2)
    save_disagreeing(store, 1010203, [0.80] * 3, [math.nan] * 3, swept=swept, learning_rate=0.1, dropout=0.5, seed=3)
    data, rows, _ = report(store)
    assert data.swept == list(swept)
    pv = tables.pivot(data, rows)
    assert (pv.row_parameter, pv.column_parameter, pv.rows, pv.columns, pv.chooser) == (
        "learning_rate", "dropout", [0.1, 0.01], [0.0, 0.5], "val_acc")
    assert pv.cells[(0, 0)] == {"mean": pytest.approx(0.55), "std": pytest.approx(0.02), "ID": 1010102, "count": 2,
                                "chosen_by": pytest.approx(0.70)}
    assert pv.cells[(0, 1)]["count"] == 3
    assert {key: c["ID"] for key, c in pv.cells.items()} == {(0, 0): 1010102, (0, 1): 1010201, (1, 0): 1020101,
                                                              (1, 1): 1020201}
    assert pv.best == (1, 0)
    # Chosen on test (lower is better for a loss): the test loss ranks the cells.
    data, rows, _ = report(store, selection_metric_classification="test_loss")
    pv = tables.pivot(data, rows)
    assert pv.cells[(0, 0)]["ID"] == 1010101 and pv.best == (1, 1)
    data.swept = ["learning_rate"]
    assert tables.pivot(data, rows) is None
    # Exactly two swept parameters, recorded by instances that swept different ones: the union.
    other = ExperimentStore(tmp_path / "results" / "demo" / "experiment_2", "demo", 2)
    save_disagreeing(other, 101, [0.5] * 3, [0.5] * 3, swept=("learning_rate",), learning_rate=0.1, dropout=0.0)
    save_disagreeing(other, 201, [0.6] * 3, [0.6] * 3, swept=("learning_rate", "dropout"), learning_rate=0.1, dropout=0.5)
    data, rows, _ = report(other)
    assert data.swept == ["learning_rate", "dropout"]
    pv = tables.pivot(data, rows)
    assert (pv.rows, pv.columns, {key: c["ID"] for key, c in pv.cells.items()}) == ([0.1], [0.5], {(0, 0): 201})


def test_collect_reads_folds_newer_than_the_pickle_and_folders_of_failures(crafted, tmp_path):  # noqa: F811
    # Instance 4's third fold finished after its pickle was last written (a killed run): it counts.
    crafted.save_fold(4, 3, {"comment_1": "instance 4"}, "classification", 3, fold_record(3, 0.5))
    data, _, by_id = report(crafted)
    assert by_id[4]["status"] == "done" and by_id[4]["test_mean_acc"] == pytest.approx((0.95 + 0.95 + 0.5) / 3)
    assert data.best_candidates == [1, 2, 3, 4]
    # Every instance failed before its first fold: classification, all untested.
    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_9", "demo", 9)
    store.save_error(1, "Traceback (most recent call last):\nRuntimeError: boom\n")
    data, rows, _ = report(store)
    assert data.task_type == "classification" and data.best is None
    assert [(r["ID"], r["status"], r["significance"]) for r in rows] == [(1, "failed", sig.UNTESTED)]


def test_the_rope_defaults_to_zero_and_no_validation_falls_back_to_the_complete_instances(crafted):  # noqa: F811
    settings = {k: v for k, v in SETTINGS.items() if not k.startswith("rope_")}
    data = tables.collect(crafted, settings)
    assert data.rope == 0.0 and data.marks[2].posterior.within == pytest.approx(0.0, abs=1e-12)
    # No validation values at all: the best on test among the complete instances (1), not the partial
    # or failed ones with a higher mean (4: 0.95, 6: 0.99).
    for run in (1, 2, 3, 4, 6):
        results = crafted.load_instance(run)
        for record in results["folds"].values():
            record["val_acc"] = math.nan
        crafted.save_instance(run, results)
    data = tables.collect(crafted, SETTINGS)
    assert data.best == 1 and data.marks[1].verdict == sig.BEST
