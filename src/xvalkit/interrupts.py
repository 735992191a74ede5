"""Ctrl-C that stops long work at a safe point instead of wherever the signal happens to land.

A KeyboardInterrupt raised straight from the signal can land in a library's weakref callback or
destructor, where Python prints "Exception ignored" with a traceback and carries on. So the first
Ctrl-C only sets a flag that the work loop turns into a KeyboardInterrupt at its next check (the
end of an epoch, of a file); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """`with StopRequest("stopping at the end of this epoch") as stop: ... stop.check() ...`"""

    def __init__(self, message: str):
        self.message = message
        self.requested = False
        self.forced = False  # Ctrl-C pressed again: stop at once
        self.previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True
        print(f"{self.message} (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt


def ignore_interrupts() -> None:
    """For pool workers: Ctrl-C reaches the whole process group, and the parent alone decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_on_terminate() -> None:
    """For pool workers: SIGTERM raises SystemExit, so `finally` blocks (temporary files) run."""
    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
