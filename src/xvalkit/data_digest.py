"""SHA-256 of the files a dataset is read from, as a fold records them and `xval reproduce` checks them."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from . import mapped
from .data import dataset_paths


def dataset_files(folder: str | Path, name: str) -> list[Path]:
    """The files `data.load_dataset` reads for `name`: its .xvd folder's, else the .npz files and manifest."""
    xvd = mapped.folder_for(folder, name)
    if xvd.is_dir():
        return sorted(path for path in xvd.iterdir() if path.is_file())
    return [path for path in dataset_paths(Path(folder), name).values() if path.is_file()]


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# A file modified this close to its hashing may be modified again within the same timestamp tick
# (file systems keep times at 1 ms to 2 s), keeping size and time: such a "racy" entry is hashed
# again rather than trusted, as git does for its index.
RACY_NS = 2_000_000_000


def dataset_fingerprint(folder: str | Path, name: str, known: dict[str, dict] | None = None) -> dict[str, dict]:
    """{path relative to the data folder: {"sha256", "size", "mtime_ns", "hashed_ns"}} of the dataset's files.

    A file whose size and modification time are those in `known` (a fingerprint taken earlier, by
    this process or by the run that planned the fold) keeps its known SHA-256 instead of being read
    again, as git's index does: hashing reads 1.2 s per GB on a 2-core machine, and a Ray or Slurm
    task, a worker process or a reproduction would otherwise each read the whole dataset once more.
    A file written since has another modification time and is hashed afresh."""
    known = known or {}
    fingerprint = {}
    for path in dataset_files(folder, name):
        stat = path.stat()
        relative = path.relative_to(folder).as_posix()
        before = known.get(relative) or {}
        if (before.get("sha256") and before.get("size") == stat.st_size and before.get("mtime_ns") == stat.st_mtime_ns
                and stat.st_mtime_ns + RACY_NS <= before.get("hashed_ns", 0)):
            fingerprint[relative] = before
        else:
            hashed_ns = time.time_ns()  # before reading: a write during the read makes the entry racy
            fingerprint[relative] = {"sha256": file_sha256(path), "size": stat.st_size,
                                     "mtime_ns": stat.st_mtime_ns, "hashed_ns": hashed_ns}
    return fingerprint


def digests_of(fingerprint: dict[str, dict]) -> dict[str, str]:
    """{path: SHA-256}, as a fold records them."""
    return {path: entry["sha256"] for path, entry in fingerprint.items()}


def changed_files(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files whose SHA-256 `now` is not what `recorded` says (changed, missing or new), by name."""
    return sorted(path for path in set(recorded) | set(now) if recorded.get(path) != now.get(path))
