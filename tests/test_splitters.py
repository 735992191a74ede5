"""splitters.py makes the test sets scikit-learn's grouped k-fold splitters make, without importing scikit-learn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from xvalkit.splitters import group_kfold_test_sets, stratified_group_kfold_test_sets


def _cases(count: int):
    """Random grouped, labelled datasets: 3-40 groups of 1-30 datapoints, 2-6 classes (some sparse)."""
    rng = np.random.default_rng(29)
    for _ in range(count):
        n_groups = int(rng.integers(3, 41))
        sizes = rng.integers(1, 31, n_groups)
        groups = np.repeat(np.arange(n_groups), sizes)
        classes = int(rng.integers(2, 7))
        # items mostly of one class, as recordings of one speaker are: stratifying has to work for it
        y = np.where(rng.random(len(groups)) < 0.8, rng.integers(0, classes, n_groups)[groups],
                     rng.integers(0, classes, len(groups)))
        yield groups, y, int(rng.integers(2, min(n_groups, 10) + 1)), int(rng.integers(0, 2**31))


def test_group_kfold_matches_scikit_learn():
    for groups, _, k, seed in _cases(200):
        expected = [test for _, test in GroupKFold(k, shuffle=True, random_state=seed).split(groups, groups=groups)]
        ours = group_kfold_test_sets(groups, k, seed)
        assert [t.tolist() for t in ours] == [t.tolist() for t in expected]


def test_stratified_group_kfold_matches_scikit_learn():
    for groups, y, k, seed in _cases(200):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the least populated class
            expected = [test.tolist() for _, test in
                        StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)]
        assert stratified_group_kfold_test_sets(y, groups, k, seed) == expected


def test_the_same_refusals_as_scikit_learn():
    groups, y = np.array([0, 1, 2, 3]), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="n_splits=3 cannot be greater than the number of members in each class"):
        stratified_group_kfold_test_sets(y, groups, 3, 0)
    with pytest.raises(ValueError, match="greater than the number of groups: 4"):
        group_kfold_test_sets(groups, 5, 0)


def test_planning_folds_imports_no_scikit_learn():
    import subprocess
    import sys

    code = ("import sys; from xvalkit.folds import plan_folds; import numpy as np; "
            "labels = {f'i{n}': np.array([n % 3] * 4) for n in range(12)}; "
            "plan_folds(list(labels), 3, seed=1, labels=labels); plan_folds(list(labels), 3, seed=1); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
