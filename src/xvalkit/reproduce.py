"""`xval reproduce EXP [INSTANCE [FOLD]]`: train finished folds again from what the experiment
folder recorded, and say whether their numbers come out again (comparison.py).

For each chosen fold (default: one fold of each instance, at random):
1. the code that trained it: the snapshot (code/, or code/previous/<time>/ after a later run with
   other code) whose files have the SHA-256 that the run's record (code/runs/<run id>.json) keeps;
   refused without --trust-code when the folder or that code is not the user's own, since loading
   it runs it;
2. the data: every file of the dataset must have the SHA-256 the fold record keeps;
3. the fold trained again by jobs.execute, as `xval run` trains it, in a temporary folder: the
   snapshot's experiment and models module, the recorded parameters, items and seed;
4. its metrics on every set, history, test predictions and weights compared with the record's.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .comparison import FoldResult, Verdict, compare
from .errors import XvalError
from .experiment import OLD_MODELS_FILES, id_ranges
from .store import ExperimentStore


@dataclass
class Chosen:
    instance: int
    fold: int
    at_random: bool

    @property
    def label(self) -> str:
        return f"instance {self.instance} fold {self.fold}"


def choose_folds(store: ExperimentStore, instance: int | None, fold: int | None,
                 rng: random.Random | None = None) -> list[Chosen]:
    """The folds to reproduce: FOLD of INSTANCE, else one finished fold of it (or of every
    instance) drawn at random."""
    rng = rng or random.SystemRandom()
    files = store.fold_files()
    if not files:
        raise XvalError(f"{store.folder}: no finished fold to reproduce")
    if instance is not None and instance not in files:
        raise XvalError(f"{store.folder}: instance {instance} has no finished fold; instances with finished folds: "
                        f"{id_ranges(sorted(files))}")
    chosen = []
    for run in [instance] if instance is not None else sorted(files):
        done = sorted(files[run])
        if fold is None:
            chosen.append(Chosen(run, rng.choice(done), True))
        elif fold not in done:
            raise XvalError(f"{store.folder}: instance {run} has no finished fold {fold}; its finished folds: "
                            f"{id_ranges(done)}")
        else:
            chosen.append(Chosen(run, fold, False))
    return chosen


def run_record(store: ExperimentStore, run_id: str | None, label: str) -> dict[str, Any]:
    path = store.code_dir / "runs" / f"{run_id}.json"
    if not run_id or not path.is_file():
        raise XvalError(f"{store.folder}: {label} has no run record ({path.relative_to(store.folder)}): which code "
                        "trained it is unknown, so it cannot be reproduced")
    return json.loads(path.read_text(encoding="utf-8"))


def find_snapshot(store: ExperimentStore, info: dict[str, Any]) -> Path:
    """The snapshot folder holding the code of the run `info` describes, as its record hashes it.

    The merged config.ini is not matched: a later run rewrites it in place, and every parameter
    it gave is in the fold record already."""
    from .data_digest import file_sha256

    wanted = {name: digest for name, digest in info.get("code_sha256", {}).items() if name != "config.ini"}
    previous = store.code_dir / "previous"
    for folder in [store.code_dir, *sorted(previous.iterdir() if previous.is_dir() else (), reverse=True)]:
        if all((folder / name).is_file() and file_sha256(folder / name) == digest for name, digest in wanted.items()):
            return folder
    raise XvalError(f"{store.code_dir}: no code snapshot holds the code of run {info.get('run_id')} as its record "
                    "hashes it (edited or removed?); it cannot be reproduced")


def check_trust(store: ExperimentStore, paths: list[Path], trust_code: bool) -> None:
    """Refuse (unless `trust_code`) to run code from a folder, or files in it, that are not the user's own."""
    if trust_code or not hasattr(os, "getuid"):
        return
    me = os.getuid()
    for path in [store.folder, *paths]:
        owner = path.stat().st_uid
        if owner != me:
            raise XvalError(
                f"{store.folder} was not created by you ({path} belongs to {_user(owner)}): reproducing it runs the "
                f"experiment and models code saved in its snapshot ({paths[0]}); read that code, then rerun with "
                "--trust-code"
            )


def _user(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"user id {uid}"


def check_data(record: dict[str, Any], dataset: str, label: str,
               fingerprints: dict[str, dict[str, dict]] | None = None) -> tuple[str, dict[str, dict]]:
    """The data folder of the fold and its dataset's fingerprint (data_digest), once its files are
    those it was trained on. `fingerprints` ({data folder: fingerprint}, kept across the folds of one
    `xval reproduce`) spares reading unchanged files again for the next fold; this one's is added."""
    from .data_digest import changed_files, dataset_fingerprint, digests_of

    recorded, folder = record.get("data_sha256"), record.get("data_folder")
    if not recorded or not folder:
        raise XvalError(f"{label}: its record holds no SHA-256 of the data (trained by an older xvalkit); "
                        "retrain it with --overwrite to record them")
    if not Path(folder).is_dir():
        raise XvalError(f"{label}: the data folder it was trained from, {folder}, is gone")
    fingerprints = {} if fingerprints is None else fingerprints
    fingerprint = fingerprints[folder] = dataset_fingerprint(folder, dataset, fingerprints.get(folder))
    changed = changed_files(recorded, digests_of(fingerprint))
    if changed:
        raise XvalError(f"dataset '{dataset}' in {folder} changed since {label} was trained: {', '.join(changed)} "
                        "(SHA-256 not the recorded one); restore the data it was trained on")
    return folder, fingerprint


def snapshot_models(snapshot: Path, experiment_file: str, framework: str) -> tuple[Path | None, bool]:
    """(the snapshot's models module for `framework`, None for the built-in models; the experiment's
    `generator`), read from the snapshot's experiment module, which this runs."""
    from .experiment import exec_experiment

    module, _ = exec_experiment(snapshot / experiment_file)
    generator = bool(getattr(module, "generator", False))
    models = getattr(module, "models", None)
    if models:
        path = snapshot / Path(models).name
        if not path.is_file():
            raise XvalError(f"{snapshot / experiment_file}: models = {models!r}, but the snapshot holds no {path.name}")
        return path, generator
    old = snapshot / OLD_MODELS_FILES.get(framework, "-")  # an original-scripts define_models[_torch].py
    return (old if old.is_file() else None), generator


def fold_job(store: ExperimentStore, chosen: Chosen, saved: dict[str, Any], data_folder: str, models: Path | None,
             generator: bool, folder: Path, data_files: dict[str, dict] | None = None):
    from .folds import Fold
    from .jobs import FoldJob

    record = saved["record"]
    params = dict(saved["parameters"])
    threads = record.get("threads")  # threads.in_use after training: the count the fold trained with
    if params.get("framework") == "torch" and threads:
        params["threads"] = int(threads)  # as recorded: not what threads.py would decide on this machine
    fold = Fold(index=chosen.fold, train=tuple(record["train_items"]), val=tuple(record["val_items"]),
                test=tuple(record["test_items"]), repeat=record.get("repeat", 1),
                in_repeat=record.get("fold_in_repeat", 0), val_sources=tuple(record.get("val_sources", ())))
    return FoldJob(instance=chosen.instance, fold=fold, num_folds=saved["num_folds"], params=params,
                   task_type=saved["task_type"], dataset=store.dataset, data_folder=data_folder,
                   store_folder=str(folder), num_experiment=store.num_experiment, generator=generator,
                   models_path=None if models is None else str(models), protocol=record.get("protocol", ""),
                   data_files=data_files)


def model_weights(path: Path) -> dict[str, np.ndarray]:
    """A model file's weight tensors by name, in the file's order, read as data (no code runs)."""
    if not path.is_file():
        raise XvalError(f"{path}: the fold's model file is missing; its weights cannot be compared")
    if path.suffix == ".pt":
        from .loading import _checkpoint  # as load_model reads it: data only, and only a .pt xvalkit saved

        return {name: tensor.numpy() for name, tensor in _checkpoint(path)["state_dict"].items()}
    import h5py

    weights: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        group.visititems(lambda name, item: weights.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return weights


def fold_result(record: dict[str, Any], task_type: str, weights: dict[str, np.ndarray]) -> FoldResult:
    from .metrics import SETS, metric_names

    metrics = {f"{s}_{m}": float(record[f"{s}_{m}"]) for s in SETS for m in metric_names(task_type)
               if f"{s}_{m}" in record}
    return FoldResult(metrics, record.get("history", {}), np.asarray(record.get("test_pred", [])), weights,
                      record.get("best_epoch"))


def reproduce_fold(store: ExperimentStore, chosen: Chosen, trust_code: bool, say=print,
                   fingerprints: dict[str, dict[str, dict]] | None = None) -> Verdict:
    """Check, train again and compare one fold (the module docstring); `say` gets the line that starts
    it; `fingerprints`: the data's, from the folds reproduced before it (check_data)."""
    from .determinism import match_threads
    from .environment import differences, installed_packages
    from .jobs import execute
    from .quiet import framework_output_to

    saved = store.read(store.fold_path(chosen.instance, chosen.fold))
    record = saved["record"]
    info = run_record(store, record.get("run_id"), chosen.label)
    snapshot = find_snapshot(store, info)
    code = [snapshot / name for name in info.get("code_sha256", {}) if (snapshot / name).is_file()]
    check_trust(store, [snapshot, *code], trust_code)
    data_folder, data_files = check_data(record, store.dataset, chosen.label, fingerprints)  # for the record too
    if not info.get("experiment_file"):
        raise XvalError(f"run {info.get('run_id')}: its record does not name its experiment module (an older xvalkit)")
    models, generator = snapshot_models(snapshot, info["experiment_file"], saved["parameters"]["framework"])
    recorded_weights = model_weights(store.models_dir / record["model_file"])
    where = snapshot.relative_to(store.folder).as_posix()
    say(f"{chosen.label}{' (chosen at random)' if chosen.at_random else ''}: training it again from the code in "
        f"{where}/ (run {info.get('run_id')}), data checked")
    group = fused_group(store, chosen, saved, say)
    with tempfile.TemporaryDirectory(prefix="xval-reproduce-") as tmp:
        folder = Path(tmp) / store.folder.name
        folder.mkdir()
        job = fold_job(store, chosen, saved, data_folder, models, generator, folder, data_files)
        match_threads((record.get("environment") or {}).get("determinism", {}))
        with framework_output_to(None):
            if group:
                jobs = [job if key == job.key else fold_job(store, Chosen(*key, False), group[key], data_folder,
                                                            models, generator, folder, data_files) for key in group]
                again = train_fused(jobs)[job.key]
            else:
                again = execute(job)
        weights = model_weights(job.store().models_dir / again["model_file"])
    found = differences(record.get("environment"), again["environment"], info.get("pip_freeze"), installed_packages())
    deterministic = all((env or {}).get("determinism", {}).get("deterministic", False)
                        for env in (record.get("environment"), again["environment"]))
    return compare(fold_result(record, saved["task_type"], recorded_weights),
                   fold_result(again, saved["task_type"], weights), found, deterministic)



def fused_group(store: ExperimentStore, chosen: Chosen, saved: dict[str, Any], say) -> dict | None:
    """The saved folds of the fused group `chosen` trained in, in the group's order, when every one
    is still the one that group trained: a member's dropout masks come from the group's stream, so
    it is trained again in the same group. Else None: it is trained alone (equal to rounding
    without dropout, different with it), and `say` tells why."""
    record = saved["record"]
    keys = [tuple(key) for key in record.get("fused_group") or ()]
    if len(keys) < 2:
        return None
    group = {}
    for key in keys:
        other = saved if key == (chosen.instance, chosen.fold) else (
            store.read(store.fold_path(*key)) if store.fold_path(*key).is_file() else None)
        if other is None or other["record"].get("run_id") != record.get("run_id") \
                or [tuple(k) for k in other["record"].get("fused_group") or ()] != keys:
            say(f"{chosen.label} was trained fused with {len(keys) - 1} other fold(s), and instance {key[0]} fold "
                f"{key[1]} is no longer the one trained with it: it is trained alone (with dropout, expect "
                "'different')")
            return None
        group[key] = other
    say(f"{chosen.label} was trained fused with {len(keys) - 1} other fold(s): the group is trained again")
    return group


def train_fused(jobs: list) -> dict[tuple[int, int], dict[str, Any]]:
    """The group's records, trained fused as `xval run --fuse` trains it."""
    from .fusion import FusedJob, GroupListener, execute_group

    records, failures = {}, {}
    execute_group(FusedJob(tuple(jobs)), GroupListener(epoch=lambda job, e, logs: None,
                                                       finished=lambda job, record: records.__setitem__(job.key, record),
                                                       failed=lambda job, exc: failures.__setitem__(job.key, exc),
                                                       say=lambda line: None))
    if failures:
        key, exc = next(iter(failures.items()))
        raise XvalError(f"instance {key[0]} fold {key[1]}: training its fused group again failed: {exc}")
    return records


COLOURS = {"identical": "green", "equal within tolerance": "yellow", "different": "red"}


def reproduce_experiment(store: ExperimentStore, instance: int | None, fold: int | None, trust_code: bool,
                         console) -> bool:
    """`xval reproduce`: one line per fold, and a last line; True if every fold was reproduced."""
    from rich.markup import escape

    verdicts, fingerprints = [], {}  # the data is read once for every fold, not once per fold
    for chosen in choose_folds(store, instance, fold):
        verdict = reproduce_fold(store, chosen, trust_code, say=lambda line: console.print(escape(line)),
                                 fingerprints=fingerprints)
        verdicts.append(verdict)
        console.print(f"{chosen.label}: [{COLOURS[verdict.kind]}]{verdict.kind}[/]"
                      + (f": {escape(verdict.detail)}" if verdict.detail else ""))
    done = sum(v.reproduced for v in verdicts)
    console.print(f"reproduced {done} of {len(verdicts)} fold(s)" + ("" if done == len(verdicts) else
                  f"; {len(verdicts) - done} came out different"))
    return done == len(verdicts)
