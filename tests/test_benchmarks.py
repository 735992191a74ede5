"""Every benchmark still runs: each with --quick (its own code path at the smallest size) in a
subprocess, from another folder, and the figures it prints are read back: a benchmark broken by a
change fails here, not on the day someone wants its figure. benchmarks/ray_nodes.py is run in
tests/test_ray_cluster.py, with the other Ray tests (one Ray cluster at a time on the machine).

Where a benchmark's own code is the same for both frameworks, the cheaper torch runs
here (each TensorFlow import costs seconds on the 2-core CI machine); overhead.py's bare loop is Keras.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"([-+]?\d+(?:\.\d+)?)"


def run_benchmark(tmp_path: Path, name: str, *args: str, **env: str) -> str:
    """`python benchmarks/<name> --quick ARGS` run in tmp_path (its temporary files there too, unless
    `env` says otherwise): its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": "-1",
           "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--quick", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{name} --quick failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def figures(pattern: str, text: str, count: int = 1) -> list[tuple[float, ...]]:
    """The numbers of every line matching `pattern` (its groups), `count` such lines expected."""
    found = [tuple(float(v) for v in m.groups()) for m in re.finditer(pattern, text)]
    assert len(found) == count, f"expected {count} line(s) matching {pattern!r} in:\n{text}"
    return found


def ratio_rounding(a: float, b: float, digits: int = 2) -> float:
    """How far a / b can be from the ratio of the unrounded values, a and b printed to `digits` decimals
    and the ratio too."""
    half = 0.5 * 10 ** -digits
    return (a + half) / (b - half) - a / b + half + 1e-9  # the widest: a rounded down, b rounded up


def test_scaling(tmp_path):
    out = run_benchmark(tmp_path, "scaling.py", "--framework", "torch")
    assert "2 folds x 1 epochs of EXAMPLE_model (torch)" in out
    rows = figures(rf"(?:cold|warm): 1 CPU worker +{NUMBER} s, 2 CPU workers +{NUMBER} s: speed-up {NUMBER}x "
                   rf"\(goal 1.8x\); against 1 worker with 1 thread \( *{NUMBER} s\): {NUMBER}x", out, count=2)
    for one, two, speed_up, one_thread, against_one_thread in rows:
        assert min(one, two, one_thread) > 0
        assert speed_up == pytest.approx(one / two, abs=ratio_rounding(one, two))
        assert against_one_thread == pytest.approx(one_thread / two, abs=ratio_rounding(one_thread, two))
    ((total, per_fold),) = figures(rf"in-process \(the default, warm\) +{NUMBER} s \({NUMBER} s per fold\)", out)
    assert per_fold == pytest.approx(total / 2, abs=0.01)
    ((fresh, fresh_per_fold, saved),) = figures(
        rf"fresh process per fold +{NUMBER} s \({NUMBER} s per fold\): a reused worker saves {NUMBER} s per fold", out)
    assert fresh_per_fold == pytest.approx(fresh / 2, abs=0.01)
    warm_one_worker = rows[1][0]
    assert saved == pytest.approx((fresh - warm_one_worker) / 2, abs=0.011)


def test_overhead(tmp_path):
    out = run_benchmark(tmp_path, "overhead.py")
    assert "2 folds x 1 epochs, 2 repeats" in out
    spread = rf"{NUMBER} \({NUMBER} to {NUMBER}\)"
    ((bare_median, bare_min, bare_max),) = figures(rf"bare +{spread}\n", out)
    rows = figures(rf"xval(?: \(tensorboard off\))? +{spread}   overhead per fold {spread}, goal under 0.25", out, count=2)
    assert 0 < bare_min <= bare_median <= bare_max
    for median, low, high, overhead, overhead_low, overhead_high in rows:
        assert 0 < low <= median <= high
        assert overhead_low <= overhead <= overhead_high
        # two repeats: each overhead is (xval - bare) of one repeat, so their median is the difference of the
        # two means, which are the medians (each printed to 0.001)
        assert overhead == pytest.approx(median - bare_median, abs=0.002)


def test_frameworks(tmp_path):
    out = run_benchmark(tmp_path, "frameworks.py", "--frameworks", "torch")  # its code is the same for Keras
    ((rate,),) = figures(rf"torch +{NUMBER} epochs/s  on CPU", out)
    assert rate > 0


def test_memory(tmp_path):
    out = run_benchmark(tmp_path, "memory.py", "--frameworks", "torch", "--where", str(tmp_path))
    ((rss, _),) = figures(rf"generator, 1 worker, torch: peak RSS {NUMBER} GB .* {NUMBER} s\n", out)
    assert rss > 0
    one, two = figures(rf"in-memory, torch, --cpu-workers [12]: peak PSS of the process tree {NUMBER} GB", out, count=2)
    ((ratio,),) = figures(rf"two workers / one worker PSS: {NUMBER}x", out)
    assert ratio == pytest.approx(two[0] / one[0], abs=ratio_rounding(two[0], one[0]))
    figures(rf"torch: in-memory {NUMBER} epochs/s .* generator {NUMBER} epochs/s .*: {NUMBER}x \(goal >= 0.8x\); "
            "same test accuracy: True", out)
    figures(rf"in-memory from the old .npz files: {NUMBER} epochs/s .* same test accuracy: True", out)
    assert "removed" in out  # its temporary folder
    assert not list(tmp_path.glob("xval_memory_*"))


def test_many_instances(tmp_path):
    out = run_benchmark(tmp_path, "many_instances.py", "--frameworks", "torch")
    assert "torch: MLP_model (8,), 1 epoch, 3 folds" in out
    figure = r"([-+]?\d+(?:\.\d+)?|nan)"  # a memory sample may be missing on a fast run
    row = r"\n +" + " +".join([figure] * 10) + f" +-> +{figure} +{figure}\n"  # N, folds, ... RSS at 25% -> 100%
    ((n, folds, bare, xval, own_ms, report_s, _, plan_s, *_),) = figures(row, out)
    assert (n, folds) == (2, 6)
    assert own_ms == pytest.approx((xval - bare) / folds * 1000, abs=2)  # bare and xval are printed to 0.01 s
    assert report_s > 0 and plan_s > 0


def test_augment(tmp_path):
    out = run_benchmark(tmp_path, "augment.py")
    ((best, *_),) = figures(rf"headline: .*: {NUMBER}x best against best; per round {NUMBER}x \(median {NUMBER}x\)", out)
    assert best > 0
    speeds = figures(rf"\n(?:audiomentations|xvalkit|xval augment).* +{NUMBER} +{NUMBER}x", out, count=9)
    assert speeds[0][1] == 1.0  # the baseline row against itself
    engines = figures(rf"\n.*\(.*\) +{NUMBER} +{NUMBER}(?=\n|$)", out.split("time stretch, pitch kept")[1], count=6)
    assert all(speed > 0 and distance >= 0 for speed, distance in engines)


def test_preprocess(tmp_path):
    out = run_benchmark(tmp_path, "preprocess.py")
    for kind in ("stft", "mfcc"):
        figures(rf"{kind}: features only: naive {NUMBER} \(1 BLAS thread {NUMBER}\), pipeline {NUMBER} -> {NUMBER}x", out)
        figures(rf"{kind}: saved dataset: .* -> {NUMBER}x .*identical features: (?:True|False)", out)


def test_gpu_without_a_gpu_says_so_in_one_line(tmp_path):
    out = run_benchmark(tmp_path, "gpu.py")  # CUDA_VISIBLE_DEVICES=-1: no GPU, whatever the machine has
    assert out == "benchmarks/gpu.py: no NVIDIA GPU on this machine (nvidia-smi -L lists none); nothing measured\n"


def test_determinism(tmp_path):
    out = run_benchmark(tmp_path, "determinism.py", "--frameworks", "torch")
    ((on, off, ratio),) = figures(rf"torch +deterministic +{NUMBER} +framework defaults +{NUMBER} +ratio {NUMBER}x  on CPU", out)
    assert on > 0 and off > 0 and ratio > 0


def test_fused(tmp_path):
    out = run_benchmark(tmp_path, "fused.py")
    assert "2 instances x 2 folds x 1 epochs of EXAMPLE_model (torch) on CPU" in out
    rows = figures(rf"(?:unfused|fused K=\d+) +{NUMBER} s  {NUMBER} folds +{NUMBER} folds/min +{NUMBER}x unfused\n",
                   out, count=3)
    unfused_per_minute = rows[0][2]
    for wall, folds, per_minute, ratio in rows:
        assert folds == 4 and wall > 0
        assert per_minute == pytest.approx(folds / wall * 60, rel=0.01)
        assert ratio == pytest.approx(per_minute / unfused_per_minute, abs=0.02)


def test_data_digest(tmp_path):
    out = run_benchmark(tmp_path, "data_digest.py")
    ((read, checked),) = figures(rf"per training process: read and hash {NUMBER} s, check the run's fingerprint {NUMBER} ms", out)
    ((before, now),) = figures(rf"a reproduced fold: {NUMBER} s before, {NUMBER} s now", out)
    assert read >= 0 and checked > 0 and before >= now >= 0
