"""Parallel folds on the CPU, and what reusing a worker process saves.

1. `--cpu-workers 2` against `--cpu-workers 1` on the same 8 folds (goal: 1.8x or more on 2 cores).
   The thread policy splits the cores between the workers (executors.plan_slots): one worker gets
   them all, two get half each. So the one-worker run also uses every core, and the speed-up says
   how much better two one-thread folds use the cores than one many-thread fold. A third row runs
   one worker with one thread: against it, two workers show the speed-up of the processes alone.
2. Per-fold cost of a reused worker process (xvalkit's local pool) against a fresh Python process
   per fold (the original scripts' way: every fold pays the framework's import and start-up).

Every timed run trains in a fresh experiment folder, prepared as `xval run` prepares one.

    python benchmarks/scaling.py [--folds 8] [--epochs 4] [--framework keras|torch]
    python benchmarks/scaling.py --quick      # 2 folds x 1 epoch: the same code path, to check it runs
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

from xvalkit.executors import Slot, plan_slots  # noqa: E402
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
    def note(self, line): pass

    def finished(self, job, record):
        self.done += 1


def experiment(folder: Path, tag: str, folds: int, epochs: int, framework: str) -> Path:
    params = [f"num_epochs={epochs}", f"patience={epochs}", "tensorboard=False", "channels_1=8",
              "channels_2=16", "hidden_size=32", f'framework="{framework}"']
    path = folder / f"scaling_{tag}.py"
    path.write_text(
        "short_description = 'scaling benchmark'\ndataset = 'demo'\nnum_experiment = 1\n"
        f"num_folds = {folds}\nexperiment_folder = 'results_{tag}'\ntask_type = 'classification'\n"
        f"global_parameters = {params!r}\nexperiment = {{1: ['architecture=\"EXAMPLE_model\"', "
        "'reshaping_type=\"conv\"', 'comment_1=\"a\"', 'comment_2=\"b\"']}\n")
    return path


class FreshJobs:
    """The same folds, in a new experiment folder for every run (a run's jobs write into the folder
    it made; deleting it under them is the fault the jobs stop on)."""

    def __init__(self, folder: Path, folds: int, epochs: int, framework: str):
        self.folder, self.folds, self.epochs, self.framework = folder, folds, epochs, framework
        self.config = folder / "c.ini"
        self.config.write_text(f"[paths]\ndata_folder = {folder / 'data'}\n")
        self.runs = 0

    def __call__(self) -> list:
        self.runs += 1
        exp = load_experiment(experiment(self.folder, f"run{self.runs}", self.folds, self.epochs, self.framework),
                              config_file=self.config)
        _, (inst,), store = prepare(exp, RunOptions())
        store.write_description(exp.short_description)  # makes the folder, as `xval run` does before training
        return make_jobs(exp, inst)


def timed(executor, jobs) -> float:
    listener = Quiet()
    start = time.perf_counter()
    executor.run(jobs, listener, debug=True)
    elapsed = time.perf_counter() - start
    assert listener.done == len(jobs)
    return elapsed


def fresh_processes(jobs, folder: Path) -> float:
    """One new interpreter per fold, as the original scripts ran folds."""
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
    parser.add_argument("--framework", choices=("keras", "torch"), default="keras")
    parser.add_argument("--quick", action="store_true", help="2 folds x 1 epoch: check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.epochs = 2, 1
    cores = os.cpu_count() or 1
    pools = {"1 CPU worker": plan_slots(None, 1, 1), "2 CPU workers": plan_slots(None, 1, 2),
             "1 CPU worker, 1 thread": [Slot(None, 1)]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fresh_jobs = FreshJobs(folder, args.folds, args.epochs, args.framework)
        figures = {}
        for name, slots in pools.items():
            # Cold: what one `xval run --cpu-workers N` costs, worker start-up (spawn + framework
            # import) included. Warm: the same folds again on the started workers (throughput).
            pool = LocalPoolExecutor(slots, keep_workers=True)
            figures[name, "cold"] = timed(pool, fresh_jobs())
            figures[name, "warm"] = timed(pool, fresh_jobs())
            pool.close()
        t_inproc = timed(InProcessExecutor("CPU"), fresh_jobs())
        t_fresh = fresh_processes(fresh_jobs(), folder)
    n = args.folds
    print(f"{n} folds x {args.epochs} epochs of EXAMPLE_model ({args.framework}) on the demo data, {cores} cores; "
          f"threads per worker: {', '.join(f'{slots[0].threads} ({name})' for name, slots in pools.items())}")
    for state in ("cold", "warm"):
        t1, t2, t1t = (figures[name, state] for name in pools)
        print(f"  {state}: 1 CPU worker {t1:6.2f} s, 2 CPU workers {t2:6.2f} s: speed-up {t1 / t2:.2f}x "
              f"(goal 1.8x); against 1 worker with 1 thread ({t1t:6.2f} s): {t1t / t2:.2f}x")
    print(f"  in-process (the default, warm) {t_inproc:6.2f} s ({t_inproc / n:.2f} s per fold)")
    print(f"  fresh process per fold    {t_fresh:6.2f} s ({t_fresh / n:.2f} s per fold): a reused worker "
          f"saves {(t_fresh - figures['1 CPU worker', 'warm']) / n:.2f} s per fold")


if __name__ == "__main__":
    main()
