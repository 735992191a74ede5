"""Fold guarantees, property-based: partition, disjointness, determinism, sizes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xvalkit.errors import XvalError
from xvalkit.folds import plan_folds


@st.composite
def fold_cases(draw):
    n = draw(st.integers(min_value=3, max_value=30))
    items = [f"item{i:02d}" for i in draw(st.permutations(range(n)))]
    k = draw(st.integers(min_value=2, max_value=max(2, n // 2)))
    # The validation fraction is drawn as a count over n, so the expected count is known by hand:
    # n_val / n of n items is n_val items.
    n_val = draw(st.integers(min_value=1, max_value=max(1, n // 3)))
    seed = draw(st.integers(min_value=0, max_value=2**31))
    classes = draw(st.integers(min_value=1, max_value=4))
    labels = None
    if draw(st.booleans()):
        rng = np.random.default_rng(seed)
        labels = {item: rng.integers(0, classes, size=int(rng.integers(1, 6))) for item in items}
    return items, k, n_val, seed, labels


@settings(max_examples=150, deadline=None)
@given(fold_cases())
def test_k_folds_partition_items_and_sets_are_disjoint(case):
    items, k, n_val, seed, labels = case
    n = len(items)
    # A fold can keep n_val validation items and one to train only if its test set leaves more than
    # n_val items. The k test sets partition the n items, so the largest holds at least ceil(n / k)
    # items and, each other fold holding one at least, at most n - (k - 1).
    never_room = n - math.ceil(n / k) <= n_val  # even the smallest possible largest test set leaves none
    if labels is None:  # GroupKFold over single items: sizes differ by at most one, the largest is ceil(n / k)
        always_room = not never_room
    else:  # stratified: the sizes depend on the labels; certain only at the bounds
        always_room = k - 1 > n_val  # even the largest possible test set leaves k - 1 items
    try:
        folds = plan_folds(items, k, validation_split=n_val / n, seed=seed, labels=labels)
    except XvalError as exc:
        assert not always_room, f"refused a plan that has room: {exc}"
        assert "too few" in str(exc) and f"for {n_val} validation item(s)" in str(exc)
        return
    assert not never_room, "planned folds with no room for validation and training"
    assert len(folds) == k
    tests = [item for f in folds for item in f.test]
    assert sorted(tests) == sorted(items)  # every item tested exactly once
    for f in folds:
        train, valid, test = set(f.train), set(f.val), set(f.test)
        assert train and valid and test
        assert not (train & valid or train & test or valid & test)
        assert train | valid | test == set(items)
        assert len(valid) == n_val
    if labels is None:
        assert sorted(len(f.test) for f in folds) == sorted([n // k + 1] * (n % k) + [n // k] * (k - n % k))
    # deterministic, whatever the order the items come in
    again = plan_folds(list(reversed(items)), k, validation_split=n_val / n, seed=seed, labels=labels)
    assert again == folds


@pytest.mark.parametrize("n, fraction, expected", [
    (8, 0.2, 2),  # 1.6
    (8, 0.25, 2),
    (8, 0.4, 3),  # 3.2
    (10, 0.05, 1),  # 0.5: at least one
    (5, 0.1, 1),  # 0.5: at least one
    (30, 0.1, 3),
    (20, 0.33, 7),  # 6.6
])
def test_validation_count_of_a_fraction(n, fraction, expected):
    items = [f"i{j:02d}" for j in range(n)]
    for fold in plan_folds(items, 2, validation_split=fraction, seed=0):
        assert len(fold.val) == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 40), st.integers(0, 1000))
def test_single_split_by_fractions(n, seed):
    items = [str(i) for i in range(n)]
    try:
        (fold,) = plan_folds(items, 1, validation_split=0.2, test_split=0.2, seed=seed)
    except XvalError as exc:
        assert "none to train on" in str(exc) and n < 5
        return
    assert len(fold.test) == max(1, round(0.2 * n)) and len(fold.val) == max(1, round(0.2 * n))
    assert sorted(fold.train + fold.val + fold.test) == sorted(items)


def test_seed_changes_the_plan():
    items = [f"spk{i}" for i in range(12)]
    assert plan_folds(items, 3, seed=1) != plan_folds(items, 3, seed=2)


def partitions_by_seed(items, num_folds, labels):
    """{seed: the test sets of the plan, as a set of frozensets} over seeds 0-5."""
    return {seed: {frozenset(f.test) for f in plan_folds(items, num_folds, seed=seed, labels=labels)}
            for seed in range(6)}


@pytest.mark.parametrize("with_labels", [False, True], ids=["regression (GroupKFold)", "classification"])
def test_the_seed_changes_the_test_partition_itself(with_labels):
    """The validation draw depends on the seed anyway: the test sets must too, with or without labels
    (a GroupKFold that ignored the seed made every regression plan test the same items together)."""
    items = [f"spk{i:02d}" for i in range(12)]
    labels = {item: np.array([i % 3]) for i, item in enumerate(items)} if with_labels else None
    partitions = partitions_by_seed(items, 3, labels)
    assert len({frozenset(p) for p in partitions.values()}) >= 5, partitions


def test_the_seed_changes_the_test_items_of_a_single_split():
    items = [f"spk{i:02d}" for i in range(20)]
    tests = {seed: plan_folds(items, 1, validation_split=0.2, test_split=0.2, seed=seed)[0].test for seed in range(6)}
    assert len(set(tests.values())) >= 5, tests


def test_stratification_balances_classes():
    # 12 items, each holding one class only: each test fold should get one item of each class.
    items = [f"s{i:02d}" for i in range(12)]
    labels = {item: np.full(10, i % 3) for i, item in enumerate(items)}
    for fold in plan_folds(items, 4, validation_split=0.1, seed=0, labels=labels):
        assert sorted(int(labels[i][0]) for i in fold.test) == [0, 1, 2]


def test_more_folds_than_items_is_a_clear_error():
    with pytest.raises(XvalError, match="num_folds = 9 but the dataset has only 8 foldable items"):
        plan_folds([str(i) for i in range(8)], 9)
