"""scikit-learn's GroupKFold(shuffle=True) and StratifiedGroupKFold(shuffle=True) test sets, in numpy alone.

Why not import them: importing anything of scikit-learn costs about 0.9 s on the 2-core machine
(it imports scipy.stats), which was half of `xval plan`'s time; planning folds needs only these
two loops. They follow scikit-learn 1.6-1.8 step for step (the same random draws, the same float
operations, the same tie-breaking), so a plan is the one scikit-learn would make:
tests/test_splitters.py compares them with scikit-learn on many random cases, and fails if a
scikit-learn release changes its algorithm.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def group_kfold_test_sets(groups: np.ndarray, n_splits: int, seed: int | None) -> list[np.ndarray]:
    """The test indices of GroupKFold(n_splits, shuffle=True, random_state=seed).split(groups=groups)."""
    groups = np.asarray(groups)
    unique_groups = np.unique(groups)
    if n_splits > len(unique_groups):
        raise ValueError(f"Cannot have number of splits n_splits={n_splits} greater than the number "
                         f"of groups: {len(unique_groups)}.")
    shuffled = np.random.RandomState(seed).permutation(unique_groups)
    return [np.where(np.isin(groups, ids))[0] for ids in np.array_split(shuffled, n_splits)]


def stratified_group_kfold_test_sets(y: np.ndarray, groups: np.ndarray, n_splits: int,
                                     seed: int | None) -> list[list[int]]:
    """The test indices of StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed).split(X, y, groups),
    for class labels `y` (its least-populated-class warning is not given)."""
    rng = np.random.RandomState(seed)
    _, y_inv, y_cnt = np.unique(np.asarray(y).reshape(-1), return_inverse=True, return_counts=True)
    if np.all(n_splits > y_cnt):
        raise ValueError(f"n_splits={n_splits} cannot be greater than the number of members in each class.")
    _, groups_inv, groups_cnt = np.unique(groups, return_inverse=True, return_counts=True)
    if n_splits > len(groups_cnt):
        raise ValueError(f"Cannot have number of splits n_splits={n_splits} greater than the number "
                         f"of groups: {len(groups_cnt)}.")
    y_counts_per_group = np.zeros((len(groups_cnt), len(y_cnt)))
    for class_idx, group_idx in zip(y_inv, groups_inv):
        y_counts_per_group[group_idx, class_idx] += 1
    y_counts_per_fold = np.zeros((n_splits, len(y_cnt)))
    groups_per_fold = defaultdict(set)
    perm = np.arange(len(groups_cnt))
    rng.shuffle(perm)
    y_counts_per_group = y_counts_per_group[perm]
    inv_perm = np.empty_like(perm)
    inv_perm[perm] = np.arange(perm.size)
    groups_inv = inv_perm[groups_inv]
    # stable: groups of equal spread keep their shuffled order
    for group_idx in np.argsort(-np.std(y_counts_per_group, axis=1), kind="stable"):
        group_y_counts = y_counts_per_group[group_idx]
        best = _best_fold(y_counts_per_fold, y_cnt, group_y_counts)
        y_counts_per_fold[best] += group_y_counts
        groups_per_fold[best].add(group_idx)
    return [[idx for idx, group_idx in enumerate(groups_inv) if group_idx in groups_per_fold[i]]
            for i in range(n_splits)]


def _best_fold(y_counts_per_fold: np.ndarray, y_cnt: np.ndarray, group_y_counts: np.ndarray) -> int:
    """The fold whose class spread grows least with this group; the emptiest fold among equals."""
    best, min_eval, min_samples = None, np.inf, np.inf
    for i in range(len(y_counts_per_fold)):
        y_counts_per_fold[i] += group_y_counts
        std_per_class = np.std(y_counts_per_fold / y_cnt.reshape(1, -1), axis=0)
        y_counts_per_fold[i] -= group_y_counts
        fold_eval = np.mean(std_per_class)
        samples = np.sum(y_counts_per_fold[i])
        if fold_eval < min_eval or (np.isclose(fold_eval, min_eval) and samples < min_samples):
            best, min_eval, min_samples = i, fold_eval, samples
    return best
