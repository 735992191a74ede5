"""Process set-up for audio work: where numba caches librosa's compiled code, and BLAS threads.

librosa compiles its numba functions (`cache=True`) the first time they run: about 15 s on these
2-core machines. Numba keeps that cache beside librosa's sources, which a system or read-only
install cannot write, so every fresh process would compile again. `configure_numba_cache` points
NUMBA_CACHE_DIR at a per-user folder instead (an existing NUMBA_CACHE_DIR is honoured), so the cost
is paid once per machine. It must run before numba is first imported, hence before librosa.

`one_blas_thread_while_pooling` (fork pools) and `limit_threads` (spawned workers) keep each worker
of a process pool on one BLAS/OpenMP thread: two workers that each start one BLAS thread per core
make MFCC several times slower, not faster (see shared/MEASURED.md).

`keep_freed_memory` stops glibc from handing every large temporary array back to the kernel:
by default each array over 128 KiB is a fresh mmap, and the kernel zero-fills its pages again on
first touch. For 3 s files that is 250-400 page faults per file, 0.4-0.7 ms on top of about 2 ms
of real work, and how many a process gets depends on its allocation history (forked workers got
the most). Workers that process thousands of same-sized files should simply reuse their memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path

from ..threads import BLAS_VARIABLES as THREAD_VARIABLES


def fork_is_safe() -> bool:
    """Whether pools may fork this process (sharing its warmed state): on Linux. macOS offers fork
    but system libraries (Accelerate) break in forked children; Windows has no fork."""
    return sys.platform.startswith("linux")


def default_jobs() -> int:
    """All the cores this process may use: the default number of worker processes."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


@contextlib.contextmanager
def one_blas_thread_while_pooling():
    """BLAS/OpenMP pools of this process at one thread inside the block, restored after it.

    Start a fork pool inside the block and shut it down before leaving: the workers inherit the
    limit. Measured on 300 3 s files, 2 workers (`python benchmarks/preprocess.py`):
    - limiting in each forked worker instead (threadpoolctl in the initializer) cost 0.6 ms more
      per file, even for the STFT, which uses no BLAS;
    - restoring the parent's threads while the workers still ran cost the parent 100 ms of CPU
      (OpenBLAS threads waking up) taken from the workers;
    - with no limit, MFCC workers were 7x slower (oversubscribed OpenBLAS threads).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def set_up_pool_worker(forked: bool) -> None:
    """What every worker of an audio pool does first: leave Ctrl-C to the parent, leave through
    `finally` on SIGTERM (so a half-written temporary file is removed), reuse freed memory, and
    run one BLAS thread (forked workers inherit that from the parent's limit)."""
    from ..interrupts import exit_on_terminate, ignore_interrupts

    ignore_interrupts()
    exit_on_terminate()
    keep_freed_memory()
    if not forked:
        limit_threads()


def limit_threads() -> None:
    """Process-pool initializer for spawned workers: one BLAS/OpenMP thread in this process."""
    single_thread_environment()
    from threadpoolctl import threadpool_limits

    # Keep the limiter alive for the life of the worker.
    global _LIMITER
    _LIMITER = threadpool_limits(limits=1)


_LIMITER = None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(largest: int = 256 << 20) -> bool:
    """Let glibc's malloc keep and reuse freed blocks up to `largest` bytes; False if not glibc.

    For worker processes of a pool: their memory then stays at the high-water mark of one task.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: no library search (find_library forks ldconfig)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, largest)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * largest))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
