"""Atomic file writes: write a temporary file beside the target, fsync, rename over it, fsync the folder.

A crash or Ctrl-C at any moment leaves either the old file or the new one, never half of one; a
power cut after a durable write returns keeps the new one (the folder's fsync makes the rename itself
durable, which the file's fsync alone does not).
Temporary names are '.<name>.<host>-<pid>-<random>.tmp<ext>' (hidden, with '.tmp' inside) so that
readers never mistake them for results, while writers that insist on an extension (h5py, numpy) still
see it. A kill -9 between a temporary file's creation and its rename leaves it behind; the writer's
host and pid in its name let the next run remove it once that process is gone
(`remove_left_behind`), and only then.

`tempfile` creates files 0600 and folders 0700 (private to their owner); each is given the mode a
plain `open()` or `mkdir()` would give under the process's umask, so that a lab sharing a results
folder can read what xvalkit wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .faults import note_file


def current_umask() -> int:
    """The process's umask, read without changing it where Linux's /proc tells it (os.umask can only
    be read by setting it, which races with other threads' file creation)."""
    from_proc = _umask_from_proc()
    return _umask_by_setting() if from_proc is None else from_proc


def _umask_from_proc() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _umask_by_setting() -> int:
    """Elsewhere: set a umask and put the old one back at once."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_mode(fd_or_path: int | str | Path, folder: bool = False) -> None:
    """Give a file (descriptor) or folder made by tempfile the mode open() or mkdir() would give."""
    os.chmod(fd_or_path, (0o777 if folder else 0o666) & ~current_umask())


def fsync_folder(folder: str | Path) -> None:
    """Make the names in `folder` durable: a rename reaches the disk with its folder, not its file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _host_tag() -> str:
    """Eight hex digits for this host (a host name may hold dots, which temporary names must not)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _prefix(target: Path) -> str:
    """A temporary name's start: the target's name, then the writer's host and pid."""
    return f".{target.name}.{_host_tag()}-{os.getpid()}-"


# '.<name>.<host>-<pid>-<random>.tmp<ext>'; mkstemp's random part is letters, digits and '_'
_LEFT_BEHIND = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp[^/]*$")


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a writer here, a fold's marker in store.py)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_left_behind(folder: str | Path) -> list[Path]:
    """Remove the temporary files and folders under `folder` whose writer, a process of this host, is
    gone (killed between a temporary's creation and its rename); return them. A live writer's, another
    host's (whose processes cannot be seen from here) and anything of another name are left alone, and
    so is an `atomic_dir` '.old' folder (after a crash between its two renames, the only copy)."""
    import shutil

    removed = []
    host = _host_tag()
    for path in sorted(Path(folder).rglob(".*.tmp*")):
        match = _LEFT_BEHIND.match(path.name)
        if not match or match["host"] != host or process_alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def _replacing(target: str | Path, suffix: str, durable: bool = True) -> Iterator[tuple[int, Path]]:
    """Yield (open descriptor, path) of a new temporary file beside `target`; on success it is
    renamed to `target` (then its folder fsynced when `durable`), else removed."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as exc:
        note_file(exc, target)
        raise
    tmp_path = Path(tmp)
    try:
        _plain_mode(fd)
        yield fd, tmp_path
        os.replace(tmp_path, target)
        if durable:
            fsync_folder(target.parent)
    except BaseException as exc:
        note_file(exc, target)  # a failed write names no file; a full disk must say which
        raise
    finally:
        with contextlib.suppress(OSError):  # on a read-only disk there is nothing to remove anyway
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `target`, else removed.

    `suffix` keeps an extension that a writer insists on (h5py, openpyxl, numpy's savez).
    """
    with _replacing(target, suffix) as (fd, tmp_path):
        os.close(fd)
        yield tmp_path
        _plain_mode(tmp_path)  # in case the writer made the file anew
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())


def write_with(target: str | Path, write: Callable[[BinaryIO], Any], durable: bool = True) -> None:
    """Atomically write `target` with `write(handle)` on a binary handle.

    `durable=False` skips the fsync, for files that matter only while the process lives (a fold's
    running marker): still all or nothing for readers, but not guaranteed on disk after a power cut.
    """
    with _replacing(target, "", durable) as (fd, _), os.fdopen(fd, "wb") as handle:
        write(handle)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())


def write_bytes(target: str | Path, data: bytes, durable: bool = True) -> None:
    write_with(target, lambda handle: handle.write(data), durable)


def write_text(target: str | Path, text: str, durable: bool = True) -> None:
    write_bytes(target, text.encode("utf-8"), durable)


def write_pickle(target: str | Path, obj: Any) -> None:
    write_with(target, lambda handle: pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL))


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a new temporary folder beside `target`; on success it replaces `target` as a whole.

    The files are fsynced by their writer; here the folder is renamed into place, so a reader sees
    the old folder, no folder, or the whole new one, never a half-written one. An existing
    `target` is first renamed aside and removed after the swap (a crash between the two renames
    leaves no `target` at all, never a mix of old and new files).
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        _plain_mode(tmp, folder=True)
        yield tmp
        fsync_folder(tmp)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        fsync_folder(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        note_file(exc, target)  # a failed write names no file; a full disk must say which
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
