"""Parallel folds on the CPU, and what reusing a worker process saves.

1. `--cpu-workers 2` against `--cpu-workers 1` on the same 8 folds (goal: 1.8x or more on 2 cores).
2. Per-fold cost of a reused worker process (xvalkit's local pool) against a fresh Python process
   per fold (the original scripts' way: every fold pays the TensorFlow import and start-up).

    python benchmarks/scaling.py [--folds 8] [--epochs 4]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

from xvalkit.executors import plan_slots  # noqa: E402
from xvalkit.executors.inprocess import InProcessExecutor  # noqa: E402
from xvalkit.executors.local import LocalPoolExecutor  # noqa: E402
from xvalkit.experiment import load_experiment  # noqa: E402
from xvalkit.runner import RunOptions, make_jobs, prepare  # noqa: E402


class Quiet:
    """A listener that only counts."""

    def __init__(self):
        self.done = 0

    def started(self, job, where): pass
    def epoch(self, job, epoch, logs): pass
    def failed(self, job, error): raise RuntimeError(error)
    def should_skip(self, job): return False

    def finished(self, job, record):
        self.done += 1


def experiment(folder: Path, folds: int, epochs: int) -> Path:
    params = [f"num_epochs={epochs}", f"patience={epochs}", "tensorboard=False", "channels_1=8",
              "channels_2=16", "hidden_size=32"]
    path = folder / "scaling_exp.py"
    path.write_text(
        "short_description = 'scaling benchmark'\ndataset = 'demo'\nnum_experiment = 1\n"
        f"num_folds = {folds}\nexperiment_folder = 'results'\ntask_type = 'classification'\n"
        f"global_parameters = {params!r}\nexperiment = {{1: ['architecture=\"EXAMPLE_model\"', "
        "'reshaping_type=\"conv\"', 'comment_1=\"a\"', 'comment_2=\"b\"']}\n")
    return path


def timed(executor, jobs, folder: Path) -> float:
    shutil.rmtree(folder / "results", ignore_errors=True)
    listener = Quiet()
    start = time.perf_counter()
    executor.run(jobs, listener, debug=True)
    elapsed = time.perf_counter() - start
    assert listener.done == len(jobs)
    return elapsed


def fresh_processes(jobs, folder: Path) -> float:
    """One new interpreter per fold, as the original scripts ran folds."""
    shutil.rmtree(folder / "results", ignore_errors=True)
    start = time.perf_counter()
    for i, job in enumerate(jobs):
        spec = folder / f"job{i}.pkl"
        spec.write_bytes(pickle.dumps(job))
        subprocess.run([sys.executable, "-c", "import pickle, sys; from xvalkit.jobs import execute; "
                        f"execute(pickle.load(open({str(spec)!r}, 'rb')))"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "c.ini"
        config.write_text(f"[paths]\ndata_folder = {folder / 'data'}\n")
        exp = load_experiment(experiment(folder, args.folds, args.epochs), config_file=config)
        _, (inst,), _ = prepare(exp, RunOptions())
        jobs = make_jobs(exp, inst)
        figures = {}
        for workers in (1, 2):
            # Cold: what one `xval run --cpu-workers N` costs, worker start-up (spawn + framework
            # import) included. Warm: the same jobs again on the started workers (throughput).
            pool = LocalPoolExecutor(plan_slots(None, 1, workers), keep_workers=True)
            figures[f"{workers} cold"] = timed(pool, jobs, folder)
            figures[f"{workers} warm"] = timed(pool, jobs, folder)
            pool.close()
        t_inproc = timed(InProcessExecutor("CPU"), jobs, folder)
        t_fresh = fresh_processes(jobs, folder)
    n = len(jobs)
    print(f"{n} folds x {args.epochs} epochs of EXAMPLE_model on the demo data, {os.cpu_count()} cores")
    for state in ("cold", "warm"):
        t1, t2 = figures[f"1 {state}"], figures[f"2 {state}"]
        print(f"  {state}: 1 CPU worker {t1:6.2f} s, 2 CPU workers {t2:6.2f} s: speed-up {t1 / t2:.2f}x")
    print(f"  in-process (the default, warm) {t_inproc:6.2f} s ({t_inproc / n:.2f} s per fold)")
    print(f"  fresh process per fold    {t_fresh:6.2f} s ({t_fresh / n:.2f} s per fold): a reused worker "
          f"saves {(t_fresh - figures['1 warm']) / n:.2f} s per fold")


if __name__ == "__main__":
    main()
