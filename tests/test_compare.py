"""Sweeps, repeated grouped k-fold and honest comparison (issue 13).

Known answers: Holm against statsmodels' multipletests and a hand computation; the Bayesian
correlated t-test against baycomp (Benavoli et al.'s own package) and a closed form; the repeated
corrected t-test (Bouckaert and Frank 2004) by hand; the selection procedure on a crafted case
where the test-best and the validation-best instances differ.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.errors import ParameterError
from xvalkit.folds import plan_folds, plan_repeated_folds
from xvalkit.reporting import significance as sig
from xvalkit.store import ExperimentStore
from xvalkit.sweeps import combination_id, expand

from .conftest import write_experiment
from .test_run import summary_header

runner = CliRunner()


def xval(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# --- statistics with known answers --------------------------------------------------------------
def test_holm_by_hand_and_against_statsmodels():
    # By hand: sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06).
    assert sig.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert sig.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert sig.holm([]) == []
    from statsmodels.stats import multitest  # a dev dependency: a broken install fails, never skips
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 17):
        p = rng.uniform(0, 0.2, m).tolist()
        assert sig.holm(p) == pytest.approx(list(multitest.multipletests(p, method="holm")[1]))


def test_bayesian_correlated_t_test_closed_form():
    # d = [0.1, 0.2, 0.3], n_test/n_train = 0.5: posterior t(2) at 0.2, scale sqrt((1/3 + 1/2) 0.01).
    # With 2 degrees of freedom the cdf is 0.5 + x / (2 sqrt(x^2 + 2)), x = (0 - 0.2) / scale = -2.19089.
    post = sig.bayesian_correlated_t_test([0.8, 0.9, 1.0], [0.7, 0.7, 0.7], 0.5, rope=0.0)
    x = -0.2 / math.sqrt((1 / 3 + 0.5) * 0.01)
    assert post.below == pytest.approx(0.5 + x / (2 * math.sqrt(x * x + 2)), abs=1e-12)
    assert post.below == pytest.approx(0.159832 / 2, abs=1e-6)  # half the corrected t-test's two-sided p
    assert post.within == pytest.approx(0.0, abs=1e-12) and post.above == pytest.approx(1 - post.below)
    # Zero variance: a point mass at the mean difference.
    assert sig.bayesian_correlated_t_test([0.6, 0.7], [0.5, 0.6], 0.5, rope=0.01) == sig.Posterior(0.0, 0.0, 1.0)
    assert sig.bayesian_correlated_t_test([0.6, 0.7], [0.595, 0.695], 0.5, rope=0.01) == sig.Posterior(0.0, 1.0, 0.0)


def test_bayesian_correlated_t_test_against_baycomp():
    import baycomp  # a dev dependency: a broken install fails, never skips
    rng = np.random.default_rng(0)
    for n, runs, rope in ((10, 1, 0.01), (10, 2, 0.01), (6, 3, 0.0), (12, 1, 0.05)):
        x, y = rng.normal(0.8, 0.03, n), rng.normal(0.79, 0.03, n)
        # baycomp takes the test fraction as 1 / k (k folds per run): n_test / n_train = 1 / (k - 1).
        k = n / runs
        expected = baycomp.CorrelatedTTest(x, y, rope=rope, runs=runs).probs()
        got = sig.bayesian_correlated_t_test(list(y), list(x), 1 / (k - 1), rope)
        if rope == 0:  # baycomp then returns (P(left), P(right))
            expected = (expected[0], 0.0, expected[1])
        assert (got.below, got.within, got.above) == pytest.approx(tuple(map(float, expected)), abs=1e-9)


def record(fold: int, test: float, val: float, items: tuple[str, ...] = ()) -> dict:
    return {"test_acc": test, "val_acc": val, "test_items": list(items or (f"t{fold}",)), "train_items": ["a", "b"],
            "n_test": 10, "n_train": 20, "test_true": np.zeros(10)}


def test_repeated_corrected_t_test_uses_all_k_times_r_folds():
    # 3 folds x 2 repeats: d = [0.1, 0.2, 0.3] twice, n_test/n_train = 0.5.
    # mean 0.2, var (ddof 1) = 4 x 0.01 / 5 = 0.008, t = 0.2 / sqrt((1/6 + 1/2) 0.008) = 2.738613,
    # J - 1 = 5 degrees of freedom: p = 2 x t5.sf(2.738613) = 0.0408594 (Bouckaert and Frank 2004).
    best = [0.8, 0.9, 1.0, 0.8, 0.9, 1.0]
    other = [0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    folds = {1: {f: record(f, v, v) for f, v in enumerate(best, 1)},
             2: {f: record(f, v, v) for f, v in enumerate(other, 1)}}
    best_id, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert best_id == 1
    assert marks[2].k == 6 and marks[2].t == pytest.approx(2.738613, abs=1e-6)
    assert marks[2].p == pytest.approx(0.0408594, abs=1e-6)
    assert marks[2].p_adjusted == pytest.approx(marks[2].p)  # one comparison: Holm changes nothing
    assert marks[2].verdict == sig.DIFFERENT == "worse than the best"


def test_holm_decides_the_verdicts():
    # Two others with raw p = 0.0409 (as above) and p = 1 (identical to the best in mean, varying):
    # Holm: 0.0409 x 2 = 0.0817 >= 0.05, so the first is no longer "worse".
    best = [0.8, 0.9, 1.0, 0.8, 0.9, 1.0]
    folds = {1: {f: record(f, v, v) for f, v in enumerate(best, 1)},
             2: {f: record(f, v, v) for f, v in enumerate([0.7] * 6, 1)},
             3: {f: record(f, v, v) for f, v in enumerate([0.9, 0.8, 1.0, 1.0, 0.9, 0.8], 1)}}
    _, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert marks[2].p == pytest.approx(0.0408594, abs=1e-6) and marks[2].p_adjusted == pytest.approx(2 * 0.0408594, abs=1e-6)
    assert marks[2].verdict == sig.SAME == "not distinguishable from the best"


def test_selection_by_validation_differs_from_the_test_best():
    # Instance 1 has the best test mean (0.9) but the worst validation; instance 2 wins validation in
    # folds 1 and 2, instance 3 in fold 3. The best on mean validation accuracy (0.5, 0.767, 0.783) is
    # instance 3: neither is the test-best.
    folds = {
        1: {1: record(1, 0.9, 0.50), 2: record(2, 0.9, 0.50), 3: record(3, 0.9, 0.50)},
        2: {1: record(1, 0.7, 0.80), 2: record(2, 0.6, 0.90), 3: record(3, 0.8, 0.60)},
        3: {1: record(1, 0.5, 0.70), 2: record(2, 0.5, 0.70), 3: record(3, 0.4, 0.95)},
    }
    assert sig.choose_best(folds, "test_acc", True) == 1
    assert sig.choose_best(folds, "val_acc", True) == 3
    est = sig.selection_estimate(folds, "test_acc", "val_acc", True)
    # Fold 1: val 0.5 / 0.8 / 0.7 -> 2 (test 0.7); fold 2: 0.5 / 0.9 / 0.7 -> 2 (0.6); fold 3: 0.5 / 0.6 / 0.95 -> 3 (0.4)
    assert est.picks == {1: 2, 2: 2, 3: 3}
    assert est.values == {1: 0.7, 2: 0.6, 3: 0.4}
    assert est.mean == pytest.approx(1.7 / 3) and est.std == pytest.approx(np.std([0.7, 0.6, 0.4], ddof=1))
    # Lower-is-better selection flips the choice.
    assert sig.selection_estimate(folds, "test_acc", "val_acc", False).picks == {1: 1, 2: 1, 3: 1}


# --- repeated grouped k-fold --------------------------------------------------------------------
def test_repeated_folds_partition_the_items_once_per_repeat():
    items = [f"s{i}" for i in range(10)]
    labels = {item: np.array([i % 3] * 4) for i, item in enumerate(items)}
    plan = plan_repeated_folds(items, 5, 3, 0.2, 0.2, seed=7, labels=labels)
    assert [f.index for f in plan] == list(range(1, 16))
    assert [(f.repeat, f.number) for f in plan[4:6]] == [(1, 5), (2, 1)]
    tests = {}
    for fold in plan:
        assert not set(fold.train) & set(fold.val) and not set(fold.train) & set(fold.test)
        assert not set(fold.val) & set(fold.test)
        assert len(fold.train) + len(fold.val) + len(fold.test) == 10
        tests.setdefault(fold.repeat, []).extend(fold.test)
    assert all(sorted(t) == sorted(items) for t in tests.values())  # every item tested once per repeat
    partitions = [frozenset(frozenset(f.test) for f in plan if f.repeat == r) for r in (1, 2, 3)]
    assert len(set(partitions)) == 3  # three different partitions
    # Repeat 1 is the one-repeat plan itself (existing results resume).
    single = plan_folds(items, 5, 0.2, 0.2, seed=7, labels=labels)
    assert [(f.train, f.val, f.test) for f in plan[:5]] == [(f.train, f.val, f.test) for f in single]
    assert plan == plan_repeated_folds(items, 5, 3, 0.2, 0.2, seed=7, labels=labels)  # deterministic


# --- sweeps -------------------------------------------------------------------------------------
def test_sweep_ids_are_stable_when_a_value_is_appended():
    base = {1: {"architecture": "MLP_model", "reshaping_type": "none"},
            2: {"architecture": "MLP_model", "reshaping_type": "none", "comment_1": "x", "comment_2": "y"}}
    first, swept = expand(base, {1: ["learning_rate=[0.01, 0.001]", 'optimizer=["adam", "sgd"]']}, "exp.py")
    assert sorted(first) == [2, 10101, 10102, 10201, 10202]
    assert first[10102]["learning_rate"] == 0.01 and first[10102]["optimizer"] == "sgd"
    assert first[10102]["comment_1"] == "sweep of instance 1"
    assert first[10102]["comment_2"] == "learning_rate=0.01, optimizer='sgd'"
    assert swept == {i: ["learning_rate", "optimizer"] for i in (10101, 10102, 10201, 10202)}
    later, _ = expand(base, {1: {"learning_rate": [0.01, 0.001, 0.1], "optimizer": ["adam", "sgd"]}}, "exp.py")
    assert {k: v for k, v in later.items() if k in first} == first  # the same IDs, the same parameters
    assert sorted(set(later) - set(first)) == [10301, 10302]
    # A shared sweep (names as keys) applies to every instance.
    both, _ = expand(base, {"seed": [1, 2]}, "exp.py")
    assert sorted(both) == [101, 102, 201, 202] and both[201]["comment_1"] == "x"
    assert combination_id(3, (0, 11, 2)) == 3011203


@pytest.mark.parametrize("sweep, message", [
    ({1: ["learning_rate=0.01"]}, "should list the values to sweep"),
    ({1: {"seed": [1, 1]}}, "lists a value twice"),
    ({7: {"seed": [1, 2]}}, "sweep[7] names no instance"),
    ({1: {"architecture": ["MLP_model"]}}, "which its sweep also sets"),
    ({1: ["learning_rate=[0.1, __import__('os')]"]}, "not a Python literal"),
    ([1, 2], "sweep should be a dict"),
])
def test_bad_sweeps_are_one_line_errors(sweep, message):
    base = {1: {"architecture": "MLP_model", "reshaping_type": "none"}}
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand(base, sweep, "exp.py")


SWEEP_SETTINGS = ["num_epochs=1", 'framework="torch"', "tensorboard=False", "batch_size=64"]


def sweep_experiment(tmp_path, values: list[float], **settings):
    extra = ("sweep = {}\n"
             f"sweep[1] = ['learning_rate={values!r}', 'hidden_sizes=[(8,), (4,)]']\n")
    return write_experiment(tmp_path, {1: ['architecture="MLP_model"', 'reshaping_type="none"']}, num_folds=2,
                            global_parameters=SWEEP_SETTINGS, extra=extra, **settings)


def test_status_of_a_sweep_names_each_combination_by_its_values(tmp_path, config_file):
    path = sweep_experiment(tmp_path, [0.01, 0.001])
    result = xval("status", path, "--config", config_file)
    assert result.exit_code == 0, result.output
    comments = {cells[0]: cells[1] for line in result.output.splitlines()
                if len(cells := [c.strip() for c in line.split("│")[1:-1]]) > 2 and cells[0].isdigit()}
    assert comments == {  # not 'sweep of instance 1' four times
        "10101": "sweep of instance 1: learning_rate=0.01, hidden_sizes=(8,)",
        "10102": "sweep of instance 1: learning_rate=0.01, hidden_sizes=(4,)",
        "10201": "sweep of instance 1: learning_rate=0.001, hidden_sizes=(8,)",
        "10202": "sweep of instance 1: learning_rate=0.001, hidden_sizes=(4,)",
    }


def test_sweep_run_then_a_value_appended_keeps_the_old_combinations(tmp_path, config_file):
    path = sweep_experiment(tmp_path, [0.01, 0.001])
    result = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    folder = path.parent / "results" / "demo" / "experiment_1"
    store = ExperimentStore(folder, "demo", 1)
    old = {p.name: p.read_bytes() for p in (folder / "results" / "folds").iterdir()}
    assert len(old) == 8  # 4 combinations x 2 folds
    # The pivot: learning_rate x hidden_sizes, in the order of the lists.
    from openpyxl import load_workbook

    wb = load_workbook(store.spreadsheet_path)
    assert wb.sheetnames[:2] == ["summary", "pivot"]
    pivot = wb["pivot"]
    assert [pivot.cell(row=2, column=j).value for j in (2, 3)] == ["(8,)", "(4,)"]
    assert [pivot.cell(row=i, column=1).value for i in (3, 4)] == ["0.01", "0.001"]
    cells = [pivot.cell(row=i, column=j).value for i in (3, 4) for j in (2, 3)]
    assert all(c and "±" in c for c in cells)
    assert (folder / "plots" / "demo_exp1_pivot.png").is_file()

    path = sweep_experiment(tmp_path, [0.01, 0.001, 0.1])  # one value appended
    result = xval("plan", path, "--config", config_file)
    assert result.exit_code == 0, result.output
    for new_id in ("10301", "10302"):
        assert new_id in result.output
    result = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    for instance_id in (10101, 10102, 10201, 10202):
        assert f"instance {instance_id}: all 2 folds already done, skipped" in result.output
    after = {p.name: p.read_bytes() for p in (folder / "results" / "folds").iterdir()}
    assert len(after) == 12 and all(after[name] == data for name, data in old.items())
    # Selecting by ID works on the expanded list.
    result = xval("run", path, "10301", "10302", "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0 and "instance 10301: all 2 folds already done" in result.output


def test_repeated_run_records_the_repeat_and_tests_over_all_folds(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: ['architecture="MLP_model"', 'reshaping_type="none"', 'comment_1="a"',
                                           'comment_2="b"'],
                                       2: ['architecture="MLP_model"', 'reshaping_type="none"', 'comment_1="c"',
                                           'comment_2="d"', "learning_rate=0.01"]},
                            num_folds=2, num_repeats=2, global_parameters=SWEEP_SETTINGS)
    result = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    assert "instance 1 repeat 2 fold 1/2" in result.output
    folder = path.parent / "results" / "demo" / "experiment_1"
    with open(folder / "results" / "folds" / "demo_exp1_run1_fold3.pkl", "rb") as handle:
        saved = pickle.load(handle)
    assert saved["num_folds"] == 4 and (saved["record"]["repeat"], saved["record"]["fold_in_repeat"]) == (2, 1)
    folds, summary = __import__("xvalkit").load_results(folder)
    assert sorted(zip(folds["ID"], folds["repeat"], folds["fold_in_repeat"])) == [
        (i, r, f) for i in (1, 2) for r in (1, 2) for f in (1, 2)]
    # Each repeat tests every item once.
    for (run, repeat), group in folds.groupby(["ID", "repeat"]):
        items = " ".join(group["test_items"]).split()
        assert sorted(items) == [f"spk{i:02d}" for i in range(1, 9)], (run, repeat)
    # The summary is over the 4 folds, the test over 4 pairs (3 degrees of freedom).
    assert list(summary["folds_done"]) == [4, 4]
    assert summary.set_index("ID").loc[1, "test_mean_acc"] == pytest.approx(
        folds[folds["ID"] == 1]["test_acc"].mean())
    from openpyxl import load_workbook

    ws = load_workbook(folder / "demo_exp1_results.xlsx")["summary"]
    names = summary_header(ws)
    rows = [r for r in ws.iter_rows(min_row=3, values_only=True) if isinstance(r[0], int)]
    tested = [r for r in rows if r[names.index("test WA (accuracy) vs best verdict")] != "best"]
    assert len(tested) == 1 and tested[0][names.index("test WA (accuracy) vs best p (Holm)")] is not None
    # The selection row and the notes name the procedure and the references.
    column_a = [c.value for c in ws["A"]]
    assert "selection" in column_a
    notes = " ".join(str(v) for v in column_a if isinstance(v, str))
    assert "Bouckaert and Frank 2004" in notes and "Holm" in notes and "validation WA (accuracy)" in notes
