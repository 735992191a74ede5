"""Fold plans: for each fold, disjoint train / validation / test lists of foldable items.

With k >= 2 folds the test sets partition the items (every item is tested exactly once), built
with scikit-learn's StratifiedGroupKFold for classification (class balance kept where possible)
and GroupKFold for regression (their algorithms, in splitters.py: no scikit-learn import); validation items are drawn from the rest, train is what remains.
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
from pathlib import Path

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
    # Validation within the training items (TESS): the source files (augmentation suffix removed)
    # of training items held out for validation; `val` is then empty.
    val_sources: tuple[str, ...] = ()

    @property
    def number(self) -> int:
        """The fold's number within its repeat (1 to k)."""
        return self.in_repeat or self.index

    def as_dict(self) -> dict[str, list[str]]:
        plan = {"train_items": list(self.train), "val_items": list(self.val), "test_items": list(self.test)}
        if self.val_sources:
            plan["val_sources"] = list(self.val_sources)
        return plan


def _count(fraction: float, total: int) -> int:
    return max(1, int(round(fraction * total)))


def _unstratified(items: list[str], num_folds: int, seed: int) -> list[list[str]]:
    from .splitters import group_kfold_test_sets

    return [[items[i] for i in test] for test in group_kfold_test_sets(np.arange(len(items)), num_folds, seed)]


def _test_sets(items: list[str], num_folds: int, labels: dict[str, np.ndarray] | None,
               seed: int, warn: Callable[[str], None]) -> list[list[str]]:
    from .splitters import stratified_group_kfold_test_sets

    if labels is None:
        return _unstratified(items, num_folds, seed)
    # Stratify on the datapoints' labels, grouped by item.
    y = np.concatenate([np.asarray(labels[item]).reshape(-1) for item in items])
    groups = np.concatenate([np.full(len(np.asarray(labels[item]).reshape(-1)), i) for i, item in enumerate(items)])
    try:
        splits = stratified_group_kfold_test_sets(y, groups, num_folds, seed)
    except ValueError as exc:  # every class has fewer datapoints than folds
        warn(f"folds: cannot stratify {len(items)} items into {num_folds} folds by class ({exc}); "
             "using unstratified grouped folds")
        return _unstratified(items, num_folds, seed)
    return [sorted({items[g] for g in groups[test]}) for test in splits]


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
    return _with_validation(items, tests, validation_split, seed, classes, f"num_folds = {num_folds}")


def _with_validation(items: list[str], tests: list[list[str]], validation_split: float, seed: int,
                     classes: dict[str, frozenset] | None, plan_name: str) -> list[Fold]:
    """Folds of the given test sets, each with validation items drawn from the rest (module docstring)."""
    n = len(items)
    folds = []
    for index, test in enumerate(tests, start=1):
        rest = [item for item in items if item not in set(test)]
        n_val = _count(validation_split, n)
        if n_val >= len(rest):
            raise XvalError(
                f"{plan_name} with {n} foldable items: fold {index} has {len(rest)} items "
                f"outside its test set, too few for {n_val} validation item(s) and at least one to train on; "
                "use fewer folds or a smaller validation_split"
                + ("; or validate within the training items (validation = 'within_training_items', as for "
                   "TESS's two speakers)" if len(rest) < 2 else "")
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


def untrained_test_classes(fold: Fold, labels: dict[str, np.ndarray]) -> list[int]:
    """Classes of the fold's test items that none of its training items holds: the model cannot
    predict them, and the fold's recall for them is 0 whatever it learned."""
    def held(items) -> set[int]:
        return set(np.unique(np.concatenate([np.asarray(labels[i]).reshape(-1) for i in items])).tolist()) if items else set()
    return sorted(held(fold.test) - held(fold.train))


def class_names(indices, names: list[str] | None) -> list:
    """Class indices by their names where the manifest names them (else the indices)."""
    return [names[c] if names and c < len(names) else c for c in indices]


# --- fold plans: how the test sets are made (scikit-learn's splitters, one small class each) ---------

class FoldPlan:
    """A protocol: `test_sets` says which items each fold tests; `plan` adds held-out validation
    items drawn from the rest (the same for every kind), `describe` names it for the report."""

    name = ""  # the protocol in words, as the report names it
    repeatable = False  # whether num_repeats > 1 gives different partitions

    def test_sets(self, items: list[str], labels: dict[str, np.ndarray] | None, seed: int,
                  warn: Callable[[str], None]) -> list[list[str]]:
        raise NotImplementedError

    def plan(self, items: Sequence[str], validation_split: float = 0.2, test_split: float = 0.2, seed: int = 0,
             labels: dict[str, np.ndarray] | None = None, warn: Callable[[str], None] | None = None,
             stratify_held_out: bool = True, num_repeats: int = 1) -> list[Fold]:
        items = sorted(map(str, items))
        tests = self.test_sets(items, labels, seed, warn or _warn)
        classes = _classes_of(items, labels) if stratify_held_out else None
        return _with_validation(items, tests, validation_split, seed, classes, self.name)

    def describe(self, folds: list[Fold]) -> str:
        return f"{self.name}, {len(folds)} folds"


def _warn(line: str) -> None:
    warnings.warn(line, stacklevel=3)


class GroupedKFold(FoldPlan):
    """Grouped k-fold drawn from a seed (StratifiedGroupKFold for classes), repeated with new seeds.

    >>> len(GroupedKFold(2).plan(list("abcd"), validation_split=0.25))
    2
    """

    repeatable = True

    def __init__(self, num_folds: int):
        if not isinstance(num_folds, int) or num_folds < 1:
            raise XvalError(f"num_folds = {num_folds!r}: give a whole number of folds, 1 or more")
        self.num_folds = num_folds
        self.name = f"num_folds = {num_folds}"

    def test_sets(self, items, labels, seed, warn):
        return _test_sets(items, self.num_folds, labels, seed, warn)

    def plan(self, items, validation_split=0.2, test_split=0.2, seed=0, labels=None, warn=None,
             stratify_held_out=True, num_repeats=1):
        return plan_repeated_folds(items, self.num_folds, num_repeats, validation_split, test_split, seed, labels,
                                   warn, stratify_held_out)

    def describe(self, folds):
        repeats = max(f.repeat for f in folds)
        return f"grouped {self.num_folds}-fold" + (f", {repeats} repeats" if repeats > 1 else "") + f", {len(folds)} folds"


class GivenFolds(FoldPlan):
    """Folds named in advance, item -> fold (a published protocol: IEMOCAP's sessions, EmoBox's fold
    lists); folds are numbered in the order of their names.

    >>> plan = GivenFolds({"a": 1, "b": 1, "c": 2, "d": 3}).plan(list("abcd"), validation_split=0.25)
    >>> [f.test for f in plan]
    [('a', 'b'), ('c',), ('d',)]
    """

    def __init__(self, assignment: dict, source: str = "the experiment file"):
        if not assignment:
            raise XvalError(f"folds in {source}: no item is given a fold; give {{item: fold}} for every item")
        bad = [(item, fold) for item, fold in assignment.items()
               if not isinstance(fold, (int, str)) or isinstance(fold, bool) or str(fold).strip() == ""]
        if bad:
            raise XvalError(f"folds in {source}: item {bad[0][0]!r} has fold {bad[0][1]!r}; "
                            "give each item a fold number or name")
        self.assignment = {str(item): fold for item, fold in assignment.items()}
        self.source = source
        self.name = f"given folds ({source})"

    @classmethod
    def from_csv(cls, path: str | Path) -> GivenFolds:
        """A csv with the columns item and fold (a header line `item,fold`, then one item a line)."""
        import csv

        path = Path(path)
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError) as exc:
            raise XvalError(f"folds = {str(path)!r}: cannot read it ({exc})") from None
        if not rows or [cell.strip().lower() for cell in rows[0][:2]] != ["item", "fold"]:
            raise XvalError(f"{path}: the first line should be the header item,fold, then one item,fold a line")
        assignment: dict[str, str] = {}
        for number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise XvalError(f"{path}:{number}: expected item,fold, got {','.join(row)!r}")
            item, fold = row[0].strip(), row[1].strip()
            if item in assignment and assignment[item] != fold:
                raise XvalError(f"{path}:{number}: item {item} is given folds {assignment[item]} and {fold}; give one")
            assignment[item] = int(fold) if fold.isdigit() else fold
        return cls(assignment, path.name)

    def test_sets(self, items, labels, seed, warn):
        unknown = sorted(set(self.assignment) - set(items))
        if unknown:
            raise XvalError(f"folds in {self.source}: {_few(unknown)} not an item of the dataset (its items: "
                            f"{_few(items)}); was it preprocessed with another foldable item (IEMOCAP --group)?")
        missing = [item for item in items if item not in self.assignment]
        if missing:
            raise XvalError(f"folds in {self.source}: item {_few(missing)} of the dataset has no fold; give every "
                            "item a fold")
        names = sorted({fold for fold in self.assignment.values()}, key=lambda f: (isinstance(f, str), f))
        if len(names) < 2:
            raise XvalError(f"folds in {self.source}: every item is in fold {names[0]}; give at least two folds")
        return [sorted(item for item in items if self.assignment[item] == name) for name in names]


class LeaveOneGroupOut(FoldPlan):
    """One fold per foldable item, which it tests (k = the number of items).

    >>> [f.test for f in LeaveOneGroupOut().plan(list("abc"), validation_split=0.3)]
    [('a',), ('b',), ('c',)]
    """

    name = "leave-one-group-out"

    def test_sets(self, items, labels, seed, warn):
        return [[item] for item in items]


class ValidationWithinItems(FoldPlan):
    """Another plan's test sets; validation is drawn from the training items' own source files
    (a fraction of each item's files, grouped by file with the augmentation suffix removed, so a
    file's windows and _aug<N> copies stay together). For corpora with too few items to hold one
    out for validation (TESS: two speakers); early stopping is then speaker-dependent."""

    def __init__(self, inner: FoldPlan, sources: dict[str, list[str]] | None):
        if isinstance(inner, GroupedKFold) and inner.num_folds < 2:
            raise XvalError("validation = 'within_training_items' needs folds that test every item (num_folds 2 or "
                            "more, or folds = ...), not num_folds = 1")
        if not sources:
            raise XvalError("validation = 'within_training_items' needs the source file of each datapoint "
                            "(the manifest's sources, written by `xval preprocess`); preprocess the dataset again")
        self.inner, self.sources = inner, sources
        self.name = f"{inner.name}, validation within the training items"

    def test_sets(self, items, labels, seed, warn):
        return self.inner.test_sets(items, labels, seed, warn)

    def plan(self, items, validation_split=0.2, test_split=0.2, seed=0, labels=None, warn=None,
             stratify_held_out=True, num_repeats=1):
        from .data import source_group

        items = sorted(map(str, items))
        folds = []
        for index, test in enumerate(self.test_sets(items, labels, seed, warn or _warn), start=1):
            train = [item for item in items if item not in set(test)]
            held: list[str] = []
            for item in train:
                groups = [source_group(source) for source in self.sources[item]]
                names = sorted(set(groups))
                n_val = _count(validation_split, len(names))
                if n_val >= len(names):
                    raise XvalError(f"validation within the training items: item {item} has {len(names)} source "
                                    f"file(s), too few for {n_val} validation file(s) and one to train on")
                classes = None
                if labels is not None and stratify_held_out:
                    y = np.asarray(labels[item]).reshape(-1)
                    classes = {name: frozenset() for name in names}
                    for group, label in zip(groups, y.tolist()):
                        classes[group] = classes[group] | {label}
                order = [names[i] for i in np.random.default_rng([seed, index, len(held)]).permutation(len(names))]
                held += _hold_out(names, n_val, order, classes)
            folds.append(Fold(index, tuple(train), (), tuple(sorted(test)), val_sources=tuple(sorted(held))))
        return folds

    def describe(self, folds):
        text = (f"{self.inner.describe(folds)}; validation within the training items (held-out source files), "
                "so early stopping was speaker-dependent")
        if len(folds) == 2:
            text += ("; with 2 folds, quote the two fold results (folds sheet): a std or p over two numbers rests "
                     "on 1 degree of freedom")
        return text


def _few(names: Sequence[str], shown: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
