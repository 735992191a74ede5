"""Choosing the device: CUDA_VISIBLE_DEVICES is set before TensorFlow or torch is imported, so
the chosen GPU is the job's device 0; with --cpu, or when no GPU is visible, training runs on the
CPU and says so in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

FRAMEWORK_MODULES = ("tensorflow", "torch", "keras", "jax")


@dataclass
class DeviceChoice:
    gpu: int | None  # the physical GPU asked for, None for the CPU
    cpu: bool


_choice = DeviceChoice(gpu=None, cpu=False)
_parent_off_gpus = False


def keep_this_process_off_gpus() -> None:
    """For a parent whose workers own the GPUs: its framework (model checks) uses only the CPU.

    The environment is left alone, so that workers (and a local Ray cluster) still see the GPUs.
    """
    global _parent_off_gpus
    _parent_off_gpus = True


def choose_device_early(gpu: int | None, cpu: bool) -> DeviceChoice:
    """Mask every GPU but `gpu` (or all of them with `cpu`) for this process and its children."""
    global _choice
    imported = [m for m in FRAMEWORK_MODULES if m in sys.modules]
    if imported and (gpu is not None or cpu):
        print(
            f"warning: {', '.join(imported)} was imported before the device was chosen "
            "(by the experiment module?); the GPU choice may not take effect",
            file=sys.stderr,
        )
    if cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    _choice = DeviceChoice(gpu=None if cpu else gpu, cpu=cpu)
    return _choice


def current_choice() -> DeviceChoice:
    return _choice


@contextlib.contextmanager
def _stderr_silenced():
    """Silence C-level stderr (TensorFlow prints oneDNN/CPU lines at import, whatever the log level)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def import_keras():
    """Import keras on the TensorFlow backend, without TensorFlow's start-up chatter."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" not in sys.modules and not os.environ.get("XVAL_DEBUG"):
        with _stderr_silenced():  # TensorFlow prints its banner at import and again under keras
            import tensorflow  # noqa: F401
            import keras  # noqa: F401
    import keras

    if _parent_off_gpus:
        import tensorflow as tf

        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # already initialised: nothing was placed on a GPU by us yet
            pass
    # Keras warns through absl that .h5 is a legacy format at every save: .hdf5 is our format.
    logging.getLogger("absl").setLevel(logging.ERROR)
    return keras


def keras_device() -> str:
    """'GPU 1 (name)' or 'CPU', for the results; warns once if a requested GPU is not visible."""
    import tensorflow as tf

    gpus = tf.config.get_visible_devices("GPU")
    if gpus and not _choice.cpu:
        details = tf.config.experimental.get_device_details(gpus[0])
        physical = _choice.gpu if _choice.gpu is not None else 0
        return f"GPU {physical} ({details.get('device_name', 'unknown')})"
    return "CPU"


def torch_device() -> tuple[str, str]:
    """(torch device string, description) for the chosen device."""
    import torch

    if torch.cuda.is_available() and not _choice.cpu and not _parent_off_gpus:
        physical = _choice.gpu if _choice.gpu is not None else 0
        return "cuda:0", f"GPU {physical} ({torch.cuda.get_device_name(0)})"
    return "cpu", "CPU"
