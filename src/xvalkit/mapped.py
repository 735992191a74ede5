"""The memory-mapped dataset format: a folder `<name>.xvd/` of plain `.npy` files.

  predictors.npy   (rows, ...) every item's datapoints, item after item
  targets.npy      (rows,) or (rows, outputs), the same rows
  offsets.npy      int64 (items + 1,): item i holds rows offsets[i]:offsets[i + 1]
  items.npy        the item names (unicode strings), in row order
  manifest.json    how the features were made (optional keys, as before)

Why numpy's own `.npy`: any numpy reads it (np.load(..., mmap_mode="r")), it holds no pickle,
its data starts at a fixed offset so it maps directly, and one array per set keeps a batch's
gather one numpy call. The folder is written under a temporary name and renamed into place whole
(atomic.atomic_dir): a half-written dataset is never found. Files are made read-only and mapped
read-only, so a job cannot modify a dataset; a new version is new files, so workers that still
map the old ones keep reading them unharmed.

Rows are appended as they come (`DatasetWriter.add`), so a writer never holds the dataset in
memory: the `.npy` header, whose shape is known only at the end, is written last into space
reserved before the data.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from pathlib import Path

import numpy as np

from . import atomic
from .errors import DatasetError

SUFFIX = ".xvd"
HEADER_BYTES = 4096  # reserved for the .npy header; data then starts page-aligned
CHECK_CHUNK_BYTES = 32 * 1024**2  # rows scanned at once by the loading checks


def folder_for(data_folder: str | Path, name: str) -> Path:
    return Path(data_folder) / f"{name}{SUFFIX}"


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header padded to HEADER_BYTES (numpy pads to 64; any padding reads)."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
    body_len = HEADER_BYTES - 10
    body = (text + " " * (body_len - len(text) - 1) + "\n").encode("latin1")
    return np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + body_len.to_bytes(2, "little") + body


class _Appender:
    """Rows appended to a .npy file whose header is written when it is closed."""

    def __init__(self, path: Path):
        self.path, self.handle = path, open(path, "wb")
        self.handle.write(b"\0" * HEADER_BYTES)
        self.dtype: np.dtype | None = None
        self.row_shape: tuple[int, ...] | None = None
        self.rows = 0

    def append(self, x: np.ndarray, where: str) -> None:
        if self.dtype is None:
            self.dtype, self.row_shape = x.dtype, x.shape[1:]
        if x.shape[1:] != self.row_shape:
            raise DatasetError(f"{where}: datapoint shape {x.shape[1:]} differs from the first item's {self.row_shape}")
        self.handle.write(np.ascontiguousarray(x, dtype=self.dtype).tobytes())
        self.rows += len(x)

    def close(self) -> None:
        self.handle.seek(0)
        self.handle.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.chmod(self.path, 0o444)


def _save_small(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.lib.format.write_array(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o444)


class DatasetWriter:
    """Write a dataset item by item, then rename it into place whole.

    >>> with DatasetWriter(folder, "mine", manifest={"classes": ["a", "b"]}) as writer:
    ...     writer.add("speaker1", x1, y1)   # x1: (datapoints, ...), y1: (datapoints, ...)
    ...     writer.add("speaker2", x2, y2)

    Leaving the block with an exception writes nothing. `add` checks what it is given (one
    datapoint shape, as many targets as predictors, finite values), so a written dataset loads.
    """

    def __init__(self, data_folder: str | Path, name: str, manifest: dict | None = None):
        self.name, self.target, self.manifest = name, folder_for(data_folder, name), manifest
        self.items: list[str] = []
        self.offsets = [0]

    def __enter__(self) -> "DatasetWriter":
        self._context = atomic.atomic_dir(self.target)
        self.folder = self._context.__enter__()
        self.x = _Appender(self.folder / "predictors.npy")
        self.y = _Appender(self.folder / "targets.npy")
        return self

    def add(self, item: str, x: np.ndarray, y: np.ndarray) -> None:
        item, x, y = str(item), np.asarray(x), np.asarray(y)
        where = f"dataset '{self.name}', item '{item}'"
        if item in self.items:
            raise DatasetError(f"{where}: added twice")
        if x.ndim < 2 or len(x) == 0:
            raise DatasetError(f"{where}: must hold an array (datapoints, ...) with at least one datapoint")
        if len(y) != len(x):
            raise DatasetError(f"{where}: has {len(x)} predictors but {len(y)} targets")
        check_finite(x, where)
        check_finite(y, where, "targets")
        self.x.append(x, where)
        self.y.append(y, where)
        self.items.append(item)
        self.offsets.append(self.offsets[-1] + len(x))

    def __exit__(self, kind, value, tb) -> bool:
        try:
            if kind is None:
                if not self.items:
                    raise DatasetError(f"dataset '{self.name}': no foldable items in the predictors")
                self.x.close()
                self.y.close()
                _save_small(self.folder / "offsets.npy", np.asarray(self.offsets, dtype=np.int64))
                _save_small(self.folder / "items.npy", np.asarray(self.items, dtype=str))
                atomic.write_text(self.folder / "manifest.json",
                                  json.dumps(self.manifest or {}, indent=2, default=str))
        except BaseException as exc:  # failed while finishing: remove the temporary folder, re-raise
            self._close_quietly()
            self._context.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if kind is not None:
            self._close_quietly()
        return bool(self._context.__exit__(kind, value, tb))

    def _close_quietly(self) -> None:
        """Close the row files of a write that already failed: closing flushes their buffers, which
        fails again on a full disk, and must not hide the first error nor keep the temporary folder."""
        for appender in (self.x, self.y):
            with contextlib.suppress(OSError):
                appender.handle.close()


def check_finite(x: np.ndarray, where: str, what: str = "predictors", release=None) -> None:
    """Raise DatasetError naming the first datapoint of `x` (chunk by chunk) holding NaN or inf;
    `release()` after each chunk lets a mapped array's pages go."""
    if not np.issubdtype(x.dtype, np.inexact):
        return
    per_row = max(1, x[:1].nbytes)
    step = max(1, CHECK_CHUNK_BYTES // per_row)
    for start in range(0, len(x), step):
        bad = ~np.isfinite(x[start:start + step].reshape(min(step, len(x) - start), -1)).all(axis=1)
        if bad.any():
            raise DatasetError(f"{where} has NaN or infinite {what}, first in datapoint {start + int(bad.argmax())} "
                               f"(of {len(x)}); fix or drop them before running")
        if release is not None:
            release()


class _ReadOnlyMap:
    """One .npy file mapped read-only, as an array that cannot be written."""

    def __init__(self, path: Path):
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f".npy format version {version} (1.0 or 2.0 expected)")
                shape, fortran, dtype = read_header(handle)
                offset = handle.tell()
                size = os.fstat(handle.fileno()).st_size
                if fortran or dtype.hasobject:
                    raise ValueError("not a plain C-ordered array")
                count = int(np.prod(shape))
                if offset + count * dtype.itemsize > size:
                    raise ValueError(f"{size} bytes hold fewer than the {count} values of shape {shape}")
                self.map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if count else None
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: not a readable .npy dataset file ({exc})") from None
        buffer = self.map if self.map is not None else b""
        self.array = np.frombuffer(buffer, dtype, count=count, offset=offset if count else 0).reshape(shape)

    def release(self) -> None:
        """Drop this process's mapping of the pages read so far (the page cache keeps them)."""
        if self.map is not None:
            self.map.madvise(mmap.MADV_DONTNEED)


class Table:
    """All items' rows in one predictors array and one targets array (mapped, or in memory)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, items: list[str], offsets: np.ndarray,
                 maps: tuple[_ReadOnlyMap, ...] = ()):
        self.x, self.y, self.items, self.offsets, self.maps = x, y, items, np.asarray(offsets, np.int64), maps
        self.span = {item: (int(offsets[i]), int(offsets[i + 1])) for i, item in enumerate(items)}

    @classmethod
    def from_items(cls, predictors: dict, targets: dict) -> "Table":
        items = sorted(predictors)
        offsets = np.concatenate([[0], np.cumsum([len(predictors[i]) for i in items])]).astype(np.int64)
        x = np.concatenate([np.asarray(predictors[i]) for i in items])
        y = np.concatenate([np.asarray(targets[i]) for i in items])
        return cls(x, y, items, offsets)

    @property
    def mapped(self) -> bool:
        return bool(self.maps)

    def rows(self, items) -> np.ndarray:
        """Row positions of `items`' datapoints, item after item."""
        spans = [self.span[str(i)] for i in items]
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in spans]) if spans else np.zeros(0, np.int64)

    def release(self) -> None:
        for m in self.maps:
            m.release()


def open_table(folder: Path, name: str) -> tuple[Table, dict]:
    """Map a dataset folder read-only and check its structure from the headers (nothing read)."""
    where = f"dataset '{name}' ({folder})"
    for part in ("predictors.npy", "targets.npy", "offsets.npy", "items.npy"):
        if not (folder / part).is_file():
            raise DatasetError(f"{where}: {part} is missing; save the dataset again (or run `xval convert-npz`)")
    x_map, y_map = _ReadOnlyMap(folder / "predictors.npy"), _ReadOnlyMap(folder / "targets.npy")
    try:
        offsets = np.load(folder / "offsets.npy", allow_pickle=False)
        items = [str(i) for i in np.load(folder / "items.npy", allow_pickle=False)]
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{where}: offsets.npy or items.npy unreadable ({exc})") from None
    x, y = x_map.array, y_map.array
    if (offsets.ndim != 1 or len(offsets) != len(items) + 1 or offsets[0] != 0 or not items
            or np.any(np.diff(offsets) <= 0) or len(set(items)) != len(items)):
        raise DatasetError(f"{where}: offsets.npy and items.npy do not describe {len(items)} distinct non-empty items")
    if x.ndim < 2 or len(x) != offsets[-1] or len(y) != offsets[-1]:
        raise DatasetError(f"{where}: predictors.npy has {len(x)} rows of shape {x.shape[1:]} and targets.npy "
                           f"{len(y)}, the items {int(offsets[-1])} rows")
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    return Table(x, y, items, offsets, (x_map, y_map)), manifest


def check_values(table: Table, name: str) -> None:
    """NaN and inf checks, item by item and chunk by chunk, releasing each chunk's pages."""
    for item, (a, b) in table.span.items():
        where = f"dataset '{name}', item '{item}'"
        check_finite(table.x[a:b], where, release=table.release)
        check_finite(table.y[a:b], where, "targets", release=table.release)
