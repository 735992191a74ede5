"""Report refreshes during a run, off the training path.

`xval run` asks for a refresh after every finished or failed fold; `ReportRefresher` rebuilds the
report at most every `interval` seconds, in one child process at low priority, so the next fold
trains while the workbook is written. The spreadsheet of a running experiment is then never more
than about `interval` seconds (plus one refresh) behind, or one instance behind when instances take
longer than that; when a refresh itself takes long (a workbook of a thousand instances), the wait
grows to SLOW_FACTOR times its duration, so that the report never takes more than a small share of
a core from training. The child keeps its ExperimentStore, whose cache reads each fold file once, and
redraws only the plots of instances that changed. Runs shorter than `interval` never start it:
their report is written once, at the end, in this process.

The child is a plain `python -m xvalkit.reporting.background` (not multiprocessing), so it works
from any script, guarded by `if __name__ == "__main__"` or not. It reads one JSON request per line
on stdin and answers one line on stdout. The report is always rebuilt from the folder alone, so a
crash at any moment (of the runner or of the child) still leaves a folder from which `xval report`
rebuilds everything.

With many instances, a `drawer.PlotDrawer` draws each instance's plot as soon as the instance is
done, in a second child at idle priority (see xvalkit.reporting.drawer); the refreshes then leave
the instance plots to it and show those drawn so far (a refresh that drew them took a minute of
two cores at a thousand instances), and the final report draws what it has not reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from ..store import ExperimentStore
from ..threads import single_threaded_environment
from .drawer import PlotDrawer

SLOW_FACTOR = 5  # at most about 1/SLOW_FACTOR of a core for refreshes during a run


def refresh_wait(interval: float, last_duration: float) -> float:
    """Seconds from one refresh's start to the next: `interval`, or more after a slow refresh."""
    return max(interval, SLOW_FACTOR * last_duration)


class ReportRefresher:
    """Throttled, coalesced report refreshes in a child process (see the module docstring).

    `drawer`: the run's PlotDrawer, if it draws instance plots as instances finish; closed first."""

    def __init__(self, store: ExperimentStore, interval: float, drawer: PlotDrawer | None = None):
        self.store, self.interval, self.drawer = store, float(interval), drawer
        self._child: subprocess.Popen | None = None
        self._wake = threading.Condition()
        self._dirty = False
        self._closed = False
        self._last = time.monotonic()  # the run's start counts as a refresh: nothing to show yet
        self._duration = 0.0  # of the last refresh
        self.error: str | None = None  # the last background refresh's error, if it failed
        self._thread = threading.Thread(target=self._loop, name="report-refresher", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Something changed in the folder: refresh within `interval` seconds."""
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def instance_done(self, run: int, results: dict[str, Any]) -> None:
        """Instance `run` has all its folds: its plot can be drawn now (by the drawer, if any)."""
        if self.drawer is not None:
            self.drawer.add(run, results)

    def _loop(self) -> None:
        while True:
            with self._wake:
                gap = refresh_wait(self.interval, self._duration)
                while not self._closed and not (self._dirty and time.monotonic() - self._last >= gap):
                    wait = None if not self._dirty else gap - (time.monotonic() - self._last)
                    self._wake.wait(wait)
                if self._closed:
                    return
                self._dirty = False
                self._last = time.monotonic()
            try:  # with a drawer, the instance plots are its job: a refresh stays quick
                self._ask(plots=True, instance_plots=self.drawer is None)
                self.error = None
            except Exception as exc:  # a broken report must not stop training; the final refresh says why
                self.error = f"{type(exc).__name__}: {exc}"
            self._duration = time.monotonic() - self._last

    def _ask(self, plots: bool, instance_plots: bool = True) -> None:
        """One refresh in the child (started on first use); raises its error."""
        if self._child is None or self._child.poll() is not None:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "xvalkit.reporting.background"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, env=single_threaded_environment(),  # cores are training's
                # A process group of its own: Ctrl-C (sent to the terminal's group) is the runner's to
                # handle. Not a session of its own: Linux's autogroup schedules each session as a peer,
                # and the child's `nice` would then not yield to training at all.
                process_group=0,
            )
        store = self.store
        request = {"folder": str(store.folder), "dataset": store.dataset, "num_experiment": store.num_experiment,
                   "plots": plots, "instance_plots": instance_plots}
        self._child.stdin.write(json.dumps(request) + "\n")
        self._child.stdin.flush()
        answer = self._child.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(answer.removeprefix("error: ") or "the report process ended")

    def close(self, final: bool = True, plots: bool = True) -> None:
        """Stop refreshing; with `final`, write the complete report now (in the child if it runs,
        whose cache is warm; else here) and raise its error, if any. Without it (Ctrl-C), return at
        once: a refresh in progress finishes on its own (its files are written atomically)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self.drawer is not None:
            self.drawer.close(wait=final)  # before the final report, which draws what it left
        try:
            if final:
                self._thread.join()
                if self._child is not None and self._child.poll() is None:
                    self._ask(plots)
                else:
                    from .. import report

                    report.refresh(self.store, plots=plots)
        finally:
            if self._child is not None:
                try:
                    self._child.stdin.close()  # the child leaves at the end of its input
                except OSError:
                    pass
                if final:
                    self._child.wait()


def main() -> None:
    """The child: one refresh per request line, answered 'ok' or 'error: <one line>'."""
    from .. import report
    from ..errors import XvalError

    try:
        os.nice(10)  # training first
    except OSError:
        pass
    stores: dict[tuple, ExperimentStore] = {}
    for line in sys.stdin:
        request = json.loads(line)
        key = (request["folder"], request["dataset"], request["num_experiment"])
        store = stores.setdefault(key, ExperimentStore(*key, cache=True))
        try:
            report.refresh(store, plots=request["plots"], instance_plots=request.get("instance_plots", True))
            answer = "ok"
        except (XvalError, OSError, ValueError) as exc:
            answer = "error: " + " ".join(str(exc).split())
        print(answer, flush=True)


if __name__ == "__main__":
    main()
