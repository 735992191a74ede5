"""Datasets: a pair of dicts {foldable item: array} for predictors and targets.

On disk, in the data folder (config.ini [paths] data_folder), since issue 15 a folder
  <name>.xvd/             memory-mapped .npy files, written whole (see xvalkit.mapped); loaded
                          read-only and shared through the page cache by every worker of a machine
or, as before (still loaded; `xval convert-npz NAME` turns them into <name>.xvd/):
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
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic, mapped
from .errors import DatasetError

BUILTIN_DATASETS = ("demo", "demo_pitch")
# What `xval augment` appends to a file's stem (audio/augment_files.py, FileTask.output_names).
AUGMENT_SUFFIX = re.compile(r"_(orig|aug\d+)$")


def strip_augmentation(stem: str) -> tuple[str, bool | None]:
    """('x', True) for 'x_aug2', ('x', False) for 'x_orig', (stem, None) for a name without the suffix."""
    match = AUGMENT_SUFFIX.search(stem)
    if match is None:
        return stem, None
    return stem[:match.start()], match.group(1) != "orig"


def source_group(source: str) -> str:
    """A datapoint's source file as the corpus named it before `xval augment` ('a/x_aug2.wav' -> 'a/x.wav'):
    a file's windows and augmented copies share it."""
    folder, name = posixpath.split(source.replace("\\", "/"))
    stem, extension = posixpath.splitext(name)
    return posixpath.join(folder, strip_augmentation(stem)[0] + extension)


@dataclass
class Dataset:
    name: str
    predictors: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    manifest: dict = field(default_factory=dict)
    table: mapped.Table | None = None  # all rows in one array per set; the dicts hold views of it

    def data_table(self) -> mapped.Table:
        """The rows of every item in one array (a mapped dataset's own; else joined once, and the
        dicts then point into it, so no second copy stays)."""
        if self.table is None:
            self.table = mapped.Table.from_items(self.predictors, self.targets)
            self.predictors, self.targets = _item_views(self.table)
        return self.table

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


def _item_views(table: mapped.Table) -> tuple[dict, dict]:
    return ({item: table.x[a:b] for item, (a, b) in table.span.items()},
            {item: table.y[a:b] for item, (a, b) in table.span.items()})


def save_dataset(folder: str | Path, name: str, predictors: dict, targets: dict,
                 manifest: dict | None = None) -> dict[str, Path]:
    """Write a dataset as <name>.xvd/ (xvalkit.mapped), item by item, renamed into place whole.

    Older <name>_*.npz files of the same name are removed once the new folder is in place.
    Returns {"dataset": the folder}.
    """
    check_dataset(name, predictors, targets)
    with mapped.DatasetWriter(folder, name, manifest) as writer:
        for item in sorted(predictors, key=str):
            writer.add(str(item), predictors[item], targets[item])
    for path in dataset_paths(Path(folder), name).values():
        path.unlink(missing_ok=True)
    return {"dataset": writer.target}


def convert_npz(folder: str | Path, name: str) -> Path:
    """Turn dataset `name`'s .npz files into <name>.xvd/ (one item in memory at a time), then
    remove the .npz files. Returns the new folder."""
    folder = Path(folder)
    paths = dataset_paths(folder, name)
    for key in ("predictors", "target"):
        if not paths[key].is_file():
            raise DatasetError(f"dataset '{name}': {paths[key]} not found; nothing to convert")
    manifest = json.loads(paths["manifest"].read_text(encoding="utf-8")) if paths["manifest"].is_file() else {}
    try:
        with np.load(paths["predictors"], allow_pickle=False) as px, np.load(paths["target"], allow_pickle=False) as ty:
            # the item sets first; the writer checks each item (shape, lengths, values) as it goes
            check_dataset(name, dict.fromkeys(px.files), dict.fromkeys(ty.files), items_only=True)
            with mapped.DatasetWriter(folder, name, manifest) as writer:
                for item in sorted(px.files):
                    writer.add(item, px[item], ty[item])
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"dataset '{name}': .npz files not readable ({exc})") from None
    for path in paths.values():
        path.unlink(missing_ok=True)
    return writer.target


def _save_npz_dataset(folder: str | Path, name: str, predictors: dict, targets: dict,
                      manifest: dict | None = None) -> dict[str, Path]:
    """The format before issue 15 (kept to make .npz datasets for tests and conversions):
    each file atomically, the target file last; an existing target is removed first."""
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


def check_dataset(name: str, predictors: dict, targets: dict, items_only: bool = False) -> None:
    """Raise DatasetError unless both dicts have the same items, matching lengths, one shape and
    finite values (checked chunk by chunk); `items_only`: the first check alone."""
    if not predictors:
        raise DatasetError(f"dataset '{name}': no foldable items in the predictors")
    missing = set(map(str, predictors)) ^ set(map(str, targets))
    if missing:
        raise DatasetError(
            f"dataset '{name}': items {sorted(missing)[:5]} are in only one of predictors and targets"
        )
    if items_only:
        return
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
        mapped.check_finite(np.asarray(x), f"dataset '{name}', item '{item}'")
        mapped.check_finite(np.asarray(targets[item]), f"dataset '{name}', item '{item}'", "targets")


def load_dataset(folder: str | Path, name: str, check_values: bool = True,
                 say: Callable[[str], None] | None = None) -> Dataset:
    """Load `name` from `folder`, synthesising a built-in dataset there the first time (said to
    `say`, with where).

    A <name>.xvd/ folder is mapped read-only (its values checked chunk by chunk unless
    `check_values` is False: workers skip what `xval run` checked already); else the .npz files
    are read into memory as before.
    """
    folder = Path(folder)
    paths = dataset_paths(folder, name)
    xvd = mapped.folder_for(folder, name)
    if name in BUILTIN_DATASETS and not paths["target"].is_file() and not xvd.is_dir():
        from .demo import demo_dataset

        if say is not None:
            say(f"dataset '{name}': first use, synthesising the built-in demo data into {xvd.resolve()}")
        save_dataset(folder, name, *demo_dataset(name))
    if xvd.is_dir():
        table, manifest = mapped.open_table(xvd, name)
        if check_values:
            mapped.check_values(table, name)
        predictors, targets = _item_views(table)
        return Dataset(name, predictors, targets, manifest, table)
    for key in ("predictors", "target"):
        if not paths[key].is_file():
            raise DatasetError(
                f"dataset '{name}': neither {xvd} nor {paths[key]} found (data_folder is {folder}; "
                f"make it with `xval preprocess`, or use a built-in dataset: {', '.join(BUILTIN_DATASETS)})"
            )
    predictors = _read_npz(paths["predictors"])
    targets = _read_npz(paths["target"])
    check_dataset(name, predictors, targets)
    manifest = {}
    if paths["manifest"].is_file():
        manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    return Dataset(name, predictors, targets, manifest)


def check_values(name: str, predictors: dict, targets: dict) -> None:
    """Raise DatasetError naming the first item whose arrays are not numeric or not finite."""
    for what, arrays in (("predictors", predictors), ("targets", targets)):
        for item, x in arrays.items():
            x = np.asarray(x)
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise DatasetError(f"dataset '{name}': item '{item}': the {what} are {x.dtype}, not numbers")
            if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all():
                bad = int(np.size(x) - np.isfinite(x).sum())
                raise DatasetError(f"dataset '{name}': item '{item}': {bad} {what} value(s) are NaN or infinite")


def augmented_line(dataset: Dataset) -> str:
    """How a dataset with augmented copies is evaluated (said by `xval plan` and `xval run`)."""
    copies = sum(int((~dataset.originals(item)).sum()) for item in dataset.items)
    total = dataset.datapoints(dataset.items)
    return (f"augmented data: training uses all {total} datapoints; validation and test use the "
            f"{total - copies} original ones only (the {copies} augmented copies, files <stem>_aug<N>, are left out)")
