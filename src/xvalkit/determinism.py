"""Deterministic training, and the settings a fold records so that `xval reproduce` can tell what
to expect of a second training (bit for bit, or only within tolerance).

- torch: deterministic algorithms (warn_only: an op without a deterministic kernel warns in the
  fold's log instead of failing the fold), cuDNN deterministic and not benchmarking, and cuBLAS'
  fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when CUDA starts cuBLAS). On the CPU torch is then
  bit for bit repeatable for a given thread count; on a GPU too, for the same GPU, driver and CUDA.
- Keras (TensorFlow): op determinism on the CPU. Not on a GPU: there it makes every op without a
  deterministic GPU kernel raise, which would fail models that train today, so Keras on a GPU is
  recorded as not deterministic and reproduced within tolerance.
Thread counts are recorded too: a reduction split over another number of threads adds in another order.
"""

from __future__ import annotations

import os
import sys

CUBLAS_WORKSPACE = ":4096:8"  # what NVIDIA documents for deterministic cuBLAS


def torch_deterministic(device: str) -> dict:
    """Make torch deterministic for a fold on `device`; returns the settings, as recorded."""
    import torch
    import torch.utils.deterministic

    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Its debugging aid, filling every new tensor with NaN, cost a sixth of a CPU fold (measured,
    # benchmarks/determinism.py); xvalkit's ops never read memory they did not write.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    settings = {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        settings["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        settings["cuda"] = torch.version.cuda
        settings["cudnn"] = torch.backends.cudnn.version()
    settings["deterministic"] = settings["torch_deterministic_algorithms"] and settings["cudnn_deterministic"]
    return settings


def keras_deterministic(on_gpu: bool) -> dict:
    """TensorFlow's op determinism on the CPU (see the module docstring); returns the settings."""
    import tensorflow as tf

    if not on_gpu:
        tf.config.experimental.enable_op_determinism()  # process-wide; cheap on the CPU
    settings = {
        "tf_op_determinism": _tf_op_determinism(),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: one per core
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    if on_gpu:
        build = tf.sysconfig.get_build_info()
        settings["cuda"], settings["cudnn"] = build.get("cuda_version"), build.get("cudnn_version")
    settings["deterministic"] = bool(settings["tf_op_determinism"])
    return settings


def _tf_op_determinism() -> bool:
    # No public getter (TF 2.21); the internal one has existed since op determinism did (TF 2.8).
    config = sys.modules.get("tensorflow.python.framework.config")
    try:
        return bool(config.is_op_determinism_enabled())
    except AttributeError:
        return False


def torch_seeds(seed: int, shuffled: bool) -> dict:
    """The seeds of every random source a torch fold draws from (trainers/torch.py seed_everything)."""
    return {"python": seed, "numpy": seed % 2**32, "torch": seed, "batch_order": seed if shuffled else None}


def keras_seeds(seed: int, shuffled: bool) -> dict:
    """The seeds of a Keras fold: keras.utils.set_random_seed (Python, numpy, TensorFlow, Keras) and
    the batch order (trainers/keras.py _batches)."""
    return {"python": seed, "numpy": seed, "tensorflow": seed, "keras": seed, "batch_order": seed if shuffled else None}


def match_threads(recorded: dict) -> None:
    """Train with TensorFlow's thread counts as a fold recorded them (its determinism settings), where
    this process still can: a sum split over another number of threads adds in another order.
    TensorFlow's cannot change once it has started; the verdict then names the difference. (torch's
    count reaches the trainer as the fold's `threads` parameter: reproduce.fold_job.)"""
    if "tf_intra_op_threads" in recorded:
        from .devices import import_keras
        from .threads import set_tensorflow_threads

        import_keras()
        set_tensorflow_threads(int(recorded["tf_intra_op_threads"]), int(recorded["tf_inter_op_threads"]))
