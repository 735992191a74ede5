"""The experiment folder: the single source of truth for results.

<experiment_folder>/<dataset>/experiment_<N>/
  experiment_<N>_description.txt
  code/                                         snapshot of what ran (snapshot.py)
  models/<dataset>_exp<N>_run<R>_fold<F>.hdf5   (or .pt)
  results/results_<dataset>_exp<N>_run<R>.pkl   one dict per instance, rewritten after each fold
  results/error_<dataset>_exp<N>_run<R>.txt     the traceback of a failed instance
  tensorboard/run<R>/fold<F>/                   TensorBoard logs
  <dataset>_exp<N>_results.xlsx, results.csv    the report (report.py), rebuilt from the pickles

A fold is complete exactly when it is in its instance's pickle; the pickle is written atomically
after the fold's model, so an interrupted run resumes at the first missing fold.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from . import atomic
from .errors import XvalError


class ExperimentStore:
    def __init__(self, folder: Path, dataset: str, num_experiment: int):
        self.folder = Path(folder)
        self.dataset = dataset
        self.num_experiment = num_experiment
        self.prefix = f"{dataset}_exp{num_experiment}"

    # --- paths -------------------------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        return self.folder / "results"

    @property
    def models_dir(self) -> Path:
        return self.folder / "models"

    @property
    def code_dir(self) -> Path:
        return self.folder / "code"

    @property
    def spreadsheet_path(self) -> Path:
        return self.folder / f"{self.prefix}_results.xlsx"

    @property
    def description_path(self) -> Path:
        return self.folder / f"experiment_{self.num_experiment}_description.txt"

    def results_path(self, run: int) -> Path:
        return self.results_dir / f"results_{self.prefix}_run{run}.pkl"

    def error_path(self, run: int) -> Path:
        return self.results_dir / f"error_{self.prefix}_run{run}.txt"

    def model_path(self, run: int, fold: int, extension: str) -> Path:
        return self.models_dir / f"{self.prefix}_run{run}_fold{fold}{extension}"

    def tensorboard_dir(self, run: int, fold: int) -> Path:
        return self.folder / "tensorboard" / f"run{run}" / f"fold{fold}"

    # --- reading -----------------------------------------------------------------------------
    def load_instance(self, run: int) -> dict[str, Any] | None:
        path = self.results_path(run)
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as handle:
                return pickle.load(handle)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise XvalError(f"{path}: unreadable results ({exc}); delete it or rerun with --overwrite") from None

    def instance_ids(self) -> list[int]:
        pattern = re.compile(rf"^results_{re.escape(self.prefix)}_run(-?\d+)\.pkl$")
        found = set()
        for folder_pattern in (pattern, re.compile(rf"^error_{re.escape(self.prefix)}_run(-?\d+)\.txt$")):
            if self.results_dir.is_dir():
                for path in self.results_dir.iterdir():
                    match = folder_pattern.match(path.name)
                    if match:
                        found.add(int(match.group(1)))
        return sorted(found)

    def load_all(self) -> dict[int, dict[str, Any]]:
        return {run: r for run in self.instance_ids() if (r := self.load_instance(run)) is not None}

    def error_text(self, run: int) -> str | None:
        path = self.error_path(run)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    # --- writing -----------------------------------------------------------------------------
    def write_description(self, text: str) -> None:
        atomic.write_text(self.description_path, text.rstrip() + "\n")

    def save_instance(self, run: int, results: dict[str, Any]) -> None:
        atomic.write_pickle(self.results_path(run), results)

    def save_error(self, run: int, text: str) -> None:
        atomic.write_text(self.error_path(run), text)

    def clear_error(self, run: int) -> None:
        self.error_path(run).unlink(missing_ok=True)

    def clear_instance(self, run: int) -> None:
        """Forget an instance's results, models and logs (for --overwrite)."""
        self.results_path(run).unlink(missing_ok=True)
        self.clear_error(run)
        if self.models_dir.is_dir():
            for path in self.models_dir.glob(f"{self.prefix}_run{run}_fold*"):
                path.unlink(missing_ok=True)
        board = self.folder / "tensorboard" / f"run{run}"
        if board.is_dir():
            import shutil

            shutil.rmtree(board, ignore_errors=True)
