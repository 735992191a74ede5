"""Fold plans: for each fold, disjoint train / validation / test lists of foldable items.

With k >= 2 folds the test sets partition the items (every item is tested exactly once), built
with scikit-learn's StratifiedGroupKFold for classification (class balance kept where possible)
and GroupKFold for regression; validation items are drawn from the rest, train is what remains.
With k = 1 there is one split by the validation / test fractions. The same items, labels, k,
fractions and seed always give the same plan.

>>> plan = plan_folds(["a", "b", "c", "d"], num_folds=2, validation_split=0.25, seed=0)
>>> sorted(plan[0].test + plan[1].test)
['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import XvalError


@dataclass(frozen=True)
class Fold:
    index: int  # 1-based, as in file names (fold1, fold2, ...)
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        return {"train_items": list(self.train), "val_items": list(self.val), "test_items": list(self.test)}


def _count(fraction: float, total: int) -> int:
    return max(1, int(round(fraction * total)))


def _test_sets(items: list[str], num_folds: int, labels: dict[str, np.ndarray] | None,
               seed: int) -> list[list[str]]:
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    if labels is None:
        groups = np.arange(len(items))
        splitter = GroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(groups, groups=groups)
        return [[items[i] for i in test] for _, test in splits]
    # Stratify on the datapoints' labels, grouped by item.
    y = np.concatenate([np.asarray(labels[item]).reshape(-1) for item in items])
    groups = np.concatenate([np.full(len(np.asarray(labels[item]).reshape(-1)), i) for i, item in enumerate(items)])
    splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The least populated class has only n members"
        splits = list(splitter.split(np.zeros(len(y)), y, groups))
    return [sorted({items[g] for g in groups[test]}) for _, test in splits]


def plan_folds(
    items: Sequence[str],
    num_folds: int,
    validation_split: float = 0.2,
    test_split: float = 0.2,
    seed: int = 0,
    labels: dict[str, np.ndarray] | None = None,
) -> list[Fold]:
    """Plan `num_folds` folds over `items`; `labels` (item -> class labels) enables stratification."""
    items = sorted(map(str, items))
    n = len(items)
    if len(set(items)) != n:
        raise XvalError("foldable items must be unique")
    if num_folds < 1:
        raise XvalError(f"num_folds = {num_folds} must be at least 1")
    if num_folds == 1:
        n_test, n_val = _count(test_split, n), _count(validation_split, n)
        if n_test + n_val >= n:
            raise XvalError(
                f"num_folds = 1 with {n} foldable items: {n_test} test + {n_val} validation items leave "
                "none to train on; lower test_split / validation_split or add items"
            )
        order = [items[i] for i in np.random.default_rng(seed).permutation(n)]
        test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        return [Fold(1, tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))]
    if num_folds > n:
        raise XvalError(
            f"num_folds = {num_folds} but the dataset has only {n} foldable items; use at most {n} folds"
        )
    tests = _test_sets(items, num_folds, labels, seed)
    folds = []
    for index, test in enumerate(tests, start=1):
        rest = [item for item in items if item not in set(test)]
        n_val = _count(validation_split, n)
        if n_val >= len(rest):
            raise XvalError(
                f"num_folds = {num_folds} with {n} foldable items: fold {index} has {len(rest)} items "
                f"outside its test set, too few for {n_val} validation item(s) and at least one to train on; "
                "use fewer folds or a smaller validation_split"
            )
        rng = np.random.default_rng([seed, index])
        chosen = set(rng.choice(len(rest), size=n_val, replace=False).tolist())
        val = [item for i, item in enumerate(rest) if i in chosen]
        train = [item for i, item in enumerate(rest) if i not in chosen]
        folds.append(Fold(index, tuple(train), tuple(sorted(val)), tuple(sorted(test))))
    return folds
