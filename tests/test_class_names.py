"""Class names from the dataset's manifest in the confusion matrices: the workbook's confusion
sheet and the plots, as `xval run` and `xval report` write them."""

from __future__ import annotations

import numpy as np
from openpyxl import load_workbook
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.data import save_dataset
from xvalkit.experiment import load_experiment
from xvalkit.jobs import execute
from xvalkit.runner import RunOptions, base_results, make_jobs, prepare
from xvalkit.store import ExperimentStore

from .conftest import write_experiment

NAMES = ["calm", "angry", "sad"]


def test_confusion_matrices_name_the_classes(tmp_path):
    rng = np.random.default_rng(0)
    predictors = {f"spk{i}": rng.normal(size=(6, 5, 4)).astype("float32") for i in range(6)}
    targets = {f"spk{i}": np.arange(6) % 3 for i in range(6)}
    save_dataset(tmp_path / "data", "moods", predictors, targets, {"classes": NAMES})
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {tmp_path / 'data'}\n")
    path = write_experiment(tmp_path, {1: ['architecture="MLP_model"', 'reshaping_type="none"', 'framework="torch"',
                                           'comment_1="mlp"', 'comment_2="t"']},
                            dataset="moods", num_folds=3, global_parameters=["num_epochs=1", "tensorboard=False"])
    exp = load_experiment(path, config_file=config)
    _, instances, store = prepare(exp, RunOptions())
    store.write_description(exp.short_description)  # as xval run does first: jobs check the folder is there
    records = [execute(job) for job in make_jobs(exp, instances[0])]
    assert all(r["classes"] == NAMES for r in records)
    store.rebuild_instance(1, base_results(exp, instances[0]))

    result = CliRunner().invoke(app, ["report", str(exp.folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ws = load_workbook(ExperimentStore(exp.folder, "moods", 1).spreadsheet_path)["confusion"]
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    assert rows[0][0].startswith("instance 1: mlp / t (test, summed over 3 folds)")
    assert rows[1][:4] == ["true \\ predicted", *NAMES]
    assert [r[0] for r in rows[2:5]] == NAMES
    expected = sum(np.asarray(r["test_confusion_matrix"]) for r in records)
    assert np.array_equal(np.array([r[1:4] for r in rows[2:5]]), expected)
    assert expected.sum() == 36  # every datapoint tested once

    # the plot of instance 1 names them on both axes
    from xvalkit.reporting import plots, tables

    from xvalkit.report import report_settings

    store = ExperimentStore(exp.folder, "moods", 1)
    data = tables.collect(store, report_settings(store))
    plt = plots._pyplot()
    fig = plots.instance_figure(plt, data.instances[0], "classification")
    matrix_axes = fig.axes[2]
    assert [t.get_text() for t in matrix_axes.get_xticklabels()] == NAMES
    assert [t.get_text() for t in matrix_axes.get_yticklabels()] == NAMES
    plt.close(fig)


def test_classes_the_manifest_does_not_name_keep_their_index():
    from xvalkit.reporting.tables import InstanceInfo, test_confusion

    folds = {1: {"test_confusion_matrix": np.eye(3, dtype=int), "classes": ["a", "b"]},
             2: {"test_confusion_matrix": np.eye(3, dtype=int), "classes": ["a", "b"]}}
    total, labels, count = test_confusion(InstanceInfo(1, {"folds": folds, "num_folds": 2}, None))
    assert labels == ["a", "b", "2"] and count == 2 and np.array_equal(total, 2 * np.eye(3))
    old = {1: {"test_confusion_matrix": np.eye(2, dtype=int)}}  # folds recorded before class names were
    assert test_confusion(InstanceInfo(1, {"folds": old, "num_folds": 1}, None))[1] == ["0", "1"]
