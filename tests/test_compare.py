"""Sweeps, repeated grouped k-fold and honest comparison (issue 13).

Known answers: Holm against statsmodels' multipletests and a hand computation; the Bayesian
correlated t-test against baycomp (Benavoli et al.'s own package) and a closed form; the repeated
corrected t-test (Bouckaert and Frank 2004) by hand; the selection procedure on a crafted case
where the test-best and the validation-best instances differ.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.errors import ParameterError
from xvalkit.folds import plan_folds, plan_repeated_folds
from xvalkit.reporting import significance as sig
from xvalkit.store import ExperimentStore
from xvalkit.sweeps import combination_id, expand

from .conftest import write_experiment
from .test_run import summary_header

runner = CliRunner()


def xval(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# --- statistics with known answers --------------------------------------------------------------
def test_holm_by_hand_and_against_statsmodels():
    # By hand: sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06).
    assert sig.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert sig.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert sig.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # 2 x 0.6 = 1.2, capped at 1
    assert sig.holm([]) == []
    from statsmodels.stats import multitest  # a dev dependency: a broken install fails, never skips
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 17):
        p = rng.uniform(0, 0.2, m).tolist()
        assert sig.holm(p) == pytest.approx(list(multitest.multipletests(p, method="holm")[1]))


def test_bayesian_correlated_t_test_closed_form():
    # d = [0.1, 0.2, 0.3], n_test/n_train = 0.5: posterior t(2) at 0.2, scale sqrt((1/3 + 1/2) 0.01).
    # With 2 degrees of freedom the cdf is 0.5 + x / (2 sqrt(x^2 + 2)), x = (0 - 0.2) / scale = -2.19089.
    post = sig.bayesian_correlated_t_test([0.8, 0.9, 1.0], [0.7, 0.7, 0.7], 0.5, rope=0.0)
    x = -0.2 / math.sqrt((1 / 3 + 0.5) * 0.01)
    assert post.below == pytest.approx(0.5 + x / (2 * math.sqrt(x * x + 2)), abs=1e-12)
    assert post.below == pytest.approx(0.159832 / 2, abs=1e-6)  # half the corrected t-test's two-sided p
    assert post.within == pytest.approx(0.0, abs=1e-12) and post.above == pytest.approx(1 - post.below)
    # Zero variance: a point mass at the mean difference.
    assert sig.bayesian_correlated_t_test([0.6, 0.7], [0.5, 0.6], 0.5, rope=0.01) == sig.Posterior(0.0, 0.0, 1.0)
    assert sig.bayesian_correlated_t_test([0.6, 0.7], [0.595, 0.695], 0.5, rope=0.01) == sig.Posterior(0.0, 1.0, 0.0)


def test_bayesian_correlated_t_test_against_baycomp():
    import baycomp  # a dev dependency: a broken install fails, never skips
    rng = np.random.default_rng(0)
    for n, runs, rope in ((10, 1, 0.01), (10, 2, 0.01), (6, 3, 0.0), (12, 1, 0.05)):
        x, y = rng.normal(0.8, 0.03, n), rng.normal(0.79, 0.03, n)
        # baycomp takes the test fraction as 1 / k (k folds per run): n_test / n_train = 1 / (k - 1).
        k = n / runs
        expected = baycomp.CorrelatedTTest(x, y, rope=rope, runs=runs).probs()
        got = sig.bayesian_correlated_t_test(list(y), list(x), 1 / (k - 1), rope)
        if rope == 0:  # baycomp then returns (P(left), P(right))
            expected = (expected[0], 0.0, expected[1])
        assert (got.below, got.within, got.above) == pytest.approx(tuple(map(float, expected)), abs=1e-9)


def record(fold: int, test: float, val: float, items: tuple[str, ...] = ()) -> dict:
    return {"test_acc": test, "val_acc": val, "test_items": list(items or (f"t{fold}",)), "train_items": ["a", "b"],
            "n_test": 10, "n_train": 20, "test_true": np.zeros(10)}


def test_repeated_corrected_t_test_uses_all_k_times_r_folds():
    # 3 folds x 2 repeats: d = [0.1, 0.2, 0.3] twice, n_test/n_train = 0.5.
    # mean 0.2, var (ddof 1) = 4 x 0.01 / 5 = 0.008, t = 0.2 / sqrt((1/6 + 1/2) 0.008) = 2.738613,
    # J - 1 = 5 degrees of freedom: p = 2 x t5.sf(2.738613) = 0.0408594 (Bouckaert and Frank 2004).
    best = [0.8, 0.9, 1.0, 0.8, 0.9, 1.0]
    other = [0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    folds = {1: {f: record(f, v, v) for f, v in enumerate(best, 1)},
             2: {f: record(f, v, v) for f, v in enumerate(other, 1)}}
    best_id, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert best_id == 1
    assert marks[2].k == 6 and marks[2].t == pytest.approx(2.738613, abs=1e-6)
    assert marks[2].p == pytest.approx(0.0408594, abs=1e-6)
    assert marks[2].p_adjusted == pytest.approx(marks[2].p)  # one comparison: Holm changes nothing
    assert marks[2].verdict == sig.DIFFERENT == "worse than the best"


def test_holm_decides_the_verdicts():
    # Two others with raw p = 0.0409 (as above) and p = 1 (identical to the best in mean, varying):
    # Holm: 0.0409 x 2 = 0.0817 >= 0.05, so the first is no longer "worse".
    best = [0.8, 0.9, 1.0, 0.8, 0.9, 1.0]
    folds = {1: {f: record(f, v, v) for f, v in enumerate(best, 1)},
             2: {f: record(f, v, v) for f, v in enumerate([0.7] * 6, 1)},
             3: {f: record(f, v, v) for f, v in enumerate([0.9, 0.8, 1.0, 1.0, 0.9, 0.8], 1)}}
    _, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert marks[2].p == pytest.approx(0.0408594, abs=1e-6) and marks[2].p_adjusted == pytest.approx(2 * 0.0408594, abs=1e-6)
    assert marks[2].verdict == sig.SAME == "not distinguishable from the best"


def test_selection_by_validation_differs_from_the_test_best():
    # Instance 1 has the best test mean (0.9) but the worst validation; instance 2 wins validation in
    # folds 1 and 2, instance 3 in fold 3. The best on mean validation accuracy (0.5, 0.767, 0.783) is
    # instance 3: neither is the test-best.
    folds = {
        1: {1: record(1, 0.9, 0.50), 2: record(2, 0.9, 0.50), 3: record(3, 0.9, 0.50)},
        2: {1: record(1, 0.7, 0.80), 2: record(2, 0.6, 0.90), 3: record(3, 0.8, 0.60)},
        3: {1: record(1, 0.5, 0.70), 2: record(2, 0.5, 0.70), 3: record(3, 0.4, 0.95)},
    }
    assert sig.choose_best(folds, "test_acc", True) == 1
    assert sig.choose_best(folds, "val_acc", True) == 3
    est = sig.selection_estimate(folds, "test_acc", "val_acc", True)
    # Fold 1: val 0.5 / 0.8 / 0.7 -> 2 (test 0.7); fold 2: 0.5 / 0.9 / 0.7 -> 2 (0.6); fold 3: 0.5 / 0.6 / 0.95 -> 3 (0.4)
    assert est.picks == {1: 2, 2: 2, 3: 3}
    assert est.values == {1: 0.7, 2: 0.6, 3: 0.4}
    assert est.mean == pytest.approx(1.7 / 3) and est.std == pytest.approx(np.std([0.7, 0.6, 0.4], ddof=1))
    # Lower-is-better selection flips the choice.
    assert sig.selection_estimate(folds, "test_acc", "val_acc", False).picks == {1: 1, 2: 1, 3: 1}


def t2_cdf(x: float) -> float:
    """Student's t cdf with 2 degrees of freedom, in closed form."""
    return 0.5 + x / (2 * math.sqrt(x * x + 2))


def test_zero_variance_results_keep_their_folds_and_difference():
    same = sig.corrected_t_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], 0.5)
    assert same == sig.TestResult(t=0.0, p=1.0, df=2, k=3, mean_difference=0.0)
    shifted = sig.corrected_t_test([0.6, 0.7, 0.8, 0.9], [0.5, 0.6, 0.7, 0.8], 0.5)  # constant difference 0.1
    assert math.isnan(shifted.t) and math.isnan(shifted.p)
    assert (shifted.df, shifted.k) == (3, 4) and shifted.mean_difference == pytest.approx(0.1)


def test_rounding_noise_is_measured_against_the_size_of_the_metric():
    # RMSEs near 1000 differing by a constant 0.1 reach the folds as 0.1 +- 1e-13 (float rounding): a
    # variance of 4e-27 that is noise, not spread. Untested ('identical differences'), never t = 1e12,
    # p = 0; the posterior is a point mass at 0.1, within a rope of 0.1 (the rope is closed).
    a, b = [1000.1, 1000.2, 1000.3], [1000.0, 1000.1, 1000.2]
    result = sig.corrected_t_test(a, b, 0.25)
    assert math.isnan(result.t) and math.isnan(result.p) and result.mean_difference == pytest.approx(0.1)
    assert sig.bayesian_correlated_t_test(a, b, 0.25, rope=0.1) == sig.Posterior(0.0, 1.0, 0.0)
    # Equal up to the last bit (one ulp of 1000, 1.1e-13): identical results, t = 0 and p = 1.
    nudged = [x + 1e-13 for x in a]
    assert nudged != a and (sig.corrected_t_test(nudged, a, 0.25).t, sig.corrected_t_test(nudged, a, 0.25).p) == (0.0, 1.0)
    # A real spread is tested however small: differences of 1e-6, 2e-6, 3e-6 give the t of 0.1, 0.2, 0.3
    # (t does not depend on the unit): 0.2 / sqrt((1/3 + 1/4) 0.01) = 2.6186.
    small = sig.corrected_t_test([0.500001, 0.500002, 0.500003], [0.5, 0.5, 0.5], 0.25)
    assert small.t == pytest.approx(0.2 / math.sqrt((1 / 3 + 0.25) * 0.01), rel=1e-6)


def test_a_point_mass_on_the_rope_boundary_is_within():
    # Constant differences of exactly +-0.25 (binary fractions) with a rope of 0.25: practically equivalent.
    assert sig.bayesian_correlated_t_test([0.75, 0.75], [0.5, 0.5], 0.5, rope=0.25) == sig.Posterior(0.0, 1.0, 0.0)
    assert sig.bayesian_correlated_t_test([0.5, 0.5], [0.75, 0.75], 0.5, rope=0.25) == sig.Posterior(0.0, 1.0, 0.0)


def test_bad_arguments_name_the_test_and_the_value():
    with pytest.raises(ValueError, match="^the corrected t-test needs at least 2 paired folds, got 1$"):
        sig.corrected_t_test([0.5], [0.4], 0.5)
    with pytest.raises(ValueError, match="^the Bayesian correlated t-test needs at least 2 paired folds, got 1$"):
        sig.bayesian_correlated_t_test([0.5], [0.4], 0.5, rope=0.0)
    with pytest.raises(ValueError, match="^paired samples of different lengths: 2 and 1$"):
        sig.bayesian_correlated_t_test([0.5, 0.6], [0.4], 0.5, rope=0.0)
    for ratio in (-0.1, math.nan):
        with pytest.raises(ValueError, match=f"^test_train_ratio must be >= 0, got {ratio}$"):
            sig.corrected_t_test([0.5, 0.6], [0.4, 0.4], ratio)
    with pytest.raises(ValueError, match="^rope must be >= 0, got -0.01$"):
        sig.bayesian_correlated_t_test([0.5, 0.6], [0.4, 0.4], 0.5, rope=-0.01)


def test_fold_values_keep_finite_numbers_only():
    folds = {1: {"m": 0.5}, 2: {"m": math.nan}, 3: {"m": math.inf}, 4: {"m": None}, 5: {"m": True}, 6: {"m": "0.7"},
             7: {}, 8: {"m": 2}, 9: {"m": np.float64(0.25)}}
    assert sig.fold_values(folds, "m") == {1: 0.5, 8: 2.0, 9: 0.25}


def test_fold_sizes_prefer_the_recorded_sizes():
    # Augmented data: n_train counts the copies, n_train_original the datapoints they were made from.
    assert sig.fold_sizes({"n_test": 20, "n_train": 400, "n_train_original": 80}, 10.0) == (20.0, 80.0)
    assert sig.fold_sizes({"n_test": 20, "n_train": 80, "n_train_original": None}, 10.0) == (20.0, 80.0)
    # Older records: len(test_true), and the training items x the mean datapoints per item.
    assert sig.fold_sizes({"test_true": np.zeros(30), "train_items": ["a", "b", "c", "d"]}, 7.5) == (30.0, 30.0)
    assert sig.fold_sizes({"n_test": 20, "test_true": np.zeros(30), "train_items": ["a", "b"]}, 7.5) == (20.0, 15.0)


def test_datapoints_per_item_over_the_records_that_hold_both():
    records = [{"test_items": ["a", "b"], "test_true": np.zeros(20)}, {"test_items": ["c", "d", "e"], "test_true": np.zeros(40)},
               {"test_items": ["f"]}, {"test_true": np.zeros(1000)}]
    assert sig.datapoints_per_item(records) == 12.0  # (20 + 40) / (2 + 3)
    assert sig.datapoints_per_item(records[2:]) == 1.0  # none holds both


def test_choose_best_on_the_mean_among_candidates_that_did_not_diverge():
    folds = {1: {1: {"test_acc": 0.9}, 2: {"test_acc": 0.9}},  # mean 0.9 over 2 folds (sum 1.8)
             2: {1: {"test_acc": 0.6}, 2: {"test_acc": 0.6}, 3: {"test_acc": 0.6}},  # mean 0.6 over 3 (sum 1.8)
             3: {1: {"test_acc": 0.95}, 2: {"diverged": "loss NaN at epoch 2", "test_acc": math.nan}},
             4: {1: {"test_acc": 0.9}, 2: {"test_acc": 0.9}}}  # ties with 1
    assert sig.choose_best(folds, "test_acc", True) == 1  # the mean, not the sum; 3 diverged; a tie: the lowest ID
    assert sig.choose_best(folds, "test_acc", True, candidates=[2, 4, 7]) == 4
    assert sig.choose_best(folds, "test_acc", False) == 2  # lower is better
    assert sig.choose_best(folds, "test_acc", True, candidates=[3]) is None


def test_selection_estimate_ties_skipped_folds_candidates_and_std():
    # Fold 1: validation ties (0.8) between 1 and 2: the lowest ID, 1 (test 0.9). Fold 2: no validation
    # value at all: skipped. Fold 3: 2 wins validation (0.9), test 0.4. Mean 0.65, std |0.9 - 0.4| / sqrt(2).
    val = {1: (0.8, math.nan, 0.6), 2: (0.8, math.nan, 0.9), 3: (0.5, math.nan, 0.4)}
    test = {1: (0.9, 0.8, 0.7), 2: (0.6, 0.5, 0.4), 3: (0.3, 0.2, 0.1)}
    folds = {run: {f: record(f, test[run][f - 1], val[run][f - 1]) for f in (1, 2, 3)} for run in (1, 2, 3)}
    est = sig.selection_estimate(folds, "test_acc", "val_acc", True)
    assert (est.picks, est.values) == ({1: 1, 3: 2}, {1: 0.9, 3: 0.4})
    assert est.mean == pytest.approx(0.65) and est.std == pytest.approx(0.5 / math.sqrt(2))
    assert sig.selection_estimate(folds, "test_acc", "val_acc", True, candidates=[2, 3]).picks == {1: 2, 3: 2}
    one = sig.selection_estimate({1: {1: record(1, 0.9, 0.8)}}, "test_acc", "val_acc", True)
    assert one.mean == 0.9 and math.isnan(one.std)  # one fold: no spread
    assert sig.selection_estimate({1: {2: record(2, 0.9, math.nan)}}, "test_acc", "val_acc", True) is None


def _instance(test: list[float], diverged: tuple[int, ...] = ()) -> dict[int, dict]:
    folds = {f: record(f, v, v) for f, v in enumerate(test, 1)}
    for f in diverged:
        folds[f].update(diverged="non-finite predictions", test_acc=math.nan, val_acc=math.nan)
    return folds


def test_mark_instances_gives_each_instance_its_verdict_and_reason():
    # n_test / n_train = 10 / 20 on every fold. The best, 1: [0.8, 0.9, 1.0] (mean 0.9).
    # 2: d = [0.1, 0.2, 0.3]: t = 0.2 / sqrt((1/3 + 1/2) 0.01) = 2.19089, 2 df, p = 1 - t / sqrt(t^2 + 2) = 0.1598.
    # 8: d = [0.7, 0.8, 0.8]: t = 0.76667 / sqrt((1/3 + 1/2) 0.003333) = 14.549, p = 0.00469; Holm over
    #    the two tested: 8 gets 2 p8 (worse), 2 keeps max(2 p8, p2) = p2 (not distinguishable).
    # 5: constant difference 0.1 (identical differences); 3 and 4 diverged (never candidates, even with a
    # better mean); 6 has no finite value; 7 one fold only.
    folds = {3: _instance([0.99, 0.99, 0.99], diverged=(1, 3)), 7: _instance([0.5]),
             5: _instance([0.7, 0.8, 0.9]), 1: _instance([0.8, 0.9, 1.0]), 2: _instance([0.7, 0.7, 0.7]),
             8: _instance([0.1, 0.1, 0.2]), 4: _instance([0.99, 0.99, 0.99], diverged=(2,)),
             6: _instance([math.nan, math.nan, math.nan])}
    best, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert best == 1 and set(marks) == set(folds)
    reasons = {run: (m.verdict, m.k, m.why) for run, m in marks.items()}
    assert reasons == {1: (sig.BEST, 3, ""), 2: (sig.SAME, 3, ""), 8: (sig.DIFFERENT, 3, ""),
                       5: (sig.UNTESTED, 3, sig.IDENTICAL_DIFFERENCES), 3: (sig.UNTESTED, 0, "diverged in folds 1, 3"),
                       4: (sig.UNTESTED, 0, "diverged in fold 2"), 6: (sig.UNTESTED, 0, "no folds"),
                       7: (sig.UNTESTED, 1, "1 common fold(s) with the best; 2 needed")}
    t2 = 0.2 / math.sqrt((1 / 3 + 0.5) * 0.01)
    d8 = [0.7, 0.8, 0.8]
    t8 = (sum(d8) / 3) / math.sqrt((1 / 3 + 0.5) * np.var(d8, ddof=1))
    assert (marks[2].t, marks[2].p, marks[2].ratio) == pytest.approx((t2, 1 - t2 / math.sqrt(t2 * t2 + 2), 0.5))
    assert marks[2].p_adjusted == pytest.approx(marks[2].p)
    assert marks[8].t == pytest.approx(t8) and marks[8].p_adjusted == pytest.approx(2 * (1 - t8 / math.sqrt(t8 * t8 + 2)))
    assert marks[5].ratio == 0.5
    # The posterior of 2 - 1 (rope 0 by default): t(2) at -0.2 with scale sqrt((1/3 + 1/2) 0.01).
    scale = math.sqrt((1 / 3 + 0.5) * 0.01)
    posterior = marks[2].posterior
    assert (posterior.below, posterior.within, posterior.above) == pytest.approx(
        (t2_cdf(0.2 / scale), 0.0, 1 - t2_cdf(0.2 / scale)), abs=1e-12)
    # Candidates: the best among them (2 and 5: 5, mean 0.8).
    assert sig.mark_instances(folds, "test_acc", True, 0.05, candidates=[2, 5])[0] == 5


def test_the_posterior_points_in_the_metrics_better_direction_with_a_rope():
    # Rope 0.05: P(2 - 1 < -0.05) = F(0.15 / scale), P(> 0.05) = 1 - F(0.25 / scale). The same for a loss
    # (1 - accuracy, lower is better): "below" is always "the best is better".
    scale = math.sqrt((1 / 3 + 0.5) * 0.01)
    expected = (t2_cdf(0.15 / scale), t2_cdf(0.25 / scale) - t2_cdf(0.15 / scale), 1 - t2_cdf(0.25 / scale))
    folds = {1: _instance([0.8, 0.9, 1.0]), 2: _instance([0.7, 0.7, 0.7])}
    loss = {run: {f: {**rec, "test_loss": 1 - rec["test_acc"]} for f, rec in fs.items()} for run, fs in folds.items()}
    for column, higher, data in (("test_acc", True, folds), ("test_loss", False, loss)):
        best, marks = sig.mark_instances(data, column, higher, 0.05, rope=0.05)
        posterior = marks[2].posterior
        assert best == 1 and (posterior.below, posterior.within, posterior.above) == pytest.approx(expected, abs=1e-9)


def test_a_given_best_is_kept_unless_it_has_no_folds_or_diverged():
    # The best chosen on validation may be worse on test: the other is then "better than the best".
    # d = [-0.7, -0.8, -0.8]: p = 0.00469 (one test: Holm changes nothing).
    folds = {1: _instance([0.8, 0.9, 1.0]), 2: _instance([0.1, 0.1, 0.2]),
             3: _instance([0.99, 0.99, 0.99], diverged=(1,))}
    best, marks = sig.mark_instances(folds, "test_acc", True, 0.05, best=2)
    assert best == 2 and marks[1].verdict == sig.BETTER and marks[1].p < 0.01 and marks[2].verdict == sig.BEST
    for unusable in (99, 3):  # no such instance, a diverged one: the best mean instead
        assert sig.mark_instances(folds, "test_acc", True, 0.05, best=unusable)[0] == 1
    nothing = {1: _instance([math.nan]), 2: {}}
    assert sig.mark_instances(nothing, "test_acc", True, 0.05) == (
        None, {1: sig.Mark(sig.UNTESTED, why="no folds"), 2: sig.Mark(sig.UNTESTED, why="no folds")})


def test_two_folds_validated_within_training_items_are_not_tested():
    # min_folds=3 (TESS's two folds): two common folds are quoted, not tested; one is too few.
    folds = {1: _instance([0.9, 0.8]), 2: _instance([0.7, 0.6]), 3: _instance([0.5])}
    _, marks = sig.mark_instances(folds, "test_acc", True, 0.05, min_folds=3)
    assert (marks[2].k, marks[2].why) == (2, sig.TWO_FOLDS)
    assert (marks[3].k, marks[3].why) == (1, "1 common fold(s) with the best; 3 needed")


def test_the_test_train_ratio_of_records_without_recorded_sizes():
    # Older records: n_test = len(test_true) = 20, n_train = 4 training items x 10 datapoints per test
    # item (20 / 2): ratio 0.5, t = 0.2 / sqrt((1/3 + 1/2) 0.01) = 2.19089.
    folds = {1: _instance([0.8, 0.9, 1.0]), 2: _instance([0.7, 0.7, 0.7])}
    for run in folds.values():
        for f, rec in run.items():
            del rec["n_test"], rec["n_train"]
            rec.update(test_items=[f"t{f}a", f"t{f}b"], train_items=["a", "b", "c", "d"], test_true=np.zeros(20))
    _, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert marks[2].ratio == 0.5 and marks[2].t == pytest.approx(0.2 / math.sqrt((1 / 3 + 0.5) * 0.01))
    # Recorded sizes count however small: 1 test and 1 training datapoint, ratio 1: t = 0.2 / sqrt((4/3) 0.01).
    for run in folds.values():
        for rec in run.values():
            rec.update(n_test=1, n_train=1)
    _, marks = sig.mark_instances(folds, "test_acc", True, 0.05)
    assert marks[2].ratio == 1.0 and marks[2].t == pytest.approx(0.2 / math.sqrt((1 / 3 + 1) * 0.01))


# --- repeated grouped k-fold --------------------------------------------------------------------
def test_repeated_folds_partition_the_items_once_per_repeat():
    items = [f"s{i}" for i in range(10)]
    labels = {item: np.array([i % 3] * 4) for i, item in enumerate(items)}
    plan = plan_repeated_folds(items, 5, 3, 0.2, 0.2, seed=7, labels=labels)
    assert [f.index for f in plan] == list(range(1, 16))
    assert [(f.repeat, f.number) for f in plan[4:6]] == [(1, 5), (2, 1)]
    tests = {}
    for fold in plan:
        assert not set(fold.train) & set(fold.val) and not set(fold.train) & set(fold.test)
        assert not set(fold.val) & set(fold.test)
        assert len(fold.train) + len(fold.val) + len(fold.test) == 10
        tests.setdefault(fold.repeat, []).extend(fold.test)
    assert all(sorted(t) == sorted(items) for t in tests.values())  # every item tested once per repeat
    partitions = [frozenset(frozenset(f.test) for f in plan if f.repeat == r) for r in (1, 2, 3)]
    assert len(set(partitions)) == 3  # three different partitions
    # Repeat 1 is the one-repeat plan itself (existing results resume).
    single = plan_folds(items, 5, 0.2, 0.2, seed=7, labels=labels)
    assert [(f.train, f.val, f.test) for f in plan[:5]] == [(f.train, f.val, f.test) for f in single]
    assert plan == plan_repeated_folds(items, 5, 3, 0.2, 0.2, seed=7, labels=labels)  # deterministic


# --- sweeps -------------------------------------------------------------------------------------
def test_sweep_ids_are_stable_when_a_value_is_appended():
    base = {1: {"architecture": "MLP_model", "reshaping_type": "none"},
            2: {"architecture": "MLP_model", "reshaping_type": "none", "comment_1": "x", "comment_2": "y"}}
    first, swept = expand(base, {1: ["learning_rate=[0.01, 0.001]", 'optimizer=["adam", "sgd"]']}, "exp.py")
    assert sorted(first) == [2, 10101, 10102, 10201, 10202]
    assert first[10102]["learning_rate"] == 0.01 and first[10102]["optimizer"] == "sgd"
    assert first[10102]["comment_1"] == "sweep of instance 1"
    assert first[10102]["comment_2"] == "learning_rate=0.01, optimizer='sgd'"
    assert swept == {i: ["learning_rate", "optimizer"] for i in (10101, 10102, 10201, 10202)}
    later, _ = expand(base, {1: {"learning_rate": [0.01, 0.001, 0.1], "optimizer": ["adam", "sgd"]}}, "exp.py")
    assert {k: v for k, v in later.items() if k in first} == first  # the same IDs, the same parameters
    assert sorted(set(later) - set(first)) == [10301, 10302]
    # A shared sweep (names as keys) applies to every instance.
    both, _ = expand(base, {"seed": [1, 2]}, "exp.py")
    assert sorted(both) == [101, 102, 201, 202] and both[201]["comment_1"] == "x"
    assert combination_id(3, (0, 11, 2)) == 3011203


@pytest.mark.parametrize("sweep, message", [
    ({1: ["learning_rate=0.01"]}, "should list the values to sweep"),
    ({1: {"seed": [1, 1]}}, "lists a value twice"),
    ({7: {"seed": [1, 2]}}, "sweep[7] names no instance"),
    ({1: {"architecture": ["MLP_model"]}}, "which its sweep also sets"),
    ({1: ["learning_rate=[0.1, __import__('os')]"]}, "not a Python literal"),
    ([1, 2], "sweep should be a dict"),
])
def test_bad_sweeps_are_one_line_errors(sweep, message):
    base = {1: {"architecture": "MLP_model", "reshaping_type": "none"}}
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand(base, sweep, "exp.py")


SWEEP_SETTINGS = ["num_epochs=1", 'framework="torch"', "tensorboard=False", "batch_size=64"]


def sweep_experiment(tmp_path, values: list[float], **settings):
    extra = ("sweep = {}\n"
             f"sweep[1] = ['learning_rate={values!r}', 'hidden_sizes=[(8,), (4,)]']\n")
    return write_experiment(tmp_path, {1: ['architecture="MLP_model"', 'reshaping_type="none"']}, num_folds=2,
                            global_parameters=SWEEP_SETTINGS, extra=extra, **settings)


def test_status_of_a_sweep_names_each_combination_by_its_values(tmp_path, config_file):
    path = sweep_experiment(tmp_path, [0.01, 0.001])
    result = xval("status", path, "--config", config_file)
    assert result.exit_code == 0, result.output
    comments = {cells[0]: cells[1] for line in result.output.splitlines()
                if len(cells := [c.strip() for c in line.split("│")[1:-1]]) > 2 and cells[0].isdigit()}
    assert comments == {  # not 'sweep of instance 1' four times
        "10101": "sweep of instance 1: learning_rate=0.01, hidden_sizes=(8,)",
        "10102": "sweep of instance 1: learning_rate=0.01, hidden_sizes=(4,)",
        "10201": "sweep of instance 1: learning_rate=0.001, hidden_sizes=(8,)",
        "10202": "sweep of instance 1: learning_rate=0.001, hidden_sizes=(4,)",
    }


def test_sweep_run_then_a_value_appended_keeps_the_old_combinations(tmp_path, config_file):
    path = sweep_experiment(tmp_path, [0.01, 0.001])
    result = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    folder = path.parent / "results" / "demo" / "experiment_1"
    store = ExperimentStore(folder, "demo", 1)
    old = {p.name: p.read_bytes() for p in (folder / "results" / "folds").iterdir()}
    assert len(old) == 8  # 4 combinations x 2 folds
    # The pivot: learning_rate x hidden_sizes, in the order of the lists.
    from openpyxl import load_workbook

    wb = load_workbook(store.spreadsheet_path)
    assert wb.sheetnames[:2] == ["summary", "pivot"]
    pivot = wb["pivot"]
    assert [pivot.cell(row=2, column=j).value for j in (2, 3)] == ["(8,)", "(4,)"]
    assert [pivot.cell(row=i, column=1).value for i in (3, 4)] == ["0.01", "0.001"]
    cells = [pivot.cell(row=i, column=j).value for i in (3, 4) for j in (2, 3)]
    assert all(c and "±" in c for c in cells)
    assert (folder / "plots" / "demo_exp1_pivot.png").is_file()

    path = sweep_experiment(tmp_path, [0.01, 0.001, 0.1])  # one value appended
    result = xval("plan", path, "--config", config_file)
    assert result.exit_code == 0, result.output
    for new_id in ("10301", "10302"):
        assert new_id in result.output
    result = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    for instance_id in (10101, 10102, 10201, 10202):
        assert f"instance {instance_id}: all 2 folds already done, skipped" in result.output
    after = {p.name: p.read_bytes() for p in (folder / "results" / "folds").iterdir()}
    assert len(after) == 12 and all(after[name] == data for name, data in old.items())
    # Selecting by ID works on the expanded list.
    result = xval("run", path, "10301", "10302", "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0 and "instance 10301: all 2 folds already done" in result.output


def test_repeated_run_records_the_repeat_and_tests_over_all_folds(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: ['architecture="MLP_model"', 'reshaping_type="none"', 'comment_1="a"',
                                           'comment_2="b"'],
                                       2: ['architecture="MLP_model"', 'reshaping_type="none"', 'comment_1="c"',
                                           'comment_2="d"', "learning_rate=0.01"]},
                            num_folds=2, num_repeats=2, global_parameters=SWEEP_SETTINGS)
    result = xval("run", path, "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    assert "instance 1 repeat 2 fold 1/2" in result.output
    folder = path.parent / "results" / "demo" / "experiment_1"
    with open(folder / "results" / "folds" / "demo_exp1_run1_fold3.pkl", "rb") as handle:
        saved = pickle.load(handle)
    assert saved["num_folds"] == 4 and (saved["record"]["repeat"], saved["record"]["fold_in_repeat"]) == (2, 1)
    folds, summary = __import__("xvalkit").load_results(folder)
    assert sorted(zip(folds["ID"], folds["repeat"], folds["fold_in_repeat"])) == [
        (i, r, f) for i in (1, 2) for r in (1, 2) for f in (1, 2)]
    # Each repeat tests every item once.
    for (run, repeat), group in folds.groupby(["ID", "repeat"]):
        items = " ".join(group["test_items"]).split()
        assert sorted(items) == [f"spk{i:02d}" for i in range(1, 9)], (run, repeat)
    # The summary is over the 4 folds, the test over 4 pairs (3 degrees of freedom).
    assert list(summary["folds_done"]) == [4, 4]
    assert summary.set_index("ID").loc[1, "test_mean_acc"] == pytest.approx(
        folds[folds["ID"] == 1]["test_acc"].mean())
    from openpyxl import load_workbook

    ws = load_workbook(folder / "demo_exp1_results.xlsx")["summary"]
    names = summary_header(ws)
    rows = [r for r in ws.iter_rows(min_row=3, values_only=True) if isinstance(r[0], int)]
    tested = [r for r in rows if r[names.index("test WA (accuracy) vs best verdict")] != "best"]
    assert len(tested) == 1 and tested[0][names.index("test WA (accuracy) vs best p (Holm)")] is not None
    # The selection row and the notes name the procedure and the references.
    column_a = [c.value for c in ws["A"]]
    assert "selection" in column_a
    notes = " ".join(str(v) for v in column_a if isinstance(v, str))
    assert "Bouckaert and Frank 2004" in notes and "Holm" in notes and "validation WA (accuracy)" in notes
