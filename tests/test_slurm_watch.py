"""What the Slurm watcher (executors/slurm.py, Watch) reports from the experiment folder, without a
cluster: a fold started once its task marks it running or writes its log, each new epoch of its
log once, and nothing for the log and marker an earlier run left behind."""

from __future__ import annotations

import os

from xvalkit.executors.slurm import Watch, left_behind
from xvalkit.folds import Fold
from xvalkit.jobs import FoldJob


class Task:
    """All the watcher reads of a submitted task between polls: its Slurm id."""

    job_id = "7_0"


class Events:
    def __init__(self):
        self.seen: list[tuple] = []

    def started(self, job, where):
        self.seen.append(("started", job.key, where))

    def epoch(self, job, epoch, logs):
        self.seen.append(("epoch", job.key, epoch, logs))

    def finished(self, job, record):
        self.seen.append(("finished", job.key))

    def failed(self, job, error):
        self.seen.append(("failed", job.key))

    def should_skip(self, job):
        return False


def fold_job(tmp_path, fold: int) -> FoldJob:
    return FoldJob(instance=1, fold=Fold(fold, (), (), ()), num_folds=2, params={}, task_type="classification",
                   dataset="demo", data_folder=str(tmp_path), store_folder=str(tmp_path / "exp"), num_experiment=1,
                   generator=False)


def test_what_an_earlier_run_left_is_no_start_and_each_epoch_is_reported_once(tmp_path):
    jobs = [fold_job(tmp_path, 1), fold_job(tmp_path, 2)]
    store = jobs[0].store()
    for job in jobs:  # a cancelled run left both folds' marker and log, an hour ago
        store.mark_running(*job.key)
        store.log_path(*job.key).parent.mkdir(parents=True, exist_ok=True)
        store.log_path(*job.key).write_text("09:00:00 epoch 4 loss=0.5\n")
        for path in (store.running_path(*job.key), store.log_path(*job.key)):
            os.utime(path, ns=(path.stat().st_mtime_ns - 3600 * 10**9,) * 2)
    events = Events()
    watch = Watch([(Task(), jobs)], events, debug=False, left=left_behind(jobs))
    watch._follow_folds()
    assert events.seen == []
    # this run's task begins fold 1: it marks the fold running, then opens its log anew
    store.mark_running(1, 1)
    watch._follow_folds()
    assert events.seen == [("started", (1, 1), "Slurm 7_0")]  # not the old log's epoch 4
    log = store.log_path(1, 1)
    log.write_text("")
    watch._follow_folds()
    log.write_text("10:00:00 epoch 1 loss=0.75\n")
    watch._follow_folds()
    watch._follow_folds()
    with log.open("a") as handle:
        handle.write("10:00:01 epoch 2 loss=0.5\n")
    watch._follow_folds()
    assert events.seen == [("started", (1, 1), "Slurm 7_0"), ("epoch", (1, 1), 1, {"loss": 0.75}),
                           ("epoch", (1, 1), 2, {"loss": 0.5})]
