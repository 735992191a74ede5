"""`xval run --backend ray` on one node against two nodes, on clusters started with `ray start`.

A head node (1 CPU) runs the experiment alone; then a worker node (1 CPU) joins with
`ray start --address` and the same experiment runs again in a fresh folder. Both nodes live on this
machine (as in tests/test_ray_cluster.py, whose Cluster helper starts and stops them), so on a
2-core machine two nodes cannot be faster than the cores allow: the figure says what the second
node's start-up and scheduling cost, not what a second machine would give.

    python benchmarks/ray_nodes.py [--folds 4] [--epochs 100]
    python benchmarks/ray_nodes.py --quick    # 2 folds x 1 epoch: checks that it runs
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.conftest import instance, write_experiment  # noqa: E402
from tests.test_ray_cluster import MLP, Cluster, wait_for  # noqa: E402


def timed_run(cluster: Cluster, path: Path, config: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--backend", "ray",
                             "--address", cluster.address, "--quiet", "--config", str(config)],
                            env=cluster.env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="2 folds x 1 epoch: check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.epochs = 2, 1
    work = Path(tempfile.mkdtemp(prefix="xvb", dir="/tmp"))
    config = work / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {work / 'data'}\n")
    spec = {1: instance("a", "MLP_model", "none", *MLP)}
    settings = dict(num_folds=args.folds, global_parameters=[f"num_epochs={args.epochs}", f"patience={args.epochs}"])
    cluster = Cluster(work / "ray")
    try:
        cluster.start_head()
        wait_for(lambda: cluster.alive_nodes() == 1, "the head node")
        timed_run(cluster, write_experiment(work / "warm", {1: spec[1]}, num_folds=2,
                                            global_parameters=["num_epochs=1"]), config)  # demo data, head workers
        one = timed_run(cluster, write_experiment(work / "one", spec, **settings), config)
        cluster.add_worker_node("worker")
        wait_for(lambda: cluster.alive_nodes() == 2, "the worker node")
        two = timed_run(cluster, write_experiment(work / "two", spec, **settings), config)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.folds} folds x {args.epochs} epochs (torch MLP, demo data), `xval run --backend ray --address`:")
    print(f"  1 node  (head, 1 CPU):              {one:6.1f} s wall")
    print(f"  2 nodes (head + worker, 1 CPU each): {two:6.1f} s wall   ({one / two:.2f}x)")


if __name__ == "__main__":
    main()
