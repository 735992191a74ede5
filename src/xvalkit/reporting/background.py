"""Report refreshes during a run, off the training path.

`xval run` asks for a refresh after every finished or failed fold; `ReportRefresher` rebuilds the
report at most every `interval` seconds, in one spawned process at low priority, so the next fold
trains while the workbook is written. The spreadsheet of a running experiment is then never more
than about `interval` seconds (plus one refresh) behind, or one instance behind when instances take
longer than that. The process keeps its ExperimentStore, whose cache reads each fold file once.
Runs shorter than `interval` never start the process: their report is written once, at the end.

The report is always rebuilt from the folder alone, so a crash at any moment (of the runner or of
the report process) still leaves a folder from which `xval report` rebuilds everything.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..store import ExperimentStore

_STORES: dict[tuple[str, str, int], ExperimentStore] = {}


def _start_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    try:
        os.nice(10)  # training first
    except OSError:
        pass


def _refresh(folder: str, dataset: str, num_experiment: int, plots: bool) -> None:
    from .. import report

    key = (folder, dataset, num_experiment)
    store = _STORES.setdefault(key, ExperimentStore(Path(folder), dataset, num_experiment))
    report.refresh(store, plots=plots)


class ReportRefresher:
    """Throttled, coalesced report refreshes in a background process (see the module docstring)."""

    def __init__(self, store: ExperimentStore, interval: float):
        self.store, self.interval = store, float(interval)
        self._pool: ProcessPoolExecutor | None = None
        self._wake = threading.Condition()
        self._dirty = False
        self._closed = False
        self._last = time.monotonic()  # the run's start counts as a refresh: nothing to show yet
        self.error: str | None = None  # the last background refresh's error, if it failed
        self._thread = threading.Thread(target=self._loop, name="report-refresher", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Something changed in the folder: refresh within `interval` seconds."""
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not (self._dirty and time.monotonic() - self._last >= self.interval):
                    wait = None if not self._dirty else self.interval - (time.monotonic() - self._last)
                    self._wake.wait(wait)
                if self._closed:
                    return
                self._dirty = False
                self._last = time.monotonic()
            self._submit(plots=False)

    def _submit(self, plots: bool) -> None:
        try:
            if self._pool is None:
                import multiprocessing

                self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_worker)
            store = self.store
            self._pool.submit(_refresh, str(store.folder), store.dataset, store.num_experiment, plots).result()
            self.error = None
        except Exception as exc:  # a broken report must not stop training; the final refresh says why
            self.error = f"{type(exc).__name__}: {exc}"

    def close(self, final: bool = True, plots: bool = True) -> None:
        """Stop refreshing; with `final`, write the complete report now (in the background process
        if it runs, whose cache is warm; else here) and raise its error, if any. Without it (Ctrl-C),
        return at once: a refresh in progress finishes on its own (its files are written atomically)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if final:
            self._thread.join()
        try:
            if final:
                if self._pool is not None:
                    store = self.store
                    self._pool.submit(_refresh, str(store.folder), store.dataset, store.num_experiment,
                                      plots).result()
                else:
                    from .. import report

                    report.refresh(self.store, plots=plots)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=not final, cancel_futures=True)
                self._pool = None
