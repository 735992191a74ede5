"""Fold guarantees, property-based: partition, disjointness, determinism, sizes."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xvalkit.errors import XvalError
from xvalkit.folds import (Fold, GivenFolds, GroupedKFold, LeaveOneGroupOut, ValidationWithinItems, _hold_out,
                           plan_folds, plan_repeated_folds, untrained_test_classes)


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


# --- fold plans: the field's protocols (issue 30) ---------------------------------------------------

def test_given_folds_test_what_they_name_and_draw_validation_from_the_rest():
    sessions = {f"Ses0{n}": n for n in range(1, 6)}
    folds = GivenFolds(sessions).plan(list(sessions), validation_split=0.2, seed=3)
    assert [f.test for f in folds] == [("Ses01",), ("Ses02",), ("Ses03",), ("Ses04",), ("Ses05",)]
    for f in folds:  # one of the other four sessions validates (round(0.2 x 5) = 1), three train
        assert len(f.val) == 1 and len(f.train) == 3 and not set(f.val) & (set(f.train) | set(f.test))
    # named folds sort numbers first; several items a fold
    plan = GivenFolds({"a": "f2", "b": "f1", "c": "f1", "d": "f3", "e": "f3"}).plan(list("abcde"), 0.2)
    assert [f.test for f in plan] == [("b", "c"), ("a",), ("d", "e")]


def test_given_folds_from_a_csv(tmp_path):
    path = tmp_path / "ravdess_emobox.csv"
    # 6 speaker folds (as EmoBox gives RAVDESS), 4 actors each here
    path.write_text("item,fold\n" + "".join(f"Actor_{a:02d},{(a - 1) // 4 + 1}\n" for a in range(1, 25)))
    plan = GivenFolds.from_csv(path)
    assert plan.name == "given folds (ravdess_emobox.csv)"
    folds = plan.plan([f"Actor_{a:02d}" for a in range(1, 25)], validation_split=0.2)
    assert [f.test for f in folds][1] == ("Actor_05", "Actor_06", "Actor_07", "Actor_08")
    assert len(folds) == 6 and all(len(f.val) == 5 and len(f.train) == 15 for f in folds)  # round(0.2 x 24) = 5
    assert plan.describe(folds) == "given folds (ravdess_emobox.csv), 6 folds"


@pytest.mark.parametrize("assignment, items, words", [
    ({"a": 1, "b": 2, "x": 2}, "abc", "x not an item of the dataset"),
    ({"a": 1, "b": 2}, "abc", "item c of the dataset has no fold"),
    ({"a": 1, "b": 1, "c": 1}, "abc", "every item is in fold 1; give at least two folds"),
    ({"a": 1, "b": None, "c": 2}, "abc", "item 'b' has fold None"),
])
def test_given_folds_that_do_not_fit_the_dataset_are_clear_errors(assignment, items, words):
    with pytest.raises(XvalError, match=re.escape(words)):
        GivenFolds(assignment).plan(list(items))


@pytest.mark.parametrize("text, words", [
    ("actor,fold\nA,1\n", "the first line should be the header item,fold"),
    ("item,fold\nA,1\nB\n", "ravdess.csv:3: expected item,fold"),
    ("item,fold\nA,1\nA,2\n", "item A is given folds 1 and 2"),
    ("item,fold\nA,1\n,2\n", "ravdess.csv:3: expected item,fold, got ',2'"),  # no item
    ("item,fold\nA,1\nC,\n", "ravdess.csv:3: expected item,fold, got 'C,'"),  # no fold
])
def test_a_bad_fold_csv_names_its_line(tmp_path, text, words):
    path = tmp_path / "ravdess.csv"
    path.write_text(text)
    with pytest.raises(XvalError, match=re.escape(words)):
        GivenFolds.from_csv(path)


def test_leave_one_group_out_tests_each_item_once():
    items = [f"spk{i}" for i in range(7)]
    folds = LeaveOneGroupOut().plan(items, validation_split=0.3, seed=1)
    assert [f.test for f in folds] == [(item,) for item in items]
    assert all(len(f.val) == 2 and len(f.train) == 4 for f in folds)  # round(0.3 x 7) = 2
    assert LeaveOneGroupOut().describe(folds) == "leave-one-group-out, 7 folds"


def test_validation_within_the_training_speaker_holds_out_whole_source_files():
    # TESS: two speakers, 2 emotions x 5 words, each file _orig + _aug1 + _aug2
    sources, labels = {}, {}
    for speaker in ("OAF", "YAF"):
        sources[speaker] = [f"{speaker}_{emotion}/{speaker}_{word}_{emotion}{suffix}.wav"
                            for emotion in ("angry", "sad") for word in ("back", "bar", "base", "bath", "bean")
                            for suffix in ("_aug1", "_aug2", "_orig")]
        labels[speaker] = np.repeat([0, 1], 15)
    plan = ValidationWithinItems(LeaveOneGroupOut(), sources)
    folds = plan.plan(["OAF", "YAF"], validation_split=0.2, labels=labels, seed=0)
    assert [(f.train, f.val, f.test) for f in folds] == [(("YAF",), (), ("OAF",)), (("OAF",), (), ("YAF",))]
    for f in folds:
        speaker = f.train[0]
        # round(0.2 x 10 files) = 2 files held out, one of each emotion, named without the suffix
        assert len(f.val_sources) == 2 and all(s.startswith(f"{speaker}_") and "_aug" not in s and "_orig" not in s
                                               for s in f.val_sources)
        assert {s.split("/")[0].split("_")[1] for s in f.val_sources} == {"angry", "sad"}
    assert "early stopping was speaker-dependent" in plan.describe(folds)


def test_untrained_test_classes():
    labels = {"a": np.array([0, 1]), "b": np.array([0]), "c": np.array([1, 2]), "d": np.array([0, 1])}
    assert untrained_test_classes(Fold(1, ("a", "b"), ("d",), ("c",)), labels) == [2]
    assert untrained_test_classes(Fold(2, ("a", "c"), ("d",), ("b",)), labels) == []


# --- held-out sets chosen class by class (mutation testing, issue 34) -------------------------------

def _classes_in(items, labels) -> set:
    return {int(c) for i in items for c in np.unique(labels[i])}


def _coverable(pool, labels) -> set:
    """The classes that two or more items of `pool` hold: a held-out set can take one, the rest keep one."""
    counts = {}
    for item in pool:
        for c in _classes_in([item], labels):
            counts[c] = counts.get(c, 0) + 1
    return {c for c, count in counts.items() if count > 1}


def _can_hold_every_class(pool, n, labels) -> bool:
    """One class per item: n items can hold one of each coverable class and leave one of every class."""
    return len(_coverable(pool, labels)) <= n <= len(pool) - len(_classes_in(pool, labels))


def _holds_and_leaves(held, pool, labels) -> bool:
    rest = [i for i in pool if i not in set(held)]
    return _classes_in(held, labels) >= _coverable(pool, labels) and _classes_in(rest, labels) == _classes_in(pool, labels)


@st.composite
def one_class_items(draw):
    """Items of one class each (several datapoints), with a fold count (1: the single split) that fits."""
    n = draw(st.integers(min_value=4, max_value=24))
    items = [f"spk{i:02d}" for i in range(n)]
    classes = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    labels = {item: np.full(draw(st.integers(1, 3)), c) for item, c in zip(items, classes)}
    k = draw(st.sampled_from([1] + list(range(2, n // 2 + 1))))
    n_val = draw(st.integers(min_value=1, max_value=max(1, n // 4)))
    return items, labels, k, n_val, draw(st.integers(0, 2**31))


@settings(max_examples=120, deadline=None)
@given(one_class_items())
def test_held_out_sets_hold_every_class_they_can_and_training_keeps_every_class(case):
    """Each held-out set (validation; the single split's test set too) holds a class held by two or
    more of the items it is drawn from, and leaves every class to the rest, whenever its size allows
    (module docstring); when the plain random draw already does, it is that draw."""
    items, labels, k, n_val, seed = case
    n = len(items)
    try:
        folds = plan_folds(items, k, validation_split=n_val / n, test_split=n_val / n, seed=seed, labels=labels,
                           warn=[].append)
    except XvalError:
        return  # too few items for the sizes (the partition test covers when)
    plain = plan_folds(items, k, validation_split=n_val / n, test_split=n_val / n, seed=seed, labels=labels,
                       warn=[].append, stratify_held_out=False)
    assert [f.index for f in folds] == list(range(1, k + 1))
    for fold, random in zip(folds, plain):
        if k > 1:
            assert fold.test == random.test  # the test partition does not depend on the held-out choice
        same_pool = k > 1 or fold.test == random.test  # the single split's validation comes from the rest
        draws = [(list(items), fold.test, random.test)] if k == 1 else []
        draws.append((sorted(fold.train + fold.val), fold.val, random.val if same_pool else None))
        for pool, held, drawn in draws:
            if drawn is not None and _holds_and_leaves(drawn, pool, labels):
                assert held == drawn  # the random draw kept
            elif _can_hold_every_class(pool, len(held), labels):
                assert _holds_and_leaves(held, pool, labels), (pool, held)
        assert set(fold.train) | set(fold.val) | set(fold.test) == set(items)


def test_class_by_class_choice_in_hand_worked_cases():
    """_hold_out by hand: first the items adding the most classes not yet held (earliest in the
    order on ties), never the last item of a class, then further items that leave their classes to
    the rest, then any."""
    classes = {"a": {0}, "b": {0}, "c": {0}, "d": {1}, "e": {1}, "f": {2}}
    classes = {item: frozenset(c) for item, c in classes.items()}
    pool = list("abcdef")
    # first two of the order hold class 0 only; class 1 has two items: a, then d (f is class 2's only item)
    assert _hold_out(pool, 2, list("abcdef"), classes) == ["a", "d"]
    assert _hold_out(pool, 1, list("abcdef"), classes) == ["a"]  # n reached: d not added
    assert _hold_out(pool, 3, list("abcdef"), classes) == ["a", "d", "b"]  # then b: class 0 keeps c
    assert _hold_out(pool, 3, list("abdcef"), classes) == ["a", "b", "d"]  # a good draw kept, in its order
    # five of six: the safe ones run out (a, d, b), then the next in the order anyway (c, e); f stays
    assert _hold_out(pool, 5, list("abcdef"), classes) == ["a", "d", "b", "c", "e"]
    assert _hold_out(pool, 2, list("edcbaf"), classes) == ["e", "c"]  # drawn e, d hold class 1 only
    assert _hold_out(pool, 3, list("dcbaef"), classes) == ["d", "c", "b"]  # a good draw is kept as drawn
    assert _hold_out(pool, 2, list("fabcde"), classes) == ["a", "d"]  # f is class 2's only item: not held
    assert _hold_out(pool, 2, list("fabcde"), None) == ["f", "a"]  # without classes: the draw itself
    four = {item: classes[item] for item in "abcf"}
    assert _hold_out(list("abcf"), 2, list("fabc"), four) == ["a", "b"]  # drawn f is class 2's last item
    # class 0 has four items (three can go), class 1 two (one can go): e must stay, b and c can go
    seven = {**classes, "g": frozenset({0})}
    assert _hold_out(list("abcdefg"), 4, list("adebcgf"), seven) == ["a", "d", "b", "c"]
    # an item holding two classes outgains those holding one, wherever it is in the order
    multi = {"g": frozenset({0, 1}), "h": frozenset({0}), "i": frozenset({1}), "j": frozenset({0}), "k": frozenset({1})}
    assert _hold_out(list("ghijk"), 1, list("hijgk"), multi) == ["g"]
    assert _hold_out(list("ghijk"), 2, list("hijgk"), multi) == ["h", "i"]  # drawn h, i hold both: kept


def test_validation_of_an_item_with_every_class_is_held_only_if_another_keeps_them():
    # x holds classes 0 and 1, y only 0 and z only 1: holding x leaves both to training; y or z
    # would not hold both, so the choice for one validation item is x whatever the seed
    labels = {"t1": np.array([0]), "t2": np.array([1]), "x": np.array([0, 1, 1]), "y": np.array([0, 0]),
              "z": np.array([1])}
    for seed in range(10):
        plan = GivenFolds({"t1": 1, "t2": 2, "x": 3, "y": 3, "z": 3}).plan(list(labels), 0.2, seed=seed, labels=labels)
        # folds 1 and 2: four items outside the test set, one validation item (round(0.2 x 5) = 1)
        assert [fold.val for fold in plan[:2]] == [("x",), ("x",)], seed


# --- sparse classes, numbering, seeds and defaults ---------------------------------------------------

def test_sparse_classes_warn_once_and_give_the_unstratified_test_sets():
    # ten items of one datapoint each, five classes, k = 3: no class has 3 datapoints to stratify
    items = [f"item{i}" for i in range(10)]
    labels = {item: np.array([i % 5]) for i, item in enumerate(items)}
    for seed in (0, 5):
        lines = []
        folds = plan_folds(items, 3, validation_split=0.1, seed=seed, labels=labels, warn=lines.append)
        assert len(lines) == 1 and lines[0].startswith("folds: cannot stratify 10 items into 3 folds by class (")
        assert lines[0].endswith("); using unstratified grouped folds")
        # the test sets are those of the same items without labels (GroupKFold, the same seed)
        unlabelled = plan_folds(items, 3, validation_split=0.1, seed=seed)
        assert [f.test for f in folds] == [f.test for f in unlabelled]
    with pytest.warns(UserWarning, match=r"^folds: cannot stratify 10 items into 3 folds by class \(.*\); using"):
        plan_folds(items, 3, validation_split=0.1, labels=labels)  # warnings.warn without a `warn`


def test_folds_are_numbered_from_one_in_every_plan():
    items = [f"spk{i}" for i in range(6)]
    sources = {item: [f"{item}/f{j}.wav" for j in range(5)] for item in items}
    plans = {"k = 3": plan_folds(items, 3, seed=4), "k = 1": plan_folds(items, 1, 0.2, 0.2, seed=4),
             "given": GivenFolds({item: i % 2 for i, item in enumerate(items)}).plan(items),
             "leave one out": LeaveOneGroupOut().plan(items),
             "within items": ValidationWithinItems(LeaveOneGroupOut(), sources).plan(items)}
    assert {name: [f.index for f in folds] for name, folds in plans.items()} == {
        "k = 3": [1, 2, 3], "k = 1": [1], "given": [1, 2], "leave one out": [1, 2, 3, 4, 5, 6],
        "within items": [1, 2, 3, 4, 5, 6]}


def test_the_single_split_is_seeded_and_leaves_at_least_one_item_to_train():
    items = [f"spk{i:02d}" for i in range(10)]
    assert plan_folds(items, 1, 0.2, 0.2, seed=3) == plan_folds(list(reversed(items)), 1, 0.2, 0.2, seed=3)
    # 10 items: 3 test + 6 validation leave one to train; 3 + 7 leave none
    (fold,) = plan_folds(items, 1, validation_split=0.6, test_split=0.3)
    assert (len(fold.test), len(fold.val), len(fold.train)) == (3, 6, 1)
    with pytest.raises(XvalError, match=re.escape("num_folds = 1 with 10 foldable items: 3 test + 7 validation items "
                                                  "leave none to train on; lower test_split / validation_split or add")):
        plan_folds(items, 1, validation_split=0.7, test_split=0.3)
    with pytest.raises(XvalError, match=re.escape("7 test + 3 validation items leave none to train on")):
        plan_folds(items, 1, validation_split=0.3, test_split=0.7)


def test_the_documented_defaults():
    """validation_split = test_split = 0.2, seed 0, classes stratified: a plan without them is the plan with them."""
    items = [f"spk{i:02d}" for i in range(10)]
    labels = {item: np.array([i % 2, i % 2]) for i, item in enumerate(items)}
    assert plan_folds(items, 1) == plan_folds(items, 1, 0.2, 0.2, 0, stratify_held_out=True)
    assert plan_folds(items, 3, labels=labels) == plan_folds(items, 3, 0.2, 0.2, 0, labels, stratify_held_out=True)
    assert LeaveOneGroupOut().plan(items) == LeaveOneGroupOut().plan(items, 0.2, seed=0)
    assert GroupedKFold(1).plan(items) == GroupedKFold(1).plan(items, 0.2, 0.2, 0)
    stratified = {seed: GroupedKFold(3).plan(items, 0.2, seed=seed, labels=labels) for seed in range(6)}
    assert stratified[0] == GroupedKFold(3).plan(items, labels=labels)
    for seed, plan in stratified.items():
        assert plan == GroupedKFold(3).plan(items, 0.2, seed=seed, labels=labels, stratify_held_out=True)
    assert any(plan != GroupedKFold(3).plan(items, 0.2, seed=seed, labels=labels, stratify_held_out=False)
               for seed, plan in stratified.items())  # the flag matters for these labels
    sources, labels = tess_like(items)
    within = ValidationWithinItems(LeaveOneGroupOut(), sources)
    assert within.plan(items, labels=labels) == within.plan(items, 0.2, seed=0, labels=labels, stratify_held_out=True)


@pytest.mark.parametrize("call, words", [
    (lambda: plan_folds(["a", "b", "a"], 2), "foldable items must be unique"),
    (lambda: plan_folds(list("abcd"), 0), "num_folds = 0 must be at least 1"),
    (lambda: GivenFolds({}), "folds in the experiment file: no item is given a fold; give {item: fold} for every item"),
    (lambda: GivenFolds({"a": 1, "b": " "}), "folds in the experiment file: item 'b' has fold ' '; give each item a "
                                             "fold number or name"),
    (lambda: GivenFolds({"a": 1, "b": True}), "item 'b' has fold True"),
    (lambda: GivenFolds({"a": 1}).plan(list("abc")), "folds in the experiment file: item b, c of the dataset has no "
                                                     "fold; give every item a fold"),
    (lambda: GivenFolds({f"x{i}": 1 for i in range(7)}).plan(["a"]),
     "folds in the experiment file: x0, x1, x2, x3, x4 and 2 more not an item of the dataset (its items: a)"),
    (lambda: GivenFolds({f"x{i}": 1 for i in range(5)}).plan(["a"]), "x0, x1, x2, x3, x4 not an item"),
])
def test_bad_plans_are_clear_errors(call, words):
    with pytest.raises(XvalError, match=re.escape(words)):
        call()


def test_too_few_items_for_k_folds_with_validation_is_a_clear_error():
    with pytest.raises(XvalError) as error:
        plan_folds(list("abcd"), 2, validation_split=0.5)
    assert str(error.value) == ("num_folds = 2 with 4 foldable items: fold 1 has 2 items outside its test set, too few "
                                "for 2 validation item(s) and at least one to train on; use fewer folds or a smaller "
                                "validation_split")
    with pytest.raises(XvalError) as error:
        plan_folds(["a", "b", "a"], 2)
    assert str(error.value) == "foldable items must be unique"


def test_k_may_be_the_number_of_items():
    items = [f"spk{i}" for i in range(5)]
    assert sorted(f.test for f in plan_folds(items, 5, validation_split=0.2)) == [(item,) for item in items]


def test_too_few_items_outside_a_test_set_name_the_fold_and_the_way_out():
    # fold 2 leaves one item: no room for validation and training; validating within items is the way out
    with pytest.raises(XvalError) as one:
        GivenFolds({"a": 1, "b": 2, "c": 2}).plan(list("abc"), validation_split=0.2)
    assert str(one.value) == (
        "given folds (the experiment file) with 3 foldable items: fold 2 has 1 items outside its test set, too few "
        "for 1 validation item(s) and at least one to train on; use fewer folds or a smaller validation_split; or "
        "validate within the training items (validation = 'within_training_items', as for TESS's two speakers)")
    # two items outside but both needed for validation: fewer folds or a smaller split, no hint
    with pytest.raises(XvalError) as two:
        GivenFolds({"a": 1, "b": 1, "c": 2, "d": 2}).plan(list("abcd"), validation_split=0.5)
    assert str(two.value).endswith("fold 1 has 2 items outside its test set, too few for 2 validation item(s) and "
                                   "at least one to train on; use fewer folds or a smaller validation_split")


def test_untrained_test_classes_of_a_fold_without_training_items():
    labels = {"a": np.array([0, 1]), "c": np.array([1, 2])}
    assert untrained_test_classes(Fold(1, (), (), ("a", "c")), labels) == [0, 1, 2]
    assert untrained_test_classes(Fold(1, ("a",), (), ()), labels) == []


# --- given folds from a csv, validation within the training items -----------------------------------

def test_a_fold_csv_as_spreadsheets_write_it(tmp_path):
    path = tmp_path / "folds.csv"
    # a byte-order mark, an extra column, a blank line, numbered folds 9 and 10 (numbers, not text)
    path.write_text("\ufeffitem,fold,comment\r\nA,10,x\r\n\r\nB,9,y\r\nC,10,\r\nD,9\r\n", encoding="utf-8")
    plan = GivenFolds.from_csv(path)
    assert plan.assignment == {"A": 10, "B": 9, "C": 10, "D": 9}
    assert [f.test for f in plan.plan(list("ABCD"), validation_split=0.2)] == [("B", "D"), ("A", "C")]
    path.write_text("item,fold\nA,f2\nB,f1\nC,3\n")  # names and numbers: numbers first
    assert [f.test for f in GivenFolds.from_csv(path).plan(list("ABC"), 0.2)] == [("C",), ("B",), ("A",)]


def test_an_unreadable_fold_csv(tmp_path):
    with pytest.raises(XvalError, match=re.escape(f"folds = '{tmp_path / 'none.csv'}': cannot read it (")):
        GivenFolds.from_csv(tmp_path / "none.csv")


def test_two_given_folds_are_enough():
    assert [f.test for f in GivenFolds({"a": 1, "b": 2, "c": 2, "d": 1}).plan(list("abcd"), 0.2)] == [
        ("a", "d"), ("b", "c")]


def tess_like(speakers, files=5):
    """Speakers with `files` source files of each of two emotions, each file _orig + _aug1."""
    sources, labels = {}, {}
    for speaker in speakers:
        sources[speaker] = [f"{speaker}_{emotion}/{speaker}_w{word}_{emotion}{suffix}.wav"
                            for emotion in ("angry", "sad") for word in range(files) for suffix in ("_aug1", "_orig")]
        labels[speaker] = np.repeat([0, 1], 2 * files)
    return sources, labels


def test_validation_within_items_holds_files_of_every_training_item_and_class_for_any_seed():
    sources, labels = tess_like(["s1", "s2", "s3"])
    plan = ValidationWithinItems(LeaveOneGroupOut(), sources)
    assert plan.name == "leave-one-group-out, validation within the training items"
    for seed in range(8):
        folds = plan.plan(["s1", "s2", "s3"], validation_split=0.2, labels=labels, seed=seed)
        assert folds == plan.plan(["s3", "s2", "s1"], validation_split=0.2, labels=labels, seed=seed)
        for fold in folds:
            # round(0.2 x 10 files) = 2 of each training speaker's, one of each emotion
            for speaker in fold.train:
                held = [s for s in fold.val_sources if s.startswith(f"{speaker}_")]
                assert sorted(s.split("/")[0] for s in held) == [f"{speaker}_angry", f"{speaker}_sad"], (seed, fold)
            assert len(fold.val_sources) == 4


def test_validation_within_items_tests_what_its_inner_plan_tests():
    sources, labels = tess_like([f"s{i}" for i in range(6)])
    items = sorted(sources)
    labels = {item: np.full(len(y), i % 2) for i, (item, y) in enumerate(labels.items())}  # one class a speaker
    within = ValidationWithinItems(GroupedKFold(2), sources)
    assert within.name == "num_folds = 2, validation within the training items"
    for seed in (1, 2):
        assert [f.test for f in within.plan(items, labels=labels, seed=seed)] == [
            f.test for f in plan_folds(items, 2, labels=labels, seed=seed)]
    lines = []  # sparse classes (one datapoint each, k = 3): the inner plan's warning reaches `warn`
    sparse = {item: np.array([i]) for i, item in enumerate(items)}
    ValidationWithinItems(GroupedKFold(3), sources).plan(items, labels=sparse, warn=lines.append)
    assert len(lines) == 1 and "cannot stratify 6 items into 3 folds" in lines[0]
    with pytest.warns(UserWarning, match=r"^folds: cannot stratify 6 items into 3 folds by class \(.*\); using"):
        ValidationWithinItems(GroupedKFold(3), sources).plan(items, labels=sparse)  # warnings.warn without `warn`


def test_validation_within_items_refuses_what_it_cannot_do():
    sources, _ = tess_like(["s1", "s2"])
    with pytest.raises(XvalError, match=re.escape("validation = 'within_training_items' needs folds that test every "
                                                  "item (num_folds 2 or more, or folds = ...), not num_folds = 1")):
        ValidationWithinItems(GroupedKFold(1), sources)
    with pytest.raises(XvalError, match=re.escape("needs the source file of each datapoint (the manifest's sources, "
                                                  "written by `xval preprocess`); preprocess the dataset again")):
        ValidationWithinItems(LeaveOneGroupOut(), {})
    one_file = {"s1": ["s1/a_aug1.wav", "s1/a_orig.wav"], "s2": sources["s2"]}
    with pytest.raises(XvalError, match=re.escape("validation within the training items: item s1 has 1 source file(s), "
                                                  "too few for 1 validation file(s) and one to train on")):
        ValidationWithinItems(LeaveOneGroupOut(), one_file).plan(["s1", "s2"])


def test_validation_within_items_describes_its_two_fold_caveat_only_with_two_folds():
    sources, _ = tess_like(["s1", "s2", "s3"])
    plan = ValidationWithinItems(LeaveOneGroupOut(), sources)
    three = plan.describe(plan.plan(["s1", "s2", "s3"]))
    assert three == ("leave-one-group-out, 3 folds; validation within the training items (held-out source files), "
                     "so early stopping was speaker-dependent")
    two = plan.describe(plan.plan(["s1", "s2"]))
    assert two.endswith("speaker-dependent; with 2 folds, quote the two fold results (folds sheet): a std or p over "
                        "two numbers rests on 1 degree of freedom")


def test_unstratified_held_out_sets_are_the_plain_draw_of_the_unlabelled_plan():
    """stratify_held_out=False draws validation (and the single split's test set) as without labels;
    here the classes change the choice for some seeds, so the flag is what keeps the plain draw."""
    items = [f"spk{i:02d}" for i in range(10)]
    labels = {item: np.array([i % 2]) for i, item in enumerate(items)}  # one of two classes each
    given = GivenFolds({item: 1 + i // 5 for i, item in enumerate(items)})
    differs = set()
    for seed in range(10):
        plans = {"k = 1": lambda **kw: plan_folds(items, 1, 0.3, 0.3, seed, **kw),
                 "given": lambda **kw: given.plan(items, 0.3, seed=seed, **kw)}
        for name, plan in plans.items():
            assert plan(labels=labels, stratify_held_out=False) == plan(), (name, seed)
            if plan(labels=labels) != plan():
                differs.add(name)
    assert differs == {"k = 1", "given"}


# --- grouped k-fold repeated (also through test_compare.py) -----------------------------------------

def test_grouped_k_fold_repeats_number_on_and_describe_themselves():
    items = [f"spk{i:02d}" for i in range(9)]
    plan = GroupedKFold(3)
    once = plan.plan(items, 0.2, seed=4)
    # repeat 1 is the plain plan of the seed itself
    assert [(f.train, f.val, f.test) for f in once] == [(f.train, f.val, f.test) for f in plan_folds(items, 3, 0.2, seed=4)]
    assert plan.describe(once) == "grouped 3-fold, 3 folds"
    twice = plan.plan(items, 0.2, seed=4, num_repeats=2)
    assert plan.describe(twice) == "grouped 3-fold, 2 repeats, 6 folds"
    assert [(f.index, f.repeat, f.number) for f in twice] == [(1, 1, 1), (2, 1, 2), (3, 1, 3),
                                                            (4, 2, 1), (5, 2, 2), (6, 2, 3)]
    assert [(f.train, f.val, f.test) for f in twice[:3]] == [(f.train, f.val, f.test) for f in once]
    for repeat in (1, 2):
        assert sorted(i for f in twice if f.repeat == repeat for i in f.test) == items
    assert {frozenset(f.test) for f in twice[:3]} != {frozenset(f.test) for f in twice[3:]}
    with pytest.raises(XvalError, match=re.escape("num_repeats = 0 must be at least 1")):
        plan.plan(items, num_repeats=0)


def test_grouped_k_fold_passes_every_setting_to_each_repeat():
    """Each repeat is plan_folds with the repeat's seed: labels, fractions, warnings and the flag reach it."""
    items = [f"spk{i:02d}" for i in range(12)]
    labels = {item: np.array([i % 2] * (1 + i % 3)) for i, item in enumerate(items)}
    plan, parts = GroupedKFold(3), lambda folds: [(f.train, f.val, f.test) for f in folds]
    for seed in range(4):
        for stratify in (True, False):
            assert parts(plan.plan(items, 0.25, seed=seed, labels=labels, stratify_held_out=stratify)) == parts(
                plan_folds(items, 3, 0.25, seed=seed, labels=labels, stratify_held_out=stratify))
    assert parts(GroupedKFold(1).plan(items, 0.2, 0.3, seed=2)) == parts(plan_folds(items, 1, 0.2, 0.3, seed=2))
    lines = []  # one datapoint a class: no stratification, a warning per repeat through `warn`
    GroupedKFold(3).plan(items, 0.2, labels={item: np.array([i]) for i, item in enumerate(items)},
                         warn=lines.append, num_repeats=2)
    assert len(lines) == 2 and all("cannot stratify 12 items into 3 folds" in line for line in lines)


def test_repeated_folds_are_seeded_per_repeat_and_default_to_one():
    items = [f"spk{i:02d}" for i in range(12)]
    labels = {item: np.array([i % 3]) for i, item in enumerate(items)}
    assert plan_repeated_folds(items, 3) == plan_repeated_folds(items, 3, 1, 0.2, 0.2, 0, None)
    assert plan_repeated_folds(items, 3, labels=labels) == plan_repeated_folds(items, 3, 1, 0.2, 0.2, 0, labels,
                                                                               stratify_held_out=True)
    assert plan_repeated_folds(items, 1) == plan_repeated_folds(items, 1, 1, 0.2, 0.2)
    again = plan_repeated_folds(items, 3, 2, seed=5)
    assert again == plan_repeated_folds(items, 3, 2, seed=5)  # deterministic, later repeats too
    # the second repeat's partition depends on the seed (as the first's does)
    second = {seed: frozenset(frozenset(f.test) for f in plan_repeated_folds(items, 3, 2, seed=seed)[3:])
              for seed in range(6)}
    assert len(set(second.values())) >= 5, second


@pytest.mark.parametrize("num_folds", [0, 2.5, "3"])
def test_grouped_k_fold_needs_a_whole_number_of_folds(num_folds):
    with pytest.raises(XvalError, match=re.escape(f"num_folds = {num_folds!r}: give a whole number of folds, 1 or more")):
        GroupedKFold(num_folds)


def test_a_fold_as_its_record_names_it():
    fold = Fold(4, ("a",), ("b",), ("c",), repeat=2, in_repeat=1)
    assert fold.number == 1 and Fold(3, ("a",), ("b",), ("c",)).number == 3
    assert fold.as_dict() == {"train_items": ["a"], "val_items": ["b"], "test_items": ["c"]}
    within = Fold(1, ("a",), (), ("c",), val_sources=("a/x.wav",))
    assert within.as_dict() == {"train_items": ["a"], "val_items": [], "test_items": ["c"], "val_sources": ["a/x.wav"]}
