"""Scientific correctness (issue 12): each test here failed on the code before its fix.

Real runs (torch and Keras on the demo data, tiny models), real files, spreadsheets read back with
openpyxl, real audio through `xval augment` and `xval preprocess`; numbers checked against
scikit-learn or by hand.
"""

from __future__ import annotations

import csv
import math
import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from openpyxl import load_workbook
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.data import load_dataset, save_dataset
from xvalkit.errors import ParameterError, XvalError
from xvalkit.experiment import load_experiment
from xvalkit.folds import plan_folds
from xvalkit.metrics import classification_metrics
from xvalkit.reporting import significance as sig
from xvalkit.store import ExperimentStore

from .conftest import instance, write_experiment

ROOT = Path(__file__).resolve().parents[1]
cli = CliRunner()
# A tiny torch MLP: a fold trains in well under a second on 2 cores.
MLP = ['framework="torch"', 'num_epochs=4', 'patience=10', 'batch_size=32']


def xval(*args):
    return cli.invoke(app, [str(a) for a in args], catch_exceptions=False)


def mlp(comment: str, *more: str) -> list[str]:
    return instance(comment, "MLP_model", "none", "hidden_sizes=(16,)", *more)


def results_folder(path: Path, dataset: str = "demo") -> Path:
    return path.parent / "results" / dataset / "experiment_1"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- 1. macro metrics over the classes present ----------------------------------------------------

def test_macro_metrics_ignore_classes_absent_from_the_set():
    perfect = classification_metrics(np.array([0, 0, 1, 1]), np.eye(3)[[0, 0, 1, 1]], num_classes=3)
    assert perfect["acc"] == perfect["f1"] == perfect["precision"] == perfect["recall"] == 1.0
    assert perfect["confusion_matrix"].shape == (3, 3)  # every class kept there
    # Against scikit-learn's own defaults on a set missing class 3 of 4, with a class predicted
    # that is not in y_true (it counts, as in scikit-learn).
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    proba = rng.dirichlet(np.ones(4), 40)
    pred = proba.argmax(1)
    got = classification_metrics(y, proba, num_classes=4)
    assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert got["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro", zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro", zero_division=0))
    assert got["loss"] == pytest.approx(skm.log_loss(y, proba, labels=np.arange(4)))


# --- 2. checkpoint mode follows the metric --------------------------------------------------------

def test_checkpoint_mode_follows_the_metric(tmp_path, config_file):
    path = write_experiment(tmp_path, {
        1: mlp("acc", 'save_best_model_metric="val_acc"'),
        2: mlp("loss", 'save_best_model_metric="val_loss"'),
        3: mlp("mae", 'save_best_model_metric="val_mae"'),
    }, global_parameters=MLP, task_type="classification")
    exp = load_experiment(path, config_file)
    assert exp.resolve(1)["save_best_model_mode"] == "max"
    assert exp.resolve(2)["save_best_model_mode"] == "min"
    with pytest.raises(ParameterError, match="not one of"):  # val_mae is not a classification metric
        exp.resolve(3)


def test_contradicting_checkpoint_mode_is_one_line_error(tmp_path, config_file):
    path = write_experiment(tmp_path, {
        1: mlp("acc", 'save_best_model_metric="val_accuracy"', 'save_best_model_mode="min"'),
    }, global_parameters=MLP)
    result = xval("plan", path, "--config", config_file)
    assert result.exit_code != 0
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "instance 1" in line and "save_best_model_mode='min'" in line and "'max'" in line


# --- the shared real run: points 2, 4, 5 ----------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, data_folder):
    """Torch and Keras instances on the demo data, k = 2: checkpoint on val accuracy, two training
    seeds, and one instance whose learning rate makes it diverge."""
    tmp = tmp_path_factory.mktemp("mixed")
    config = tmp / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    keras = ['framework="keras"', 'num_epochs=4', 'channels_1=4', 'channels_2=4', 'hidden_size=8']
    path = write_experiment(tmp, {
        1: mlp("seed 0", 'save_best_model_metric="val_acc"'),
        2: mlp("seed 1", 'save_best_model_metric="val_acc"', "seed=1"),
        3: instance("keras", "EXAMPLE_model", "cnn", 'save_best_model_metric="val_acc"', *keras),
        4: mlp("diverges", 'optimizer="sgd"', "learning_rate=1e12"),
    }, global_parameters=MLP, num_folds=2)
    result = xval("run", path, "--cpu", "--config", config, "--quiet")
    assert result.exit_code == 0, result.output
    folder = results_folder(path)
    store = ExperimentStore(folder, "demo", 1)
    return path, folder, store.load_all(), result.output


def test_best_epoch_is_the_highest_validation_accuracy(mixed_run):
    _, _, results, _ = mixed_run
    for run in (1, 2, 3):
        assert results[run]["parameters"]["save_best_model_mode"] == "max"
        for fold in results[run]["folds"].values():
            accuracies = fold["history"]["val_accuracy"]
            # the first epoch with the highest validation accuracy is the one restored
            assert fold["best_epoch"] == int(np.argmax(accuracies)) + 1, (run, accuracies)


def test_seeds_share_the_fold_plan(mixed_run):
    path, folder, results, _ = mixed_run
    for key in ("train_items", "val_items", "test_items"):
        assert [f[key] for f in results[1]["folds"].values()] == [f[key] for f in results[2]["folds"].values()]
    assert results[1]["folds"][1]["seed"] != results[2]["folds"][1]["seed"]  # training seeds still differ
    summary = {row["ID"]: row for row in read_csv(folder / "summary.csv")}
    assert summary["1"]["significance"] != "untested" and summary["2"]["significance"] != "untested"


def test_diverged_fold_is_recorded_not_averaged(mixed_run):
    path, folder, results, output = mixed_run
    assert "instance 4 fold 1/2 diverged" in output
    folds = results[4]["folds"]
    assert set(folds) == {1, 2}
    for fold in folds.values():
        assert "non-finite predictions" in fold["diverged"] and "learning rate" in fold["diverged"]
        assert math.isnan(fold["test_acc"])
    for run in (1, 2, 3):
        assert all(f["diverged"] is None for f in results[run]["folds"].values())
    summary = {row["ID"]: row for row in read_csv(folder / "summary.csv")}
    assert summary["4"]["status"].startswith("diverged (2/2 folds")
    assert summary["4"]["test_mean_acc"] == ""  # no valid fold: no mean
    assert summary["4"]["significance"] == "untested: diverged in folds 1, 2"
    ws = load_workbook(folder / "demo_exp1_results.xlsx")["folds"]
    header = [c.value for c in ws[1]]
    rows = [dict(zip(header, (c.value for c in r))) for r in ws.iter_rows(min_row=2)]
    diverged = [r for r in rows if r["ID"] == 4]
    assert len(diverged) == 2 and all(r["test_acc"] is None and "non-finite" in r["diverged"] for r in diverged)
    text = (folder / "summary.csv").read_text() + (folder / "results.csv").read_text()
    assert "inf" not in text.replace("info", "")


def test_diverged_instance_is_named_as_diverged_on_the_console_and_in_status(mixed_run):
    """Not 'instance 4 done: nan over 0 folds' nor 'done 1, 2, 3, 4': counted and named as diverged."""
    path, _, _, output = mixed_run
    assert "instance 4 diverged in all 2 folds: non-finite predictions" in output
    assert "instance 4 done" not in output and "over 0 folds" not in output
    assert "done 1, 2, 3;" in output and "failed none; diverged 4" in output
    result = xval("status", path, "--config", path.parent / "c.ini")
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells for line in result.output.splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 7 and cells[0].isdigit()}
    assert rows["4"][2:4] == ["-", "1, 2"]  # done: none; diverged: both folds
    assert rows["1"][2:4] == ["1, 2", "-"]


# --- 4. non-finite data ---------------------------------------------------------------------------

def test_nan_in_the_dataset_is_refused_naming_item_and_datapoint(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    predictors = {f"spk{i}": rng.normal(size=(5, 4, 3)).astype(np.float32) for i in range(6)}
    targets = {item: np.arange(5) % 2 for item in predictors}
    predictors["spk3"][2, 1, 0] = np.nan
    np.savez(data / "bad_predictors.npz", **predictors)  # written by a user's own script
    np.savez(data / "bad_target.npz", **targets)
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n")
    path = write_experiment(tmp_path, {1: mlp("x")}, dataset="bad", global_parameters=MLP)
    result = xval("plan", path, "--config", config)
    assert result.exit_code != 0
    line = result.output.strip()
    assert "\n" not in line and "'spk3'" in line and "datapoint 2" in line and "NaN or infinite predictors" in line
    predictors["spk3"][2, 1, 0] = 0.0
    targets_f = {item: y.astype(np.float32) for item, y in targets.items()}
    targets_f["spk1"][4] = np.inf
    with pytest.raises(XvalError, match=r"item 'spk1' has NaN or infinite targets, first in datapoint 4"):
        save_dataset(data, "bad2", predictors, targets_f)


# --- 5. the experiment's fold seed ----------------------------------------------------------------

def test_fold_seed_setting_and_old_results_resume(tmp_path, config_file):
    instances = {1: mlp("a", "seed=3", "num_epochs=1"), 2: mlp("b", "num_epochs=1")}
    path = write_experiment(tmp_path, instances, global_parameters=MLP, num_folds=2, extra="fold_seed = 3\n")
    exp = load_experiment(path, config_file)
    from xvalkit.runner import RunOptions, prepare

    _, planned, _ = prepare(exp, RunOptions())
    assert planned[0].folds == planned[1].folds and planned[0].fold_seed == 3
    result = xval("run", path, "1", "--cpu", "--config", config_file, "--quiet")
    assert result.exit_code == 0, result.output
    # Without the setting the fold seed is config.ini's seed (0): instance 1's folds, planned from its
    # own seed 3 as before fold_seed existed, are kept so that it resumes instead of being refused.
    path = write_experiment(tmp_path, instances, global_parameters=MLP, num_folds=2)
    result = xval("run", path, "1", "--cpu", "--config", config_file, "--quiet")
    assert result.exit_code == 0, result.output
    assert "all 2 folds already done, skipped" in result.output
    assert "keeps the fold plan its saved folds were trained on" in result.output
    _, planned, _ = prepare(load_experiment(path, config_file), RunOptions())
    assert planned[1].fold_seed == 0 and planned[0].fold_seed == 3


# --- 6. sparse classes ----------------------------------------------------------------------------

def test_sparse_classes_fall_back_to_unstratified_folds(tmp_path):
    # ten items of one datapoint each, five classes, k = 3: through `xval plan`, a warning line, exit 0
    items = [f"item{i}" for i in range(10)]
    labels = {item: np.array([i % 5]) for i, item in enumerate(items)}
    data = tmp_path / "data"
    save_dataset(data, "sparse", {item: np.full((1, 3, 2), i, np.float32) for i, item in enumerate(items)}, labels)
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n")
    path = write_experiment(tmp_path, {1: mlp("x")}, dataset="sparse", global_parameters=MLP, num_folds=3)
    result = xval("plan", path, "--config", config)
    assert result.exit_code == 0, result.output
    assert "warning: folds: cannot stratify 10 items into 3 folds" in result.output
    warnings = []
    folds = plan_folds(items, 3, validation_split=0.1, seed=0, labels=labels, warn=warnings.append)
    assert sorted(i for f in folds for i in f.test) == items
    assert len(warnings) == 1 and "unstratified grouped folds" in warnings[0] and "\n" not in warnings[0]


# --- 7. held-out sets hold every class ------------------------------------------------------------

def _classes(items, labels) -> set:
    return {int(labels[i][0]) for i in items}


@pytest.mark.parametrize("seed", range(30))
def test_validation_and_single_split_hold_every_class(seed):
    items = [f"s{i:02d}" for i in range(12)]
    labels = {item: np.full(4, i % 3) for i, item in enumerate(items)}  # one class per item
    for fold in plan_folds(items, 3, validation_split=0.25, seed=seed, labels=labels):
        assert _classes(fold.val, labels) == {0, 1, 2} and _classes(fold.train, labels) == {0, 1, 2}
        assert not set(fold.val) & set(fold.train) and not set(fold.val) & set(fold.test)
    (fold,) = plan_folds(items, 1, validation_split=0.25, test_split=0.25, seed=seed, labels=labels)
    for part in (fold.train, fold.val, fold.test):
        assert _classes(part, labels) == {0, 1, 2}
    assert sorted(fold.train + fold.val + fold.test) == items and len(fold.val) == len(fold.test) == 3
    assert plan_folds(items, 1, 0.25, 0.25, seed, labels=labels) == [fold]  # deterministic


def test_validation_never_takes_the_last_training_item_of_a_class():
    # class 2 has two items: when one is tested, the other must stay in training, not validate
    items = [f"s{i:02d}" for i in range(10)]
    labels = {item: np.array([0 if i < 4 else 1 if i < 8 else 2]) for i, item in enumerate(items)}
    for seed in range(20):
        for fold in plan_folds(items, 2, validation_split=0.2, seed=seed, labels=labels):
            assert _classes(fold.train, labels) == _classes(fold.train + fold.val, labels)
            assert len(fold.val) == 2


# --- 8. zero-variance differences -----------------------------------------------------------------

def test_identical_differences_are_untested_not_infinite(tmp_path):
    result = sig.corrected_t_test([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], test_train_ratio=0.5)
    assert math.isnan(result.t) and math.isnan(result.p)
    # through the report of a folder: instance 2 is 0.1 below instance 1 in every fold
    store = ExperimentStore(tmp_path / "exp", "toy", 1)
    for run, accs in ((1, [0.9, 0.8, 0.7]), (2, [0.8, 0.7, 0.6])):
        for fold, acc in enumerate(accs, start=1):
            record = {f"{s}_{m}": acc for s in ("train", "val", "test") for m in ("loss", "acc", "f1", "precision", "recall")}
            record.update(train_items=[f"t{fold}"], val_items=[f"v{fold}"], test_items=[f"x{fold}"],
                          test_true=np.zeros(10, np.int64), n_test=10, n_train=20, history={}, epochs=1, best_epoch=1)
            store.save_fold(run, fold, {"comment_1": str(run), "comment_2": ""}, "classification", 3, record)
        store.rebuild_instance(run, {"instance": run, "parameters": {"comment_1": str(run), "comment_2": ""},
                                     "task_type": "classification", "dataset": "toy", "num_folds": 3})
    result = xval("report", tmp_path / "exp")
    assert result.exit_code == 0, result.output
    summary = {row["ID"]: row for row in read_csv(tmp_path / "exp" / "summary.csv")}
    assert summary["1"]["significance"] == "best"
    assert summary["2"]["significance"] == "untested: identical differences" and summary["2"]["p_value"] == ""
    ws = load_workbook(tmp_path / "exp" / "toy_exp1_results.xlsx")["summary"]
    cells = [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    assert "untested: identical differences" in cells and not any(v in ("inf", "-inf") for v in cells)


def test_fold_sizes_fall_back_only_when_needed():
    # Issue 30.7: records with n_test / n_train but neither train_items nor test_true (as older or
    # external records may be): the fallback was evaluated eagerly and raised KeyError.
    def record(acc: float, fold: int) -> dict:
        return {"test_acc": acc, "test_items": [f"x{fold}"], "n_test": 10, "n_train": 40}

    assert sig.fold_sizes(record(0.5, 1), 3.0) == (10.0, 40.0)
    folds = {1: {f: record(a, f) for f, a in enumerate([0.8, 0.9, 1.0], 1)},
             2: {f: record(a, f) for f, a in enumerate([0.7, 0.7, 0.7], 1)}}
    best, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert best == 1 and marks[2].ratio == pytest.approx(0.25)
    # Without n_train the item estimate is still used: 2 training items x 10 datapoints per test item.
    old = {"test_acc": 0.5, "test_items": ["x"], "test_true": np.zeros(10), "train_items": ["a", "b"]}
    assert sig.fold_sizes(old, sig.datapoints_per_item([old])) == (10.0, 20.0)


def test_a_single_fold_has_no_spread_on_the_console_or_in_the_summary(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: mlp("one")}, num_folds=1, global_parameters=MLP)
    result = xval("run", path, "--cpu", "--config", config_file)
    assert result.exit_code == 0, result.output
    done = [line for line in result.output.splitlines() if "instance 1 done" in line]
    assert done and "test accuracy" in done[0] and "±" not in done[0], result.output
    summary = read_csv(results_folder(path) / "summary.csv")
    assert summary[0]["test_mean_acc"] != "" and summary[0]["test_std_acc"] == ""  # missing, not 0.0


# --- 9. scikit-learn floor ------------------------------------------------------------------------

def test_scikit_learn_floor_has_what_folds_needs():
    import inspect
    import re

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (floor,) = [re.fullmatch(r"scikit-learn>=([\d.]+)", r).group(1) for r in project["dependencies"]
                if r.startswith("scikit-learn")]
    assert tuple(map(int, floor.split("."))) >= (1, 6)  # GroupKFold(shuffle=, random_state=) came in 1.6

    from sklearn.model_selection import GroupKFold

    assert "shuffle" in inspect.signature(GroupKFold).parameters


# --- 10. foreign results folders ------------------------------------------------------------------

class Planted:
    """A 'fold record' whose unpickling would create a file (any code could run the same way)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_foreign_pickle_is_refused_and_runs_nothing(tmp_path):
    folder = tmp_path / "received" / "demo" / "experiment_1"
    (folder / "results" / "folds").mkdir(parents=True)
    marker = tmp_path / "pwned"
    bad = folder / "results" / "folds" / "demo_exp1_run1_fold1.pkl"
    bad.write_bytes(pickle.dumps({"parameters": {}, "record": Planted(str(marker))}))
    (folder / "results" / "results_demo_exp1_run1.pkl").write_bytes(pickle.dumps({"folds": {}}))
    result = xval("report", folder)
    assert not marker.exists()
    assert result.exit_code != 0
    line = result.output.strip()
    assert "\n" not in line and str(bad) in line and "io.open" in line


def test_real_results_read_back_through_the_restricted_reader(mixed_run):
    # every record xvalkit writes (arrays, numpy scalars, tuples, NaN) passes the restricted reader
    from xvalkit.safe_pickle import load

    _, folder, _, _ = mixed_run
    paths = sorted((folder / "results").rglob("*.pkl"))
    assert len(paths) == 4 + 4 * 2
    for path in paths:
        with open(path, "rb") as handle:
            assert load(handle) is not None


# --- 3. augmented copies out of validation and test ------------------------------------------------

def test_augmented_copies_train_only(tmp_path):
    corpus, augmented, data = tmp_path / "corpus", tmp_path / "corpus_aug", tmp_path / "data"
    sr = 16000
    rng = np.random.default_rng(0)
    t = np.arange(int(0.3 * sr)) / sr
    for speaker in range(6):
        for label, f0 in (("low", 150.0), ("high", 400.0)):
            for take in range(2):
                audio = 0.3 * np.sin(2 * np.pi * (f0 + 10 * speaker + 5 * take) * t) + 0.01 * rng.normal(size=len(t))
                (corpus / f"spk{speaker}" / label).mkdir(parents=True, exist_ok=True)
                sf.write(corpus / f"spk{speaker}" / label / f"t{take}.wav", audio.astype(np.float32), sr)
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data}\n[features]\nfix_length = 0.3\nfeatures_type = \"mfcc\"\n")
    assert xval("augment", corpus, augmented, 2, "--seed", 1, "--config", config).exit_code == 0
    result = xval("preprocess", "folder", "--input", augmented, "--name", "aug", "--config", config)
    assert result.exit_code == 0, result.output
    ds = load_dataset(data, "aug")
    sources, flags = ds.manifest["sources"]["spk0"], ds.manifest["augmented"]["spk0"]
    assert len(flags) == 12 and sum(flags) == 8  # 4 files x (_orig + _aug1 + _aug2)
    assert all(flag == ("_aug" in source) for source, flag in zip(sources, flags))

    path = write_experiment(tmp_path, {1: mlp("x", "num_epochs=1")}, dataset="aug", global_parameters=MLP,
                            num_folds=3)
    plan = xval("plan", path, "--config", config)
    assert plan.exit_code == 0, plan.output
    assert "validation and test use the 24 original ones only" in plan.output.replace("\n", " ")
    result = xval("run", path, "--cpu", "--config", config, "--quiet")
    assert result.exit_code == 0, result.output
    folder = results_folder(path, "aug")
    results = ExperimentStore(folder, "aug", 1).load_instance(1)
    for fold in results["folds"].values():
        assert len(fold["test_true"]) == fold["n_test"] == 4 * len(fold["test_items"])  # originals only
        assert fold["n_val"] == 4 * len(fold["val_items"])
        assert fold["n_train"] == 12 * len(fold["train_items"])  # training keeps the copies
        assert fold["excluded_augmented"] == {"val": 8 * len(fold["val_items"]), "test": 8 * len(fold["test_items"])}
    ws = load_workbook(folder / "aug_exp1_results.xlsx")["summary"]
    notes = " ".join(str(c.value) for row in ws.iter_rows() for c in row if c.value)
    assert "validation and test metrics are measured on the original datapoints only" in notes
