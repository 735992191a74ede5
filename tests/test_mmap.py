"""The memory-mapped dataset format (issue 15): exact round trips, whole-or-nothing writes,
read-only maps, strict loading checks, .npz conversion, and identical metrics in both modes."""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xvalkit import data, fold_data, mapped
from xvalkit.cli import app
from xvalkit.errors import DatasetError
from xvalkit.fold_data import FoldData
from xvalkit.folds import Fold

from .conftest import instance, write_experiment

runner = CliRunner()


def dataset(seed: int = 0, dtype=np.float32, items: int = 4) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    predictors = {f"speaker{i}": rng.normal(size=(3 + i, 5, 4)).astype(dtype) for i in range(items)}
    targets = {item: rng.integers(0, 3, len(x)).astype(np.int64) for item, x in predictors.items()}
    return predictors, targets


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_round_trip_is_exact_and_numpy_reads_the_files(tmp_path, dtype):
    predictors, targets = dataset(dtype=dtype)
    one_hot = {k: np.eye(3, dtype=np.int64)[v] for k, v in targets.items()}  # kept as saved
    paths = data.save_dataset(tmp_path, "mine", predictors, one_hot, {"classes": ["a", "b", "c"]})
    assert paths["dataset"] == tmp_path / "mine.xvd"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.xvd"]  # no temporary left behind
    ds = data.load_dataset(tmp_path, "mine")
    assert ds.items == sorted(predictors) and ds.manifest == {"classes": ["a", "b", "c"]}
    for item in predictors:
        assert ds.predictors[item].dtype == dtype and np.array_equal(ds.predictors[item], predictors[item])
        assert ds.targets[item].dtype == np.int64 and np.array_equal(ds.targets[item], one_hot[item])
    # numpy's own reader sees the same arrays: the files are plain .npy
    whole = np.load(tmp_path / "mine.xvd" / "predictors.npy", mmap_mode="r", allow_pickle=False)
    assert np.array_equal(whole, np.concatenate([predictors[i] for i in sorted(predictors)]))
    offsets = np.load(tmp_path / "mine.xvd" / "offsets.npy")
    assert offsets.tolist() == [0, 3, 7, 12, 18]


def test_a_job_cannot_modify_a_mapped_dataset(tmp_path):
    data.save_dataset(tmp_path, "ro", *dataset())
    before = digest(tmp_path / "ro.xvd")
    ds = data.load_dataset(tmp_path, "ro")
    x = ds.predictors["speaker0"]
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 0.0
    with pytest.raises(ValueError, match="WRITEABLE"):
        x.flags.writeable = True
    with pytest.raises(ValueError, match="read-only"):
        ds.table.x[:] = 0.0
    with pytest.raises(TypeError):  # the map itself refuses writes (mapped read-only)
        ds.table.maps[0].map[0] = 0
    assert all(os.stat(p).st_mode & 0o222 == 0 for p in (tmp_path / "ro.xvd").glob("*.npy"))
    # a whole fold's worth of reading, normalising and batching leaves the files as they were
    fold = Fold(1, ("speaker0", "speaker1"), ("speaker2",), ("speaker3",))
    for release in (False, True):
        fd = FoldData(ds, fold, "classification", "conv", "standard", release_pages=release)
        fd.train.arrays()
        fd.train.batch(np.array([3, 0, 1]))
    assert digest(tmp_path / "ro.xvd") == before


def test_a_failed_save_leaves_the_old_dataset_and_nothing_else(tmp_path):
    data.save_dataset(tmp_path, "keep", *dataset(seed=1))
    predictors, targets = dataset(seed=2)
    predictors["speaker3"][2, 1, 1] = np.nan
    with pytest.raises(DatasetError, match=r"item 'speaker3' has NaN or infinite predictors, first in datapoint 2 "):
        data.save_dataset(tmp_path, "keep", predictors, targets)
    with pytest.raises(RuntimeError):
        with mapped.DatasetWriter(tmp_path, "keep") as writer:
            writer.add("a", np.ones((2, 3, 3), np.float32), np.zeros(2, np.int64))
            raise RuntimeError("stopped halfway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.xvd"]
    assert np.array_equal(data.load_dataset(tmp_path, "keep").predictors["speaker0"], dataset(seed=1)[0]["speaker0"])


WRITER = """
import sys, numpy as np
from xvalkit import mapped
with mapped.DatasetWriter(sys.argv[1], "big") as writer:
    for i in range(100000):
        writer.add(f"item{i}", np.ones((64, 32, 32), np.float32), np.zeros(64, np.int64))
        if i == 2:
            print("writing", flush=True)
"""


def test_a_killed_writer_leaves_no_dataset_that_loads(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # killed once it has written some items
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers and all(name.startswith(".big.xvd.") for name in leftovers)  # only a hidden temp folder
    with pytest.raises(DatasetError, match="big.xvd"):
        data.load_dataset(tmp_path, "big")


def test_loading_checks_stay_strict(tmp_path):
    data.save_dataset(tmp_path, "bad", *dataset())
    folder = tmp_path / "bad.xvd"
    os.chmod(folder / "predictors.npy", 0o644)
    damaged = np.load(folder / "predictors.npy", mmap_mode="r+")
    damaged[8, 0, 3] = np.inf  # row 8 is speaker2's datapoint 1 (offsets 0, 3, 7, ...)
    damaged.flush()
    del damaged
    with pytest.raises(DatasetError, match=r"dataset 'bad', item 'speaker2' has NaN or infinite predictors, first in datapoint 1 "):
        data.load_dataset(tmp_path, "bad")
    with open(folder / "predictors.npy", "r+b") as handle:  # truncated: fewer bytes than the header says
        handle.truncate(os.path.getsize(folder / "predictors.npy") - 4)
    with pytest.raises(DatasetError, match="predictors.npy: not a readable .npy"):
        data.load_dataset(tmp_path, "bad")
    os.unlink(folder / "offsets.npy")
    with pytest.raises(DatasetError, match="offsets.npy is missing"):
        data.load_dataset(tmp_path, "bad")
    data.save_dataset(tmp_path, "lens", *dataset())
    os.chmod(tmp_path / "lens.xvd" / "offsets.npy", 0o644)
    np.save(tmp_path / "lens.xvd" / "offsets.npy", np.array([0, 3, 7, 12, 19]))
    with pytest.raises(DatasetError, match="targets.npy 18, the items 19 rows"):
        data.load_dataset(tmp_path, "lens")


def test_npz_datasets_keep_loading_and_convert(tmp_path):
    predictors, targets = dataset()
    data._save_npz_dataset(tmp_path, "old", predictors, targets, {"classes": ["a", "b", "c"]})
    old = data.load_dataset(tmp_path, "old")
    assert old.table is None and np.array_equal(old.predictors["speaker2"], predictors["speaker2"])
    result = runner.invoke(app, ["convert-npz", "old", "--data-folder", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "old.xvd" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.xvd"]
    new = data.load_dataset(tmp_path, "old")
    assert new.table.mapped and new.manifest == {"classes": ["a", "b", "c"]}
    for item in predictors:
        assert np.array_equal(new.predictors[item], predictors[item]) and np.array_equal(new.targets[item], targets[item])
    result = runner.invoke(app, ["convert-npz", "old", "--data-folder", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2 and "old_predictors.npz not found" in result.output


def test_streamed_statistics_and_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(fold_data, "CHUNK_BYTES", 200)  # a few rows per chunk: many chunks
    predictors, targets = dataset(dtype=np.float64)
    data.save_dataset(tmp_path, "stats", predictors, targets)
    ds = data.load_dataset(tmp_path, "stats")
    fold = Fold(1, ("speaker3", "speaker1"), ("speaker2",), ("speaker0",))
    fd = FoldData(ds, fold, "classification", "none", "standard", release_pages=True)
    train = np.concatenate([predictors["speaker3"], predictors["speaker1"]]).astype(np.float32).reshape(-1, 4)
    np.testing.assert_allclose(fd.normalizer.mean, train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(fd.normalizer.std, train.std(0), rtol=1e-5)
    x, y = fd.train.arrays()
    index = np.array([9, 0, 4, 4, 2])
    bx, by = fd.train.batch(index)
    assert np.array_equal(bx, x[index]) and np.array_equal(by, y[index])
    assert np.array_equal(y, np.concatenate([targets["speaker3"], targets["speaker1"]]))


def test_the_next_instance_of_a_fold_gets_a_copy_of_what_was_prepared_for_it(tmp_path):
    """A sweep's instances share their folds: the second FoldData of a fold reuses the normaliser and
    the prepared sets (RecentlyPrepared), equal to a fresh preparation and safe from writes."""
    data.save_dataset(tmp_path, "sweep", *dataset())
    ds = data.load_dataset(tmp_path, "sweep")
    fold = Fold(1, ("speaker0", "speaker1"), ("speaker2",), ("speaker3",))
    fold_data.RECENT.clear()
    first = FoldData(ds, fold, "classification", "conv", "standard")
    x1, y1 = first.train.arrays()
    hits = fold_data.RECENT.hits
    second = FoldData(ds, fold, "classification", "conv", "standard")
    x2, y2 = second.train.arrays()
    assert fold_data.RECENT.hits == hits + 2  # the normaliser and the training set
    assert second.normalizer is first.normalizer
    fresh = second.prepare(second.train._take(second.train.rows))
    assert np.array_equal(x2, fresh) and np.array_equal(x1, fresh) and np.array_equal(y2, y1)
    x2[:] = 99.0  # a model writing into its inputs reaches its own copy only
    assert np.array_equal(FoldData(ds, fold, "classification", "conv", "standard").train.arrays()[0], fresh)
    # another preparation of the same rows is prepared anew: raw values, channel axis first
    raw = FoldData(ds, fold, "classification", "none", "none").train.arrays()[0]
    assert np.array_equal(raw, np.concatenate([ds.predictors["speaker0"], ds.predictors["speaker1"]]))
    first_axis = FoldData(ds, fold, "classification", "conv", "standard", channels_first=True).train.arrays()[0]
    assert first_axis.shape[1:] == (1, 5, 4) and np.array_equal(first_axis[:, 0], fresh[..., 0])
    # the validation set of the same items as another fold's training set is its own entry
    other = Fold(2, ("speaker2",), ("speaker0", "speaker1"), ("speaker3",))
    val = FoldData(ds, other, "classification", "conv", "standard").val.arrays()[0]
    assert not np.array_equal(val, fresh)  # normalised with speaker2's statistics


def test_recently_prepared_keeps_no_more_than_its_limit():
    table = mapped.Table.from_items(*dataset())
    recent = fold_data.RecentlyPrepared(limit=1000, entries=2)
    recent.get(table, ("big",), lambda: np.zeros(2000, np.uint8))  # over the limit: not kept
    assert not recent.entries
    for name in "abc":
        recent.get(table, (name,), lambda: np.zeros(100, np.uint8))
    assert list(recent.entries) == [("b",), ("c",)]  # at most 2 entries, the oldest out first
    recent.get(table, ("d",), lambda: np.zeros(950, np.uint8))
    assert list(recent.entries) == [("d",)]  # at most 1000 bytes
    other = mapped.Table.from_items(*dataset(seed=1))  # a table read anew never finds the old one's entries
    assert recent.get(other, ("d",), lambda: np.ones(3)).tolist() == [1.0, 1.0, 1.0]


def results(folder: Path) -> dict:
    with open(folder / "results" / "demo" / "experiment_1" / "results" / "results_demo_exp1_run1.pkl", "rb") as h:
        return pickle.load(h)


@pytest.mark.parametrize("framework,architecture,reshaping", [("torch", "EXAMPLE_model", "cnn"),
                                                             ("keras", "EXAMPLE_model", "cnn")])
def test_generator_and_in_memory_modes_give_identical_metrics(tmp_path, config_file, data_folder, framework,
                                                               architecture, reshaping):
    runs = {}
    for generator in (False, True):
        folder = tmp_path / f"generator_{generator}"
        path = write_experiment(folder, {1: instance("m", architecture, reshaping, f'framework="{framework}"')},
                                num_folds=2, generator=generator, global_parameters=[
                                    "num_epochs=2", "patience=2", "batch_size=16", "channels_1=2",
                                    "channels_2=2", "hidden_size=4"])
        out = runner.invoke(app, ["run", str(path), "--cpu", "--config", str(config_file)], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        runs[generator] = results(folder)["folds"]
    assert (data_folder / "demo.xvd").is_dir()  # the built-in demo is synthesised in the new format
    for index, fold in runs[False].items():
        other = runs[True][index]
        metrics = sorted(k for k in fold if k.startswith(("train_", "val_", "test_")) and k != "test_true")
        assert metrics and all(np.array_equal(fold[k], other[k]) for k in metrics), [
            (k, fold[k], other[k]) for k in metrics if not np.array_equal(fold[k], other[k])]
        assert fold["history"] == other["history"]


def test_an_interrupt_while_finishing_writes_nothing(tmp_path, monkeypatch):
    save_small = mapped._save_small

    def stop_at_items(path, array):
        if path.name == "items.npy":
            raise KeyboardInterrupt  # after the arrays, before the item names
        save_small(path, array)

    monkeypatch.setattr(mapped, "_save_small", stop_at_items)
    with pytest.raises(KeyboardInterrupt):
        data.save_dataset(tmp_path, "stopped", *dataset())
    assert list(tmp_path.iterdir()) == []
