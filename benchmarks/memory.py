"""Datasets larger than memory (issue 15): peak memory and speed of `xval run` on mapped data.

1. A synthetic dataset of --gb GB (default 6.2) written in chunks (one item at a time, never the
   whole in RAM) as <data folder>/<name>.xvd/ under a temporary folder on --where (default /work).
2. Peak RSS of `xval run --cpu` in generator mode, one worker, torch and Keras (goal: < 1.5 GB).
3. Proportional memory (PSS, /proc/<pid>/smaps_rollup, summed over the run's process tree, peak
   of 0.5 s samples) of two CPU workers against one, in-memory mode on the same dataset
   (goal: two <= 1.2x one: the workers share the mapped pages in the page cache).
4. Seconds per fold and epochs/s of generator mode against in-memory mode on a dataset that fits
   (--small-mb), same run, torch and Keras (goal: generator >= 0.8x in-memory); and the in-memory
   mode on the same data saved as .npz files, the format before (goal: the in-memory mode keeps its
   speed).

    python benchmarks/memory.py [--gb 6.2] [--small-mb 300] [--where /work] [--frameworks torch,keras]
    python benchmarks/memory.py --quick      # 20 MB and 5 MB datasets, 1 epoch: checks that it runs

Linux only (/proc). The temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from xvalkit.mapped import DatasetWriter  # noqa: E402

SHAPE = (100, 128)  # (time, frequency): 51.2 kB per datapoint in float32
ITEMS = 64


def write_dataset(folder: Path, name: str, total_bytes: float, seed: int = 0) -> int:
    """ITEMS items of random features (a class signal in the first frequency bins), one at a time."""
    rng = np.random.default_rng(seed)
    rows = max(2, int(total_bytes / (4 * np.prod(SHAPE)) / ITEMS))
    block = rng.standard_normal((rows, *SHAPE), dtype=np.float32)  # reused, shifted per item
    with DatasetWriter(folder, name, {"classes": ["a", "b", "c", "d"], "synthetic": True}) as writer:
        for i in range(ITEMS):
            y = rng.integers(0, 4, rows)
            x = np.roll(block, i, axis=0)
            x[:, :, :4] += y[:, None, None]
            writer.add(f"speaker{i:02d}", x, y)
    return int(sum(p.stat().st_size for p in (folder / f"{name}.xvd").iterdir()))


def experiment(folder: Path, dataset: str, framework: str, generator: bool, epochs: int, tag: str) -> Path:
    params = [f"num_epochs={epochs}", f"patience={epochs}", "tensorboard=False", "batch_size=256",
              "hidden_sizes=(32,)", f'framework="{framework}"']
    path = folder / f"mem_{tag}.py"
    path.write_text(
        f"short_description = 'memory benchmark'\ndataset = {dataset!r}\nnum_experiment = 1\n"
        f"num_folds = 2\nexperiment_folder = 'results_{tag}'\ntask_type = 'classification'\n"
        f"generator = {generator}\nglobal_parameters = {params!r}\n"
        "experiment = {1: ['architecture=\"MLP_model\"', 'reshaping_type=\"none\"', "
        "'comment_1=\"a\"', 'comment_2=\"b\"']}\n")
    return path


def _tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc/<pid>/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def _field(pid: int, file: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(config: Path, exp: Path, *extra: str) -> dict:
    """`xval run` in a subprocess; peak RSS (VmHWM of the main process), peak tree PSS, wall time."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "xvalkit.cli", "run", str(exp), "--cpu", "--config", str(config),
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"pss": 0, "rss_tree": 0, "hwm": 0}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            pids = _tree(proc.pid)
            peaks["pss"] = max(peaks["pss"], sum(_field(p, "smaps_rollup", "Pss") for p in pids))
            peaks["rss_tree"] = max(peaks["rss_tree"], sum(_field(p, "status", "VmRSS") for p in pids))
            peaks["hwm"] = max([peaks["hwm"]] + [_field(p, "status", "VmHWM") for p in pids])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"xval run {exp.name} failed:\n{output[-3000:]}")
    results = sorted((exp.parent / ("results_" + exp.stem[len("mem_"):])).rglob("results_*_run1.pkl"))
    folds = pickle.loads(results[0].read_bytes())["folds"]
    epochs = sum(f["epochs"] for f in folds.values())
    seconds = sum(f["duration_s"] for f in folds.values())
    return {**peaks, "wall": time.perf_counter() - start, "epochs": epochs, "fold_s": seconds,
            "epochs_per_s": epochs / seconds, "test_accuracy": [f["test_acc"] for f in folds.values()]}


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=6.2)
    ap.add_argument("--small-mb", type=float, default=300)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the speed comparison")
    ap.add_argument("--where", default="/work", help="a folder on the disk to measure (default /work; the "
                    "system's temporary folder where there is no /work)")
    ap.add_argument("--frameworks", default="torch,keras")
    ap.add_argument("--skip", nargs="*", default=[], choices=["rss", "pss", "speed"])
    ap.add_argument("--quick", action="store_true", help="20 MB and 5 MB datasets, 1 epoch: check that it runs")
    args = ap.parse_args()
    if args.quick:
        args.gb, args.small_mb, args.epochs = 0.02, 5, 1
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average) on {os.cpu_count()} cores")
    frameworks = args.frameworks.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="xval_memory_", dir=args.where if Path(args.where).is_dir() else None))
    try:
        data = tmp / "data"
        config = tmp / "c.ini"
        config.write_text(f"[paths]\ndata_folder = {data}\n")
        t = time.perf_counter()
        size = write_dataset(data, "big", args.gb * 1e9)
        print(f"big dataset: {gb(size)} on disk ({ITEMS} items, datapoints {SHAPE} float32), "
              f"written in {time.perf_counter() - t:.0f} s")
        if "rss" not in args.skip:
            for framework in frameworks:
                r = run(config, experiment(tmp, "big", framework, True, 1, f"rss_{framework}"))
                print(f"generator, 1 worker, {framework:5s}: peak RSS {gb(r['hwm'])} (goal < 1.50 GB; "
                      f"dataset {gb(size)}), {r['epochs']} epochs over 2 folds in {r['wall']:.0f} s")
        if "pss" not in args.skip:
            pss = {}
            for workers in (1, 2):
                r = run(config, experiment(tmp, "big", frameworks[0], False, 1, f"pss_{workers}"),
                        "--cpu-workers", str(workers))
                pss[workers] = r["pss"]
                print(f"in-memory, {frameworks[0]}, --cpu-workers {workers}: peak PSS of the process tree {gb(r['pss'])}, "
                      f"peak RSS summed {gb(r['rss_tree'])}, {r['wall']:.0f} s")
            print(f"two workers / one worker PSS: {pss[2] / pss[1]:.2f}x (goal <= 1.2x)")
        if "speed" not in args.skip:
            size = write_dataset(data, "small", args.small_mb * 1e6, seed=1)
            print(f"small dataset: {gb(size)} (fits in memory)")
            # the same data as .npz files, the format before issue 15: the in-memory mode's old speed
            from xvalkit.data import _save_npz_dataset, load_dataset

            small = load_dataset(data, "small")
            _save_npz_dataset(data, "small_npz", {i: np.asarray(x) for i, x in small.predictors.items()},
                              {i: np.asarray(y) for i, y in small.targets.items()}, small.manifest)
            for framework in frameworks:
                r = {g: run(config, experiment(tmp, "small", framework, g, args.epochs, f"speed_{framework}_{g}"))
                     for g in (False, True)}
                old = run(config, experiment(tmp, "small_npz", framework, False, args.epochs, f"speed_{framework}_npz"))
                ratio = r[True]["epochs_per_s"] / r[False]["epochs_per_s"]
                print(f"{framework:5s}: in-memory {r[False]['epochs_per_s']:.3f} epochs/s ({r[False]['fold_s']:.1f} s "
                      f"for {r[False]['epochs']} epochs), generator {r[True]['epochs_per_s']:.3f} epochs/s "
                      f"({r[True]['fold_s']:.1f} s): {ratio:.2f}x (goal >= 0.8x); same test accuracy: "
                      f"{r[False]['test_accuracy'] == r[True]['test_accuracy']}")
                print(f"{'':5s}  in-memory from the old .npz files: {old['epochs_per_s']:.3f} epochs/s "
                      f"({old['fold_s']:.1f} s): .xvd / .npz {r[False]['epochs_per_s'] / old['epochs_per_s']:.2f}x; "
                      f"same test accuracy: {old['test_accuracy'] == r[False]['test_accuracy']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"load after: {os.getloadavg()[0]:.1f}; removed {tmp}")


if __name__ == "__main__":
    main()
