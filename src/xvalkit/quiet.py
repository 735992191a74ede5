"""Framework chatter goes to a file, not to the user's console.

TensorFlow, Keras, absl and torch talk during training: Python warnings, records on their loggers
(`WARNING:tensorflow:5 out of the last 13 calls ... triggered tf.function retracing`), C++ log lines
written straight to file descriptor 2, progress bars on stdout. During a fold all of it goes to the
fold's log file (`framework_output_to(handle)`), so the console shows xvalkit's own lines only. With
XVAL_DEBUG set (`xval run --debug`, debug_mode = True) nothing is redirected: everything shows.

xvalkit's console (rich, on sys.stderr) keeps the terminal: when sys.stderr is the process' file
descriptor 2, it is pointed at a copy of the original descriptor while descriptor 2 goes to the file.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import IO, Iterator


TENSORFLOW_MODULES = ("keras", "tensorflow", "tf_keras")


def imports_tensorflow(path: Path) -> bool:
    """Whether a Python file imports Keras or TensorFlow anywhere (read, not run): xvalkit then
    imports them first, without TensorFlow's start-up lines (devices.import_keras)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return False  # the import itself says what is wrong
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        if any(name.split(".")[0] in TENSORFLOW_MODULES for name in names):
            return True
    return False


def debugging() -> bool:
    """True when everything should reach the console (`--debug`)."""
    return bool(os.environ.get("XVAL_DEBUG"))


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


@contextlib.contextmanager
def _loggers_to(handler: logging.Handler) -> Iterator[None]:
    """Every logger's records go to `handler` only: the root's handlers are swapped for it, and
    loggers with handlers of their own (TensorFlow adds one) propagate to the root instead."""
    root = logging.getLogger()
    saved = [(root, root.handlers[:], root.propagate)]
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and logger.handlers:
            saved.append((logger, logger.handlers[:], logger.propagate))
            logger.handlers, logger.propagate = [], True
    root.handlers = [handler]
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


@contextlib.contextmanager
def _descriptors_to(target: IO[str]) -> Iterator[None]:
    """File descriptors 1 and 2 (C/C++ output, child processes) write to `target` meanwhile."""
    fd = _fileno(target)
    if fd is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    saved = {n: os.dup(n) for n in (1, 2)}
    # The console stays on the terminal: sys.stderr gets its own copy of the original descriptor 2.
    console_stream = None
    old_stderr = sys.stderr
    if _fileno(sys.stderr) == 2:
        console_stream = os.fdopen(os.dup(saved[2]), "w", buffering=1,
                                   encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                                   errors="backslashreplace")
        sys.stderr = console_stream
    try:
        for n in (1, 2):
            os.dup2(fd, n)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            target.flush()
        for n, copy in saved.items():
            os.dup2(copy, n)
            os.close(copy)
        if console_stream is not None:
            sys.stderr = old_stderr
            console_stream.close()


@contextlib.contextmanager
def framework_output_to(target: IO[str] | None) -> Iterator[None]:
    """Send Python warnings, every logger's records, stdout and file descriptors 1 and 2 to `target`
    (an open text file; None: a temporary file, thrown away) while the block runs."""
    if debugging():
        yield
        return
    with contextlib.ExitStack() as stack:
        if target is None:
            target = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))

        def show(message, category, filename, lineno, file=None, line=None):
            target.write(warnings.formatwarning(message, category, filename, lineno, line))
            target.flush()

        stack.enter_context(warnings.catch_warnings())  # also shows again warnings seen once before
        warnings.showwarning = show
        handler = logging.StreamHandler(target)
        handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
        stack.enter_context(_loggers_to(handler))
        stack.enter_context(_descriptors_to(target))
        stack.enter_context(contextlib.redirect_stdout(target))  # Keras' progress bars (verbose=1)
        yield
