"""Datasets: a pair of dicts {foldable item: array} for predictors and targets.

On disk, in the data folder (config.ini [paths] data_folder):
  <name>_predictors.npz   one array per foldable item, shape (datapoints, time, frequency) or any
                          (datapoints, ...) shape shared by all items
  <name>_target.npz       one array per item: class indices (datapoints,) for classification (one-hot
                          (datapoints, classes) is accepted too), floats (datapoints,) or
                          (datapoints, outputs) for regression
  <name>_manifest.json    optional: how the features were made, class names, source files
Uncompressed .npz read with allow_pickle=False: plain data that loading can never execute, unlike
a pickle. The built-in datasets `demo` and `demo_pitch` are synthesised on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .errors import DatasetError

BUILTIN_DATASETS = ("demo", "demo_pitch")


@dataclass
class Dataset:
    name: str
    predictors: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    manifest: dict = field(default_factory=dict)

    @property
    def items(self) -> list[str]:
        return sorted(self.predictors)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.predictors.values())).shape[1:])

    def datapoints(self, items) -> int:
        return sum(len(self.targets[item]) for item in items)

    def originals(self, item: str) -> np.ndarray | None:
        """Mask of the item's original datapoints (not augmented copies), from the manifest's
        `augmented` record written by `xval preprocess`; None for a dataset without it."""
        augmented = self.manifest.get("augmented")
        if not isinstance(augmented, dict):
            return None
        flags = np.asarray(augmented.get(item, []), dtype=bool)
        if len(flags) != len(self.targets[item]):
            raise DatasetError(
                f"dataset '{self.name}': its manifest records {len(flags)} augmented flags for item '{item}', "
                f"which has {len(self.targets[item])} datapoints; preprocess it again"
            )
        return ~flags

    @property
    def has_augmented(self) -> bool:
        """Whether the manifest says which datapoints are augmented copies, and some are."""
        augmented = self.manifest.get("augmented")
        return isinstance(augmented, dict) and any(any(flags) for flags in augmented.values())


def dataset_paths(folder: Path, name: str) -> dict[str, Path]:
    return {
        "predictors": folder / f"{name}_predictors.npz",
        "target": folder / f"{name}_target.npz",
        "manifest": folder / f"{name}_manifest.json",
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **{str(k): np.asarray(v) for k, v in arrays.items()})


def save_dataset(folder: str | Path, name: str, predictors: dict, targets: dict,
                 manifest: dict | None = None) -> dict[str, Path]:
    """Write a dataset: each file atomically, the target file last, so a dataset is never half there.

    An existing target file is removed first: a save stopped halfway then leaves a dataset that
    does not load, rather than new predictors beside the old targets.
    """
    folder = Path(folder)
    check_dataset(name, predictors, targets)
    paths = dataset_paths(folder, name)
    paths["target"].unlink(missing_ok=True)
    if manifest is not None:
        atomic.write_text(paths["manifest"], json.dumps(manifest, indent=2, default=str))
    _write_npz(paths["predictors"], predictors)
    _write_npz(paths["target"], targets)
    return paths


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npz dataset file ({exc})") from None


def check_dataset(name: str, predictors: dict, targets: dict) -> None:
    """Raise DatasetError unless both dicts have the same items, matching lengths and one shape."""
    if not predictors:
        raise DatasetError(f"dataset '{name}': no foldable items in the predictors")
    missing = set(map(str, predictors)) ^ set(map(str, targets))
    if missing:
        raise DatasetError(
            f"dataset '{name}': items {sorted(missing)[:5]} are in only one of predictors and targets"
        )
    shapes = {tuple(np.shape(x)[1:]) for x in predictors.values()}
    if len(shapes) > 1:
        raise DatasetError(f"dataset '{name}': items have different datapoint shapes {sorted(shapes)[:4]}")
    for item, x in predictors.items():
        if np.ndim(x) < 2 or len(x) == 0:
            raise DatasetError(
                f"dataset '{name}': item '{item}' must hold an array (datapoints, ...) with at least one datapoint"
            )
        if len(targets[item]) != len(x):
            raise DatasetError(
                f"dataset '{name}': item '{item}' has {len(x)} predictors but {len(targets[item])} targets"
            )
        for kind, values in (("predictors", x), ("targets", targets[item])):
            bad = first_non_finite(values)
            if bad is not None:
                raise DatasetError(
                    f"dataset '{name}': item '{item}' has NaN or infinite {kind}, first in datapoint {bad} "
                    f"(of {len(values)}); fix or drop them before running"
                )


def first_non_finite(values) -> int | None:
    """Index of the first datapoint (along axis 0) holding a NaN or an infinity, or None."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.inexact):  # integers and booleans are always finite
        return None
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return None if finite.all() else int(np.argmin(finite))


def load_dataset(folder: str | Path, name: str) -> Dataset:
    """Load `name` from `folder`, synthesising a built-in dataset there the first time."""
    folder = Path(folder)
    paths = dataset_paths(folder, name)
    if name in BUILTIN_DATASETS and not paths["target"].is_file():
        from .demo import demo_dataset

        save_dataset(folder, name, *demo_dataset(name))
    for key in ("predictors", "target"):
        if not paths[key].is_file():
            raise DatasetError(
                f"dataset '{name}': {paths[key]} not found (data_folder is {folder}; "
                f"make it with `xval preprocess`, or use a built-in dataset: {', '.join(BUILTIN_DATASETS)})"
            )
    predictors = _read_npz(paths["predictors"])
    targets = _read_npz(paths["target"])
    check_dataset(name, predictors, targets)
    manifest = {}
    if paths["manifest"].is_file():
        manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    return Dataset(name, predictors, targets, manifest)
