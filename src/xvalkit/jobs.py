"""One job = one (instance, fold): everything needed to train it, in a picklable form.

`execute(job)` runs the same way in the `xval run` process, in a reused local worker process or
in a Ray task on another node: it reads the dataset (cached per process), trains, computes the
metrics, and writes the model, a per-epoch log and the fold's completion record, each atomically.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .faults import faults_stop
from .folds import Fold, class_names

_DATASETS: dict[tuple[str, str], Any] = {}
_FINGERPRINTS: dict[tuple[str, str], dict[str, dict]] = {}


@dataclass(frozen=True)
class FoldJob:
    instance: int
    fold: Fold
    num_folds: int
    params: dict[str, Any]
    task_type: str
    dataset: str
    data_folder: str
    store_folder: str
    num_experiment: int
    generator: bool
    models_path: str | None = None
    num_repeats: int = 1
    run_id: str | None = None  # the run that trains it: its record is code/runs/<run_id>.json
    protocol: str = ""  # how the folds were made, for the fold record and the workbook
    # the dataset's files as the run that planned the fold found them (data_digest.dataset_fingerprint):
    # a training process then reads again only what changed since, not the whole dataset
    data_files: dict[str, dict] | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.instance, self.fold.index)

    @property
    def label(self) -> str:
        if self.num_repeats > 1:
            k = self.num_folds // self.num_repeats
            return f"instance {self.instance} repeat {self.fold.repeat} fold {self.fold.number}/{k}"
        return f"instance {self.instance} fold {self.fold.index}/{self.num_folds}"

    def store(self):
        from .store import ExperimentStore

        return ExperimentStore(Path(self.store_folder), self.dataset, self.num_experiment)


def dataset_for(folder: str, name: str):
    """Each process reads a dataset once and keeps it for its next jobs (a .xvd dataset is mapped,
    so the workers of a machine share one copy in the page cache; its values were checked by
    `xval run` before any job was planned, so they are not scanned again here)."""
    if (folder, name) not in _DATASETS:
        from .data import load_dataset
        from .faults import vanished

        if not Path(folder).is_dir():  # else a built-in dataset would be synthesised in its place
            raise vanished(Path(folder), "the data folder")
        _DATASETS[(folder, name)] = load_dataset(folder, name, check_values=False)
    return _DATASETS[(folder, name)]


def data_digests_for(job: FoldJob) -> dict[str, str]:
    """SHA-256 of the dataset's files for the fold record (`xval reproduce` checks them). Each fold
    looks at the files' sizes and times; only a file changed since the run planned the fold (or since
    this process's last fold) is read again."""
    from .data_digest import dataset_fingerprint, digests_of

    key = (job.data_folder, job.dataset)
    known = {**(job.data_files or {}), **_FINGERPRINTS.get(key, {})}
    _FINGERPRINTS[key] = dataset_fingerprint(job.data_folder, job.dataset, known)
    return digests_of(_FINGERPRINTS[key])


def model_function_for(job: FoldJob):
    from .experiment import import_file
    from .models import model_function

    module = import_file(Path(job.models_path), "models") if job.models_path else None
    return model_function(job.params["framework"], job.params["architecture"], module, job.label)


class EpochLog:
    """Appends one line per epoch to the fold's log file and forwards (epoch, logs) to a listener."""

    def __init__(self, path: Path, listener: Callable[[int, dict], None] | None,
                 check: Callable[[], None] | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "w", encoding="utf-8")
        self.listener = listener
        self.check = check  # after each epoch: raise if the experiment folder vanished

    def __call__(self, epoch: int, logs: dict) -> None:
        values = " ".join(f"{k}={float(v):.5g}" for k, v in logs.items())
        try:
            self.handle.write(f"{time.strftime('%H:%M:%S')} epoch {epoch} {values}\n")
            self.handle.flush()
        except OSError as exc:  # a full disk: say which file
            exc.filename = exc.filename or str(self.path)
            raise
        if self.check is not None:
            self.check()
        if self.listener is not None:
            self.listener(epoch, logs)

    def close(self, line: str = "") -> None:
        try:
            if line:
                self.handle.write(line.rstrip() + "\n")
            self.handle.close()
        except OSError as exc:
            exc.filename = exc.filename or str(self.path)
            raise


def divergence(predictions: dict[str, Any], history: dict[str, list[float]]) -> str | None:
    """Why a trained model counts as diverged (NaN or infinite predictions), or None."""
    import numpy as np

    bad = [name for name, values in predictions.items() if not np.isfinite(np.asarray(values, dtype=float)).all()]
    if not bad:
        return None
    losses = history.get("loss", [])
    epoch = next((i for i, v in enumerate(losses, start=1) if not np.isfinite(v)), None)
    when = f"; the training loss became {losses[epoch - 1]} at epoch {epoch}" if epoch else ""
    return f"non-finite predictions on the {', '.join(bad)} set(s){when} (learning rate too high?)"


def execute(job: FoldJob, on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train one fold and write its model and completion record; returns the fold record.

    An environment error (full disk, read-only or vanished folder) raises faults.EnvironmentFault,
    which executors pass on to stop the run instead of recording a failed fold.
    """
    from .devices import freeze_survivors, gpu_settings, release_memory

    gpu = gpu_settings()  # as the job found them, before it imports a framework
    freeze_survivors()
    store = job.store()
    with faults_stop(job_folders(job)):
        store.check_present()
        try:
            return _execute(job, store, on_epoch, gpu)
        finally:
            with contextlib.suppress(OSError):  # a read-only disk: the marker is stale, not wrong
                store.unmark_running(*job.key)
            release_memory()  # the next fold, in this process, finds the GPU memory free


def untrained_classes(task_type: str, data, manifest: dict) -> list | None:
    """Test classes with no training datapoint (by name where the manifest names them); None for regression."""
    if task_type != "classification":
        return None
    import numpy as np

    missing = sorted(set(np.unique(data.test.y).tolist()) - set(np.unique(data.train.y).tolist()))
    return class_names(missing, manifest.get("classes"))


def job_folders(job: FoldJob) -> list[str]:
    """Our own folders (faults.py): a denied or missing path there is the machine's fault."""
    return [job.store_folder, job.data_folder]


@dataclass
class Started:
    """A fold begun: its log, data and TrainJob (what `finish` turns into the fold record)."""

    job: FoldJob
    log: EpochLog
    dataset: Any
    data: Any
    train_job: Any
    start: float


def begin(job: FoldJob, store, on_epoch) -> Started:
    """Mark the fold running, open its log, read its data and make its TrainJob."""
    from .fold_data import FoldData, channels_first
    from .trainers import MODEL_EXTENSIONS, TrainJob

    p = job.params
    start = time.perf_counter()
    store.mark_running(*job.key)
    # TensorBoard files of an attempt that was stopped (full disk, kill -9): not this fold's curves
    shutil.rmtree(store.tensorboard_dir(*job.key), ignore_errors=True)
    log = EpochLog(store.log_path(*job.key), on_epoch, check=store.check_present)
    try:
        dataset = dataset_for(job.data_folder, job.dataset)
        data = FoldData(dataset, job.fold, job.task_type, p["reshaping_type"], p["normalization"],
                        channels_first(p["framework"]), release_pages=job.generator)
        seed = int(p["seed"]) + job.fold.index
        train_job = TrainJob(
            params=p, task_type=job.task_type, data=data, model_fn=model_function_for(job), seed=seed,
            model_path=store.model_path(job.instance, job.fold.index, MODEL_EXTENSIONS[p["framework"]]),
            log_dir=store.tensorboard_dir(*job.key), generator=job.generator, on_epoch=log,
        )
    except BaseException as exc:
        fail(log, exc)
        raise
    return Started(job, log, dataset, data, train_job, start)


def fail(log: EpochLog, exc: BaseException) -> None:
    from .store import failure_text

    with contextlib.suppress(OSError):  # the log may be on the disk that just filled up
        log.close(failure_text(exc))


def finish(started: Started, store, out, gpu: dict) -> dict[str, Any]:
    """The fold record of a trained fold, saved; the log closed."""
    from .environment import fold_environment
    from .metrics import compute, metric_names
    from .threads import in_use

    job, data, dataset, log = started.job, started.data, started.dataset, started.log
    p = job.params
    extra = dict(out.extra)
    environment = fold_environment(out.device, extra.pop("determinism", {}), extra.pop("seeds", {}))
    record: dict[str, Any] = {"diverged": divergence(out.predictions, out.history)}
    for set_name, set_data in data.sets().items():
        if record["diverged"]:  # no metric of a model that outputs NaN / inf: recorded, never averaged
            values = dict.fromkeys(metric_names(job.task_type), float("nan"))
        else:
            values = compute(job.task_type, set_data.y, out.predictions[set_name], data.num_outputs)
        record.update({f"{set_name}_{metric}": value for metric, value in values.items()})
    record.update(job.fold.as_dict(), repeat=job.fold.repeat, fold_in_repeat=job.fold.number)
    record.update(
        history=out.history, epochs=out.epochs, best_epoch=out.best_epoch, seed=started.train_job.seed,
        device=out.device, test_true=data.test.y, test_pred=out.predictions["test"],
        normalization=None if data.normalizer is None else {"mean": data.normalizer.mean, "std": data.normalizer.std},
        n_train=len(data.train), n_val=len(data.val), n_test=len(data.test),  # datapoints, for the t-test
        n_train_original=data.n_train_original, excluded_augmented=data.excluded_augmented,
        model_file=started.train_job.model_path.name, duration_s=time.perf_counter() - started.start,
        run_id=job.run_id, cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), host=socket.gethostname(),
        pid=os.getpid(), gpu_settings=gpu,
        classes=dataset.manifest.get("classes") if job.task_type == "classification" else None,
        protocol=job.protocol, test_classes_not_trained=untrained_classes(job.task_type, data, dataset.manifest),
        threads=in_use(p["framework"]), environment=environment,
        data_folder=job.data_folder, data_sha256=data_digests_for(job),
    )
    record.update(extra)
    store.check_present()  # not a fold record in a folder that a vanished one left behind
    store.save_fold(job.instance, job.fold.index, p, job.task_type, job.num_folds, record)
    log.close(f"done in {record['duration_s']:.1f} s, best epoch {out.best_epoch}"
              + (f"; diverged: {record['diverged']}" if record["diverged"] else ""))
    return record


def _execute(job: FoldJob, store, on_epoch, gpu: dict) -> dict[str, Any]:
    from .quiet import framework_output_to
    from .trainers import trainer_for

    started = begin(job, store, on_epoch)
    try:
        with framework_output_to(started.log.handle):  # the frameworks' chatter goes to the fold's log
            out = trainer_for(job.params["framework"]).fit_predict(started.train_job)
        return finish(started, store, out, gpu)
    except BaseException as exc:
        fail(started.log, exc)
        raise
