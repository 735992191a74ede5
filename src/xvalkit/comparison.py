"""How a fold trained again compares with its record: identical, equal within tolerance, or different.

A pure function of the two results and of what differs between their environments (no files, no
framework), so `xval reproduce` prints what it decides and tests can check every case:

- identical: every metric on every set, the history, the test predictions and the weights are
  equal bit for bit, in the same environment (the same versions, platform, CPU, device and
  determinism settings);
- equal within tolerance: where the environment differs (each difference named: torch 2.13.0 ->
  2.11.0, CPU -> GPU 0 ...) or the training is not deterministic (Keras on a GPU), every number
  lies within its tolerance (TOLERANCES, stated in the line);
- different: anything else; the line names what differs first and the first epoch where the
  histories part, by how much. In the same deterministic environment, any difference is one: a
  number edited in the record by hand comes out here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IDENTICAL, WITHIN, DIFFERENT = "identical", "equal within tolerance", "different"
# Fractions (accuracy, UA, F1, precision, recall, R²) by an absolute amount; losses and errors relatively.
FRACTION_TOLERANCE = 0.02
RELATIVE_TOLERANCE = 0.02
PREDICTION_TOLERANCE = 0.02  # absolute, plus RELATIVE_TOLERANCE of the value (regression outputs)
WEIGHT_TOLERANCE = 0.05  # of each weight tensor's largest magnitude
RELATIVE_METRICS = ("loss", "mae", "rmse", "mse")


@dataclass(frozen=True)
class FoldResult:
    """What is compared of one training of a fold."""

    metrics: dict[str, float]  # '<set>_<metric>': value, for every set
    history: dict[str, list[float]]
    predictions: np.ndarray  # the test predictions
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # name: tensor, in the model file's order
    best_epoch: int | None = None


@dataclass(frozen=True)
class Verdict:
    kind: str
    detail: str

    @property
    def reproduced(self) -> bool:
        return self.kind != DIFFERENT


def relative(metric: str) -> bool:
    """Whether a metric or history key is judged relatively (a loss or an error) or absolutely (a fraction)."""
    return any(name in metric for name in RELATIVE_METRICS)


def gap(metric: str, recorded: float, reproduced: float) -> float:
    """The difference as a fraction of the tolerance of `metric` (1: at its edge; inf for a NaN against a number)."""
    if recorded == reproduced or (np.isnan(recorded) and np.isnan(reproduced)):
        return 0.0
    if not (np.isfinite(recorded) and np.isfinite(reproduced)):
        return float("inf")
    diff = abs(recorded - reproduced)
    if relative(metric):
        return diff / (RELATIVE_TOLERANCE * max(abs(recorded), 1e-12))
    return diff / FRACTION_TOLERANCE


def _amount(metric: str, recorded: float, reproduced: float) -> str:
    if relative(metric) and recorded and np.isfinite(recorded) and np.isfinite(reproduced):
        return f"{(reproduced - recorded) / abs(recorded):+.2%}"
    return f"{reproduced - recorded:+.4g}"


def _number(value: float, other: float) -> str:
    """`value` in 6 digits, or in full where that would hide its difference from `other`."""
    return f"{value:.6g}" if f"{value:.6g}" != f"{other:.6g}" else repr(float(value))


def _same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


def history_parting(recorded: dict[str, list[float]], reproduced: dict[str, list[float]], exact: bool) -> str | None:
    """Where the histories part: 'epoch 3: val_loss 0.6931 -> 0.7012 (+1.17%)' (the first epoch
    where a value differs at all, with `exact`, else beyond its tolerance); None if they never do."""
    keys = sorted(set(recorded) | set(reproduced), key=lambda k: (k.startswith("val_"), k))
    epochs = max((len(v) for v in (*recorded.values(), *reproduced.values())), default=0)
    for epoch in range(epochs):
        for key in keys:
            a, b = recorded.get(key, []), reproduced.get(key, [])
            if epoch >= len(a) or epoch >= len(b):
                ran, stopped = ("the reproduction", "the record") if epoch >= len(a) else ("the record", "the reproduction")
                return f"epoch {epoch + 1}: {ran} trained on, {stopped} had stopped"
            if not _same(a[epoch], b[epoch]) and (exact or gap(key, a[epoch], b[epoch]) > 1):
                return f"epoch {epoch + 1}: {key} {a[epoch]:.6g} -> {b[epoch]:.6g} ({_amount(key, a[epoch], b[epoch])})"
    return None


def _prediction_gap(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0 or np.array_equal(a, b, equal_nan=True):
        return 0.0
    allowed = PREDICTION_TOLERANCE + RELATIVE_TOLERANCE * np.abs(a)
    with np.errstate(invalid="ignore"):
        return float(np.nanmax(np.abs(a.astype(np.float64) - b) / allowed))


def _weight_gaps(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str]:
    """(largest gap as a fraction of its tolerance, the tensor's name); inf where the tensors do not pair up."""
    pairs = list(zip(a.items(), b.items()))
    if len(a) != len(b) or any(x.shape != y.shape for (_, x), (_, y) in pairs):
        return float("inf"), "the model's tensors (their number or shapes differ)"
    worst, where = 0.0, ""
    for (name, x), (_, y) in pairs:
        if np.array_equal(x, y):
            continue
        scale = max(float(np.max(np.abs(x))), 1e-12)
        value = float(np.max(np.abs(x.astype(np.float64) - y))) / (WEIGHT_TOLERANCE * scale)
        if value > worst:
            worst, where = value, name
    return worst, where


def compare(recorded: FoldResult, reproduced: FoldResult, environment_differences: list[str],
            deterministic: bool = True) -> Verdict:
    """The verdict on `reproduced` against `recorded` (see the module docstring).

    `environment_differences`: what differs between where each was trained ('torch 2.13.0 ->
    2.11.0'); `deterministic`: whether both trainings were set up to be bit for bit repeatable."""
    names = sorted(set(recorded.metrics) | set(reproduced.metrics))
    metric_gaps = {m: gap(m, recorded.metrics.get(m, float("nan")), reproduced.metrics.get(m, float("nan")))
                   for m in names}
    changed = [m for m in names if not _same(recorded.metrics.get(m, float("nan")), reproduced.metrics.get(m, float("nan")))]
    prediction_gap = _prediction_gap(np.asarray(recorded.predictions), np.asarray(reproduced.predictions))
    weight_gap, weight_name = _weight_gaps(recorded.weights, reproduced.weights)
    exact = (not changed and history_parting(recorded.history, reproduced.history, exact=True) is None
             and prediction_gap == 0 and weight_gap == 0 and recorded.best_epoch == reproduced.best_epoch)
    environment = f"; environment differs: {', '.join(environment_differences)}" if environment_differences else ""
    if not deterministic:
        environment += "; training not deterministic on this device"
    expect_identical = not environment_differences and deterministic
    epochs = len(recorded.history.get("loss", []))
    if exact:
        what = (f"metrics on every set, history of {epochs} epochs, {len(np.asarray(recorded.predictions))} test "
                f"predictions, {len(recorded.weights)} weight tensors, bit for bit")
        return Verdict(IDENTICAL, what) if expect_identical else Verdict(WITHIN, f"bit for bit in fact{environment}")
    parting = history_parting(recorded.history, reproduced.history, exact=expect_identical)
    within = (not expect_identical and all(g <= 1 for g in metric_gaps.values()) and parting is None
              and prediction_gap <= 1 and weight_gap <= 1)
    if within:
        return Verdict(WITHIN, _tolerance_line(metric_gaps, prediction_gap, weight_gap) + environment)
    return Verdict(DIFFERENT, _difference_line(recorded, reproduced, changed if expect_identical else
                                               [m for m in changed if metric_gaps[m] > 1], parting,
                                               prediction_gap, (weight_gap, weight_name), expect_identical) + environment)


def _tolerance_line(metric_gaps: dict[str, float], prediction_gap: float, weight_gap: float) -> str:
    fractions = sorted({m.split("_", 1)[-1] for m in metric_gaps if not relative(m)})
    errors = sorted({m.split("_", 1)[-1] for m in metric_gaps if relative(m)})
    worst = max(metric_gaps, key=metric_gaps.get, default=None)
    parts = [f"metrics within ±{FRACTION_TOLERANCE:g} ({', '.join(fractions)})" if fractions else "",
             f"±{RELATIVE_TOLERANCE:.0%} ({', '.join(errors)})" if errors else ""]
    text = " and ".join(p for p in parts if p)
    if worst is not None and metric_gaps[worst] > 0:
        text += f", {worst} using {metric_gaps[worst]:.0%} of its tolerance"
    return (f"{text}; history within ±{RELATIVE_TOLERANCE:.0%} / ±{FRACTION_TOLERANCE:g} at every epoch; "
            f"test predictions within ±({PREDICTION_TOLERANCE:g} + {RELATIVE_TOLERANCE:.0%}) ({prediction_gap:.0%} of it); "
            f"weights within {WEIGHT_TOLERANCE:.0%} of each tensor's largest ({weight_gap:.0%} of it)")


def _difference_line(recorded: FoldResult, reproduced: FoldResult, changed: list[str], parting: str | None,
                     prediction_gap: float, weights: tuple[float, str], exact: bool) -> str:
    limit = 0 if exact else 1
    parts = []
    for m in changed[:3]:
        a, b = recorded.metrics.get(m, float("nan")), reproduced.metrics.get(m, float("nan"))
        parts.append(f"{m} {_number(a, b)} recorded, {_number(b, a)} reproduced")
    if len(changed) > 3:
        parts.append(f"{len(changed) - 3} more metric(s)")
    if prediction_gap > limit:
        parts.append("test predictions differ" + ("" if exact else f" ({prediction_gap:.1f}x their tolerance)"))
    if weights[0] > limit:
        parts.append(f"weights differ ({weights[1]})")
    if recorded.best_epoch != reproduced.best_epoch:
        parts.append(f"best epoch {recorded.best_epoch} recorded, {reproduced.best_epoch} reproduced")
    if parting is not None:
        parts.append(f"the histories part at {parting}")
    else:
        epochs = len(recorded.history.get("loss", []))
        parts.append(f"the histories agree on all {epochs} epochs" + (" (was the record edited?)" if changed else ""))
    return "; ".join(parts)
