"""Choosing the device: CUDA_VISIBLE_DEVICES is set before TensorFlow or torch is imported, so
the chosen GPU is the job's device 0; with --cpu, or when no GPU is visible, training runs on the
CPU and says so in one line.

Which GPUs exist is read without a framework (visible_gpus: nvidia-smi -L, the driver's /proc
entries, an inherited CUDA_VISIBLE_DEVICES), so an explicit GPU that does not exist is an error before
anything is imported. GPU memory is shared, not grabbed: TensorFlow grows its memory as needed, torch
is capped at its share when jobs share a GPU, and each fold's memory is released when it ends.
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


def choose_device_early(gpu: int | None, cpu: bool, share: float | None = None) -> DeviceChoice:
    """Mask every GPU but `gpu` (or all of them with `cpu`) for this process and its children, and
    set up GPU memory sharing (`share`: this process' part of its GPU, see prepare_gpu_sharing)."""
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
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # GPU N is nvidia-smi's GPU N
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    prepare_gpu_sharing(share)
    _choice = DeviceChoice(gpu=None if cpu else gpu, cpu=cpu)
    return _choice


def prepare_gpu_sharing(share: float | None = None) -> None:
    """Before any framework touches a GPU: TensorFlow grows its memory as needed instead of mapping
    nearly all of it at first use (so a second job, or torch in the same process, still gets some);
    with `share` < 1 (several jobs on one GPU), torch caps this process at that fraction."""
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if share is not None and 0 < share < 1:
        os.environ[MEMORY_FRACTION_VARIABLE] = f"{share:.6g}"
    else:
        os.environ.pop(MEMORY_FRACTION_VARIABLE, None)


MEMORY_FRACTION_VARIABLE = "XVAL_GPU_MEMORY_FRACTION"  # read by torch_device() in the job's process
GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "TF_FORCE_GPU_ALLOW_GROWTH", MEMORY_FRACTION_VARIABLE)


def gpu_settings() -> dict[str, str | None]:
    """The GPU settings of this process' environment, recorded with each fold (what the job saw)."""
    return {name: os.environ.get(name) for name in GPU_VARIABLES}


def freeze_survivors() -> None:
    """Before a fold: move every object alive now (the frameworks' modules, the runner's state) to
    the garbage collector's permanent generation, so that release_memory's collection after the fold,
    and Python's own full collections, walk only what was made since: a full collection over Keras' and
    TensorFlow's half a million objects took 0.5 s here. Nothing of the coming fold is frozen, so
    its model and graphs are still collected (tests/test_gpu.py), and frozen objects are still freed
    by reference counting."""
    import gc

    gc.freeze()


def release_memory() -> None:
    """After a fold: drop its models and graphs and hand torch's cached GPU blocks back, so the next
    fold (or the other framework) finds the memory free. TensorFlow keeps what it has grown to and
    reuses it for the next Keras fold: it cannot return memory to the device while the process lives."""
    import gc

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def visible_gpus() -> dict[int, str]:
    """{GPU ID: name} of the NVIDIA GPUs this process may use, found without importing a framework.

    IDs are those of `nvidia-smi -L` (PCI bus order; /proc/driver/nvidia/gpus where nvidia-smi is
    missing); a CUDA_VISIBLE_DEVICES inherited from the environment (a scheduler's, or "-1") keeps only
    the GPUs it lists, read as CUDA reads it: IDs or UUIDs, up to the first one that does not exist.
    """
    found = _nvidia_smi_gpus()
    if found is None:
        found = _proc_gpus()
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return {index: name for index, (name, _) in found.items()}
    kept: dict[int, str] = {}
    for entry in (e.strip() for e in mask.split(",")):
        match = [i for i, (_, uuid) in found.items()
                 if (entry.isdigit() and int(entry) == i) or (entry.startswith("GPU-") and uuid.startswith(entry))]
        if not match:
            break
        kept[match[0]] = found[match[0]][0]
    return kept


def _nvidia_smi_gpus() -> dict[int, tuple[str, str]] | None:
    """{index: (name, uuid)} from `nvidia-smi -L`; None when nvidia-smi is not installed."""
    import re
    import subprocess

    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return None
    except (OSError, subprocess.SubprocessError):
        return {}
    if proc.returncode != 0:  # "No devices were found", or no driver to talk to: no usable GPU
        return {}
    pattern = re.compile(r"^GPU (\d+): (.*?) \(UUID: ([^)]+)\)")
    return {int(m.group(1)): (m.group(2), m.group(3)) for m in map(pattern.match, proc.stdout.splitlines()) if m}


def _proc_gpus(root: str = "/proc/driver/nvidia/gpus") -> dict[int, tuple[str, str]]:
    """{index: (name, uuid)} from the NVIDIA driver's /proc entries (one folder per GPU, by PCI bus)."""
    try:
        folders = sorted(os.listdir(root))
    except OSError:
        return {}
    gpus = {}
    for index, folder in enumerate(folders):
        info: dict[str, str] = {}
        try:
            with open(os.path.join(root, folder, "information"), encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    key, _, value = line.partition(":")
                    info[key.strip()] = value.strip()
        except OSError:
            pass
        gpus[index] = (info.get("Model", "NVIDIA GPU"), info.get("GPU UUID", ""))
    return gpus


def check_requested_gpus(gpus: list[int], source: str) -> bool:
    """Raise XvalError unless every GPU in `gpus` is visible; `source` says where the IDs come from.

    An experiment file's gpu_ID on a machine with no GPU at all is not an error (the demo's case):
    returns False, and the caller trains on the CPU and says so. Returns True when all are there.
    """
    from .errors import XvalError

    visible = visible_gpus()
    missing = [g for g in gpus if g not in visible]
    if not missing:
        return True
    if not visible and source.startswith("gpu_ID"):
        return False
    listing = ", ".join(f"{i} ({name})" for i, name in sorted(visible.items())) or "none"
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise XvalError(
        f"{source}: GPU {', '.join(map(str, missing))} is not on this machine; the visible GPUs are: {listing}"
        + (f" (CUDA_VISIBLE_DEVICES={mask})" if mask is not None else "")
        + "; choose one of them, or --cpu"
    )


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
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # Ray tasks come here without the CLI
    if "keras" not in sys.modules and not os.environ.get("XVAL_DEBUG"):
        with _stderr_silenced():  # TensorFlow prints its banner at import and again under keras
            import tensorflow  # noqa: F401
            import keras  # noqa: F401
    import keras

    from .threads import PLANNED_VARIABLE, set_tensorflow_threads

    if os.environ.get(PLANNED_VARIABLE):  # the process's share (threads.use_threads), before TensorFlow runs an op
        set_tensorflow_threads()
    _grow_tensorflow_memory()
    if _parent_off_gpus:
        import tensorflow as tf

        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # already initialised: nothing was placed on a GPU by us yet
            pass
    # Keras warns through absl that .h5 is a legacy format at every save: .hdf5 is our format.
    logging.getLogger("absl").setLevel(logging.ERROR)
    return keras


_growth_set = False


def _grow_tensorflow_memory() -> None:
    """Memory growth on every GPU, for a TensorFlow imported before TF_FORCE_GPU_ALLOW_GROWTH was set
    (by an experiment module, say); once the GPUs are initialised it can no longer change."""
    global _growth_set
    if _growth_set:
        return
    _growth_set = True
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised (the environment variable did it)
            pass


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
        fraction = os.environ.get(MEMORY_FRACTION_VARIABLE)
        if fraction:  # several jobs share this GPU: cap this one's caching allocator at its part
            torch.cuda.set_per_process_memory_fraction(float(fraction), 0)
        return "cuda:0", f"GPU {physical} ({torch.cuda.get_device_name(0)})"
    return "cpu", "CPU"
