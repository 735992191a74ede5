"""Instance plots drawn during a run, as instances finish, on CPU time that training leaves unused.

An instance plot costs about a tenth of a second of CPU (matplotlib). Drawn by the final report,
a thousand of them keep the run's end waiting a minute; drawn by the report refreshes, they take
their share of the CPU from training. `PlotDrawer` hands each finished instance to one child,
`python -m xvalkit.reporting.drawer`, that runs at idle priority (Linux's SCHED_IDLE: only on CPU
time nothing else wants; elsewhere the lowest nice), set before it imports anything heavy.

The child asks for each instance when ready for it, so the backlog stays in the runner: closing
drops it (the final report draws what is left, on every core) and waits only for the plot in hand.
A plot carries its signature inside its PNG (plots.drawn_signature), so whichever of the drawer and
a report draws an instance first, the other keeps it.

This module stays light: the child lowers its priority before importing matplotlib.
"""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..threads import single_threaded_environment

if TYPE_CHECKING:
    from ..store import ExperimentStore

EAGER_FROM = 24  # instances to train from which the run draws their plots as they finish; fewer are
# drawn by the final report in a second or two, sooner than the child would have imported matplotlib


class PlotDrawer:
    """The runner's side: `add` each finished instance; `close` at the end of the run."""

    def __init__(self, store: ExperimentStore, task_type: str):
        self.store, self.task_type = store, task_type
        self._pending: collections.deque = collections.deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._state = "starting"  # importing; then "waiting" for an instance, or "drawing" one
        self._child = subprocess.Popen(
            [sys.executable, "-m", "xvalkit.reporting.drawer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # if it fails, the final report draws those plots again and says why
            process_group=0,  # Ctrl-C is the runner's to handle (as for the report child)
            env=single_threaded_environment(),  # one BLAS/OpenMP thread: the cores are training's
        )
        self._thread = threading.Thread(target=self._feed, name="plot-drawer", daemon=True)
        self._thread.start()

    def add(self, run: int, results: dict[str, Any]) -> None:
        """Instance `run` is done: draw its plot (`results`: its instance pickle's content)."""
        from .plots import _plot_inputs
        from .tables import InstanceInfo

        with self._wake:
            if not self._stopped:
                self._pending.append(_plot_inputs(InstanceInfo(run, results, None)))
                self._wake.notify()

    def _feed(self) -> None:
        child = self._child
        try:
            while child.stdout.readline():  # "ready"; nothing once the child has ended
                with self._wake:
                    self._state = "waiting"
                    while not self._pending and not self._stopped:
                        self._wake.wait()
                    if self._stopped:
                        return
                    inst = self._pending.popleft()
                    self._state = "drawing"
                child.stdin.write(pickle.dumps(([inst], self.task_type, self.store.folder / "plots", self.store.prefix)))
                child.stdin.flush()
        except (OSError, ValueError):  # the child has ended, or close() closed its pipes
            pass
        finally:
            with self._wake:
                self._stopped = True
                self._pending.clear()

    def close(self, wait: bool = True) -> None:
        """Stop drawing, dropping the backlog; with `wait`, until the plot in hand is written. A child
        still importing has no file open: it is stopped at once rather than waited for."""
        with self._wake:
            self._stopped = True
            self._pending.clear()
            self._wake.notify()
            state = self._state
        if state == "starting":
            self._child.kill()
        try:
            self._child.stdin.close()  # the child leaves at the end of its input, its plot in hand written
        except OSError:
            pass
        if wait or state != "drawing":
            self._child.wait()
            self._thread.join()


def idle_priority() -> None:
    """Run only on CPU time nothing else wants (Linux's SCHED_IDLE; elsewhere the lowest nice)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def main() -> None:
    """The child: say 'ready', draw the instances of the next message, again, until the input ends.
    Its input is its parent's own data (pickles of plot inputs)."""
    idle_priority()
    from .plots import InstancePlotter, _draw_instances, _pyplot

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    plotters: dict[str, InstancePlotter] = {}
    while True:
        stdout.write(b"ready\n")
        stdout.flush()
        try:
            instances, task_type, folder, prefix = pickle.load(stdin)
        except EOFError:
            return
        if task_type not in plotters:
            plotters[task_type] = InstancePlotter(_pyplot(), task_type)
        _draw_instances(instances, task_type, folder, prefix, plotters[task_type])


if __name__ == "__main__":
    main()
