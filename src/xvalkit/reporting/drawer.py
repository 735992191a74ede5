"""Instance plots drawn during a run, as instances finish, on CPU time that training leaves unused.

An instance plot costs about a tenth of a second of CPU (matplotlib). Drawn by the final report,
a thousand of them keep the run's end waiting a minute; drawn by the report refreshes, they take
their share of the CPU from training. `PlotDrawer` hands each finished instance to one child,
`python -m xvalkit.reporting.drawer`, that runs at idle priority (Linux's SCHED_IDLE: only on CPU
time nothing else wants; elsewhere the lowest nice), set before it imports anything heavy.

The child asks for each instance when ready for it, so the backlog stays in the runner: closing
drops it (the final report draws what is left, on every core) and waits only for the plot in hand.
The report shows the plots of the best instances only (BEST_PLOTTED, from as many instances:
always the case here), so the drawer draws an instance only while it is among the best finished so
far by the selection metric's mean, or diverged: about BEST_PLOTTED x (1 + ln(N / BEST_PLOTTED))
plots of N instances that finish in random order, not N.
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
BEST_PLOTTED = 24  # from this many instances, the report shows the plots of this many best (plots.py)


class PlotDrawer:
    """The runner's side: `add` each finished instance; `close` at the end of the run."""

    def __init__(self, store: ExperimentStore, task_type: str, settings: dict[str, Any] | None = None):
        """`settings`: the [report] section, whose selection metric ranks the instances as the report
        does (tables.selection_metric); without it, the folder's, as the report reads them."""
        from ..metrics import HIGHER_IS_BETTER
        from ..report import report_settings
        from .tables import selection_metric

        self.store, self.task_type = store, task_type
        self.chooser = selection_metric(settings or report_settings(store), task_type)
        self._sign = 1.0 if HIGHER_IS_BETTER[self.chooser.split("_", 1)[1]] else -1.0
        self._best: list[float] = []  # a min-heap of the BEST_PLOTTED best signed scores so far
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
        """Instance `run` is done: draw its plot (`results`: its instance pickle's content) if the
        report may show it (the module docstring)."""
        from .plots import _plot_inputs
        from .tables import InstanceInfo

        if not self._may_be_shown(results):
            return
        with self._wake:
            if not self._stopped:
                self._pending.append(_plot_inputs(InstanceInfo(run, results, None)))
                self._wake.notify()

    def _may_be_shown(self, results: dict[str, Any]) -> bool:
        """Diverged, or among the BEST_PLOTTED best finished so far by the chooser's mean."""
        import heapq
        import math

        from ..metrics import diverged_folds

        if diverged_folds(results.get("folds", {})):
            return True
        set_name, _, metric = self.chooser.partition("_")
        score = results.get("summary", {}).get(set_name, {}).get(f"mean_{metric}")
        if score is None or not math.isfinite(score):
            return False
        score *= self._sign
        if len(self._best) < BEST_PLOTTED:
            heapq.heappush(self._best, score)
            return True
        if score > self._best[0]:
            heapq.heapreplace(self._best, score)
            return True
        return False

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
