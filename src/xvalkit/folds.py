"""Fold plans: for each fold, disjoint train / validation / test lists of foldable items.

With k >= 2 folds the test sets partition the items (every item is tested exactly once), built
with scikit-learn's StratifiedGroupKFold for classification (class balance kept where possible)
and GroupKFold for regression; validation items are drawn from the rest, train is what remains.
With k = 1 there is one split by the validation / test fractions. The same items, labels, k,
fractions and seed always give the same plan.

Sparse classes: when StratifiedGroupKFold cannot stratify (every class has fewer datapoints than
k), the test sets come from unstratified GroupKFold, with a warning.

Held-out sets and classes (classification): validation items (and the k = 1 test and validation
items) are a seeded random draw, kept when it holds every class that has two or more items to
draw from and leaves every class to the rest. Otherwise they are chosen class by class: items that add a class
not yet held, never the last item of a class (so training keeps every class), then random ones.

>>> plan = plan_folds(["a", "b", "c", "d"], num_folds=2, validation_split=0.25, seed=0)
>>> sorted(plan[0].test + plan[1].test)
['a', 'b', 'c', 'd']
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence
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


def _unstratified(items: list[str], num_folds: int, seed: int) -> list[list[str]]:
    from sklearn.model_selection import GroupKFold

    groups = np.arange(len(items))
    splitter = GroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    splits = splitter.split(groups, groups=groups)
    return [[items[i] for i in test] for _, test in splits]


def _test_sets(items: list[str], num_folds: int, labels: dict[str, np.ndarray] | None,
               seed: int, warn: Callable[[str], None]) -> list[list[str]]:
    from sklearn.model_selection import StratifiedGroupKFold

    if labels is None:
        return _unstratified(items, num_folds, seed)
    # Stratify on the datapoints' labels, grouped by item.
    y = np.concatenate([np.asarray(labels[item]).reshape(-1) for item in items])
    groups = np.concatenate([np.full(len(np.asarray(labels[item]).reshape(-1)), i) for i, item in enumerate(items)])
    splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The least populated class has only n members"
        try:
            splits = list(splitter.split(np.zeros(len(y)), y, groups))
        except ValueError as exc:  # every class has fewer datapoints than folds
            warn(f"folds: cannot stratify {len(items)} items into {num_folds} folds by class ({exc}); "
                 "using unstratified grouped folds")
            return _unstratified(items, num_folds, seed)
    return [sorted({items[g] for g in groups[test]}) for _, test in splits]


def _classes_of(items: Sequence[str], labels: dict[str, np.ndarray] | None) -> dict[str, frozenset] | None:
    if labels is None:
        return None
    return {item: frozenset(np.unique(np.asarray(labels[item]).reshape(-1)).tolist()) for item in items}


def _union(sets) -> set:
    out: set = set()
    for s in sets:
        out |= s
    return out


def _hold_out(pool: list[str], n: int, order: list[str], classes: dict[str, frozenset] | None) -> list[str]:
    """`n` items of `pool` for a held-out set; `order` is a seeded permutation of `pool`.

    The first n of `order` (the plain random draw) when they hold every class of the pool that has
    two or more items and leave every class to the rest; otherwise class by class (module docstring).
    """
    first = order[:n]
    if classes is None:
        return first
    counts = Counter(c for item in pool for c in classes[item])
    coverable = {c for c, count in counts.items() if count > 1}
    rest = [item for item in pool if item not in set(first)]
    if _union(classes[i] for i in first) >= coverable and _union(classes[i] for i in rest) >= set(counts):
        return first
    chosen: list[str] = []
    held: set = set()
    remaining = list(order)

    def safe(item: str) -> bool:  # taking it leaves each of its classes to the rest
        return all(counts[c] > 1 for c in classes[item])

    def take(item: str) -> None:
        chosen.append(item)
        remaining.remove(item)
        held.update(classes[item])
        for c in classes[item]:
            counts[c] -= 1

    while len(chosen) < n:  # items adding the most classes not yet held, earliest in `order` on ties
        gains = [(len(classes[item] - held), -i, item) for i, item in enumerate(remaining) if safe(item)]
        best = max(gains, default=(0, 0, None))
        if best[0] == 0:
            break
        take(best[2])
    for item in list(remaining):  # then random items that leave their classes to the rest
        if len(chosen) >= n:
            break
        if safe(item):
            take(item)
    for item in list(remaining):  # too few of those: the next ones anyway
        if len(chosen) >= n:
            break
        take(item)
    return chosen


def plan_folds(
    items: Sequence[str],
    num_folds: int,
    validation_split: float = 0.2,
    test_split: float = 0.2,
    seed: int = 0,
    labels: dict[str, np.ndarray] | None = None,
    warn: Callable[[str], None] | None = None,
    stratify_held_out: bool = True,
) -> list[Fold]:
    """Plan `num_folds` folds over `items`; `labels` (item -> class labels) enables stratification.

    `warn(line)` receives the warnings (default: warnings.warn). `stratify_held_out=False` draws
    validation (and k = 1 test) items at random, as xvalkit did before it chose them by class.
    """
    if warn is None:
        def warn(line: str) -> None:
            warnings.warn(line, stacklevel=3)
    items = sorted(map(str, items))
    classes = _classes_of(items, labels) if stratify_held_out else None
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
        test = _hold_out(items, n_test, order, classes)
        rest_order = [item for item in order if item not in set(test)]
        val = _hold_out(rest_order, n_val, rest_order, classes)
        train = [item for item in rest_order if item not in set(val)]
        return [Fold(1, tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))]
    if num_folds > n:
        raise XvalError(
            f"num_folds = {num_folds} but the dataset has only {n} foldable items; use at most {n} folds"
        )
    tests = _test_sets(items, num_folds, labels, seed, warn)
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
        drawn = [rest[i] for i in rng.choice(len(rest), size=n_val, replace=False)]
        others = [rest[i] for i in np.random.default_rng([seed, index, 1]).permutation(len(rest))]
        order = drawn + [item for item in others if item not in set(drawn)]
        chosen = set(_hold_out(rest, n_val, order, classes))
        val = [item for item in rest if item in chosen]
        train = [item for item in rest if item not in chosen]
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
    warn: Callable[[str], None] | None = None,
    stratify_held_out: bool = True,
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
        plan = plan_folds(items, num_folds, validation_split, test_split, repeat_seed(seed, repeat), labels,
                          warn=warn, stratify_held_out=stratify_held_out)
        folds += [replace(f, index=(repeat - 1) * len(plan) + f.index, repeat=repeat, in_repeat=f.index)
                  for f in plan]
    return folds
