"""Run jobs one after the other in this process (the device was chosen before any import)."""

from __future__ import annotations

import signal
import sys
import threading
import traceback

from ..jobs import FoldJob, execute
from . import Listener


class StopRequest:
    """Ctrl-C asks to stop at the end of the current epoch; a second Ctrl-C stops at once.

    A KeyboardInterrupt raised straight from the signal can land in a framework's weakref callback
    or destructor, where Python ignores it and training goes on: so the first one only sets a flag
    that the epoch callback (a normal frame) turns into a KeyboardInterrupt.
    """

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("stopping at the end of this epoch (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


class InProcessExecutor:
    def __init__(self, where: str):
        self.where = where

    def run(self, jobs: list[FoldJob], listener: Listener, debug: bool) -> None:
        with StopRequest() as stop:
            for job in jobs:
                stop.check()
                if listener.should_skip(job):
                    continue
                listener.started(job, self.where)

                def on_epoch(epoch, logs, job=job):
                    listener.epoch(job, epoch, logs)
                    stop.check()

                try:
                    record = execute(job, on_epoch=on_epoch)
                except KeyboardInterrupt:
                    raise
                except Exception:
                    if debug:
                        raise
                    listener.failed(job, traceback.format_exc())
                    continue
                listener.finished(job, record)
