"""What one Slurm array task runs: a bundle of folds, one after the other, on the node it was given.

The fold file is the only completion record, as everywhere: a task requeued after a preemption,
a time-out (submitit's checkpoint resubmits the same bundle) or `scontrol requeue` starts the bundle
again and skips every fold already on disk, so no fold is trained twice to completion. A Python
error in a fold is an outcome, not an exception, so that submitit does not retry it; with nobody
watching (--detach) the task records it in the instance's error file itself.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import submitit

from ..jobs import FoldJob


class FoldBundle(submitit.helpers.Checkpointable):
    """Outcomes, one per fold: ("done", instance, fold, ""), ("error", instance, fold, traceback text),
    ("fault", instance, fold, message) for the machine's fault (the run stops), or ("unseen", 0, 0,
    host) when the experiment folder is not visible here."""

    def __init__(self, jobs: list[FoldJob], record_errors: bool):
        self.jobs = jobs
        self.record_errors = record_errors

    def __call__(self) -> list[tuple[str, int, int, str]]:
        if not Path(self.jobs[0].store_folder).is_dir():
            return [("unseen", 0, 0, socket.gethostname())]
        _prepare_process()
        from ..faults import EnvironmentFault
        from ..jobs import execute
        from ..store import failure_text

        outcomes = []
        for job in self.jobs:
            store = job.store()
            if store.fold_path(*job.key).is_file():  # trained before a requeue
                outcomes.append(("done", *job.key, ""))
                continue
            try:
                execute(job)
            except EnvironmentFault as fault:
                outcomes.append(("fault", *job.key, str(fault)))
                break
            except Exception as exc:
                text = failure_text(exc)
                if self.record_errors:
                    store.add_error(job.instance, job.label, text)
                outcomes.append(("error", *job.key, text))
            else:
                outcomes.append(("done", *job.key, ""))
        return outcomes


    def checkpoint(self, *args, **kwargs):
        """Called by submitit on the signal Slurm sends before a time limit or a preemption: the
        same bundle is requeued, and its folds already on disk will be skipped."""
        done = sum(self.jobs[0].store().fold_path(*job.key).is_file() for job in self.jobs)
        print(f"xval: checkpoint: {done} of {len(self.jobs)} fold(s) of this task are on disk; the task is "
              "requeued and resumes from them", file=sys.stderr, flush=True)
        return super().checkpoint(*args, **kwargs)


def _prepare_process() -> None:
    """Before any framework import: threads for the CPUs Slurm gave, the GPUs it gave (or none)."""
    from ..devices import choose_device_early, prepare_gpu_sharing
    from ..threads import use_threads

    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        use_threads(int(cpus))  # the task's share, as threads.py gives a local worker its own
    if os.environ.get("SLURM_GPUS_PER_TASK") or os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS"):
        prepare_gpu_sharing()  # CUDA_VISIBLE_DEVICES as Slurm set it; the fold records it
    else:
        choose_device_early(gpu=None, cpu=True)  # no GPU asked for: none used, even on a GPU node
