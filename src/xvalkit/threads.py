"""CPU threads: how many each process of a run uses. xvalkit sets them; no environment variable is needed.

- A training process (`xval run` training in its own process, a local worker, a Ray task) gets its
  share of the cores: the cores this process may use divided by the jobs that train at once
  (`--cpu-workers`; GPUs x `--jobs-per-gpu`; Ray: the CPUs of a task), at least one. The share is
  decided where the slots are planned (executors.plan_slots) and applied once, at the start of
  the process, before a framework starts its thread pools (`use_threads`).
- A torch model with fewer than TINY_MODEL_PARAMETERS parameters trains on one thread, whatever the
  share: its operations are too small to split, and threads only add synchronisation, which costs
  most when other processes want the same cores. Measured on the 2-core machine, 90 folds of the
  MLP_model (8,) of benchmarks/many_instances.py (16 k parameters): 0.6 s on one thread, 5.5-14 s on
  two; the example CNN (267 k parameters): 25-31 ms per batch on one thread, 21-28 ms on two. On 16
  cores the same benchmark spent 4x less with one thread per process (issue 29).
- The children that refresh the report and draw plots, and the audio pools, run one BLAS/OpenMP
  thread (`single_threaded_environment`): they must not take cores from training.
- `threads = N` (config.ini [training], global_parameters, an instance, `-p threads=N`) sets N for
  training, model size regardless; 0 (the default) lets xvalkit decide as above. TensorFlow fixes
  its pools once per process, so a Keras process uses the value the run's instances share.
Each fold record keeps the count its training used (`threads`).
"""

from __future__ import annotations

import os
import sys

TINY_MODEL_PARAMETERS = 100_000
PLANNED_VARIABLE = "XVAL_THREADS"  # this process's share, read by each fold it trains
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                  "NUMEXPR_NUM_THREADS")
_limiter = None  # threadpoolctl's limits on BLAS libraries loaded before use_threads, kept for the process


def cores() -> int:
    """The cores this process may use (its CPU affinity: a Slurm or taskset allocation, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def share(jobs_at_once: int) -> int:
    """The threads of each of `jobs_at_once` training processes on this machine."""
    return max(1, cores() // max(1, jobs_at_once))


def requested(instance_params: list[dict]) -> int:
    """The `threads` the instances set, if they agree on one (else 0: xvalkit decides)."""
    values = {int(p.get("threads") or 0) for p in instance_params}
    return values.pop() if len(values) == 1 else 0


def use_threads(count: int) -> None:
    """This process trains with `count` threads: set before a framework starts its pools (the
    environment, read at import), and applied to those already started (torch, BLAS)."""
    global _limiter
    os.environ[PLANNED_VARIABLE] = str(count)
    for name in BLAS_VARIABLES:
        os.environ[name] = str(count)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(count)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    if "tensorflow" in sys.modules:
        set_tensorflow_threads()
    if "numpy" in sys.modules:  # its BLAS started its pool at import
        from threadpoolctl import threadpool_limits

        _limiter = threadpool_limits(limits=count)


def planned() -> int:
    """This process's share (use_threads), else all its cores (a library caller that planned nothing)."""
    return int(os.environ.get(PLANNED_VARIABLE) or cores())


def set_tensorflow_threads(intra: int | None = None, inter: int = 1) -> None:
    """TensorFlow's pools at `intra` threads (default: this process's share) and `inter`; too late
    once TensorFlow ran an operation."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(planned() if intra is None else intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # already initialised: it keeps the pools it has (in_use says which)
        pass


def for_torch_model(model, requested_threads: int) -> int:
    """Set torch's threads for training `model` (module docstring) and return the count."""
    import torch

    count = requested_threads or (1 if sum(p.numel() for p in model.parameters()) < TINY_MODEL_PARAMETERS
                                  else planned())
    torch.set_num_threads(count)
    return count


def in_use(framework: str) -> int:
    """The intra-op threads `framework` trains with in this process now."""
    if framework == "torch":
        import torch

        return torch.get_num_threads()
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or cores()  # 0: TensorFlow's default, every core


def single_threaded_environment() -> dict[str, str]:
    """The environment for a child that must not compete with training: one BLAS/OpenMP thread."""
    return {**os.environ, **dict.fromkeys(BLAS_VARIABLES, "1"), PLANNED_VARIABLE: "1"}
