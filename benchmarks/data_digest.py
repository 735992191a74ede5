"""What recording the data's SHA-256 costs a training process: reading every file of the dataset
(what each worker process, Ray GPU task and Slurm task did, and a reproduction twice) against
checking the sizes and times of the run's fingerprint (data_digest.dataset_fingerprint), side by
side, in one run, on a dataset of --gb gigabytes written in $TMPDIR and dated back an hour.

    python benchmarks/data_digest.py [--gb 1] [--repeats 3]
    python benchmarks/data_digest.py --quick      # 10 MB, 1 repeat: checks that it runs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from xvalkit.data_digest import dataset_fingerprint


def write_dataset(folder: Path, gigabytes: float) -> None:
    """An .xvd folder of `gigabytes` of float32 predictors in 64 MB pieces, dated an hour back."""
    xvd = folder / "bench.xvd"
    xvd.mkdir()
    size = int(gigabytes * 2**30) // 4
    rng = np.random.default_rng(0)
    with open(xvd / "predictors.npy", "wb") as handle:
        for start in range(0, size, 2**24):
            handle.write(rng.random(min(2**24, size - start), dtype=np.float32).tobytes())
    (xvd / "manifest.json").write_text("{}")
    then = time.time() - 3600
    for path in xvd.iterdir():
        os.utime(path, (then, then))


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    gigabytes, repeats = (0.01, 1) if args.quick else (args.gb, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_dataset(folder, gigabytes)
        run = dataset_fingerprint(folder, "bench")  # what the run takes once
        read = best_of(repeats, lambda: dataset_fingerprint(folder, "bench"))
        checked = best_of(repeats, lambda: dataset_fingerprint(folder, "bench", run))
    print(f"dataset: {gigabytes:g} GB (page cache warm: the reads are the hashing's, not the disk's)")
    print(f"per training process: read and hash {read:.3f} s, check the run's fingerprint {checked * 1000:.3f} ms")
    print(f"a reproduced fold: {2 * read:.3f} s before, {read + checked:.3f} s now")


if __name__ == "__main__":
    main()
