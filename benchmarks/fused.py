"""Fused training (issue 28) against one fold at a time, on the same device, in one run.

    python benchmarks/fused.py [--gpu 0] [--instances 32] [--folds 4] [--epochs 15] [--members 1,8,32,128]
    python benchmarks/fused.py --quick     # 2 instances x 2 folds x 1 epoch, K = 1, 4: checks that it runs

Each configuration is a real `xval run` of the example CNN (torch) on the demo data in a fresh
folder: a sweep of `--instances` instances over dropout and learning rate, `--folds` folds each,
`--epochs` epochs (early stopping off, so every fold trains every epoch). First `--no-fuse` (today's
path), then `--fuse` with at most K members per group (XVAL_FUSE_MAX_MEMBERS) for each K. Printed
per configuration: wall time, folds per minute, the ratio to unfused, and on a GPU the busy % (mean
of nvidia-smi samples every 200 ms) and the peak memory used. Goal on an H200-class GPU: >= 10x the
folds per minute of unfused, GPU busy >= 60 %. K = 1 is the unfused path (a group of one is a fold).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

from gpu import Sampler, experiment  # noqa: E402
from xvalkit.data import load_dataset  # noqa: E402
from xvalkit.devices import visible_gpus  # noqa: E402

CNN = ['architecture="EXAMPLE_model"', 'reshaping_type="cnn"', 'comment_2="fused benchmark"']


def sweep(instances: int) -> dict[int, list[str]]:
    """Instances differing only in fusible values: dropout x learning rate."""
    rates, dropouts = (0.0003, 0.001, 0.003, 0.01), (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    return {i + 1: [*CNN, f'comment_1="lr {rates[i % 4]} dropout {dropouts[(i // 4) % 8]}"',
                    f"learning_rate={rates[i % 4]}", f"dropout={dropouts[(i // 4) % 8]}", f"seed={i}"]
            for i in range(instances)}


def run(folder: Path, args, fuse: bool, members: int, gpu: int | None) -> tuple[float, int, float | None, int | None]:
    """(wall seconds, folds, mean GPU busy %, peak GPU MiB) of one `xval run`."""
    path = experiment(folder, sweep(args.instances),
                      ['framework="torch"', f"num_epochs={args.epochs}", "early_stopping=False",
                       "tensorboard=False"], folds=args.folds)
    (folder / "config.ini").write_text(f"[paths]\ndata_folder = {folder.parent / 'data'}\n")
    device = ["--gpu", str(gpu)] if gpu is not None else ["--cpu"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "XVAL_FUSE_MAX_MEMBERS": str(members)}
    sampler = Sampler(gpu) if gpu is not None else None
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), *device, "-q",
                           "--fuse" if fuse else "--no-fuse"], cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    samples = sampler.stop() if sampler else []
    if proc.returncode != 0:
        sys.exit(f"xval run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    folds = len(list((folder / "results" / "demo" / "experiment_1" / "results" / "folds").glob("*.pkl")))
    busy = sum(s[1] for s in samples) / len(samples) if samples else None
    peak = max((s[2] for s in samples), default=None)
    return wall, folds, busy, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=None, help="GPU ID (default: GPU 0 if there is one, else the CPU)")
    parser.add_argument("--instances", type=int, default=32)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--members", default="1,8,32,128", help="K: the most members per group, comma-separated")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.instances, args.folds, args.epochs, args.members = 2, 2, 1, "1,4"
    gpu = args.gpu if args.gpu is not None else (min(visible_gpus()) if visible_gpus() else None)
    where = f"GPU {gpu}" if gpu is not None else "CPU"
    print(f"{args.instances} instances x {args.folds} folds x {args.epochs} epochs of EXAMPLE_model (torch) on "
          f"{where}, a dropout / learning-rate sweep", flush=True)
    with tempfile.TemporaryDirectory(prefix="xval_fused_") as tmp:
        base = Path(tmp)
        load_dataset(base / "data", "demo")  # synthesised once, before any run is timed
        rows = [("unfused", *run(base / "unfused", args, False, 1, gpu))]
        for k in (int(v) for v in args.members.split(",")):
            rows.append((f"fused K={k}", *run(base / f"fused_{k}", args, True, k, gpu)))
    reference = rows[0][2] / rows[0][1] * 60
    for name, wall, folds, busy, peak in rows:
        per_minute = folds / wall * 60
        gpu_text = f", GPU busy {busy:.0f} %, peak {peak} MiB" if busy is not None else ""
        print(f"{name:<14} {wall:8.2f} s  {folds} folds  {per_minute:8.1f} folds/min  "
              f"{per_minute / reference:5.2f}x unfused{gpu_text}", flush=True)


if __name__ == "__main__":
    main()
