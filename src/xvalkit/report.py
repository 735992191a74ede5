"""The report of an experiment, rebuilt from its folder alone: spreadsheet, csv tables, plots.

Because everything is read back from the results pickles, a report works on a finished, a running
or a crashed experiment alike; instances with missing or failed folds say so in `status` and
`folds done`. The pieces live in xvalkit.reporting: tables (rows), significance (the corrected
resampled t-test), spreadsheet (openpyxl) and plots (matplotlib).

    <folder>/<dataset>_exp<N>_results.xlsx   sheets summary, folds, parameters, plots
    <folder>/results.csv                     one row per instance and fold
    <folder>/summary.csv                     one row per instance
    <folder>/plots/*.png                     learning curves (+ confusion matrix) per instance, main metric
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import atomic
from .errors import XvalError
from .store import ExperimentStore

if TYPE_CHECKING:
    import pandas as pd

    from .config import Config


@dataclass(frozen=True)
class ReportFiles:
    spreadsheet: Path
    results_csv: Path
    summary_csv: Path
    plots: tuple[Path, ...]
    rebuilt: bool = True  # False: the report was up to date (reporting.freshness), nothing was written


class Results(NamedTuple):
    """`xvalkit.load_results(folder)`: the tidy tables of an experiment as pandas DataFrames."""

    folds: pd.DataFrame  # results.csv: one row per instance and fold
    summary: pd.DataFrame  # summary.csv: one row per instance


def report_settings(store: ExperimentStore, config: Config | None = None) -> dict[str, Any]:
    """The [report] settings: packaged defaults < the run's code/config.ini < ./config.ini, --config."""
    from .config import PACKAGED_CONFIG, _read_ini, load_config

    config = config or load_config()
    settings = _read_ini(PACKAGED_CONFIG).get("report", {})
    snapshot = store.code_dir / "config.ini"
    later = [snapshot] if snapshot.is_file() else []
    later += [f for f in config.files if Path(f).resolve() != PACKAGED_CONFIG.resolve()]
    for path in later:
        settings.update(_read_ini(Path(path)).get("report", {}))
    level = settings.get("significance_level")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise XvalError(f"config [report] significance_level = {level!r}: use a number between 0 and 1, e.g. 0.05")
    for key in ("rope_classification", "rope_regression"):
        rope = settings.get(key, 0.0)
        if isinstance(rope, bool) or not isinstance(rope, (int, float)) or not rope >= 0:
            raise XvalError(f"config [report] {key} = {rope!r}: use a number >= 0 in the main metric's units, e.g. 0.01")
    return settings


def _tables(store: ExperimentStore, settings: dict[str, Any]):
    from .reporting import tables

    data = tables.collect(store, settings)
    summary = tables.summary_rows(data)
    return data, summary, tables.fold_rows(data), tables.parameter_rows(data)


def read_tables(store: ExperimentStore, config: Config | None = None):
    """(ReportData, summary rows, fold rows, parameter rows): what the report shows, for other exports."""
    return _tables(store, report_settings(store, config))


def _summary_table(summary: list[dict[str, Any]], parameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """summary.csv rows: the sheet's columns, then every parameter as param_<name>."""
    params = {row["ID"]: row for row in parameters}
    return [{**row, **{f"param_{k}": v for k, v in params[row["ID"]].items() if k != "ID"}} for row in summary]


def _ratio_note(data) -> str:
    ratios = [m.ratio for m in data.marks.values() if not math.isnan(m.ratio)]
    used = f" (here {min(ratios):.3g} to {max(ratios):.3g})" if ratios else ""
    return ("n_test/n_train per fold: the test and training datapoints recorded with each fold (estimated from "
            f"item counts for older records without them), averaged over the compared folds{used}.")


def refresh(store: ExperimentStore, plots: bool = False, config: Config | None = None,
            instance_plots: bool = True, force: bool = False, every_plot: bool = False) -> ReportFiles:
    """Rebuild the spreadsheet, results.csv and summary.csv (and, with `plots`, the PNGs; without
    `instance_plots`, only the summary plots, showing the instance plots already drawn). From 24
    instances, instance plots of the best and of failed or diverged ones only, unless `every_plot`
    (reporting.plots.shown_instances).

    A report whose inputs and files have not changed since it was written is kept as it is (see
    reporting.freshness; the result says `rebuilt=False`), unless `force`.
    """
    from .reporting import freshness

    settings = report_settings(store, config)
    # A refresh beside a run's drawer shows the instance plots drawn so far: not a function of the
    # results alone, and never kept (the run's last report draws them all).
    complete = not plots or instance_plots
    inputs = freshness.inputs_digest(store, settings, plots=plots, every_plot=every_plot)
    kept = freshness.check(store, inputs) if complete and not force else None
    if kept is not None and len(kept) >= 3:
        return ReportFiles(kept[0], kept[1], kept[2], tuple(kept[3:]), rebuilt=False)
    import pandas as pd

    from .reporting import spreadsheet

    data, summary, folds, parameters = _tables(store, settings)
    results_csv, summary_csv = store.folder / "results.csv", store.folder / "summary.csv"
    built = []

    def tables_and_sheets() -> None:  # while worker processes draw the instance plots
        atomic.write_text(results_csv, pd.DataFrame(folds).to_csv(index=False))
        atomic.write_text(summary_csv, pd.DataFrame(_summary_table(summary, parameters)).to_csv(index=False))
        built.append(spreadsheet.build_workbook(data, summary, folds, parameters, _ratio_note(data)))

    drawn: list[Path] = []
    note = None
    if plots:
        from .reporting import plots as plotting

        best, flagged = plotting.shown_instances(data, every_plot)  # ranked once, for the plots and the note
        drawn = plotting.draw(data, summary, store.folder / "plots", store.prefix, meanwhile=tables_and_sheets,
                              instance_plots=instance_plots, shown=best + flagged)
        note = plotting.plots_note(data, best, flagged)
        # Plots now carry their signature inside; the list that older versions kept is obsolete.
        (store.results_dir / "plot_signatures.json").unlink(missing_ok=True)
    else:
        tables_and_sheets()
    atomic.write_bytes(store.spreadsheet_path, spreadsheet.finish_workbook(built[0], drawn, note))
    files = ReportFiles(store.spreadsheet_path, results_csv, summary_csv, tuple(drawn))
    if complete:
        freshness.record(store, inputs, [files.spreadsheet, files.results_csv, files.summary_csv, *files.plots])
    return files


def load_results(target: str | Path, config: Config | None = None) -> Results:
    """The tables of an experiment as DataFrames, rebuilt from its folder (what the csv files hold).

    `target`: an experiment folder, an experiment module, or an experiment's name (see open_store).
    """
    import pandas as pd

    store, exp_config = open_store(target)
    data, summary, folds, parameters = _tables(store, report_settings(store, config or exp_config))
    return Results(pd.DataFrame(folds), pd.DataFrame(_summary_table(summary, parameters)))


_FOLDER = re.compile(r"^experiment_(\d+)$")
_PICKLE = re.compile(r"^(?:results|error)_(.+)_exp(\d+)_run-?\d+\.(?:pkl|txt)$")


def open_store(target: str | Path, config_file: str | Path | None = None) -> tuple[ExperimentStore, Config | None]:
    """The store of `target` and the experiment's config (None for a folder).

    `target` is an experiment folder (it holds results/), or a module as every command takes it
    (experiment.find_experiment: `experiments/exp1.py`, `exp1` ...).
    """
    from .experiment import find_experiment, load_experiment

    path = Path(target)
    if path.is_dir():
        return _folder_store(path), None
    try:
        module = find_experiment(path)
    except XvalError as exc:
        raise XvalError(f"{exc}; nor an experiment folder (one holding results/)") from None
    exp = load_experiment(module, config_file=config_file)
    if not (exp.folder / "results").is_dir():
        raise XvalError(f"{module}: no results yet in {exp.folder}; run `xval run {module}` first")
    return ExperimentStore(exp.folder, exp.dataset, exp.num_experiment), exp.config


def _folder_store(folder: Path) -> ExperimentStore:
    results = folder / "results"
    if not results.is_dir():
        raise XvalError(f"{folder}: not an experiment folder (no results/ in it); give the folder "
                        "<experiment_folder>/<dataset>/experiment_<N> or the experiment module")
    names = {(m.group(1), int(m.group(2))) for p in results.iterdir() if (m := _PICKLE.match(p.name))}
    match = _FOLDER.match(folder.resolve().name)
    guess = (folder.resolve().parent.name, int(match.group(1))) if match else None
    if guess in names or (guess and not names):
        return ExperimentStore(folder, *guess)
    if len(names) == 1:
        return ExperimentStore(folder, *names.pop())
    if not names:
        raise XvalError(f"{folder}: no results in results/ yet")
    raise XvalError(f"{folder}: results of several experiments in results/ ({', '.join(sorted(f'{d}_exp{n}' for d, n in names))}); "
                    "give the experiment module instead")
