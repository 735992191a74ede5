"""Fused groups: pending torch folds that can share kernels, trained as one job (trainers/fused.py).

`plan_groups(jobs)` partitions the jobs (HFTA's partition step): folds fuse when nothing that shapes
the computation graph differs (architecture, model parameters, input shape via reshaping_type,
batch size, optimiser, task, ...); they may differ in FUSIBLE values and in their fold data. An
executor hands a FusedJob to one process like any job; `execute_group` leaves, for each member,
exactly the files `jobs.execute` leaves for that fold, through the same calls (jobs.begin /
jobs.finish), as soon as that member is finished. Resume, status and the report see only folds.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from .faults import EnvironmentFault, faults_stop
from .jobs import FoldJob, begin, fail, finish, job_folders

# Values that may differ within a group: per member in the fused trainer, or only its fold data.
FUSIBLE = frozenset({
    "learning_rate", "regularization_lambda", "dropout", "seed", "num_epochs", "patience", "early_stopping",
    "save_best_model_metric", "save_best_model_mode", "validation_split", "test_split", "normalization",
    "tensorboard", "verbose", "shuffle_training_data", "comment",
})
MAX_MEMBERS = 64  # an out-of-memory error halves a group (execute_group)


def max_members() -> int:
    """The most folds per group: XVAL_FUSE_MAX_MEMBERS (benchmarks/fused.py sets it), else MAX_MEMBERS."""
    value = os.environ.get("XVAL_FUSE_MAX_MEMBERS", "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_MEMBERS


@dataclass(frozen=True)
class FusedJob:
    """Folds trained as one fused model in one process; each member is a FoldJob."""

    members: tuple[FoldJob, ...]

    @property
    def key(self) -> tuple[int, int]:
        return self.members[0].key

    @property
    def label(self) -> str:
        return f"fused group of {len(self.members)} folds ({self.members[0].label}, ...)"


def to_run(job: FoldJob | FusedJob, skip: Callable[[FoldJob], bool]) -> FoldJob | FusedJob | None:
    """What of `job` is still to train: its folds that `skip` leaves (as a FoldJob, a FusedJob of two
    or more, or None). Each fold is asked: a group may hold folds of several instances, and an
    instance's folds may be split over two groups."""
    folds = job.members if isinstance(job, FusedJob) else (job,)
    left = tuple(fold for fold in folds if not skip(fold))
    if len(left) == len(folds):
        return job
    return FusedJob(left) if len(left) > 1 else (left[0] if left else None)


def group_key(job: FoldJob) -> tuple | None:
    """What members of one group share; None for a fold that never fuses (Keras, mixed precision)."""
    p = job.params
    if p["framework"] != "torch" or p.get("mixed_precision") or job.generator:
        return None
    fixed = sorted((k, repr(v)) for k, v in p.items() if k not in FUSIBLE and not k.startswith("comment"))
    return (job.task_type, job.dataset, job.data_folder, job.models_path, tuple(fixed))


def plan_groups(jobs: list[FoldJob], limit: int | None = None) -> list[FoldJob | FusedJob]:
    """The jobs, compatible folds gathered into FusedJobs of at most `limit` (default max_members())
    members (a group of one stays a FoldJob), each where its first member was."""
    limit = limit or max_members()
    slots: dict[tuple, list[FoldJob]] = {}
    order: list[Any] = []
    for job in jobs:
        key = group_key(job)
        if key is None:
            order.append(job)
            continue
        if key not in slots or len(slots[key]) >= limit:
            slots[key] = []
            order.append(slots[key])
        slots[key].append(job)
    return [item if isinstance(item, FoldJob) else (FusedJob(tuple(item)) if len(item) > 1 else item[0])
            for item in order]


def fuses(choice: bool | None, backend: str, on_cpu: bool) -> bool:
    """Whether a run fuses: --fuse / --no-fuse, else on a GPU (on the CPU it was not faster:
    benchmarks/fused.py). Local executors only (a Ray task runs one fold)."""
    if backend != "local":
        return False
    return (not on_cpu) if choice is None else choice


def describe(planned: list[FoldJob | FusedJob]) -> list[str]:
    """One line per fused group, for `xval plan` and `xval run`."""
    from .experiment import id_ranges

    lines = []
    for n, item in enumerate((i for i in planned if isinstance(i, FusedJob)), start=1):
        instances = sorted({m.instance for m in item.members})
        folds = sorted({m.fold.index for m in item.members})
        lines.append(f"fused group {n}: {len(item.members)} folds trained as one model (instance(s) "
                     f"{id_ranges(instances)}, fold(s) {id_ranges(folds)})")
    return lines


@dataclass
class GroupListener:
    """What execute_group reports, member by member (the executor forwards it to its Listener)."""

    epoch: Callable[[FoldJob, int, dict], None]
    finished: Callable[[FoldJob, dict], None]
    failed: Callable[[FoldJob, BaseException], None]
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)


def execute_group(group: FusedJob, listener: GroupListener) -> None:
    """Train the group's members fused; each member's files and record are written as it finishes.
    A member that fails is reported alone; an out-of-memory error splits the unfinished members in
    two halves trained one after the other; an environment fault (faults.py) stops it all."""
    from .devices import freeze_survivors, gpu_settings, release_memory

    gpu = gpu_settings()
    freeze_survivors()
    store = group.members[0].store()
    with faults_stop(job_folders(group.members[0])):
        store.check_present()
        pending = [list(group.members)]
        while pending:
            members = pending.pop(0)
            left, size = _train(members, store, listener, gpu)
            release_memory()
            if left:  # at one member, _train trains it unfused: its out-of-memory error is its own
                chunks = [left[i:i + size] for i in range(0, len(left), size)]
                listener.say(f"{len(left)} folds fused need more GPU memory than is free: "
                             f"trying {' and '.join(str(len(c)) for c in chunks)}")
                pending[:0] = chunks


def _train_unfused(started: list, member_done, listener: GroupListener) -> None:
    """Each fold by trainers/torch.fit_predict, as jobs.execute trains it."""
    from .quiet import framework_output_to
    from .trainers import torch as single

    for i, s in enumerate(started):
        try:
            with framework_output_to(s.log.handle):
                member_done(i, single.fit_predict(s.train_job))
        except (EnvironmentFault, OSError):
            raise
        except Exception as exc:
            fail(s.log, exc)
            listener.failed(s.job, exc)


def _train(members: list[FoldJob], store, listener: GroupListener, gpu: dict) -> tuple[list[FoldJob], int]:
    """Train `members` fused; the members left unfinished for want of GPU memory (an out-of-memory
    error, or too many to fit, as measured before training) and how many to try at once instead."""
    import torch

    from .quiet import framework_output_to
    from .trainers import fused
    from .trainers import torch as single

    started = []
    for job in members:
        try:
            started.append(begin(job, store, lambda e, logs, job=job: listener.epoch(job, e, logs)))
        except Exception as exc:
            listener.failed(job, exc)
    done: set[int] = set()

    def member_done(i: int, out, fused_with: int = 0) -> None:
        if fused_with:  # in the fold record: how many folds it trained with, and which, in order
            out.extra["fused_members"] = fused_with  # (what `xval reproduce` trains again, fused)
            out.extra["fused_group"] = [list(s.job.key) for s in started]
        record = finish(started[i], store, out, gpu)
        done.add(i)
        with contextlib.suppress(OSError):
            store.unmark_running(*started[i].job.key)
        listener.finished(started[i].job, record)

    try:
        if not started:
            return [], 0
        train_jobs = [s.train_job for s in started]
        fit = len(started)  # members that fit in the GPU's memory, as measured
        try:
            fuse = len(started) > 1  # one fold alone trains unfused, saying nothing
            if fuse:
                with framework_output_to(started[0].log.handle):
                    models = fused.build_members(train_jobs, single.torch_device()[0])
                    reason = fused.refusal(models) or fused.functional_refusal(models[0],
                                                                               train_jobs[0].data.input_shape)
                if reason:
                    listener.say(f"{started[0].job.label} and {len(started) - 1} more fold(s) train unfused: {reason}")
                    fuse, models = False, None
            if not fuse:  # its own out-of-memory error is the fold's, as unfused
                _train_unfused(started, member_done, listener)
                return [], 0
            fit = fused.members_that_fit(models[0], train_jobs[0], len(started))
            if fit < len(started):
                raise torch.cuda.OutOfMemoryError(f"{fit} of {len(started)} members fit")
            with framework_output_to(started[0].log.handle):
                fused.fit_predict_group(train_jobs, lambda i, out: member_done(i, out, len(started)), models)
        except torch.cuda.OutOfMemoryError:
            left = [s for i, s in enumerate(started) if i not in done]
            for s in left:
                fail(s.log, MemoryError("out of GPU memory in a fused group: retried in a smaller group"))
            return [s.job for s in left], fit if fit < len(started) else max(1, len(left) // 2)
        except (EnvironmentFault, OSError):  # the machine's fault: the run stops (faults.py)
            raise
        except Exception as exc:  # a defect of the group (or of one member's data): each unfinished member fails
            for i, s in enumerate(started):
                if i not in done:
                    fail(s.log, exc)
                    listener.failed(s.job, exc)
        return [], 0
    finally:
        # every member begun and not finished (member_done unmarked those), including one whose
        # begin raised after writing its marker
        finished = {started[i].job.key for i in done}
        for job in members:
            if job.key not in finished:
                with contextlib.suppress(OSError):  # a read-only disk: the marker is stale, not wrong
                    store.unmark_running(*job.key)


def run_in_process(group: FusedJob, listener, where: str, stop, debug: bool) -> None:
    """An executor's share of a group, in this process: `listener` is the executors' Listener."""
    from .store import failure_text

    for member in group.members:
        listener.started(member, where)

    def epoch(job: FoldJob, e: int, logs: dict) -> None:
        listener.epoch(job, e, logs)
        stop.check()

    def failed(job: FoldJob, exc: BaseException) -> None:
        if debug:
            raise exc
        listener.failed(job, failure_text(exc))

    execute_group(group, GroupListener(epoch, listener.finished, failed, listener.note))


def run_in_worker(group: FusedJob, send: Callable[[tuple], None]) -> None:
    """A local worker's share of a group: what happens to each member, sent to the parent by key."""
    from .store import failure_text

    execute_group(group, GroupListener(
        epoch=lambda job, e, logs: send(("member_epoch", job.key, e, {k: float(v) for k, v in logs.items()})),
        finished=lambda job, record: send(("member_done", job.key, record)),
        failed=lambda job, exc: send(("member_error", job.key, failure_text(exc))),
        say=lambda line: send(("note", line)),
    ))
