"""The arrays of one fold: reshaping, normalisation fitted on training items only, batching.

Each set is a list of row positions in the dataset's table (xvalkit.mapped.Table: one array of
all items' rows, memory-mapped for a .xvd dataset). `arrays()` gathers a whole set for an
in-memory fit; `batch()` gathers one batch (one numpy call) and normalises it, so the generator
mode never holds a copy of the training set. With `release_pages` (generator mode) the pages a
process has read are unmapped again every RELEASE_ROWS rows: its resident memory stays bounded
whatever the dataset's size, while the page cache keeps the data for the next epoch and for the
other workers. Both modes compute the same normalisation statistics (one streamed pass) and
normalise the same values the same way, so a seeded run gives identical metrics in either mode.

The instances of a sweep mostly differ in training parameters only: their folds hold the same rows,
normalised and reshaped the same way. A process keeps what it prepared for its last folds (the
normalisation statistics and, up to PREPARED_BYTES, the prepared sets: `RecentlyPrepared`), so the
next instance's fold starts from a copy instead of gathering and normalising again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .data import Dataset
from .mapped import Table
from .errors import DatasetError
from .folds import Fold


def channels_first(framework: str) -> bool:
    """Where 'conv' puts the channel axis: first for torch (its convention), last for Keras."""
    return framework == "torch"


def model_input_shape(datapoint_shape: tuple[int, ...], reshaping_type: str,
                      channels_first: bool = False) -> tuple[int, ...]:
    """'conv' adds a channel axis to (time, frequency): (1, time, frequency) channels first,
    (time, frequency, 1) channels last; 'rnn' and 'none' keep the shape."""
    datapoint_shape = tuple(datapoint_shape)
    if reshaping_type != "conv" or len(datapoint_shape) != 2:
        return datapoint_shape
    return (1,) + datapoint_shape if channels_first else datapoint_shape + (1,)


def targets_for(task_type: str, y: np.ndarray, where: str) -> np.ndarray:
    """Class indices (int64) for classification, float32 (n, outputs) for regression."""
    y = np.asarray(y)
    if task_type == "classification":
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot, as the original scripts saved them
            return y.argmax(axis=1).astype(np.int64)
        y = y.reshape(-1)
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
            raise DatasetError(
                f"{where}: classification targets must be class indices (integers) or one-hot, "
                f"got {y.dtype} values like {y[:3].tolist()}; is task_type 'regression'?"
            )
        if y.min() < 0:
            raise DatasetError(f"{where}: class indices must be 0 or more, found {int(y.min())}")
        return y.astype(np.int64)
    return y.astype(np.float32).reshape(len(y), -1)


def num_outputs(dataset: Dataset, task_type: str) -> int:
    """Number of classes (from the manifest, else the largest label + 1), or regression outputs."""
    if task_type == "classification":
        classes = dataset.manifest.get("classes")
        largest = max(int(targets_for(task_type, y, dataset.name).max()) for y in dataset.targets.values())
        return max(largest + 1, len(classes) if classes else 0)
    return int(targets_for(task_type, next(iter(dataset.targets.values())), dataset.name).shape[1])


CHUNK_BYTES = 16 * 1024**2  # rows read at once by the statistics pass
PREPARED_BYTES = 256 * 1024**2  # prepared sets a process keeps for the next instances' same folds
RELEASE_ROWS = 32  # generator mode: unmap the pages read after this many rows of a batch


@dataclass
class Normalizer:
    """Per-feature (last axis) standardisation with statistics of the training items."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, parts: list[np.ndarray], release=None) -> "Normalizer":
        """One streamed pass, CHUNK_BYTES of rows at a time (float64 sums); `release()` after each
        chunk lets a mapped array's pages go."""
        features = parts[0].shape[-1]
        total, s, ss = 0, np.zeros(features), np.zeros(features)
        for part in parts:
            step = max(1, CHUNK_BYTES // max(1, part[:1].nbytes))
            for start in range(0, len(part), step):
                chunk = np.asarray(part[start:start + step], dtype=np.float32).reshape(-1, features)
                total += len(chunk)
                s += chunk.sum(0, dtype=np.float64)
                ss += np.square(chunk, dtype=np.float64).sum(0)
                if release is not None:
                    release()
        mean = s / total
        std = np.sqrt(np.maximum(ss / total - mean**2, 0.0))
        return cls(mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def prepare_inputs(x: np.ndarray, normalizer: Normalizer | None, reshaping_type: str,
                   channels_first: bool = False) -> np.ndarray:
    """Normalise, then reshape: 'conv' adds a channel axis; 'rnn' and 'none' keep (time, features)."""
    if normalizer is not None:
        x = normalizer(x)
    x = x.reshape((len(x),) + model_input_shape(x.shape[1:], reshaping_type, channels_first))
    return x.astype(np.float32, copy=False)


@dataclass
class SetData:
    items: list[str]
    rows: np.ndarray  # positions of the set's datapoints in table.x, item after item
    y: np.ndarray  # concatenated targets
    transform: "FoldData"
    table: Table
    whole_items: bool = True  # False: some of the items' rows are left out (self.rows says which)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def parts(self) -> list[np.ndarray]:
        """The raw per-item predictors (views of the table, nothing read), or the set's own rows
        gathered when it holds only part of its items."""
        if not self.whole_items:
            return [self._take(self.rows)]
        return [self.table.x[a:b] for a, b in (self.table.span[i] for i in self.items)]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole set, prepared (a copy of what this process prepared for the same rows, when it did)."""
        if self.transform.release_pages:
            return self.transform.prepare(self._take(self.rows)), self.y
        key = (rows_key(self.rows), self.transform.preparation_key())
        return RECENT.get(self.table, ("set", key), lambda: self.transform.prepare(self._take(self.rows))), self.y

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The datapoints at `index` (positions in the set), gathered from the table."""
        index = np.asarray(index, dtype=np.int64)
        return self.transform.prepare(self._take(self.rows[index])), self.y[index]

    def _take(self, rows: np.ndarray) -> np.ndarray:
        if not self.transform.release_pages:
            return self.table.x[rows].astype(np.float32, copy=False)
        # Generator mode: a page fault maps a whole large folio (up to 2 MB here: 2.6 GB resident
        # after reading 131 MB of random rows), so pages are unmapped every RELEASE_ROWS rows.
        out = np.empty((len(rows), *self.table.x.shape[1:]), dtype=np.float32)
        for start in range(0, len(rows), RELEASE_ROWS):
            out[start:start + RELEASE_ROWS] = self.table.x[rows[start:start + RELEASE_ROWS]]
            self.table.release()
        return out


class FoldData:
    """Train, validation and test sets of one fold, ready for a trainer."""

    def __init__(self, dataset: Dataset, fold: Fold, task_type: str, reshaping_type: str,
                 normalization: str, channels_first: bool = False, release_pages: bool = False):
        self.task_type = task_type
        self.reshaping_type = reshaping_type
        self.channels_first = channels_first
        self.num_outputs = num_outputs(dataset, task_type)
        self.table = dataset.data_table()
        self.release_pages = release_pages and self.table.mapped
        sets = {}
        # Datapoints left out of validation / test: augmented copies (training uses them all).
        self.excluded_augmented = {"val": 0, "test": 0} if dataset.has_augmented else None
        held = held_out_sources(dataset, fold)  # validation within the training items (TESS), or None
        val_items = fold.train if held is not None else fold.val
        for name, items in (("train", fold.train), ("val", val_items), ("test", fold.test)):
            rows = self.table.rows(items)
            y = np.concatenate([targets_for(task_type, dataset.targets[i], f"dataset '{dataset.name}', item '{i}'")
                                for i in items])
            keep = np.ones(len(rows), dtype=bool)
            if held is not None and name != "test":
                in_val = np.concatenate([held[i] for i in items])
                keep = in_val if name == "val" else ~in_val
            if name != "train" and self.excluded_augmented is not None:
                original = np.concatenate([dataset.originals(i) for i in items])
                self.excluded_augmented[name] = int((keep & ~original).sum())
                keep &= original
                if not keep.any():
                    raise DatasetError(
                        f"dataset '{dataset.name}': the {name} items of fold {fold.index} ({', '.join(items)}) hold "
                        "augmented copies only; keep the _orig files of the corpus to evaluate on"
                    )
            if not keep.all():
                rows, y = rows[keep], y[keep]
            sets[name] = SetData(list(items), rows, y, self, self.table, whole_items=bool(keep.all()))
        # Original training datapoints: the t-test's n_train counts in the same unit as n_test.
        train_kept = ~np.concatenate([held[i] for i in fold.train]) if held is not None else None
        if self.excluded_augmented is not None:
            original = np.concatenate([dataset.originals(i) for i in fold.train])
            self.n_train_original = int((original if train_kept is None else original & train_kept).sum())
        else:
            self.n_train_original = len(sets["train"])
        self.normalizer = None
        if normalization == "standard":
            train = sets["train"]
            if self.release_pages:
                self.normalizer = Normalizer.fit(train.parts, self.table.release)
            else:
                self.normalizer = RECENT.get(self.table, ("normalizer", rows_key(train.rows)),
                                             lambda: Normalizer.fit(train.parts))
        self.train, self.val, self.test = sets["train"], sets["val"], sets["test"]
        self.input_shape = model_input_shape(dataset.input_shape, reshaping_type, channels_first)

    def sets(self) -> dict[str, SetData]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return prepare_inputs(x, self.normalizer, self.reshaping_type, self.channels_first)

    def preparation_key(self) -> tuple:
        """What `prepare` does to rows, as a key: the same key, the same prepared values."""
        stats = None if self.normalizer is None else rows_key(np.concatenate([self.normalizer.mean, self.normalizer.std]))
        return stats, self.reshaping_type, self.channels_first


def held_out_sources(dataset: Dataset, fold: Fold) -> dict[str, np.ndarray] | None:
    """{training item: mask of its datapoints whose source file is held out for validation}, for a
    fold validated within its training items (Fold.val_sources); None otherwise."""
    if not fold.val_sources:
        return None
    from .data import source_group

    held, sources = set(fold.val_sources), dataset.manifest.get("sources") or {}
    masks = {}
    for item in fold.train:
        groups = [source_group(source) for source in sources.get(item, [])]
        if len(groups) != len(dataset.targets[item]):
            raise DatasetError(f"dataset '{dataset.name}': its manifest records {len(groups)} source files for item "
                               f"'{item}', which has {len(dataset.targets[item])} datapoints; preprocess it again")
        masks[item] = np.fromiter((group in held for group in groups), dtype=bool, count=len(groups))
    return masks


def rows_key(values: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).digest()


class RecentlyPrepared:
    """What this process prepared lately from a table (normalisers, prepared sets), least recently
    used first out, at most `limit` bytes of arrays and `entries` entries.

    Arrays are handed out as copies: a model that writes into its inputs changes its own fold's
    copy only, never what the next instance is given. A table read anew (another dataset object)
    never finds the old one's entries.
    """

    def __init__(self, limit: int, entries: int = 64):
        self.limit, self.max_entries = limit, entries
        self.entries: OrderedDict[tuple, tuple[Table, object]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, table: Table, key: tuple, make: Callable[[], object]):
        found = self.entries.get(key)
        if found is not None and found[0] is table:
            self.hits += 1
            self.entries.move_to_end(key)
            value = found[1]
        else:
            self.misses += 1
            value = make()
            if _nbytes(value) <= self.limit:
                self.entries[key] = (table, value)
                while len(self.entries) > self.max_entries or self._bytes() > self.limit:
                    self.entries.popitem(last=False)
        return value.copy() if isinstance(value, np.ndarray) else value

    def _bytes(self) -> int:
        return sum(_nbytes(value) for _, value in self.entries.values())

    def clear(self) -> None:
        self.entries.clear()


def _nbytes(value) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else 0


RECENT = RecentlyPrepared(PREPARED_BYTES)
