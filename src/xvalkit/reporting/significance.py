"""Which instances are not significantly different from the best one, over the same folds.

The folds of cross-validation share training data, so the plain paired t-test over folds is far
too eager to call a difference significant. Nadeau and Bengio (2003, "Inference for the
generalization error", Machine Learning 52) correct the variance of the mean difference for that:

    t = mean(d) / sqrt((1/k + n_test/n_train) * var(d, ddof=1)),   k - 1 degrees of freedom,

where d holds the per-fold differences of the metric between two instances over their k common
folds (folds with the same test items), and n_test / n_train is the ratio of the test and training
set sizes (datapoints). The p-value is two-sided.

When every fold gives the same non-zero difference, var(d) = 0 and t would be infinite: no
variance to test against. Such a comparison is reported as untested ('identical differences'),
with t and p NaN, never as t = inf, p = 0. Identical results (every difference 0) are not
different (t = 0, p = 1).

>>> result = corrected_t_test([0.8, 0.9, 1.0], [0.7, 0.7, 0.7], test_train_ratio=0.5)
>>> round(result.t, 4), result.df
(2.1909, 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BEST, SAME, DIFFERENT, UNTESTED = "best", "not different", "different", "untested"
IDENTICAL_DIFFERENCES = "identical differences"
DIVERGED = "diverged in fold"


@dataclass(frozen=True)
class TestResult:
    t: float
    p: float
    df: int
    k: int  # common folds
    mean_difference: float


def corrected_t_test(a: Sequence[float], b: Sequence[float], test_train_ratio: float) -> TestResult:
    """Corrected resampled paired t-test of a - b over k paired folds (k >= 2).

    Zero variance: identical results (mean difference 0) give t = 0, p = 1; a constant non-zero
    difference cannot be tested and gives t = p = NaN (see the module docstring).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples of different lengths: {len(a)} and {len(b)}")
    k = len(a)
    if k < 2:
        raise ValueError(f"the corrected t-test needs at least 2 paired folds, got {k}")
    if not test_train_ratio >= 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / k
    var = sum((x - mean) ** 2 for x in d) / (k - 1)
    # Differences below rounding noise of the metric count as none (0.1 - 0.1 in floats).
    scale = max([abs(x) for x in (*a, *b)] + [1.0])
    if var <= (1e-12 * scale) ** 2:
        if abs(mean) <= 1e-12 * scale:
            return TestResult(0.0, 1.0, k - 1, k, mean)
        return TestResult(math.nan, math.nan, k - 1, k, mean)
    t = mean / math.sqrt((1.0 / k + test_train_ratio) * var)
    from scipy import stats

    p = float(2.0 * stats.t.sf(abs(t), k - 1))
    return TestResult(float(t), min(1.0, p), k - 1, k, mean)


def fold_sizes(record: Mapping[str, Any], datapoints_per_item: float) -> tuple[float, float]:
    """(n_test, n_train) of one fold record, in datapoints.

    Exact from the record's `n_test` / `n_train_original` or `n_train` (every fold trained by xvalkit
    records them; test and validation hold original datapoints only when the data is augmented). For
    records without them: len(test_true), and len(train_items) x the mean datapoints per item of
    the experiment's test sets (exact when items have equal sizes).
    """
    n_test = float(record.get("n_test", len(record["test_true"])))
    # With augmented data n_train counts the original datapoints, like n_test (copies are not new data).
    n_train = float(record.get("n_train_original", record.get("n_train", len(record["train_items"]) * datapoints_per_item)))
    return n_test, n_train


def datapoints_per_item(all_folds: Sequence[Mapping[str, Any]]) -> float:
    items = sum(len(f["test_items"]) for f in all_folds)
    points = sum(len(f["test_true"]) for f in all_folds)
    return points / items if items else 1.0


@dataclass(frozen=True)
class Mark:
    """The verdict on one instance against the best: BEST, SAME, DIFFERENT or UNTESTED (why)."""

    verdict: str
    p: float = math.nan
    t: float = math.nan
    k: int = 0
    why: str = ""
    ratio: float = math.nan  # the n_test / n_train used


def mark_instances(
    folds: Mapping[int, Mapping[int, Mapping[str, Any]]],
    column: str,
    higher_is_better: bool,
    level: float,
    candidates: Sequence[int] | None = None,
) -> tuple[int | None, dict[int, Mark]]:
    """Test every instance against the best on `column` ('test_acc') over their common folds.

    `folds` is {instance: {fold: record}}; the best is the instance with the best mean over its
    folds among `candidates` (default: all). Folds pair only when their test items are the same.
    Returns (best instance or None, {instance: Mark}).
    """

    def values(run: int) -> dict[int, float]:
        out = {}
        for fold, record in folds[run].items():
            value = record.get(column)
            if isinstance(value, (int, float)) and not math.isnan(value):
                out[fold] = float(value)
        return out

    per_run = {run: values(run) for run in folds}
    # An instance whose model diverged in a fold is compared on none: its other folds alone would flatter it.
    diverged = {run: [f for f, record in folds[run].items() if record.get("diverged")] for run in folds}
    pool = [r for r in (candidates if candidates is not None else folds) if per_run.get(r) and not diverged[r]]
    if not pool:
        return None, {run: Mark(UNTESTED, why="no folds") for run in folds}
    sign = 1.0 if higher_is_better else -1.0
    best = max(pool, key=lambda r: (sign * sum(per_run[r].values()) / len(per_run[r]), -r))
    per_item = datapoints_per_item([rec for run in folds.values() for rec in run.values()])
    marks: dict[int, Mark] = {}
    for run in folds:
        if diverged[run]:
            marks[run] = Mark(UNTESTED, why=f"{DIVERGED}{'s' if len(diverged[run]) > 1 else ''} "
                                            f"{', '.join(map(str, diverged[run]))}")
            continue
        if run == best:
            marks[run] = Mark(BEST, k=len(per_run[run]))
            continue
        common = [f for f in sorted(set(per_run[best]) & set(per_run[run]))
                  if list(folds[best][f]["test_items"]) == list(folds[run][f]["test_items"])]
        if len(common) < 2:
            why = "no folds" if not per_run[run] else f"{len(common)} common fold(s) with the best; 2 needed"
            marks[run] = Mark(UNTESTED, k=len(common), why=why)
            continue
        ratios = [n_test / n_train for r in (best, run) for f in common
                  for n_test, n_train in [fold_sizes(folds[r][f], per_item)] if n_train > 0]
        ratio = sum(ratios) / len(ratios) if ratios else 0.0
        result = corrected_t_test([per_run[best][f] for f in common], [per_run[run][f] for f in common], ratio)
        if math.isnan(result.p):
            marks[run] = Mark(UNTESTED, k=result.k, why=IDENTICAL_DIFFERENCES, ratio=ratio)
            continue
        verdict = SAME if result.p >= level else DIFFERENT
        marks[run] = Mark(verdict, p=result.p, t=result.t, k=result.k, ratio=ratio)
    return best, marks
