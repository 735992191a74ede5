"""Run jobs one after the other in this process (the device was chosen before any import)."""

from __future__ import annotations

from ..faults import EnvironmentFault
from ..fusion import FusedJob, run_in_process, to_run
from ..interrupts import StopRequest
from ..jobs import FoldJob, execute
from ..store import failure_text
from . import Listener


class InProcessExecutor:
    def __init__(self, where: str):
        self.where = where

    def run(self, jobs: list[FoldJob], listener: Listener, debug: bool) -> None:
        with StopRequest("stopping at the end of this epoch") as stop:
            for job in jobs:
                stop.check()
                job = to_run(job, listener.should_skip)
                if job is None:
                    continue
                if isinstance(job, FusedJob):
                    run_in_process(job, listener, self.where, stop, debug)
                    continue
                listener.started(job, self.where)

                def on_epoch(epoch, logs, job=job):
                    listener.epoch(job, epoch, logs)
                    stop.check()

                try:
                    record = execute(job, on_epoch=on_epoch)
                except (KeyboardInterrupt, EnvironmentFault):  # the run stops; the fold did not fail
                    raise
                except Exception as exc:
                    if debug:
                        raise
                    listener.failed(job, failure_text(exc))
                    continue
                listener.finished(job, record)
