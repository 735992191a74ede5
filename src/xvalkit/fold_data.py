"""The arrays of one fold: reshaping, normalisation fitted on training items only, batching.

Each set keeps the per-item arrays as they are in the dataset; `arrays()` concatenates them for
an in-memory fit, while `batch()` gathers one batch straight from the per-item arrays, so the
generator mode never holds a second copy of the training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .data import Dataset
from .errors import DatasetError
from .folds import Fold


def model_input_shape(datapoint_shape: tuple[int, ...], reshaping_type: str) -> tuple[int, ...]:
    """'conv' adds a channel axis to (time, frequency); 'rnn' and 'none' keep the shape."""
    datapoint_shape = tuple(datapoint_shape)
    return datapoint_shape + (1,) if reshaping_type == "conv" and len(datapoint_shape) == 2 else datapoint_shape


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


@dataclass
class Normalizer:
    """Per-feature (last axis) standardisation with statistics of the training items."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, parts: list[np.ndarray]) -> "Normalizer":
        total = sum(np.prod(p.shape[:-1]) for p in parts)
        s = sum(p.reshape(-1, p.shape[-1]).sum(0, dtype=np.float64) for p in parts)
        ss = sum(np.square(p.reshape(-1, p.shape[-1]), dtype=np.float64).sum(0) for p in parts)
        mean = s / total
        std = np.sqrt(np.maximum(ss / total - mean**2, 0.0))
        return cls(mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def prepare_inputs(x: np.ndarray, normalizer: Normalizer | None, reshaping_type: str) -> np.ndarray:
    """Normalise, then reshape: 'conv' adds a channel axis; 'rnn' and 'none' keep (time, features)."""
    if normalizer is not None:
        x = normalizer(x)
    x = x.reshape((len(x),) + model_input_shape(x.shape[1:], reshaping_type))
    return x.astype(np.float32, copy=False)


@dataclass
class SetData:
    items: list[str]
    parts: list[np.ndarray]  # raw per-item predictors
    y: np.ndarray  # concatenated targets
    transform: "FoldData"

    def __len__(self) -> int:
        return len(self.y)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        return self.transform.prepare(x), self.y

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The datapoints at `index` (positions in the concatenated set), read per item."""
        offsets = self.offsets
        which = np.searchsorted(offsets, index, side="right") - 1
        x = np.stack([self.parts[w][i - offsets[w]] for w, i in zip(which, index)])
        return self.transform.prepare(x), self.y[index]

    @cached_property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(p) for p in self.parts])[:-1]])


class FoldData:
    """Train, validation and test sets of one fold, ready for a trainer."""

    def __init__(self, dataset: Dataset, fold: Fold, task_type: str, reshaping_type: str,
                 normalization: str):
        self.task_type = task_type
        self.reshaping_type = reshaping_type
        self.num_outputs = num_outputs(dataset, task_type)
        sets = {}
        # Datapoints left out of validation / test: augmented copies (training uses them all).
        self.excluded_augmented = {"val": 0, "test": 0} if dataset.has_augmented else None
        for name, items in (("train", fold.train), ("val", fold.val), ("test", fold.test)):
            parts = [np.asarray(dataset.predictors[i], dtype=np.float32) for i in items]
            ys = [targets_for(task_type, dataset.targets[i], f"dataset '{dataset.name}', item '{i}'") for i in items]
            if name != "train" and self.excluded_augmented is not None:
                masks = [dataset.originals(i) for i in items]
                self.excluded_augmented[name] = int(sum((~m).sum() for m in masks))
                parts = [p[m] for p, m in zip(parts, masks) if m.any()]
                ys = [y[m] for y, m in zip(ys, masks) if m.any()]
                if not parts:
                    raise DatasetError(
                        f"dataset '{dataset.name}': the {name} items of fold {fold.index} ({', '.join(items)}) hold "
                        "augmented copies only; keep the _orig files of the corpus to evaluate on"
                    )
            sets[name] = SetData(list(items), parts, np.concatenate(ys), self)
        # Original training datapoints: the t-test's n_train counts in the same unit as n_test.
        self.n_train_original = (sum(int(dataset.originals(i).sum()) for i in fold.train)
                                 if self.excluded_augmented is not None else len(sets["train"]))
        self.normalizer = Normalizer.fit(sets["train"].parts) if normalization == "standard" else None
        self.train, self.val, self.test = sets["train"], sets["val"], sets["test"]
        self.input_shape = model_input_shape(dataset.input_shape, reshaping_type)

    def sets(self) -> dict[str, SetData]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return prepare_inputs(x, self.normalizer, self.reshaping_type)
