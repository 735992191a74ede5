"""Executors run FoldJobs and tell a Listener what happens; they never write results themselves.

- InProcess: one job at a time in the `xval run` process (one device: no start-up cost at all).
- LocalPool: reused worker processes, one per slot (a GPU, or a share of the CPU cores); each sees
  only its own GPU, pays the framework import once, and is replaced after a failure.
- Ray (optional extra): the same jobs as Ray tasks, on one machine or a cluster.
- Slurm (optional extra): bundles of jobs as tasks of Slurm job arrays, through submitit (slurm.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..jobs import FoldJob


class Listener(Protocol):
    def started(self, job: FoldJob, where: str) -> None: ...
    def epoch(self, job: FoldJob, epoch: int, logs: dict) -> None: ...
    def finished(self, job: FoldJob, record: dict) -> None: ...
    def failed(self, job: FoldJob, error: str) -> None: ...
    def should_skip(self, job: FoldJob) -> bool: ...
    def note(self, line: str) -> None: ...  # a line for the user (a fused group's, fusion.py)


class JobError(Exception):
    """A job failed in debug mode; the message is the job's traceback."""


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a GPU (its physical ID) or the CPU; with the threads it trains with (threads.py)."""

    gpu: int | None
    threads: int | None = None
    share: float | None = None  # this worker's part of its GPU's memory when jobs share it

    @property
    def name(self) -> str:
        return f"GPU {self.gpu}" if self.gpu is not None else "CPU"


def plan_slots(gpus: list[int] | None, jobs_per_gpu: int, cpu_workers: int, threads: int = 0) -> list[Slot]:
    """The worker slots: jobs_per_gpu per listed GPU, else cpu_workers CPU workers; each trains with
    `threads` threads, or (0) its share of the cores among the slots (threads.py)."""
    from ..threads import share as core_share

    if gpus:
        memory = 1.0 / jobs_per_gpu if jobs_per_gpu > 1 else None
        count = threads or core_share(len(gpus) * jobs_per_gpu)
        return [Slot(gpu, count, memory) for gpu in gpus for _ in range(jobs_per_gpu)]
    return [Slot(None, threads or core_share(cpu_workers)) for _ in range(cpu_workers)]
