"""Plots at sweep scale: from 24 instances, the instance plots of the 24 best by the selection
metric and of failed or diverged instances; `xval report --plots all` draws every one."""

from __future__ import annotations

import math

import openpyxl
import pytest

from xvalkit.reporting.drawer import BEST_PLOTTED, PlotDrawer
from xvalkit.store import ExperimentStore

from .conftest import instance, write_experiment
from .test_correctness import results_folder, xval

SEEDS = 26


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_folder):
    """26 seeds of a tiny torch MLP and one instance that diverges: 27 instances x 2 folds."""
    tmp = tmp_path_factory.mktemp("sweep_plots")
    config = tmp / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    path = write_experiment(tmp, {1: instance("seeds", "MLP_model", "none"),
                                  2: instance("diverges", "MLP_model", "none", 'optimizer="sgd"', "learning_rate=1e12")},
                            num_folds=2, global_parameters=['framework="torch"', "num_epochs=2", "hidden_sizes=(8,)",
                                                            "tensorboard=False"],
                            extra=f"sweep = {{1: ['seed={list(range(SEEDS))!r}']}}\n")
    result = xval("run", path, "--cpu", "--quiet", "--config", config)
    assert result.exit_code == 0, result.output
    return path, config, results_folder(path)


def expected_best(folder) -> list[int]:
    """The 24 best instances by mean validation accuracy over their folds (ties: the lower ID),
    the diverged one left out: computed here from the fold records."""
    results = ExperimentStore(folder, "demo", 1).load_all()
    means = {run: sum(f["val_acc"] for f in r["folds"].values()) / len(r["folds"]) for run, r in results.items()
             if not any(f.get("diverged") for f in r["folds"].values())}
    assert all(math.isfinite(m) for m in means.values())
    return sorted(means, key=lambda run: (-means[run], run))[:BEST_PLOTTED]


def plots_sheet(folder) -> tuple[list[str], list[str]]:
    """(the note lines above the plots, the plots' file names in order) of the workbook's plots sheet."""
    ws = openpyxl.load_workbook(folder / "demo_exp1_results.xlsx")["plots"]
    cells = [str(row[0].value) for row in ws.iter_rows(max_col=1) if row[0].value is not None]
    return [c for c in cells if not c.endswith(".png")], [c for c in cells if c.endswith(".png")]


def test_the_workbook_shows_the_plots_of_the_best_and_the_diverged(sweep):
    _, _, folder = sweep
    note, names = plots_sheet(folder)
    best = expected_best(folder)
    instance_plots = [n for n in names if "_run" in n]
    assert instance_plots == [f"demo_exp1_run{run}.png" for run in best + [2]]  # best first, then the diverged one
    assert "demo_exp1_test_acc.png" in names  # the summary plot stays
    assert note[0].startswith(f"Instance plots: the 24 best of {SEEDS + 1} instances by validation")
    assert note[0].endswith("best first, then 1 failed or diverged.")
    assert "`xval report EXP --plots all` draws every instance's plot" in note[1]
    assert all((folder / "plots" / name).is_file() for name in names)


def test_report_plots_all_draws_every_instance(sweep):
    path, config, folder = sweep
    result = xval("report", path, "--plots", "all", "--config", config)
    assert result.exit_code == 0, result.output
    note, names = plots_sheet(folder)
    ids = sorted(ExperimentStore(folder, "demo", 1).instance_ids())
    assert [n for n in names if "_run" in n] == [f"demo_exp1_run{run}.png" for run in ids] and len(ids) == SEEDS + 1
    assert note == [] and all((folder / "plots" / name).is_file() for name in names)
    result = xval("report", path, "--plots", "some", "--config", config)
    assert result.exit_code == 2 and "--plots some: use best, all or none" in result.output


def test_the_run_draws_only_instances_that_may_be_among_the_best(tmp_path):
    """The drawer of a run draws an instance while it is among the 24 best finished so far, or diverged."""
    drawer = PlotDrawer(ExperimentStore(tmp_path, "demo", 1), "classification", {"selection_metric_classification": "val_loss"})
    try:
        def results(loss: float, diverged: bool = False) -> dict:
            return {"summary": {"val": {"mean_loss": loss}}, "folds": {1: {"diverged": "NaN" if diverged else None}}}

        assert all(drawer._may_be_shown(results(1.0 + i)) for i in range(BEST_PLOTTED))  # the first 24
        assert not drawer._may_be_shown(results(100.0))  # a higher loss than all 24: never shown
        assert drawer._may_be_shown(results(0.5))  # a new best
        assert not drawer._may_be_shown(results(1.0 + BEST_PLOTTED - 1))  # pushed out by 0.5
        assert drawer._may_be_shown(results(float("nan"), diverged=True))
    finally:
        drawer.close()


@pytest.mark.parametrize("settings, expected", [
    ({"selection_metric_classification": "", "main_metric_classification": "test_ua"}, "test_ua"),
    ({"selection_metric_classification": "val_loss", "main_metric_classification": "test_acc"}, "val_loss"),
    (None, "val_acc"),  # the packaged defaults
])
def test_the_run_ranks_on_the_metric_the_report_chooses_the_best_by(tmp_path, settings, expected):
    """An empty selection metric means the main metric, for the run's drawer as for the report
    (the drawer fell back to val_acc: it drew the plots of other instances than the report shows)."""
    drawer = PlotDrawer(ExperimentStore(tmp_path, "demo", 1), "classification", settings)
    try:
        assert drawer.chooser == expected
        if settings:
            from xvalkit.reporting.tables import selection_metric

            assert selection_metric(settings, "classification") == expected
    finally:
        drawer.close()
