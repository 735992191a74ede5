"""The same jobs as Slurm job arrays, submitted through submitit (`--backend slurm`).

Setup, then launch, as Hydra's launcher: the pending folds are cut into bundles of
`folds_per_task` (short folds do not each pay a job's start), the bundles into arrays no larger
than the cluster's MaxArraySize, and each array is submitted with the [slurm] settings. Every task
writes its folds into the experiment folder, which the compute nodes must see (a shared file
system); the fold file stays the only completion record, so a requeued task resumes from the folds
on disk and a rerun of `xval run` submits only what is missing.

In the foreground, the watch loop reports a fold as soon as its file appears (its epochs from its
log), a task's Python errors from its result, and a task that ended without writing anything as an
experiment folder the nodes cannot see; Ctrl-C cancels every job it submitted (scancel) and says
so. With --detach it returns once the jobs are submitted: the tasks record their own errors, and
`xval status` shows each fold's Slurm state (slurm_jobs.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import subprocess
import time
from pathlib import Path

from ..errors import XvalError
from ..faults import EnvironmentFault
from ..interrupts import StopRequest
from ..jobs import FoldJob
from . import JobError, Listener
from .slurm_jobs import record_submission, slurm_folder
from .slurm_settings import SlurmSettings, max_array_size

POLL_SECONDS = 2.0  # one sacct call per poll, for all the jobs of the run
EPOCH_LINE = re.compile(r"^\S+ epoch (\d+) (.*)$")


class SlurmExecutor:
    def __init__(self, settings: SlurmSettings, detach: bool = False, say=print):
        self.settings = settings
        self.detach = detach
        self.say = say  # the run's console (through the progress view)
        self.job_ids: list[str] = []  # the arrays submitted, for scancel

    def run(self, jobs: list[FoldJob], listener: Listener, debug: bool) -> None:
        jobs = [job for job in jobs if not listener.should_skip(job)]
        if not jobs:
            return
        folder = slurm_folder(Path(jobs[0].store_folder), jobs[0].run_id)
        left = {} if self.detach else left_behind(jobs)  # before any task of this run can start
        try:
            tasks = self._submit(jobs, folder)
        except BaseException:  # Ctrl-C or sbatch refusing an array: none of the run's arrays stays queued
            self.cancel(self.job_ids)
            raise
        arrays = sorted(self.job_ids, key=int)
        self.say(f"submitted {len(jobs)} fold(s) as {len(tasks)} Slurm task(s): job(s) {', '.join(arrays)} "
                 f"({self.settings.describe()}); submitit files in {folder}")
        if self.detach:
            self.say(f"detached: `xval status` shows each fold's Slurm state, `xval report` builds the report; "
                     f"`scancel {' '.join(arrays)}` cancels the jobs")
            return
        with StopRequest("cancelling the Slurm jobs") as stop:
            try:
                Watch(tasks, listener, debug, left).run(stop)
            except (KeyboardInterrupt, EnvironmentFault, JobError, XvalError):
                self.cancel(arrays)
                raise

    def _submit(self, jobs: list[FoldJob], folder: Path) -> list[tuple[object, list[FoldJob]]]:
        import submitit

        from .slurm_task import FoldBundle

        size = self.settings.folds_per_task
        bundles = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        limit = max_array_size()
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.settings.max_requeues)
        executor.update_parameters(**self.settings.submitit_parameters())
        tasks = []
        for start in range(0, len(bundles), limit):  # arrays above MaxArraySize are split, not refused
            part = bundles[start:start + limit]
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's complaint: ours is one line
                try:
                    submitted = executor.submit_array([FoldBundle(bundle, self.detach) for bundle in part])
                except submitit.core.utils.FailedJobError as exc:
                    raise XvalError(f"--backend slurm: sbatch refused the job: {sbatch_complaint(str(exc))} "
                                    "(see config.ini [slurm] and --slurm)") from None
            self.job_ids.append(submitted[0].job_id.split("_")[0])
            tasks += list(zip(submitted, part))
        record_submission(folder, [(task.job_id, [job.key for job in bundle]) for task, bundle in tasks])
        return tasks

    def cancel(self, arrays: list[str]) -> None:
        if not arrays:
            return
        subprocess.run(["scancel", *arrays], capture_output=True, timeout=60)
        self.say(f"cancelled Slurm job(s) {', '.join(arrays)} (scancel): their unfinished folds will be redone "
                 "by the next run")


class Watch:
    """Follows the submitted tasks until every fold is finished or failed."""

    def __init__(self, tasks: list, listener: Listener, debug: bool, left: dict[Path, tuple[int, int]]):
        self.tasks = tasks
        self.left = left  # stamps of the logs and markers an earlier run left (left_behind): no fold started
        self.listener = listener
        self.debug = debug
        self.open: dict[tuple[int, int], FoldJob] = {job.key: job for _, bundle in tasks for job in bundle}
        self.task_of = {job.key: task.job_id for task, bundle in tasks for job in bundle}
        self.started: set[tuple[int, int]] = set()
        self.epochs: dict[tuple[int, int], int] = {}
        self.log_read: dict[tuple[int, int], tuple[int, int]] = {}  # each log's stamp when last read
        self.store = tasks[0][1][0].store()

    def run(self, stop: StopRequest) -> None:
        watcher = type(self.tasks[0][0]).watcher
        remaining = list(self.tasks)
        while self.open:
            watcher.update()  # one sacct call for every job of the run
            ended, running = [], []
            for pair in remaining:
                (ended if pair[0].done() else running).append(pair)
            self._follow_folds()  # after the states: an ended task's folds are on disk by now
            for task, bundle in ended:
                self._finish(task, bundle)  # raises, or leaves none of the bundle's folds open
            remaining = running
            if not remaining:
                break
            stop.check()
            time.sleep(POLL_SECONDS)
            stop.check()

    def _follow_folds(self) -> None:
        """Report folds whose files appeared; start and epoch lines of the running ones.

        One poll lists results/folds, logs and results/running once each (a fold started is not looked
        up there again), and reads a log again only when it changed: thousands of waiting folds on a
        network file system cost three listings, and a stat for each file an earlier run left."""
        files = self.store.fold_files()
        listings: dict[Path, set[str]] = {}
        for key, job in list(self.open.items()):
            path = files.get(key[0], {}).get(key[1])
            if path is not None:
                self._done(job, path)
                continue
            if key not in self.started:
                if not (self._written(self.store.log_path(*key), listings)
                        or self._written(self.store.running_path(*key), listings)):
                    continue
                self.started.add(key)
                self.listener.started(job, f"Slurm {self.task_of[key]}")
            self._epochs(job)

    def _written(self, path: Path, listings: dict[Path, set[str]]) -> bool:
        """Whether `path` is a file this run's task wrote: not absent, nor as an earlier run left it."""
        if not _listed(path, listings):
            return False
        return path not in self.left or _stamp(path) not in (None, self.left[path])

    def _epochs(self, job: FoldJob) -> None:
        path = self.store.log_path(*job.key)
        stamp = _stamp(path)
        # none yet, an earlier run's (the task marks the fold running, then opens it anew), or read already
        if stamp is None or stamp == self.left.get(path) or stamp == self.log_read.get(job.key):
            return
        self.log_read[job.key] = stamp
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return
        for line in reversed(lines):
            match = EPOCH_LINE.match(line)
            if match:
                epoch = int(match.group(1))
                if epoch != self.epochs.get(job.key):
                    self.epochs[job.key] = epoch
                    logs = dict(pair.split("=", 1) for pair in match.group(2).split() if "=" in pair)
                    self.listener.epoch(job, epoch, {k: _number(v) for k, v in logs.items()})
                return

    def _done(self, job: FoldJob, path: Path) -> None:
        del self.open[job.key]
        if job.key not in self.started:
            self.listener.started(job, f"Slurm {self.task_of[job.key]}")
        self.listener.finished(job, self.store.read(path)["record"])

    def _fail(self, job: FoldJob, text: str) -> None:
        del self.open[job.key]
        if self.debug:
            raise JobError(f"{job.label} failed:\n{text}")
        if job.key not in self.started:
            self.listener.started(job, f"Slurm {self.task_of[job.key]}")
        self.listener.failed(job, text)

    def _finish(self, task, bundle: list[FoldJob]) -> None:
        """A task ended (its folds on disk were followed already): its Python errors failed, the rest lost."""
        outcomes, problem = _outcomes(task)
        for kind, instance, fold, text in outcomes:
            if kind == "unseen":
                raise XvalError(unseen_message(bundle[0], text))
            if kind == "fault":
                raise EnvironmentFault(text)
            if kind == "error" and (instance, fold) in self.open:
                self._fail(self.open[(instance, fold)], text)
        lost = [job for job in bundle if job.key in self.open]
        if not lost:
            return
        if problem is None:
            problem = f"its Slurm task {task.job_id} ended ({task.state}) without training it"
        elif not self._left_anything(task, lost):
            raise XvalError(unseen_message(bundle[0], f"the node of task {task.job_id}"))
        for job in lost:
            self._fail(job, problem)

    def _left_anything(self, task, jobs: list[FoldJob]) -> bool:
        """Whether a task that failed left any trace: its submitit log, or a fold's log or marker
        (not one as an earlier run left it)."""
        paths = task.paths
        if paths.stdout.exists() or paths.stderr.exists():
            return True
        listings: dict[Path, set[str]] = {}
        return any(self._written(self.store.log_path(*job.key), listings)
                   or self._written(self.store.running_path(*job.key), listings) for job in jobs)


def left_behind(jobs: list[FoldJob]) -> dict[Path, tuple[int, int]]:
    """The stamps of the logs and running markers of `jobs` that an earlier (killed, cancelled) run left.

    A fold's task opens its log anew and rewrites its marker when it begins the fold, changing their
    stamps: taken before submitting, these tell a fold this run started from one still waiting."""
    store = jobs[0].store()
    listings: dict[Path, set[str]] = {}
    paths = [path for job in jobs for path in (store.log_path(*job.key), store.running_path(*job.key))
             if _listed(path, listings)]
    return {path: stamp for path in paths if (stamp := _stamp(path)) is not None}


def _listed(path: Path, listings: dict[Path, set[str]]) -> bool:
    """Whether `path` is a file, from one listing of its folder, kept in `listings` for the next paths."""
    folder = path.parent
    if folder not in listings:
        try:
            with os.scandir(folder) as entries:
                listings[folder] = {entry.name for entry in entries if entry.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            listings[folder] = set()
    return path.name in listings[folder]


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, None if there is none; compared only with stamps from the same
    file system, never with a clock (the nodes' and this machine's may differ)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None


def _outcomes(task) -> tuple[list, str | None]:
    """The task's outcomes, or none and why (its state and the last line of its error log)."""
    try:
        return task.result(), None
    except Exception as exc:  # submitit's UncompletedJobError / FailedJobError
        lines = [line for line in str(exc).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else type(exc).__name__
        return [], f"Slurm task {task.job_id} ended {task.state}: {last}"


def sbatch_complaint(stderr: str) -> str:
    """sbatch's error lines, without their 'sbatch: error: ' prefixes, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Try ")]
    return "; ".join(line.removeprefix("sbatch: ").removeprefix("error: ") for line in lines) or "no reason given"


def unseen_message(job: FoldJob, where: str) -> str:
    return (f"--backend slurm: the experiment folder {job.store_folder} is not visible from the compute nodes "
            f"({where} wrote nothing there): put it on a file system the nodes share (experiment_folder, "
            "and the data folder too)")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")
