"""`xval convert`: an original-scripts dataset (pickled dicts) to the current format.

The original preprocessing saved each dict `{foldable item: array}` with `np.save(path, dict)`: a
pickled object array. Unpickling can run arbitrary code, so it happens only when the user says
they trust the files (--trust-pickle). The dicts are then checked (same items, lengths, one
numeric shape, finite values), one-hot targets become class indices, and the dataset is written
as <name>.xvd/ (xvalkit.mapped) with a manifest that records where it came from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import mapped
from .data import check_values, dataset_paths, save_dataset
from .data_digest import file_sha256
from .errors import DatasetError, XvalError

REFUSAL = ("{path}: refusing to unpickle it: an old dataset saved with np.save(path, dict) is a pickle, "
           "and unpickling a file can run any code in it; if you made this file (or trust whoever did), "
           "rerun with --trust-pickle")


def _read_pickled_dict(path: Path) -> dict[str, Any]:
    try:
        array = np.load(path, allow_pickle=True)  # the user passed --trust-pickle
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npy file ({exc})") from None
    if not (isinstance(array, np.ndarray) and array.dtype == object and array.shape == ()
            and isinstance(array.item(), dict)):
        raise DatasetError(f"{path}: expected a dict {{foldable item: array}} saved with np.save(path, dict)")
    return {str(key): value for key, value in array.item().items()}


def _as_numeric(name: str, item: str, what: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:  # numpy refuses a ragged nested list
        array = np.asarray(value, dtype=object)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DatasetError(f"dataset '{name}': item '{item}': the {what} are not one numeric array "
                           "(ragged: datapoints of different shapes?)")
    return array


def _one_hot_to_indices(targets: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int | None]:
    """Class indices and the number of classes, when every item's targets are one-hot rows."""
    widths = {y.shape[1] for y in targets.values() if y.ndim == 2}
    if len(widths) != 1 or any(y.ndim != 2 for y in targets.values()) or widths == {1}:
        return targets, None
    for y in targets.values():
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            return targets, None
    return {item: y.argmax(axis=1).astype(np.int64) for item, y in targets.items()}, widths.pop()


def convert(predictors_path: Path, target_path: Path, name: str, data_folder: Path, *,
            trust_pickle: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Convert (check_dataset, through save_dataset, checks lengths and shapes); returns a summary {paths, items, datapoints, shape, classes}. Writes nothing on error."""
    predictors_path, target_path = Path(predictors_path), Path(target_path)
    for path in (predictors_path, target_path):
        if not path.is_file():
            raise XvalError(f"{path}: no such file")
    if not trust_pickle:
        raise XvalError(REFUSAL.format(path=predictors_path))
    if not name.isidentifier() and not name.replace("-", "_").isidentifier():
        raise XvalError(f"--name {name!r}: use letters, digits, _ or - (it names files)")
    paths = dataset_paths(Path(data_folder), name)  # .npz files of an older save of that name
    if not overwrite and (mapped.folder_for(data_folder, name).exists() or paths["predictors"].exists()
                          or paths["target"].exists()):
        raise XvalError(f"dataset '{name}' already exists in {data_folder}; choose another --name or pass --overwrite")
    raw_x, raw_y = _read_pickled_dict(predictors_path), _read_pickled_dict(target_path)
    only = sorted(set(raw_x) ^ set(raw_y))
    if only:
        raise DatasetError(f"dataset '{name}': item '{only[0]}' is in only one of {predictors_path.name} and "
                           f"{target_path.name}" + (f" ({len(only) - 1} more)" if len(only) > 1 else ""))
    predictors = {item: _as_numeric(name, item, "predictors", raw_x[item]) for item in sorted(raw_x)}
    targets = {item: _as_numeric(name, item, "targets", raw_y[item]) for item in sorted(raw_y)}
    check_values(name, predictors, targets)
    targets, classes = _one_hot_to_indices(targets)
    manifest: dict[str, Any] = {
        "converted_from": {
            "predictors": str(predictors_path.resolve()), "predictors_sha256": file_sha256(predictors_path),
            "target": str(target_path.resolve()), "target_sha256": file_sha256(target_path),
            "format": "original scripts: np.save(path, dict) pickles", "converted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "targets": f"one-hot ({classes} columns) converted to class indices" if classes else "as saved",
    }
    if classes:
        manifest["classes"] = [str(i) for i in range(classes)]
    written = save_dataset(data_folder, name, predictors, targets, manifest)
    first = next(iter(predictors.values()))
    return {"paths": written, "items": len(predictors), "datapoints": sum(len(x) for x in predictors.values()),
            "shape": tuple(first.shape[1:]), "classes": classes}
