"""SHA-256 of the files a dataset is read from, as a fold records them and `xval reproduce` checks them."""

from __future__ import annotations

import hashlib
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


def dataset_digests(folder: str | Path, name: str) -> dict[str, str]:
    """{path relative to the data folder: SHA-256} of the dataset's files."""
    return {path.relative_to(folder).as_posix(): file_sha256(path) for path in dataset_files(folder, name)}


def changed_files(recorded: dict[str, str], folder: str | Path, name: str) -> list[str]:
    """The dataset's files whose content is not what `recorded` says (changed, missing or new), by name."""
    now = dataset_digests(folder, name)
    return sorted(path for path in set(recorded) | set(now) if recorded.get(path) != now.get(path))
