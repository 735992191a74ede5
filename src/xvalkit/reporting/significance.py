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

With r repeats of k-fold cross-validation the same formula runs over all J = k x r paired folds,
with J - 1 degrees of freedom: the corrected repeated k-fold t-test of Bouckaert and Frank (2004,
"Evaluating the replicability of significance tests for comparing learning algorithms", PAKDD).

Comparing m instances with the best makes m - 1 tests: their p-values are adjusted with Holm's
step-down procedure (Holm 1979), which keeps the chance of any false "worse" at the level. Beside
the frequentist test, the Bayesian correlated t-test (Corani and Benavoli 2015; Benavoli, Corani,
Demsar and Zaffalon 2017, "Time for a change", JMLR 18) gives the posterior probabilities that the
best is better, practically equivalent (within a region of practical equivalence, the rope), or
worse, from the same corrected variance.

>>> result = corrected_t_test([0.8, 0.9, 1.0], [0.7, 0.7, 0.7], test_train_ratio=0.5)
>>> round(result.t, 4), result.df
(2.1909, 2)
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..metrics import diverged_folds

# Verdicts. A p-value >= level does not show two instances equivalent, only that the folds could
# not tell them apart: hence "not distinguishable", never "equivalent".
BEST, SAME, DIFFERENT, BETTER, UNTESTED = (
    "best", "not distinguishable from the best", "worse than the best", "better than the best", "untested")
IDENTICAL_DIFFERENCES = "identical differences"
# Two folds validated within their training items (TESS's two speakers): a t-test over two fold
# differences has 1 degree of freedom and rests on two numbers; the fold results are what to quote.
TWO_FOLDS = "2 folds (1 degree of freedom): quote the two fold results"
DIVERGED = "diverged in fold"


@dataclass(frozen=True)
class TestResult:
    t: float
    p: float
    df: int
    k: int  # common folds
    mean_difference: float


def _paired(a: Sequence[float], b: Sequence[float], test_train_ratio: float, test: str) -> tuple[int, float, float]:
    """(n, mean, var with ddof=1) of the paired differences a - b, after checking the arguments."""
    if len(a) != len(b):
        raise ValueError(f"paired samples of different lengths: {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        raise ValueError(f"{test} needs at least 2 paired folds, got {n}")
    if not test_train_ratio >= 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n
    return n, mean, sum((x - mean) ** 2 for x in d) / (n - 1)


def corrected_t_test(a: Sequence[float], b: Sequence[float], test_train_ratio: float) -> TestResult:
    """Corrected resampled paired t-test of a - b over k paired folds (k >= 2).

    Zero variance: identical results (mean difference 0) give t = 0, p = 1; a constant non-zero
    difference cannot be tested and gives t = p = NaN (see the module docstring).
    """
    k, mean, var = _paired(a, b, test_train_ratio, "the corrected t-test")
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
    # Each fallback only when needed: a record may hold n_train without train_items (or n_test without test_true).
    n_test = record["n_test"] if "n_test" in record else len(record["test_true"])
    # With augmented data n_train counts the original datapoints, like n_test (copies are not new data).
    for key in ("n_train_original", "n_train"):
        if record.get(key) is not None:
            return float(n_test), float(record[key])
    return float(n_test), len(record["train_items"]) * datapoints_per_item


def datapoints_per_item(all_folds: Sequence[Mapping[str, Any]]) -> float:
    """Mean test datapoints per test item over the records that hold both (1 if none does)."""
    known = [f for f in all_folds if "test_items" in f and "test_true" in f]
    items = sum(len(f["test_items"]) for f in known)
    points = sum(len(f["test_true"]) for f in known)
    return points / items if items else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1), then made monotone and
    capped at 1. An instance is "worse than the best" when its adjusted p-value is below the level.
    """
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Posterior:
    """Posterior probabilities that the difference a - b is below -rope, within ±rope, above rope."""

    below: float
    within: float
    above: float


def bayesian_correlated_t_test(a: Sequence[float], b: Sequence[float], test_train_ratio: float,
                               rope: float) -> Posterior:
    """The Bayesian correlated t-test of a - b over n paired folds (Corani and Benavoli 2015).

    The posterior of the mean difference is Student's t with n - 1 degrees of freedom, located at
    mean(d), with scale sqrt((1/n + n_test/n_train) var(d, ddof=1)): the variance Nadeau and Bengio
    correct for the folds' overlap (rho / (1 - rho) = n_test / n_train). With zero variance the
    posterior is a point mass at mean(d).
    """
    if not rope >= 0:
        raise ValueError(f"rope must be >= 0, got {rope}")
    n, mean, var = _paired(a, b, test_train_ratio, "the Bayesian correlated t-test")
    scale = math.sqrt((1.0 / n + test_train_ratio) * var)
    if scale <= 1e-12 * max([abs(x) for x in (*a, *b)] + [1.0]):
        return Posterior(float(mean < -rope), float(-rope <= mean <= rope), float(mean > rope))
    from scipy import stats

    # stats.t.cdf / sf rather than a frozen stats.t(...): the same numbers, without building the
    # frozen distribution's docstring each time (0.8 s of a 1000-instance report)
    below = float(stats.t.cdf(-rope, n - 1, loc=mean, scale=scale))
    above = float(stats.t.sf(rope, n - 1, loc=mean, scale=scale))
    return Posterior(below, max(0.0, 1.0 - below - above), above)


@dataclass(frozen=True)
class Mark:
    """The verdict on one instance against the best: BEST, SAME, DIFFERENT, BETTER or UNTESTED (why).

    `p` is the two-sided p-value of the corrected t-test, `p_adjusted` its Holm adjustment over the
    instances tested (the verdict uses it); `posterior` the Bayesian correlated t-test's
    probabilities that the best is better (`below`: the other is below the best by more than the
    rope, in the metric's "better" direction), practically equivalent (`within`), or that the other
    is better (`above`).
    """

    verdict: str
    p: float = math.nan
    t: float = math.nan
    k: int = 0
    why: str = ""
    ratio: float = math.nan  # the n_test / n_train used
    p_adjusted: float = math.nan
    posterior: Posterior | None = None


def fold_values(folds: Mapping[int, Mapping[str, Any]], column: str) -> dict[int, float]:
    """{fold: value} of one instance's finite values of `column`."""
    out = {}
    for fold, record in folds.items():
        value = record.get(column)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[fold] = float(value)
    return out


def choose_best(folds: Mapping[int, Mapping[int, Mapping[str, Any]]], column: str, higher_is_better: bool,
                candidates: Sequence[int] | None = None) -> int | None:
    """The candidate with the best mean of `column` over its folds (ties: the lowest ID); an
    instance that diverged in a fold is no candidate."""
    order = ranked(folds, column, higher_is_better, candidates)
    return order[0] if order else None


def ranked(folds: Mapping[int, Mapping[int, Mapping[str, Any]]], column: str, higher_is_better: bool,
           candidates: Sequence[int] | None = None) -> list[int]:
    """The candidates from the best mean of `column` over their folds to the worst (ties: the lowest
    ID first); an instance that diverged in a fold, or has no value, is left out (choose_best)."""
    per_run = {run: fold_values(folds[run], column) for run in (candidates if candidates is not None else folds)
               if run in folds and not diverged_folds(folds[run])}
    pool = [r for r, v in per_run.items() if v]
    sign = 1.0 if higher_is_better else -1.0
    return sorted(pool, key=lambda r: (-sign * sum(per_run[r].values()) / len(per_run[r]), r))


def mark_instances(
    folds: Mapping[int, Mapping[int, Mapping[str, Any]]],
    column: str,
    higher_is_better: bool,
    level: float,
    candidates: Sequence[int] | None = None,
    *,
    best: int | None = None,
    rope: float = 0.0,
    min_folds: int = 2,
) -> tuple[int | None, dict[int, Mark]]:
    """Test every instance against the best on `column` ('test_acc') over their common folds.

    `folds` is {instance: {fold: record}}; the best is `best` when given (e.g. chosen on a
    validation metric by `choose_best`), else the instance with the best mean of `column` among
    `candidates` (default: all). Folds pair only when their test items are the same. The p-values
    of all tested instances are Holm-adjusted together; the verdict compares the adjusted p-value
    with `level` and the sign of the mean difference. Returns (best instance or None, {instance: Mark}).
    """
    per_run = {run: fold_values(folds[run], column) for run in folds}
    # An instance whose model diverged in a fold is compared on none: its other folds alone would flatter it.
    diverged = {run: diverged_folds(folds[run]) for run in folds}
    if best is None or not per_run.get(best) or diverged.get(best):
        best = choose_best(folds, column, higher_is_better, candidates)
    if best is None:
        return None, {run: Mark(UNTESTED, why="no folds") for run in folds}
    sign = 1.0 if higher_is_better else -1.0
    per_item = datapoints_per_item([rec for run in folds.values() for rec in run.values()])
    marks: dict[int, Mark] = {}
    tested: dict[int, tuple[TestResult, float, Posterior]] = {}
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
        if len(common) < min_folds:
            why = ("no folds" if not per_run[run] else TWO_FOLDS if min_folds > 2 and len(common) == 2
                   else f"{len(common)} common fold(s) with the best; {min_folds} needed")
            marks[run] = Mark(UNTESTED, k=len(common), why=why)
            continue
        ratios = [n_test / n_train for r in (best, run) for f in common
                  for n_test, n_train in [fold_sizes(folds[r][f], per_item)] if n_train > 0]
        ratio = sum(ratios) / len(ratios) if ratios else 0.0
        ours = [per_run[run][f] for f in common]
        theirs = [per_run[best][f] for f in common]
        result = corrected_t_test(theirs, ours, ratio)
        if math.isnan(result.p):
            marks[run] = Mark(UNTESTED, k=result.k, why=IDENTICAL_DIFFERENCES, ratio=ratio)
            continue
        # In the metric's "better" direction: above = the other instance is better than the best.
        posterior = bayesian_correlated_t_test([sign * x for x in ours], [sign * x for x in theirs], ratio, rope)
        tested[run] = (result, ratio, posterior)
    adjusted = dict(zip(tested, holm([result.p for result, _, _ in tested.values()])))
    for run, (result, ratio, posterior) in tested.items():
        if adjusted[run] >= level:
            verdict = SAME
        else:
            verdict = DIFFERENT if sign * result.mean_difference > 0 else BETTER
        marks[run] = Mark(verdict, p=result.p, t=result.t, k=result.k, ratio=ratio, p_adjusted=adjusted[run],
                          posterior=posterior)
    return best, marks


@dataclass(frozen=True)
class SelectionEstimate:
    """The test metric of the instance a validation metric selects, fold by fold."""

    mean: float
    std: float  # ddof=1; nan with one fold
    picks: dict[int, int]  # fold -> the instance selected on it
    values: dict[int, float]  # fold -> its test value


def selection_estimate(
    folds: Mapping[int, Mapping[int, Mapping[str, Any]]],
    column: str,
    select_column: str,
    select_higher_is_better: bool,
    candidates: Sequence[int] | None = None,
) -> SelectionEstimate | None:
    """Estimate the whole selection procedure: in each fold, the candidate with the best
    `select_column` (a validation metric; ties: the lowest ID) is chosen, and its `column` (the test
    metric) recorded. The test items took no part in the choice, so the mean over folds estimates
    what "pick the best instance on validation" gives on new items, without the optimism of
    reporting the best test mean. Folds pair by index and identical test items."""
    pool = [r for r in (candidates if candidates is not None else folds) if r in folds]
    sign = 1.0 if select_higher_is_better else -1.0
    picks, values = {}, {}
    for fold in sorted({f for r in pool for f in folds[r]}):
        records = {r: folds[r][fold] for r in pool if fold in folds[r]}
        reference = next(iter(records.values()))["test_items"]
        scores = {r: (fold_values({fold: rec}, select_column).get(fold), fold_values({fold: rec}, column).get(fold))
                  for r, rec in records.items() if list(rec["test_items"]) == list(reference)}
        scores = {r: v for r, v in scores.items() if None not in v}
        if not scores:
            continue
        chosen = max(scores, key=lambda r: (sign * scores[r][0], -r))
        picks[fold], values[fold] = chosen, scores[chosen][1]
    if not values:
        return None
    v = list(values.values())
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan
    return SelectionEstimate(mean, std, picks, values)
