"""Faults of the machine, not of an instance: a full disk, a read-only or vanished folder.

One classification for every file xvalkit writes. An OSError whose errno says the disk is full
(ENOSPC, EDQUOT) or read-only (EROFS) is an environment fault wherever it comes from; a denied
permission (EACCES, EPERM) or a missing path (ENOENT) is one when the path lies in one of our own
folders (the experiment folder, the data folder, an output folder), and otherwise the instance's
own business (a user's model that opens a file). Libraries wrap the OSError: h5py keeps the errno
but puts the file name in a multi-line message; torch raises a RuntimeError whose __context__ is
the OSError. So the whole chain of causes is searched, and atomic.py notes the target file on
errors that lack one.

An EnvironmentFault stops the run at once (executors pass it to the runner instead of recording
a failed fold); its message is one line: the path, the cause, what was being written and, for a
full disk, the free space. It takes one argument, so it pickles to and from workers and Ray tasks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import XvalError

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
ALWAYS = DISK_FULL | {errno.EROFS}
IN_OUR_FOLDERS = {errno.EACCES, errno.EPERM, errno.ENOENT}

CAUSES = {
    errno.ENOSPC: ("no space left on device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota"),
    errno.EROFS: ("read-only file system", "make it writable (remount read-write)"),
    errno.EACCES: ("permission denied", "make it writable for this user"),
    errno.EPERM: ("operation not permitted", "make it writable for this user"),
    errno.ENOENT: ("no such file or folder (vanished?)", "restore the folder (remount the disk)"),
}

# h5py's message: "[Errno 28] Can't ... (file write failed: ..., filename = '/x/.y.tmp.hdf5', ...)"
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")
_FILENAME_IN_TEXT = re.compile(r"(?:file)?name = '([^']+)'")
# TensorFlow's file writers (Keras' TensorBoard callback) raise their own error types, not OSError:
# "<path>; No space left on device". Only the codes that are faults wherever they come from.
_STRERROR_IN_TEXT = {code: re.compile(rf"(?:(/[^;\n]+)[;:] )?{re.escape(os.strerror(code))}") for code in ALWAYS}
# atomic.py's temporary files: '.<name>.<random>.tmp<ext>' stand for '<name>'
_TEMPORARY = re.compile(r"^\.(.+)\.[^.]+\.tmp[^/]*$")


class EnvironmentFault(XvalError):
    """The machine failed the run (full disk, read-only or vanished folder): stop, keep what is done."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _errno_and_path(exc: BaseException) -> tuple[int | None, str | None]:
    if isinstance(exc, OSError):
        code, path = exc.errno, exc.filename
        text = str(exc)
        if code is None and (match := _ERRNO_IN_TEXT.search(text)):
            code = int(match.group(1))
        if path is None and (match := _FILENAME_IN_TEXT.search(text)):
            path = match.group(1)
        return code, None if path is None else str(path)
    for code, pattern in _STRERROR_IN_TEXT.items():
        if match := pattern.search(str(exc)):
            return code, match.group(1)
    return None, None


def target_of(path: str | Path) -> Path:
    """The file a temporary file of atomic.py stands for (others unchanged)."""
    path = Path(path)
    match = _TEMPORARY.match(path.name)
    return path.with_name(match.group(1)) if match else path


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    path = Path(path).absolute()
    for folder in folders:
        folder = Path(folder).absolute()
        if path == folder or folder in path.parents:
            return True
    return False


def free_space(path: str | Path) -> int | None:
    """Bytes free on the filesystem of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def describe(path: Path) -> str:
    """What a file of ours is, from where it lies: 'a fold model', 'the report', ..."""
    parts, name = path.parts, path.name
    for folder, what in (("models", "a fold model"), ("folds", "a fold record"), ("logs", "an epoch log"),
                         ("tensorboard", "TensorBoard files"), ("code", "the code snapshot"),
                         ("running", "a running-fold marker"), ("plots", "the report's plots")):
        if folder in parts[:-1]:
            return what
    if name.endswith((".xlsx", ".csv")):
        return "the report"
    if name.startswith("results_") and name.endswith(".pkl"):
        return "an instance's results"
    if name.startswith("error_"):
        return "an error file"
    if name.endswith("_description.txt"):
        return "the description"
    if name.endswith((".npz", ".xvd", "_manifest.json")):
        return "a dataset file"
    if name.endswith(".wav") or name == "augment_log.json":
        return "an augmented output"
    return "a file"


def fault_from(exc: BaseException, folders: Iterable[str | Path] = ()) -> EnvironmentFault | None:
    """The EnvironmentFault that `exc` (or an exception it wraps) stands for, else None."""
    folders = [Path(f) for f in folders]
    for link in _chain(exc):
        if isinstance(link, EnvironmentFault):
            return link
        code, path = _errno_and_path(link)
        if code is None or code not in ALWAYS | IN_OUR_FOLDERS:
            continue
        if code in IN_OUR_FOLDERS and (path is None or not _inside(Path(path), folders)):
            continue
        return EnvironmentFault(fault_message(code, target_of(path) if path else None))
    return None


def fault_message(code: int, path: Path | None) -> str:
    cause, remedy = CAUSES.get(code, (errno.errorcode.get(code, str(code)), "fix it"))
    where = f"{path}: " if path else ""
    what = f" while writing {describe(path)}" if path else ""
    if code in DISK_FULL and path is not None:
        free = free_space(path)
        cause += f" ({human(free)} free there now)" if free is not None else ""
    return f"{where}{cause}{what}; {remedy}"


def vanished(folder: Path, what: str = "the experiment folder") -> EnvironmentFault:
    return EnvironmentFault(f"{folder}: {what} vanished (deleted, or its disk unmounted) during the run; "
                            "restore it (remount the disk)")


@contextlib.contextmanager
def faults_stop(folders: Iterable[str | Path] = ()) -> Iterator[None]:
    """Turn an environment error raised inside into an EnvironmentFault (others pass unchanged)."""
    try:
        yield
    except EnvironmentFault:
        raise
    except Exception as exc:
        fault = fault_from(exc, folders)
        if fault is None:
            raise
        raise fault from exc


def note_file(exc: BaseException, path: str | Path) -> None:
    """Name `path` on the OSErrors of `exc`'s chain that name no file (a write or fsync that failed)."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.filename is None and not _FILENAME_IN_TEXT.search(str(link)):
            link.filename = str(path)
