"""xvalkit's own cost per fold at sweep scale: N instances x 3 folds of a trivial model.

For each N (default 10, 100, 1000) and framework (torch, keras), in one process after a warm-up:
- bare: a hand-written loop over the same folds (standardise, build, fit 1 epoch with validation,
  predict the three sets), saving nothing; torch on one thread, as xvalkit trains this tiny model
  (threads.py), so the comparison is with the fastest plain loop;
- xval: `run_experiment` on an experiment of N instances (a sweep over the seed), which also writes
  every model, fold record, log, the instance pickles, the report refreshes and the final report
  with every plot.
It prints both wall times, xvalkit's own cost per fold ((xval - bare) / folds), the time of the
final report alone (`xval report --force` of the finished folder: every table and sheet, the plots
kept), that of `xval report` finding it up to date, that of `xval plan` of the experiment (a fresh
process, as a user runs it), the process's resident memory once a quarter
of the folds are recorded and once all are (before the final report): what the runner keeps per
finished fold, and the peak of a training worker's (from 100 folds, Keras trains in one, replaced
as it grows: runner.KERAS_WORKER_FROM).

    python benchmarks/many_instances.py [--sizes 10,100,1000] [--frameworks torch,keras] [--profile N]
                                        [--stages N] [--keep DIR]
    python benchmarks/many_instances.py --quick   # N = 2: checks that it runs
`--stages N` times xvalkit's main steps in the run at N with plain clocks (cProfile slows pure
Python 2-3x) and prints them in ms per fold: what is left of the own cost, and where.
Goals (issue 29, on the 2-core machine): under 25 ms per fold at N = 100 and 1000, under 60 at
N = 10; the final report of 1000 instances under 20 s; `xval plan` of 1000 instances under 2 s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from xvalkit.data import load_dataset  # noqa: E402
from xvalkit.experiment import load_experiment  # noqa: E402
from xvalkit.runner import RunOptions, plan_instances, run_experiment  # noqa: E402

FOLDS = 3
MODEL = {"hidden_sizes": (8,), "dropout": 0.0, "regularization_lambda": 0.0}
BATCH = 64


def write_experiment(folder: Path, framework: str, n: int) -> Path:
    params = [f'framework="{framework}"', "num_epochs=1", "tensorboard=False", f"batch_size={BATCH}",
              *[f"{k}={v!r}" for k, v in MODEL.items()]]
    text = (
        "short_description = 'many instances'\ndataset = 'demo'\nnum_experiment = 1\n"
        f"num_folds = {FOLDS}\nexperiment_folder = 'results_{framework}_{n}'\ntask_type = 'classification'\n"
        f"global_parameters = {params!r}\n"
        "experiment = {1: ['architecture=\"MLP_model\"', 'reshaping_type=\"none\"']}\n"
        # n identical instances: seeds x patience values (patience is inert with one epoch), as a sweep
        # allows at most 99 values per parameter.
        f"sweep = {{'seed': list(range({min(n, 50)})), 'patience': list(range(1, {n // min(n, 50) + 1}))}}\n"
    )
    path = folder / f"many_{framework}_{n}.py"
    path.write_text(text)
    return path


def _arrays(dataset, fold):
    sets = (("train", fold.train), ("val", fold.val), ("test", fold.test))
    xs = {s: np.concatenate([dataset.predictors[i] for i in items]).astype(np.float32) for s, items in sets}
    ys = {s: np.concatenate([dataset.targets[i] for i in items]).astype(np.int64) for s, items in sets}
    mean, std = xs["train"].mean((0, 1)), xs["train"].std((0, 1)) + 1e-8
    return {s: (x - mean) / std for s, x in xs.items()}, ys


def bare_torch(dataset, folds, n: int) -> float:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    start = time.perf_counter()
    for seed in range(n):
        for fold in folds:
            torch.manual_seed(seed + fold.index)
            xs, ys = _arrays(dataset, fold)
            x = {s: torch.from_numpy(v) for s, v in xs.items()}
            y = {s: torch.from_numpy(v) for s, v in ys.items()}
            model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(xs["train"].shape[1:])), 8), nn.ReLU(),
                                  nn.Linear(8, 4))
            optimiser = torch.optim.Adam(model.parameters(), lr=0.001)
            loss_fn = nn.CrossEntropyLoss()
            model.train()
            order = torch.randperm(len(y["train"]))
            for i in range(0, len(order), BATCH):
                batch = order[i:i + BATCH]
                optimiser.zero_grad()
                loss_fn(model(x["train"][batch]), y["train"][batch]).backward()
                optimiser.step()
            model.eval()
            with torch.no_grad():
                loss_fn(model(x["val"]), y["val"]).item()
                for s in x:
                    torch.softmax(model(x[s]), dim=1).numpy()
    return time.perf_counter() - start


def bare_keras(dataset, folds, n: int) -> float:
    from xvalkit.devices import import_keras

    keras = import_keras()
    start = time.perf_counter()
    for seed in range(n):
        for fold in folds:
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed + fold.index)
            xs, ys = _arrays(dataset, fold)
            inputs = keras.Input(shape=xs["train"].shape[1:])
            hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
            model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(hidden))
            model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(xs["train"], ys["train"], validation_data=(xs["val"], ys["val"]), epochs=1,
                      batch_size=BATCH, verbose=0)
            for s in xs:
                model.predict(xs[s], batch_size=BATCH, verbose=0)
    return time.perf_counter() - start


class RssSampler:
    """This process's resident memory every 0.2 s, beside the number of fold records written: the
    runner's memory after a quarter and after all of the folds (before the final report); and the
    peak of a training worker process's (a long Keras run trains in one, replaced as it grows)."""

    def __init__(self, folds_dir: Path, total: int):
        self.folds_dir, self.total, self.samples = folds_dir, total, []
        self.worker_peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def _rss(pid: str) -> float:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _workers(self) -> list[float]:
        out = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as handle:
                    children = handle.read().split()
                for pid in children:
                    with open(f"/proc/{pid}/cmdline", "rb") as handle:
                        if b"multiprocessing" in handle.read():
                            out.append(self._rss(pid))
            except OSError:  # a thread or child that just ended
                continue
        return out

    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            try:
                done = sum(1 for _ in os.scandir(self.folds_dir))
            except OSError:
                done = 0
            self.samples.append((done, self._rss("self")))
            self.worker_peak = max([self.worker_peak, *self._workers()])

    def quarter_and_end(self) -> tuple[float, float, float]:
        self.stop.set()
        self.thread.join()
        quarter = next((rss for done, rss in self.samples if done >= self.total / 4), float("nan"))
        end = max((rss for done, rss in self.samples if done >= self.total), default=float("nan"))
        return quarter, end, self.worker_peak


# (module, attribute) pairs timed by --stages: the training path, the writes, the listener, the final report.
STAGES = (("xvalkit.jobs", "_execute"), ("xvalkit.trainers.{framework}", "fit_predict"),
          ("xvalkit.trainers.torch", "_run_pass"), ("xvalkit.trainers.torch", "save"),
          ("xvalkit.trainers.torch", "build"), ("xvalkit.trainers.torch", "predict"),
          ("xvalkit.trainers.torch", "SetBatches"), ("xvalkit.fold_data", "FoldData"),
          ("xvalkit.atomic", "write_with"), ("xvalkit.metrics", "compute"),
          ("xvalkit.store", "ExperimentStore.save_fold"), ("xvalkit.store", "ExperimentStore.rebuild_instance"),
          ("xvalkit.runner", "RunListener.finished"), ("xvalkit.reporting.background", "ReportRefresher.close"))


class StageClocks:
    """Wall-clock totals of the STAGES functions while in use (the functions are wrapped, then restored)."""

    def __init__(self, framework: str):
        import importlib

        self.totals: dict[str, float] = {}
        self.restore = []
        for module_name, name in STAGES:
            module = importlib.import_module(module_name.format(framework=framework))
            owner_name, _, attribute = name.rpartition(".")
            owner = getattr(module, owner_name) if owner_name else module
            if not hasattr(owner, attribute):
                continue
            original = getattr(owner, attribute)
            self.restore.append((owner, attribute, original))
            setattr(owner, attribute, self._timed(f"{module_name.format(framework=framework)}.{name}", original))

    def _timed(self, label: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - start
        return timed

    def close(self, folds: int) -> None:
        for owner, attribute, original in self.restore:
            setattr(owner, attribute, original)
        print("  steps of the run (wall ms per fold; a step's figure includes the steps it calls):", flush=True)
        for label, total in sorted(self.totals.items(), key=lambda kv: -kv[1]):
            print(f"    {label:55s} {total / folds * 1000:8.2f}", flush=True)


def xval_run(path: Path, config: Path, profile: bool, n: int) -> tuple[float, tuple, pstats.Stats | None, tuple]:
    from rich.console import Console

    from xvalkit import report

    exp = load_experiment(path, config_file=config)
    shutil.rmtree(exp.folder, ignore_errors=True)
    profiler = cProfile.Profile() if profile else None
    sampler = RssSampler(exp.folder / "results" / "folds", n * FOLDS)
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    with open(os.devnull, "w") as devnull:
        run_experiment(exp, RunOptions(overwrite=True, quiet=True), console=Console(file=devnull))
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - start
    rss = sampler.quarter_and_end()
    from xvalkit.store import ExperimentStore

    store = ExperimentStore(exp.folder, exp.dataset, exp.num_experiment)
    start = time.perf_counter()
    report.refresh(store, plots=True, config=exp.config, force=True)
    forced_s = time.perf_counter() - start
    start = time.perf_counter()
    assert not report.refresh(store, plots=True, config=exp.config).rebuilt
    up_to_date_s = time.perf_counter() - start
    stats = pstats.Stats(profiler, stream=io.StringIO()) if profiler else None
    return wall, (forced_s, up_to_date_s), stats, rss


def plan_time(path: Path, config: Path) -> float:
    """Wall seconds of `xval plan` of the experiment in a fresh process, start-up and imports included."""
    import subprocess

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xvalkit.cli", "plan", str(path), "--config", str(config)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(SRC)})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--frameworks", default="torch,keras")
    parser.add_argument("--profile", type=int, default=0, help="print a profile of the xval run at this N")
    parser.add_argument("--stages", type=int, default=0, help="time xvalkit's steps in the xval run at this N")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep the experiments (to time "
                        "`xval report / plan / status` on them), instead of a temporary one")
    parser.add_argument("--quick", action="store_true", help="N = 2 only: check that it runs")
    args = parser.parse_args()
    sizes = [2] if args.quick else [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if args.keep is None else args.keep.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "c.ini"
        config.write_text(f"[paths]\ndata_folder = {folder / 'data'}\n")
        for framework in args.frameworks.split(","):
            bare = bare_torch if framework == "torch" else bare_keras
            exp = load_experiment(write_experiment(folder, framework, 2), config_file=config)
            dataset = load_dataset(exp.config.data_folder, "demo")
            folds = plan_instances(exp, RunOptions(), dataset)[0].folds
            bare(dataset, folds, 2)  # warm-up: imports, first traces
            xval_run(exp.path, config, False, 2)
            print(f"{framework}: MLP_model {MODEL['hidden_sizes']}, 1 epoch, {FOLDS} folds, demo data, CPU", flush=True)
            print(f"  {'N':>5} {'folds':>6} {'bare s':>8} {'xval s':>8} {'own ms/fold':>12} {'report s':>9} {'up to date s':>13} {'plan s':>7}"
                  f" {'peak RSS MB':>12} {'RSS MB at 25% -> 100% of folds':>31} {'worker peak MB':>15}", flush=True)
            for n in sizes:
                path = write_experiment(folder, framework, n)
                bare_s = bare(dataset, folds, n)
                clocks = StageClocks(framework) if args.stages == n else None
                xval_s, (report_s, fresh_s), stats, (quarter, end, worker) = xval_run(path, config, args.profile == n, n)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                own = (xval_s - bare_s) / (n * FOLDS) * 1000
                plan_s = plan_time(path, config)
                print(f"  {n:5d} {n * FOLDS:6d} {bare_s:8.2f} {xval_s:8.2f} {own:12.1f} {report_s:9.2f} {fresh_s:13.3f} {plan_s:7.2f}"
                      f" {peak:12.0f} {quarter:20.0f} -> {end:<8.0f} {worker or float('nan'):15.0f}", flush=True)
                if clocks is not None:
                    clocks.close(n * FOLDS)
                if stats is not None:
                    stats.stream = sys.stdout
                    stats.sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
