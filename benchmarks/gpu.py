"""GPU figures, on a machine with an NVIDIA GPU (install with `pip install -e ".[gpu]"`).

    python benchmarks/gpu.py [--gpu 0] [--epochs 15] [--framework torch|keras]
    python benchmarks/gpu.py --quick          # 2 folds x 1 epoch, --jobs-per-gpu 1 and 2: checks that it runs

The models are trained with --framework (default: torch if it is installed, else Keras), so a
machine without TensorFlow measures the torch half.
1. `xval run --gpu N` of the example CNN on the demo data: the device each fold file records.
2. GPU utilisation during those folds: `nvidia-smi` sampled every 200 ms (mean and 90th percentile
   of the busy %, over the samples taken while a fold trained; goal: 80 % or more).
3. Throughput of small folds with `--jobs-per-gpu 1, 2, 4` (4 instances x 4 folds, 3 epochs each):
   wall time, folds per minute, peak GPU memory used (nvidia-smi), against --jobs-per-gpu 1.
4. Where both frameworks are installed, a mixed Keras + torch experiment in one process (`--gpu N`,
   no workers): both frameworks' folds on the GPU, and the peak memory used (TensorFlow grows its
   memory instead of taking it all).

Every run is a real `xval run` in a fresh folder under a temporary directory. Where no NVIDIA GPU is
present it prints one line saying so and exits with status 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from xvalkit.devices import visible_gpus  # noqa: E402

CNN = ['architecture="EXAMPLE_model"', 'reshaping_type="cnn"', 'comment_2="EXAMPLE_architecture"']
FRAMEWORK_MODULE = {"torch": "torch", "keras": "tensorflow"}


def installed(framework: str) -> bool:
    return importlib.util.find_spec(FRAMEWORK_MODULE[framework]) is not None


def experiment(folder: Path, instances: dict[int, list[str]], global_parameters: list[str], folds: int = 4) -> Path:
    folder.mkdir(parents=True)
    lines = ['short_description = "gpu benchmark"', 'dataset = "demo"', "num_experiment = 1",
             f"num_folds = {folds}", 'experiment_folder = "results"', "overwrite_results = False",
             "debug_mode = False", 'task_type = "classification"', "generator = False",
             f"global_parameters = {global_parameters!r}", "experiment = {}"]
    lines += [f"experiment[{i}] = {spec!r}" for i, spec in instances.items()]
    path = folder / "exp_gpu.py"
    path.write_text("\n".join(lines) + "\n")
    return path


class Sampler:
    """nvidia-smi's utilisation (%) and memory used (MiB) of one GPU, every 200 ms, in a thread."""

    def __init__(self, gpu: int):
        self.samples: list[tuple[float, int, int]] = []
        self.process = subprocess.Popen(
            ["nvidia-smi", "-i", str(gpu), "--query-gpu=utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-lms", "200"], stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                busy, memory = (int(v) for v in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.time(), busy, memory))

    def stop(self) -> list[tuple[float, int, int]]:
        self.process.terminate()
        self.process.wait()
        self.thread.join(timeout=2)
        return self.samples


def run(path: Path, config: Path, *args: str) -> float:
    """`xval run` of `path`; returns the wall time (raises on failure)."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--quiet", "--config", str(config),
                           *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"xval run {' '.join(args)} failed:\n{proc.stderr}")
    return wall


def fold_records(path: Path) -> list[dict]:
    records = []
    for pickle_path in sorted((path.parent / "results" / "demo" / "experiment_1" / "results").glob("results_*.pkl")):
        with open(pickle_path, "rb") as handle:
            records += list(pickle.load(handle)["folds"].values())
    return records


def busy_while_training(samples, records) -> list[int]:
    """The utilisation samples taken while some fold was training (its end minus its duration)."""
    spans = [(r["_end"] - r["duration_s"], r["_end"]) for r in records]
    return [busy for t, busy, _ in samples if any(a <= t <= b for a, b in spans)]


def with_end_times(path: Path, records: list[dict]) -> list[dict]:
    """Each record with the time its fold file was written (the fold's end)."""
    folds = path.parent / "results" / "demo" / "experiment_1" / "results" / "folds"
    ends = {p.name: p.stat().st_mtime for p in folds.glob("*.pkl")}
    out = []
    for r in records:
        name = r["model_file"].rsplit(".", 1)[0] + ".pkl"
        out.append({**r, "_end": ends.get(name, time.time())})
    return out


def percentile(values: list[int], q: float) -> float:
    values = sorted(values)
    return float(values[min(len(values) - 1, int(q * len(values)))]) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=None, help="GPU to measure (default: the first visible)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs per fold of the example CNN (default 15)")
    parser.add_argument("--framework", choices=("torch", "keras"), default=None,
                        help="the framework that trains (default: torch if installed, else keras)")
    parser.add_argument("--quick", action="store_true", help="the smallest sizes: check that it runs")
    args = parser.parse_args()
    folds, small_epochs, jobs_per_gpu, small_instances = (2, 1, (1, 2), 2) if args.quick else (4, 3, (1, 2, 4), 4)
    epochs = 1 if args.quick else args.epochs
    gpus = visible_gpus()
    if not gpus:
        print("benchmarks/gpu.py: no NVIDIA GPU on this machine (nvidia-smi -L lists none); nothing measured")
        return 0
    framework = args.framework or next((f for f in ("torch", "keras") if installed(f)), "torch")
    if not installed(framework):
        print(f"benchmarks/gpu.py: {framework} is not installed (it needs {FRAMEWORK_MODULE[framework]}); "
              "install it or choose the other with --framework")
        return 2
    gpu = next(iter(gpus)) if args.gpu is None else args.gpu
    if gpu not in gpus:
        print(f"benchmarks/gpu.py: GPU {gpu} is not visible; visible: {', '.join(map(str, gpus))}")
        return 2
    print(f"GPU {gpu}: {gpus[gpu]}; framework {framework}")
    cnn = CNN + [f'framework="{framework}"']
    with tempfile.TemporaryDirectory(prefix="xval-gpu-") as tmp:
        root = Path(tmp)
        config = root / "config.ini"
        config.write_text(f"[paths]\ndata_folder = {root / 'data'}\n")

        # 1 + 2. the example CNN on GPU N, utilisation sampled while its folds train
        path = experiment(root / "cnn", {1: cnn + ['comment_1="reg 0.001"', "regularization_lambda=0.001"]},
                          [f"num_epochs={epochs}", "patience=100", "batch_size=32", "tensorboard=False"], folds)
        run(experiment(root / "warm", {1: cnn + ['comment_1="warm-up"']}, ["num_epochs=1"], folds=2), config,
            "--gpu", str(gpu))  # the demo data written, caches warm
        sampler = Sampler(gpu)
        wall = run(path, config, "--gpu", str(gpu))
        samples = sampler.stop()
        records = with_end_times(path, fold_records(path))
        devices = sorted({r["device"] for r in records})
        print(f"1. xval run --gpu {gpu}, example CNN ({framework}), {len(records)} folds x {epochs} epochs: "
              f"{wall:.1f} s; devices recorded in the fold files: {devices}")
        if not all(d.startswith("GPU") for d in devices):
            print(f"   the folds did not run on the GPU: is {FRAMEWORK_MODULE[framework]}'s GPU build installed "
                  "(pip install -e \".[gpu]\")?")
            return 1
        busy = busy_while_training(samples, records)
        print(f"2. GPU utilisation while a fold trained: mean {statistics.fmean(busy) if busy else float('nan'):.0f} %, "
              f"90th percentile {percentile(busy, 0.9):.0f} % ({len(busy)} samples at 200 ms; goal: 80 % or more)")

        # 3. throughput of small folds with several jobs per GPU
        small = {i: cnn + [f'comment_1="small {i}"', f"dropout={0.1 * i:.1f}"] for i in range(1, small_instances + 1)}
        base = None
        print(f"3. small folds ({small_instances} instances x {folds} folds, {small_epochs} epoch(s) each):")
        for jobs in jobs_per_gpu:
            path = experiment(root / f"jobs{jobs}", small, [f"num_epochs={small_epochs}", "patience=100",
                                                            "tensorboard=False"], folds)
            sampler = Sampler(gpu)
            wall = run(path, config, "--gpu", str(gpu), "--jobs-per-gpu", str(jobs))
            samples = sampler.stop()
            done = len(fold_records(path))
            base = base or wall
            peak = max((m for _, _, m in samples), default=0)
            print(f"   --jobs-per-gpu {jobs}: {wall:.1f} s, {60 * done / wall:.1f} folds/min, "
                  f"{base / wall:.2f}x of --jobs-per-gpu 1, peak GPU memory used {peak} MiB")

        # 4. Keras and torch in one process
        if not all(installed(f) for f in FRAMEWORK_MODULE):
            print("4. Keras + torch in one process: not measured (needs both TensorFlow and torch installed)")
            return 0
        mixed = {1: CNN + ['comment_1="keras"', 'framework="keras"'], 2: CNN + ['comment_1="torch"', 'framework="torch"'],
                 3: CNN + ['comment_1="keras again"', 'framework="keras"', "dropout=0.3"]}
        path = experiment(root / "mixed", mixed, [f"num_epochs={small_epochs}", "tensorboard=False"], folds=2)
        sampler = Sampler(gpu)
        wall = run(path, config, "--gpu", str(gpu))
        samples = sampler.stop()
        records = fold_records(path)
        pids = {r["pid"] for r in records}
        print(f"4. Keras + torch in one process ({len(pids)} process(es)), {len(records)} folds: {wall:.1f} s; devices "
              f"{sorted({r['device'] for r in records})}; peak GPU memory used {max((m for *_, m in samples), default=0)} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
