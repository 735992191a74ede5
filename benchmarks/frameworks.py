"""Epochs per second of EXAMPLE_model in Keras and in torch: the same demo fold, data and parameters.

Both go through xvalkit's own trainers (trainers/keras.py and trainers/torch.py, fit_predict) in one
process, TensorBoard off; epochs/s is measured between the end of the first epoch and the end of the
last (so imports, graph tracing and the first epoch's warm-up are left out), best of --repeats, the
two frameworks interleaved so that drifts hit both alike.

    python benchmarks/frameworks.py [--epochs 6] [--repeats 3] [--batch-size 32] [--generator]
    python benchmarks/frameworks.py --gpu 0 --gpu-util    # on a machine with an NVIDIA GPU
    python benchmarks/frameworks.py --quick               # 2 epochs, 1 repeat: checks that it runs

With --gpu-util, `nvidia-smi --query-gpu=utilization.gpu` is sampled every 100 ms during each
training and the mean over the steady epochs is printed (goal: 80 % or more).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xvalkit.devices import choose_device_early  # noqa: E402


def write_experiment(folder: Path, epochs: int, batch_size: int, generator: bool) -> Path:
    params = [f"num_epochs={epochs}", f"patience={epochs}", "tensorboard=False", f"batch_size={batch_size}"]
    text = (
        "short_description = 'frameworks benchmark'\ndataset = 'demo'\nnum_experiment = 1\n"
        f"num_folds = 4\nexperiment_folder = 'results'\ntask_type = 'classification'\ngenerator = {generator}\n"
        f"global_parameters = {params!r}\nexperiment = {{}}\n"
    )
    for i, framework in enumerate(("keras", "torch"), start=1):
        text += (f"experiment[{i}] = ['architecture=\"EXAMPLE_model\"', 'reshaping_type=\"conv\"', "
                 f"'comment_1=\"{framework}\"', 'comment_2=\"b\"', 'framework=\"{framework}\"']\n")
    path = folder / "bench_frameworks.py"
    path.write_text(text)
    return path


class GpuSampler:
    """nvidia-smi utilisation samples (percent) with their times, in a background thread."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100",
             "-i", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]],
            stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.strip())))
            except ValueError:
                pass

    def mean(self, start: float, end: float) -> float:
        values = [v for t, v in self.samples if start <= t <= end]
        return sum(values) / len(values) if values else float("nan")

    def stop(self):
        self.proc.terminate()


def one_run(exp, inst, dataset, framework: str, sampler: GpuSampler | None) -> tuple[float, float, str]:
    """(epochs/s after the first epoch, mean GPU utilisation over those epochs, device)."""
    from xvalkit.fold_data import FoldData, channels_first
    from xvalkit.trainers import TrainJob, trainer_for

    params = dict(inst.params, framework=framework)
    fold = inst.folds[0]
    data = FoldData(dataset, fold, exp.task_type, params["reshaping_type"], params["normalization"],
                    channels_first(framework))
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        job = TrainJob(params=params, task_type=exp.task_type, data=data,
                       model_fn=exp.model_function(framework, "EXAMPLE_model", "benchmark"), seed=0,
                       model_path=Path(tmp) / ("m" + (".pt" if framework == "torch" else ".hdf5")),
                       generator=exp.generator, on_epoch=lambda epoch, logs: ends.append(time.perf_counter()))
        out = trainer_for(framework).fit_predict(job)
    rate = (len(ends) - 1) / (ends[-1] - ends[0])
    util = sampler.mean(ends[0], ends[-1]) if sampler else float("nan")
    return rate, util, out.device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--generator", action="store_true", help="stream batches from the per-item arrays")
    parser.add_argument("--gpu", type=int, default=None, help="train on this GPU (default: the CPU)")
    parser.add_argument("--gpu-util", action="store_true", help="sample nvidia-smi during training")
    parser.add_argument("--frameworks", default="keras,torch")
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat: check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 2, 1  # two epochs: the rate is measured between the first's end and the last's
    choose_device_early(args.gpu, cpu=args.gpu is None)

    from xvalkit.data import load_dataset
    from xvalkit.experiment import load_experiment
    from xvalkit.runner import RunOptions, plan_instances

    frameworks = args.frameworks.split(",")
    sampler = GpuSampler() if args.gpu_util else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "c.ini"
        config.write_text(f"[paths]\ndata_folder = {folder / 'data'}\n")
        exp = load_experiment(write_experiment(folder, args.epochs, args.batch_size, args.generator),
                              config_file=config)
        dataset = load_dataset(exp.config.data_folder, "demo")
        inst = plan_instances(exp, RunOptions(), dataset)[0]
        results: dict[str, list[tuple[float, float, str]]] = {f: [] for f in frameworks}
        for framework in frameworks:  # warm-up: imports, first traces
            one_run(exp, inst, dataset, framework, sampler)
        for _ in range(args.repeats):
            for framework in frameworks:
                results[framework].append(one_run(exp, inst, dataset, framework, sampler))
    if sampler:
        sampler.stop()
    train = sum(len(dataset.targets[item]) for item in inst.folds[0].train)
    print(f"EXAMPLE_model (default parameters), demo fold 1 of 4 ({train} training datapoints), "
          f"batch {args.batch_size}, {args.epochs} epochs, best of {args.repeats}"
          f"{', generator' if args.generator else ''}; torch threads: {_torch_threads()}")
    for framework, runs in results.items():
        rate, util, device = max(runs)
        line = f"  {framework:6s} {rate:7.2f} epochs/s  on {device}"
        if sampler:
            line += f"  GPU utilisation {util:5.1f} %"
        print(line)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
