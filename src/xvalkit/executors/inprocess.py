"""Run jobs one after the other in this process (the device was chosen before any import)."""

from __future__ import annotations

import traceback

from ..jobs import FoldJob, execute
from . import Listener


class InProcessExecutor:
    def __init__(self, where: str):
        self.where = where

    def run(self, jobs: list[FoldJob], listener: Listener, debug: bool) -> None:
        for job in jobs:
            if listener.should_skip(job):
                continue
            listener.started(job, self.where)
            try:
                record = execute(job, on_epoch=lambda epoch, logs, job=job: listener.epoch(job, epoch, logs))
            except KeyboardInterrupt:
                raise
            except Exception:
                if debug:
                    raise
                listener.failed(job, traceback.format_exc())
                continue
            listener.finished(job, record)
