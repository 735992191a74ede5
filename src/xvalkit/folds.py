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
from dataclasses import dataclass, replace

import numpy as np

from .errors import XvalError


@dataclass(frozen=True)
class Fold:
    index: int  # 1-based, as in file names (fold1, fold2, ...)
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    repeat: int = 1  # repeated k-fold: which partition (1-based); index counts on across repeats
    in_repeat: int = 0  # the fold's number within its repeat (0: the same as index)

    @property
    def number(self) -> int:
        """The fold's number within its repeat (1 to k)."""
        return self.in_repeat or self.index

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


def repeat_seed(seed: int, repeat: int) -> int:
    """The seed of repeat `repeat`: repeat 1 uses `seed` itself (so one-repeat plans are unchanged);
    later repeats a seed derived from both, so that every repeat is a different partition."""
    if repeat == 1:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**32, repeat]).generate_state(1)[0])


def plan_repeated_folds(
    items: Sequence[str],
    num_folds: int,
    num_repeats: int = 1,
    validation_split: float = 0.2,
    test_split: float = 0.2,
    seed: int = 0,
    labels: dict[str, np.ndarray] | None = None,
) -> list[Fold]:
    """`num_repeats` grouped k-fold partitions, each a new seeded shuffle (repeated k-fold, as
    scikit-learn's RepeatedStratifiedKFold composes its splitter). Every item is tested once per
    repeat. Folds are numbered on across repeats: fold F of repeat R has index (R - 1) x k + F.

    >>> plan = plan_repeated_folds(list("abcdef"), num_folds=3, num_repeats=2, validation_split=0.2)
    >>> [(f.index, f.repeat, f.number) for f in plan]
    [(1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 2, 1), (5, 2, 2), (6, 2, 3)]
    >>> all(sorted(sum((list(f.test) for f in plan if f.repeat == r), [])) == list("abcdef") for r in (1, 2))
    True
    """
    if num_repeats < 1:
        raise XvalError(f"num_repeats = {num_repeats} must be at least 1")
    folds: list[Fold] = []
    for repeat in range(1, num_repeats + 1):
        plan = plan_folds(items, num_folds, validation_split, test_split, repeat_seed(seed, repeat), labels)
        folds += [replace(f, index=(repeat - 1) * len(plan) + f.index, repeat=repeat, in_repeat=f.index)
                  for f in plan]
    return folds
