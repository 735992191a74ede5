"""Process set-up for audio work: where numba caches librosa's compiled code, and BLAS threads.

librosa compiles its numba functions (`cache=True`) the first time they run: about 15 s on these
2-core machines. Numba keeps that cache beside librosa's sources, which a system or read-only
install cannot write, so every fresh process would compile again. `configure_numba_cache` points
NUMBA_CACHE_DIR at a per-user folder instead (an existing NUMBA_CACHE_DIR is honoured), so the cost
is paid once per machine. It must run before numba is first imported, hence before librosa.

`limit_threads` keeps each worker of a process pool on one BLAS/OpenMP thread: two workers that
each start one BLAS thread per core make MFCC 2x slower, not faster (see shared/MEASURED.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def numba_cache_dir() -> Path:
    """The per-user numba cache of xvalkit: $XDG_CACHE_HOME/xvalkit/numba or ~/.cache/xvalkit/numba."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xvalkit" / "numba"


def configure_numba_cache() -> str | None:
    """Set NUMBA_CACHE_DIR (unless already set) and return it; None if no folder is writable.

    Too late once numba is imported (it reads the variable at import): then nothing is changed.
    """
    if "NUMBA_CACHE_DIR" in os.environ:
        return os.environ["NUMBA_CACHE_DIR"]
    if "numba" in sys.modules:
        return None
    folder = numba_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # numba falls back to its own locations; slower, still correct
    if not os.access(folder, os.W_OK):
        return None
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    return str(folder)


def single_thread_environment() -> None:
    """Ask BLAS/OpenMP libraries loaded from now on (in this process and its children) for 1 thread."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"


def limit_threads() -> None:
    """Process-pool initializer: one BLAS/OpenMP thread, also for libraries already loaded (fork)."""
    single_thread_environment()
    from threadpoolctl import threadpool_limits

    # Keep the limiter alive for the life of the worker.
    global _LIMITER
    _LIMITER = threadpool_limits(limits=1)


_LIMITER = None
