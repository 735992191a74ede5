"""The arrays of a fold, without training: targets, shapes, train-only statistics, the sets'
rows (augmented copies, validation within training items), batches and what a process keeps for
the next instance. Values are checked against numpy on the raw arrays or worked by hand."""

from __future__ import annotations

import re

import numpy as np
import pytest

from xvalkit import data, fold_data
from xvalkit.data import Dataset
from xvalkit.errors import DatasetError
from xvalkit.fold_data import (FoldData, Normalizer, RecentlyPrepared, channels_first, model_input_shape,
                               num_outputs, prepare_inputs, targets_for)
from xvalkit.folds import Fold
from xvalkit.mapped import Table


def toy(items: int = 4, seed: int = 0, manifest: dict | None = None) -> tuple[dict, dict, Dataset]:
    """Items of 3 + i datapoints (5 frames x 4 features), classes 0-2; the dataset in memory."""
    rng = np.random.default_rng(seed)
    predictors = {f"s{i}": rng.normal(i, 1 + i, size=(3 + i, 5, 4)).astype(np.float32) for i in range(items)}
    targets = {item: rng.integers(0, 3, len(x)).astype(np.int64) for item, x in predictors.items()}
    return predictors, targets, Dataset("toy", dict(predictors), dict(targets), manifest or {})


# --- shapes and targets ---------------------------------------------------------------------------

def test_the_channel_axis_of_conv_inputs():
    assert channels_first("torch") and not channels_first("keras")
    assert model_input_shape((5, 4), "conv") == (5, 4, 1)
    assert model_input_shape([5, 4], "conv", channels_first=True) == (1, 5, 4)
    assert model_input_shape((5, 4), "rnn", True) == (5, 4) and model_input_shape((5, 4), "none") == (5, 4)
    assert model_input_shape((2, 5, 4), "conv", True) == (2, 5, 4)  # already has a channel axis


def test_classification_targets_are_class_indices():
    one_hot = np.eye(3)[[2, 0, 1]]
    assert targets_for("classification", one_hot, "x").tolist() == [2, 0, 1]
    assert targets_for("classification", one_hot, "x").dtype == np.int64
    column = targets_for("classification", np.array([[1.0], [0.0]]), "x")  # one column: indices, not one-hot
    assert column.tolist() == [1, 0] and column.dtype == np.int64
    with pytest.raises(DatasetError) as error:
        targets_for("classification", np.array([0.5, 1.0, 2.0, 3.0]), "dataset 'd', item 'a'")
    assert str(error.value) == ("dataset 'd', item 'a': classification targets must be class indices (integers) or "
                                "one-hot, got float64 values like [0.5, 1.0, 2.0]; is task_type 'regression'?")
    with pytest.raises(DatasetError) as error:
        targets_for("classification", np.array([0, -2, -1]), "item 'a'")
    assert str(error.value) == "item 'a': class indices must be 0 or more, found -2"
    assert targets_for("classification", np.array([0, 2]), "x").tolist() == [0, 2]  # 0 itself is a class


def test_regression_targets_are_float_columns():
    one = targets_for("regression", np.array([1, 2, 3]), "x")
    assert one.dtype == np.float32 and one.shape == (3, 1) and one[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert targets_for("regression", np.ones((4, 2), np.float64), "x").shape == (4, 2)


def test_the_number_of_outputs():
    _, _, ds = toy()
    largest = max(int(y.max()) for y in ds.targets.values())
    assert num_outputs(ds, "classification") == largest + 1
    ds.manifest["classes"] = ["a", "b", "c", "d", "e", "f"]  # classes no item holds still count
    assert num_outputs(ds, "classification") == 6
    ds.manifest["classes"] = ["a"]  # fewer named than the labels: the labels win
    assert num_outputs(ds, "classification") == largest + 1
    two = Dataset("r", {"a": np.zeros((3, 2))}, {"a": np.zeros((3, 2))})
    assert num_outputs(two, "regression") == 2


# --- normalisation --------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_bytes", [fold_data.CHUNK_BYTES, 200, 1])
def test_statistics_are_those_of_numpy_in_any_chunking(monkeypatch, chunk_bytes):
    monkeypatch.setattr(fold_data, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(1)
    parts = [rng.normal(3, 2, size=(n, 5, 4)).astype(np.float32) for n in (3, 7, 1)]
    parts[1][:, :, 2] = 7.0  # a constant feature in one part only still varies overall
    for part in parts:
        part[:, :, 3] = -1.5  # constant everywhere: std 1, not 0 (no division by zero)
    released = []
    norm = Normalizer.fit(parts, lambda: released.append(1))
    whole = np.concatenate(parts).reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(norm.mean, whole.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.std[:3], whole.std(0)[:3], rtol=1e-5)
    assert norm.std[3] == 1.0 and norm.mean[3] == -1.5
    assert norm.mean.dtype == norm.std.dtype == np.float32
    # one release a chunk: a chunk is CHUNK_BYTES of rows (80 bytes a row here), at least one row
    rows_a_chunk = max(1, chunk_bytes // 80)
    assert len(released) == sum(-(-n // rows_a_chunk) for n in (3, 7, 1))
    x = parts[0]
    np.testing.assert_allclose(norm(x), (x - whole.mean(0)) / norm.std, rtol=1e-5)


def test_prepared_inputs_are_float32_normalised_then_reshaped():
    x = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)
    norm = Normalizer(np.array([1.0, 2.0], np.float32), np.array([2.0, 4.0], np.float32))
    out = prepare_inputs(x, norm, "conv", channels_first=True)
    assert out.dtype == np.float32 and out.shape == (2, 1, 3, 2)
    np.testing.assert_allclose(out[:, 0], (x - [1.0, 2.0]) / [2.0, 4.0])
    raw = prepare_inputs(x, None, "conv")
    assert raw.shape == (2, 3, 2, 1) and np.array_equal(raw[..., 0], x)
    assert prepare_inputs(x, None, "rnn").shape == (2, 3, 2)


# --- a fold's sets ----------------------------------------------------------------------------------

@pytest.fixture(params=["in memory", "mapped"])
def dataset(request, tmp_path):
    predictors, targets, ds = toy()
    if request.param == "mapped":
        data.save_dataset(tmp_path, "toy", predictors, targets)
        ds = data.load_dataset(tmp_path, "toy")
    return predictors, targets, ds


@pytest.mark.parametrize("release_pages", [False, True])
def test_a_folds_sets_hold_their_items_rows_normalised_with_training_statistics(dataset, release_pages):
    predictors, targets, ds = dataset
    fold_data.RECENT.clear()
    fold = Fold(1, ("s3", "s1"), ("s2",), ("s0",))
    fd = FoldData(ds, fold, "classification", "conv", "standard", channels_first=True, release_pages=release_pages)
    assert fd.release_pages == (release_pages and ds.table.mapped)  # only a mapped table has pages to release
    assert fd.num_outputs == 3 and fd.input_shape == (1, 5, 4)
    assert fd.excluded_augmented is None and fd.n_train_original == 4 + 6
    train = np.concatenate([predictors["s3"], predictors["s1"]])  # in the fold's order
    mean, std = train.reshape(-1, 4).mean(0), train.reshape(-1, 4).std(0)
    np.testing.assert_allclose(fd.normalizer.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(fd.normalizer.std, std, rtol=1e-5)
    for name, items in (("train", ("s3", "s1")), ("val", ("s2",)), ("test", ("s0",))):
        part = fd.sets()[name]
        assert part.items == list(items) and len(part) == sum(len(targets[i]) for i in items)
        x, y = part.arrays()
        raw = np.concatenate([predictors[i] for i in items])
        assert x.shape == (len(raw), 1, 5, 4) and x.dtype == np.float32
        np.testing.assert_allclose(x[:, 0], (raw - mean) / std, rtol=1e-4, atol=1e-5)
        assert np.array_equal(y, np.concatenate([targets[i] for i in items]))
        index = np.array([len(raw) - 1, 0, 1, 0])
        bx, by = part.batch(index)
        np.testing.assert_array_equal(bx, x[index])
        assert np.array_equal(by, y[index])


def test_release_pages_every_release_rows_rows(tmp_path, monkeypatch):
    predictors, targets, _ = toy()
    data.save_dataset(tmp_path, "toy", predictors, targets)
    ds = data.load_dataset(tmp_path, "toy")
    monkeypatch.setattr(fold_data, "RELEASE_ROWS", 4)
    fd = FoldData(ds, Fold(1, ("s3", "s2"), ("s1",), ("s0",)), "classification", "none", "none", release_pages=True)
    released = []
    release = ds.table.release
    monkeypatch.setattr(ds.table, "release", lambda: (released.append(1), release()))
    x, _ = fd.train.arrays()  # 6 + 5 rows: 4 + 4 + 3
    assert len(released) == 3
    assert np.array_equal(x, np.concatenate([predictors["s3"], predictors["s2"]]))
    assert np.array_equal(fd.train.batch(np.array([10, 0]))[0], np.stack([predictors["s2"][4], predictors["s3"][0]]))


def augmented(predictors: dict, flags: dict) -> Dataset:
    targets = {item: np.arange(len(x)) % 2 for item, x in predictors.items()}
    return Dataset("aug", dict(predictors), targets, {"augmented": {k: list(v) for k, v in flags.items()}})


def test_validation_and_test_keep_original_datapoints_only():
    predictors, _, _ = toy()
    flags = {"s0": [0, 1, 0], "s1": [0, 0, 1, 1], "s2": [1, 0, 0, 0, 1], "s3": [0, 1, 0, 1, 0, 1]}
    ds = augmented(predictors, {k: np.array(v, bool) for k, v in flags.items()})
    fd = FoldData(ds, Fold(1, ("s3", "s2"), ("s1",), ("s0",)), "classification", "none", "none")
    assert fd.excluded_augmented == {"val": 2, "test": 1}
    assert fd.n_train_original == 3 + 3  # the t-test counts original training datapoints
    assert len(fd.train) == 11 and fd.train.whole_items  # training keeps every copy
    val_x, val_y = fd.val.arrays()
    assert np.array_equal(val_x, predictors["s1"][[0, 1]]) and val_y.tolist() == [0, 1]
    assert not fd.val.whole_items and np.array_equal(fd.val.parts[0], predictors["s1"][[0, 1]])
    assert np.array_equal(fd.test.arrays()[0], predictors["s0"][[0, 2]])
    flags["s0"] = [1, 1, 1]
    ds = augmented(predictors, {k: np.array(v, bool) for k, v in flags.items()})
    with pytest.raises(DatasetError, match=re.escape(
            "dataset 'aug': the test items of fold 1 (s0) hold augmented copies only; keep the _orig files")):
        FoldData(ds, Fold(1, ("s3", "s2"), ("s1",), ("s0",)), "classification", "none", "none")


def test_a_manifest_without_augmented_copies_keeps_every_datapoint():
    predictors, _, _ = toy()
    ds = augmented(predictors, {k: np.zeros(len(x), bool) for k, x in predictors.items()})
    fd = FoldData(ds, Fold(1, ("s3", "s2"), ("s1",), ("s0",)), "classification", "none", "none")
    assert fd.excluded_augmented is None and len(fd.val) == 4 and fd.val.whole_items


def within(predictors: dict, sources: dict, flags: dict | None = None) -> Dataset:
    targets = {item: np.arange(len(x)) % 2 for item, x in predictors.items()}
    manifest = {"sources": sources}
    if flags:
        manifest["augmented"] = flags
    return Dataset("tess", dict(predictors), targets, manifest)


def test_validation_within_training_items_holds_out_their_files_datapoints():
    predictors, _, _ = toy(items=3)  # s0: 3, s1: 4, s2: 5 datapoints
    sources = {"s0": ["s0/a.wav", "s0/b.wav", "s0/c.wav"],
               "s1": ["s1/a_orig.wav", "s1/a_aug1.wav", "s1/b_orig.wav", "s1/b_aug1.wav"],
               "s2": ["s2/a.wav", "s2/b.wav", "s2/b.wav", "s2/c.wav", "s2/d.wav"]}
    fold = Fold(1, ("s1", "s2"), (), ("s0",), val_sources=("s1/a.wav", "s2/b.wav"))
    fd = FoldData(within(predictors, sources), fold, "classification", "none", "none")
    # validation: s1's a (both copies) and s2's two windows of b; training: the rest of s1 and s2
    assert np.array_equal(fd.val.arrays()[0], np.concatenate([predictors["s1"][[0, 1]], predictors["s2"][[1, 2]]]))
    assert np.array_equal(fd.train.arrays()[0], np.concatenate([predictors["s1"][[2, 3]], predictors["s2"][[0, 3, 4]]]))
    assert np.array_equal(fd.test.arrays()[0], predictors["s0"]) and fd.test.whole_items
    assert fd.val.items == fd.train.items == ["s1", "s2"] and fd.n_train_original == 5
    # with augmented copies recorded: validation drops s1/a_aug1, training keeps it, n_train counts originals
    flags = {"s0": [False] * 3, "s1": [False, True, False, True], "s2": [False] * 5}
    fd = FoldData(within(predictors, sources, flags), fold, "classification", "none", "none")
    assert np.array_equal(fd.val.arrays()[0], np.concatenate([predictors["s1"][[0]], predictors["s2"][[1, 2]]]))
    assert fd.excluded_augmented == {"val": 1, "test": 0} and len(fd.train) == 5 and fd.n_train_original == 4


def test_validation_within_items_needs_a_source_per_datapoint():
    predictors, _, _ = toy(items=3)
    sources = {"s0": ["s0/a.wav"] * 3, "s1": ["s1/a.wav"] * 4, "s2": ["s2/a.wav"] * 4}
    fold = Fold(1, ("s1", "s2"), (), ("s0",), val_sources=("s1/a.wav",))
    with pytest.raises(DatasetError) as error:
        FoldData(within(predictors, sources), fold, "classification", "none", "none")
    assert str(error.value) == ("dataset 'tess': its manifest records 4 source files for item 's2', which has 5 "
                                "datapoints; preprocess it again")


# --- what a process keeps for the next instance ---------------------------------------------------

def test_recently_prepared_counts_hits_and_keeps_the_most_recently_used():
    table = Table.from_items(*toy()[:2])
    recent = RecentlyPrepared(limit=1000, entries=2)
    made = []

    def make(value):
        return lambda: made.append(value) or value

    a = recent.get(table, ("a",), make(np.zeros(10)))
    recent.get(table, ("b",), make(np.ones(10)))
    assert (recent.hits, recent.misses) == (0, 2)
    again = recent.get(table, ("a",), make(np.full(10, 5.0)))  # a hit: used last now
    assert (recent.hits, recent.misses) == (1, 2) and len(made) == 2  # not made again
    assert np.array_equal(again, a) and again is not a  # a copy each time
    recent.get(table, ("c",), make(np.ones(10)))  # b, the least recently used, goes
    assert list(recent.entries) == [("a",), ("c",)]
    recent.get(table, ("d",), make(np.zeros(1000, np.uint8)))  # exactly the limit: kept alone
    assert list(recent.entries) == [("d",)]
    norm = Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32))
    assert recent.get(table, ("n",), lambda: norm) is norm and recent.get(table, ("n",), lambda: None) is norm
    recent.clear()
    assert not recent.entries


def test_the_preparation_key_names_what_prepare_does():
    _, _, ds = toy()
    fold = Fold(1, ("s3", "s1"), ("s2",), ("s0",))
    keys = {(reshaping, normalization, first): FoldData(ds, fold, "classification", reshaping, normalization,
                                                        channels_first=first).preparation_key()
            for reshaping in ("conv", "none") for normalization in ("standard", "none") for first in (False, True)}
    assert len(set(keys.values())) == len(keys)
    assert keys[("none", "none", False)] == (None, "none", False)
    other = FoldData(ds, Fold(2, ("s2", "s1"), ("s3",), ("s0",)), "classification", "conv", "standard")
    assert other.preparation_key() != keys[("conv", "standard", False)]  # other training items, other statistics


# --- found by mutation testing: the cases above did not tell these apart --------------------------

def test_two_class_one_hot_targets_and_the_outputs_of_one_hot_datasets():
    assert targets_for("classification", np.eye(2)[[1, 0, 1]], "x").tolist() == [1, 0, 1]
    one_hot = Dataset("oh", {"a": np.zeros((3, 2, 2)), "b": np.zeros((2, 2, 2))},
                      {"a": np.eye(3)[[0, 1, 1]], "b": np.eye(3)[[2, 1]]})
    assert num_outputs(one_hot, "classification") == 3  # classes 0-2 (read as indices), not the largest value 1 + 1
    bad = Dataset("bad", {"a": np.zeros((2, 2, 2))}, {"a": np.array([0.5, 1.0])})
    with pytest.raises(DatasetError, match=r"^bad: classification targets must be class indices"):
        num_outputs(bad, "classification")


def test_statistics_of_values_far_from_zero_are_exact_and_of_the_values_the_model_sees():
    rng = np.random.default_rng(2)
    # mean 1000, std about 1: float32 squares would lose the variance; sums are float64
    parts = [(1000 + rng.normal(size=(40, 3, 4))).astype(np.float32)]
    whole = parts[0].reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(Normalizer.fit(parts).std, whole.std(0), rtol=1e-4)
    # float64 data: the statistics are those of the float32 values the model is given
    x = np.array([[[1e8 + 3.9]], [[1e8 + 4.1]]])  # float32 1e8 and 1e8 + 8 (8 apart there)
    assert Normalizer.fit([x]).std[0] == 4.0  # not 0.1, the float64 values' spread


def test_both_modes_prepare_identical_values_from_a_float64_dataset(tmp_path):
    rng = np.random.default_rng(3)
    predictors = {f"s{i}": rng.normal(50, 3, size=(4 + i, 5, 4)) for i in range(4)}  # float64
    targets = {item: np.arange(len(x)) % 3 for item, x in predictors.items()}
    data.save_dataset(tmp_path, "f64", predictors, targets)
    ds = data.load_dataset(tmp_path, "f64")
    fold = Fold(1, ("s3", "s1"), ("s2",), ("s0",))
    fold_data.RECENT.clear()
    modes = [FoldData(ds, fold, "classification", "conv", "standard", release_pages=r) for r in (False, True)]
    for name in ("train", "val", "test"):
        (a, _), (b, _) = (fd.sets()[name].arrays() for fd in modes)
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b), name
        assert np.array_equal(modes[0].sets()[name].batch([2, 0])[0], modes[1].sets()[name].batch([2, 0])[0])


def test_statistics_pass_releases_its_pages_in_generator_mode(tmp_path, monkeypatch):
    predictors, targets, _ = toy()
    data.save_dataset(tmp_path, "toy", predictors, targets)
    ds = data.load_dataset(tmp_path, "toy")
    released = []
    release = ds.table.release
    monkeypatch.setattr(ds.table, "release", lambda: (released.append(1), release()))
    FoldData(ds, Fold(1, ("s3", "s2"), ("s1",), ("s0",)), "classification", "none", "standard", release_pages=True)
    assert len(released) == 2  # one chunk (CHUNK_BYTES) of each of the two training items


def test_another_dataset_with_the_same_rows_is_prepared_from_its_own_values():
    fold = Fold(1, ("s3", "s1"), ("s2",), ("s0",))
    fold_data.RECENT.clear()
    for seed in (0, 1):  # the same items and row positions, other values
        predictors, _, ds = toy(seed=seed)
        fd = FoldData(ds, fold, "classification", "none", "standard")
        train = np.concatenate([predictors["s3"], predictors["s1"]]).reshape(-1, 4)
        np.testing.assert_allclose(fd.normalizer.mean, train.mean(0), rtol=1e-5)
        np.testing.assert_allclose(fd.val.arrays()[0], (predictors["s2"] - train.mean(0)) / train.std(0), rtol=1e-4,
                                   atol=1e-5)
        raw = FoldData(ds, fold, "classification", "none", "none")  # the same preparation key for both datasets
        assert np.array_equal(raw.val.arrays()[0], predictors["s2"])


def test_augmented_only_evaluation_items_are_named_together():
    predictors, _, _ = toy()
    flags = {"s0": [1, 1, 1], "s1": [1, 1, 1, 1], "s2": [0] * 5, "s3": [0] * 6}
    ds = augmented(predictors, {k: np.array(v, bool) for k, v in flags.items()})
    with pytest.raises(DatasetError, match=re.escape("the test items of fold 1 (s0, s1) hold augmented copies only")):
        FoldData(ds, Fold(1, ("s3",), ("s2",), ("s0", "s1")), "classification", "none", "none")


def test_a_training_item_without_sources_in_the_manifest():
    predictors, _, _ = toy(items=3)
    sources = {"s0": ["s0/a.wav"] * 3, "s1": ["s1/a.wav", "s1/b.wav"] * 2}  # none for s2
    fold = Fold(1, ("s1", "s2"), (), ("s0",), val_sources=("s1/a.wav",))
    with pytest.raises(DatasetError, match=re.escape("records 0 source files for item 's2', which has 5 datapoints")):
        FoldData(within(predictors, sources), fold, "classification", "none", "none")


def test_recently_prepared_byte_limit_and_entry_count():
    table = Table.from_items(*toy()[:2])
    recent = RecentlyPrepared(limit=1000)
    norm = Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32))
    recent.get(table, ("n",), lambda: norm)  # not an array: no bytes
    recent.get(table, ("a",), lambda: np.zeros(1000, np.uint8))
    assert list(recent.entries) == [("n",), ("a",)]  # 0 + 1000 bytes: within the limit
    recent.get(table, ("big",), lambda: np.zeros(1001, np.uint8))  # over the limit alone: not kept, nothing goes
    assert list(recent.entries) == [("n",), ("a",)]
    many = RecentlyPrepared(limit=10**6)
    for i in range(65):
        many.get(table, (i,), lambda: None)
    assert list(many.entries) == [(i,) for i in range(1, 65)]  # 64 entries by default
