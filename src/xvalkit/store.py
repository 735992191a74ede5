"""The experiment folder: the single source of truth for results.

<experiment_folder>/<dataset>/experiment_<N>/
  experiment_<N>_description.txt
  code/                                         snapshot of what ran (snapshot.py)
  models/<dataset>_exp<N>_run<R>_fold<F>.hdf5   (or .pt)
  results/folds/<dataset>_exp<N>_run<R>_fold<F>.pkl   one finished fold (the completion record)
  results/running/run<R>_fold<F>.json            a fold being trained now (pid, host, start)
  results/results_<dataset>_exp<N>_run<R>.pkl   one dict per instance, derived from its fold files
  results/error_<dataset>_exp<N>_run<R>.txt     the traceback of a failed instance
  logs/run<R>_fold<F>.log                       one line per epoch
  tensorboard/run<R>/fold<F>/                   TensorBoard logs
  <dataset>_exp<N>_results.xlsx, results.csv    the report (report.py), rebuilt from the pickles

A fold is complete exactly when its fold file exists. Whoever trains the fold (this process, a
worker process, a Ray task on another node) writes the model, then the fold file, each atomically;
the instance pickle is then rebuilt from the fold files by the one process that runs the
experiment. No two processes ever write the same file, so parallel folds cannot race, and a
`kill -9` at any moment loses at most the folds in progress.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import re
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from . import atomic
from .errors import XvalError
from .metrics import summarize


class ExperimentStore:
    def __init__(self, folder: Path, dataset: str, num_experiment: int, cache: bool = False):
        self.folder = Path(folder)
        self.dataset = dataset
        self.num_experiment = num_experiment
        self.prefix = f"{dataset}_exp{num_experiment}"
        # With `cache`, unpickled files by path, kept while their (mtime, size) is unchanged: the
        # report process of a run, refreshing many times, reads each fold file once. Off by default,
        # so that the runner's memory does not grow with the folds it finishes.
        self._read_cache: dict[Path, tuple[tuple[int, int], Any]] | None = {} if cache else None

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

    def fold_path(self, run: int, fold: int) -> Path:
        return self.results_dir / "folds" / f"{self.prefix}_run{run}_fold{fold}.pkl"

    def running_path(self, run: int, fold: int) -> Path:
        return self.results_dir / "running" / f"run{run}_fold{fold}.json"

    def log_path(self, run: int, fold: int) -> Path:
        return self.folder / "logs" / f"run{run}_fold{fold}.log"

    # --- reading -----------------------------------------------------------------------------
    def read(self, path: Path) -> Any:
        """A results pickle (from the cache, if kept, while the file is unchanged)."""
        if self._read_cache is None:
            return _read_pickle(path)
        try:
            stat = path.stat()
        except OSError:
            return _read_pickle(path)  # its one-line error
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._read_cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        value = _read_pickle(path)
        self._read_cache[path] = (key, value)
        return value

    def load_instance(self, run: int, fold_files: dict[int, Path] | None = None) -> dict[str, Any] | None:
        """An instance's results: its pickle, with the folds finished since it was last rebuilt.

        `fold_files`: its entry of `fold_files()` when the caller listed the folder already.
        """
        path = self.results_path(run)
        if not path.is_file():
            return None
        results = self.read(path)
        # Folds finished after the pickle was last rebuilt (the runner was killed in between); only
        # their files are read, the others' records being in the pickle already.
        files = self._files_of(run, fold_files)
        newer = self.load_folds(run, {i: f for i, f in files.items() if i not in results["folds"]})
        if not newer:
            return results
        folds = dict(sorted({**results["folds"], **{i: f["record"] for i, f in newer.items()}}.items()))
        return {**results, "folds": folds, "summary": summarize(folds, results["task_type"])}

    def instance_ids(self) -> list[int]:
        pattern = re.compile(rf"^results_{re.escape(self.prefix)}_run(-?\d+)\.pkl$")
        errors = re.compile(rf"^error_{re.escape(self.prefix)}_run(-?\d+)\.txt$")
        found = set()
        if self.results_dir.is_dir():
            for entry in os.scandir(self.results_dir):
                match = pattern.match(entry.name) or errors.match(entry.name)
                if match:
                    found.add(int(match.group(1)))
        return sorted(found)

    def fold_files(self) -> dict[int, dict[int, Path]]:
        """{instance: {fold: path}} of every finished fold, from one listing of results/folds."""
        pattern = re.compile(rf"^{re.escape(self.prefix)}_run(-?\d+)_fold(\d+)\.pkl$")
        found: dict[int, dict[int, Path]] = {}
        try:
            entries = list(os.scandir(self.results_dir / "folds"))
        except FileNotFoundError:
            return found
        for entry in entries:
            match = pattern.match(entry.name)
            if match:
                found.setdefault(int(match.group(1)), {})[int(match.group(2))] = Path(entry.path)
        return found

    def _files_of(self, run: int, fold_files: dict[int, Path] | None) -> dict[int, Path]:
        """{fold: path} of an instance: `fold_files` when the caller listed the folder already."""
        return self.fold_files().get(run, {}) if fold_files is None else fold_files

    def load_folds(self, run: int, fold_files: dict[int, Path] | None = None) -> dict[int, dict[str, Any]]:
        """The finished folds of an instance: {fold: {'parameters', 'task_type', 'num_folds', 'record'}}.

        `fold_files`: its entry of `fold_files()` when the caller listed the folder already.
        """
        files = self._files_of(run, fold_files)
        return {fold: self.read(path) for fold, path in sorted(files.items())}

    def running(self) -> dict[tuple[int, int], dict[str, Any]]:
        """Folds marked as running whose process is still alive (on this host) or on another host."""
        folder = self.results_dir / "running"
        found = {}
        if folder.is_dir():
            for path in folder.glob("run*_fold*.json"):
                match = re.match(r"^run(-?\d+)_fold(\d+)\.json$", path.name)
                try:
                    info = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if match and _alive(info):
                    found[(int(match.group(1)), int(match.group(2)))] = info
        return found

    def load_all(self) -> dict[int, dict[str, Any]]:
        files = self.fold_files()
        return {run: r for run in self.instance_ids() if (r := self.load_instance(run, files.get(run, {}))) is not None}

    def error_text(self, run: int) -> str | None:
        path = self.error_path(run)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def check_present(self) -> None:
        """Raise faults.EnvironmentFault if the experiment folder vanished (deleted, disk unmounted):
        writing on would silently make a new, empty one in its place."""
        if not self.folder.is_dir():
            from .faults import vanished

            raise vanished(self.folder)

    # --- writing -----------------------------------------------------------------------------
    def write_description(self, text: str) -> None:
        atomic.write_text(self.description_path, text.rstrip() + "\n")

    def save_instance(self, run: int, results: dict[str, Any]) -> None:
        atomic.write_pickle(self.results_path(run), results)

    def save_fold(self, run: int, fold: int, parameters: dict, task_type: str, num_folds: int,
                  record: dict[str, Any]) -> None:
        """The completion record of one fold (written after its model)."""
        atomic.write_pickle(self.fold_path(run, fold), {
            "parameters": parameters, "task_type": task_type, "num_folds": num_folds, "record": record,
        })

    def mark_running(self, run: int, fold: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "start": time.time()}
        # ephemeral, so not fsynced; a temporary file a kill -9 leaves goes at the next run (atomic.remove_left_behind)
        atomic.write_text(self.running_path(run, fold), json.dumps(info), durable=False)

    def unmark_running(self, run: int, fold: int) -> None:
        self.running_path(run, fold).unlink(missing_ok=True)

    def is_current(self, run: int, fold_files: dict[int, Path] | None = None) -> bool:
        """Whether the instance pickle holds exactly the folds that have fold files."""
        path = self.results_path(run)
        files = self._files_of(run, fold_files)
        return path.is_file() and set(self.read(path)["folds"]) == set(files)

    def rebuild_instance(self, run: int, base: dict[str, Any], fold_files: dict[int, Path] | None = None
                         ) -> dict[str, Any]:
        """Rebuild an instance's pickle from its fold files; `base` holds everything but the folds."""
        folds = {index: saved["record"] for index, saved in self.load_folds(run, fold_files).items()}
        results = {**base, "folds": folds, "summary": summarize(folds, base["task_type"]) if folds else {}}
        self.save_instance(run, results)
        return results

    def save_error(self, run: int, text: str) -> None:
        atomic.write_text(self.error_path(run), text)

    def add_error(self, run: int, label: str, text: str, *, first: bool = False) -> None:
        """A failed fold's traceback in its instance's error file: in place of what an earlier run
        left (`first` of this run), else after what is there. Under a lock on the results folder
        (no lock file is left behind): folds of one instance may fail at once in different
        processes (Slurm tasks)."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        folder = os.open(self.results_dir, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            old = None if first else self.error_text(run)
            self.save_error(run, (old + "\n" if old else "") + f"{label}\n{text}")
        finally:
            os.close(folder)

    def clear_error(self, run: int) -> None:
        self.error_path(run).unlink(missing_ok=True)

    def clear_instance(self, run: int) -> None:
        """Forget an instance's results, models and logs (for --overwrite)."""
        import shutil

        self.results_path(run).unlink(missing_ok=True)
        self.clear_error(run)
        for folder, pattern in ((self.models_dir, f"{self.prefix}_run{run}_fold*"),
                                (self.results_dir / "folds", f"{self.prefix}_run{run}_fold*"),
                                (self.folder / "logs", f"run{run}_fold*")):
            if folder.is_dir():
                for path in folder.glob(pattern):
                    path.unlink(missing_ok=True)
        shutil.rmtree(self.folder / "tensorboard" / f"run{run}", ignore_errors=True)


def innermost(exc: BaseException) -> BaseException:
    """The exception a wrapper only restates: Keras re-raises a layer's error as 'Exception
    encountered when calling Boom.call(). <the message> Arguments received by ...' (from None), so
    the chain is followed while the inner exception's message is part of the outer one's."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen or not str(inner) or str(inner) not in str(exc):
            return exc
        seen.add(id(inner))
        exc = inner


def failure_text(exc: BaseException) -> str:
    """What a failed fold's error file holds: its traceback as plain text (no terminal escape codes,
    which Keras puts in its messages), ending with the innermost cause when a wrapper restated it,
    so that error_line shows the user's message."""
    text = "".join(traceback.format_exception(exc))
    cause = innermost(exc)
    if cause is not exc:
        text += "\nThe cause, as raised (restated above):\n" + "".join(traceback.format_exception(cause, chain=False))
    # A class of the user's models module by its own name: BoomError, not _xval_models_1234.BoomError
    return re.sub(r"\b_xval_[a-z]+_\d+\.", "", plain(text))


def plain(text: str) -> str:
    """`text` less terminal escape codes (colours, bold)."""
    from rich.text import Text

    return Text.from_ansi(text).plain


def error_line(traceback_text: str, width: int | None = None) -> str:
    """The last exception of a saved traceback as 'RuntimeError: <first line of its message>', cut
    to `width`; the first line of a text that holds no traceback ('killed by signal 9 ...').

    Not the traceback's last line: a multi-line message (h5py's) would show its last fragment.
    """
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "') and line[:1].isspace()]
    after = lines[frames[-1] + 1:] if frames else lines
    found = next((line for line in after if not line[:1].isspace() and not line.startswith("Traceback (")), None)
    return (found or (lines[0] if lines else "unknown error")).strip()[:width]


def _read_pickle(path: Path) -> Any:
    """A results pickle, read as plain data only (safe_pickle): a foreign folder cannot run code."""
    from .safe_pickle import ForeignObject, load

    try:
        with open(path, "rb") as handle:
            return load(handle)
    except ForeignObject as exc:
        raise XvalError(
            f"{path}: refers to {exc.what}, which xvalkit never writes into results (only numbers, strings, "
            "lists and numpy arrays); not read, since unpickling it could run code. Remove the file if you do "
            "not trust it"
        ) from None
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
        raise XvalError(f"{path}: unreadable results ({exc}); delete it or rerun with --overwrite") from None


def _alive(info: dict[str, Any]) -> bool:
    """Whether the process that marked a fold as running still runs (unknowable on another host)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        pid = int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return False
    return atomic.process_alive(pid)
