"""Whether an experiment's report is up to date: nothing it reads or wrote has changed since.

A report is a function of the files in results/ and results/folds/ (instance pickles, fold records,
error files), the [report] settings, whether plots are drawn, and the code that builds it (xvalkit,
openpyxl, matplotlib). After each report, `record` keeps a digest of all of these, and the size,
modification time and inode of every file the report wrote, in results/report_state.json. `check`
compares both with the folder now: when nothing differs, `xval report` has nothing to do (a
thousand instances' workbook and plots took 15 s to write again, the same). Any difference (a new
fold, another setting, a deleted plot, a workbook opened and saved elsewhere, a newer xvalkit)
rebuilds the report, as does a missing or unreadable state file: it is a cache, never a source.

Atomic writes replace a file by a new inode, so (size, mtime, inode) changes with every rewrite,
even within the file system's clock tick.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from .. import atomic
from ..store import ExperimentStore

STATE_NAME = "report_state.json"
_LIBRARIES = ("openpyxl", "lxml", "matplotlib", "numpy", "scipy", "pandas")


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino]


def _listing(folder: Path) -> list[tuple[str, list[int]]]:
    try:
        with os.scandir(folder) as entries:
            return sorted((e.name, _stamp(e.stat())) for e in entries if e.is_file() and e.name != STATE_NAME)
    except FileNotFoundError:
        return []


@cache
def code_stamp() -> str:
    """xvalkit's version and every one of its source files (an editable install changes without a
    new version), and the versions of the libraries that shape the files."""
    return tree_stamp(Path(__file__).resolve().parents[1])


def tree_stamp(package: Path) -> str:
    from importlib import metadata

    from .. import __version__

    sources = sorted((str(p.relative_to(package)), _stamp(p.stat())) for p in package.rglob("*.py"))
    libraries = []
    for name in _LIBRARIES:
        try:
            libraries.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            libraries.append((name, None))
    return hashlib.sha1(repr((__version__, sources, libraries)).encode()).hexdigest()


def inputs_digest(store: ExperimentStore, settings: dict[str, Any], **flags: bool) -> str:
    """A digest of what a report of `store` would be built from now. Take it before reading the
    folder: a fold finished while the report is built then makes the next check rebuild it."""
    listing = (_listing(store.results_dir), _listing(store.results_dir / "folds"))
    described = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha1(repr((listing, described, sorted(flags.items()), code_stamp())).encode()).hexdigest()


def _outputs(store: ExperimentStore, paths: list[Path]) -> dict[str, list[int]]:
    return {os.path.relpath(path, store.folder): _stamp(path.stat()) for path in paths}


def record(store: ExperimentStore, inputs: str, outputs: list[Path]) -> None:
    """Keep `inputs` (from inputs_digest) beside the state of the files the report just wrote."""
    try:  # a cache: without it (a full disk), the next report is built again, nothing worse
        state = {"inputs": inputs, "outputs": _outputs(store, outputs)}
        atomic.write_text(store.results_dir / STATE_NAME, json.dumps(state, indent=1), durable=False)
    except OSError:
        pass


def check(store: ExperimentStore, inputs: str) -> list[Path] | None:
    """The files of the last report if it is up to date for `inputs` (and none of them changed
    since it wrote them), else None."""
    try:
        state = json.loads((store.results_dir / STATE_NAME).read_text())
        if state["inputs"] != inputs:
            return None
        paths = [store.folder / name for name in state["outputs"]]
        return paths if _outputs(store, paths) == state["outputs"] else None
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable, a file gone: rebuild
        return None
