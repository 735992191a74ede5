"""Reloading saved fold models: `load_model(path)` for a `.hdf5` (Keras) or a `.pt` (torch).

A saved model expects what it was trained on: inputs normalised with the statistics of its fold's
training items, then reshaped for its `reshaping_type` ('conv' adds a channel axis: last for Keras,
first for torch, as the `.pt` records in 'input_layout'). The
model files do not apply that themselves, so either

- call `predict(path, x)` on raw features (n, time, frequency): it normalises with the fold's
  statistics (stored in the `.pt`; for a `.hdf5` read from the results pickle beside the models
  folder), reshapes, and returns class probabilities or regression outputs for both frameworks; or
- call `preprocessing(path)` for the (normalisation, reshaping_type, channels_first) and feed the
  model `prepare(x, *preprocessing(path))` yourself.

A torch model returned by `load_model` is in eval mode on the CPU and outputs logits (apply a softmax
for probabilities); a Keras one outputs probabilities.

    >>> model = load_model("results/demo/experiment_1/models/demo_exp1_run2_fold1.pt")  # doctest: +SKIP
    >>> proba = predict("results/demo/experiment_1/models/demo_exp1_run2_fold1.pt", x)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

KERAS_SUFFIXES = (".hdf5", ".h5", ".keras")
_MODEL_NAME = re.compile(r"^(?P<dataset>.+)_exp(?P<exp>\d+)_run(?P<run>\d+)_fold(?P<fold>\d+)$")


def _checkpoint(path: Path) -> dict[str, Any]:
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # data only, no code runs
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != "xvalkit-torch":
        raise ValueError(f"{path} is not a model saved by xvalkit's torch trainer")
    return checkpoint


def _layout(checkpoint: dict[str, Any]) -> tuple[tuple[int, ...], bool]:
    """(input shape to rebuild the model with, whether its inputs are channels first).

    A `.pt` saved before 'input_layout' was recorded took channels-last 'conv' inputs. The built-in
    models now take channels first (their weights are laid out the same): rebuilt so, they predict
    the same. A user's model of that time permuted the axes itself: it keeps channels last.
    """
    shape = tuple(checkpoint["input_shape"])
    layout = checkpoint.get("input_layout")
    if layout is not None:
        return shape, layout == "channels_first"
    if checkpoint.get("reshaping_type") == "conv" and len(shape) == 3 and checkpoint.get("models_module") is None:
        return (shape[2],) + shape[:2], True
    return shape, False


def _torch_model(checkpoint: dict[str, Any], path: Path, models_module: str | Path | None):
    from .experiment import import_file
    from .models import build_model, model_function

    module_path = models_module or checkpoint.get("models_module")
    user_module = None
    if module_path is not None:
        if not Path(module_path).is_file():
            raise FileNotFoundError(
                f"{path} was trained with a model from {module_path}, which is not there: pass models_module="
            )
        user_module = import_file(Path(module_path), "models")
    fn = model_function("torch", checkpoint["architecture"], user_module, str(path))
    model = build_model(fn, _layout(checkpoint)[0], checkpoint["num_outputs"], checkpoint["task_type"],
                        checkpoint["parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_model(path: str | Path, models_module: str | Path | None = None):
    """The model saved at `path`, ready to predict on normalised, reshaped inputs (module docstring).

    `.pt`: the architecture is rebuilt from the model registry with the saved parameters, input
    shape and outputs, then the state_dict is loaded. A model from a user's models module is looked
    up in `models_module` when given, else in the module's path recorded at training time.
    `.hdf5` / `.h5` / `.keras`: keras.models.load_model(compile=False).
    """
    path = Path(path)
    if path.suffix in KERAS_SUFFIXES:
        from .devices import import_keras

        return import_keras().models.load_model(path, compile=False)
    if path.suffix != ".pt":
        raise ValueError(f"{path}: expected a .hdf5, .h5, .keras or .pt model file")
    return _torch_model(_checkpoint(path), path, models_module)


def _torch_preprocessing(checkpoint: dict[str, Any]) -> tuple[dict[str, np.ndarray] | None, str, bool]:
    norm = checkpoint["normalization"]
    stats = None if norm is None else {k: v.numpy() for k, v in norm.items()}
    return stats, checkpoint["reshaping_type"], _layout(checkpoint)[1]


def channels_first(path: str | Path) -> bool:
    """Whether the model at `path` takes 'conv' inputs channels first (torch) or last (Keras)."""
    path = Path(path)
    return path.suffix == ".pt" and _layout(_checkpoint(path))[1]


def preprocessing(path: str | Path) -> tuple[dict[str, np.ndarray] | None, str, bool]:
    """({'mean', 'std'} of the fold's training items or None, reshaping_type, channels_first) of a
    saved model: `prepare(x, *preprocessing(path))` gives its inputs.

    For a Keras model they come from its instance's results, in the experiment folder around it.
    """
    from .store import ExperimentStore

    path = Path(path)
    if path.suffix == ".pt":
        return _torch_preprocessing(_checkpoint(path))
    match = _MODEL_NAME.match(path.stem)
    if match is None:
        raise ValueError(f"{path.name} is not named <dataset>_exp<N>_run<R>_fold<F>")
    store = ExperimentStore(path.resolve().parent.parent, match["dataset"], int(match["exp"]))
    results = store.load_instance(int(match["run"]))
    if results is None:
        raise FileNotFoundError(f"{store.results_path(int(match['run']))}: the results of {path.name} are not there")
    return (results["folds"][int(match["fold"])].get("normalization"), results["parameters"]["reshaping_type"],
            False)


def prepare(x: np.ndarray, normalization: dict | None, reshaping_type: str,
            channels_first: bool = False) -> np.ndarray:
    """Raw features (n, time, frequency) -> the model's inputs (as FoldData.prepare does); see
    `channels_first(path)` for where a model's 'conv' channel axis goes."""
    from .fold_data import Normalizer, prepare_inputs

    normalizer = None if normalization is None else Normalizer(normalization["mean"], normalization["std"])
    return prepare_inputs(np.asarray(x, dtype=np.float32), normalizer, reshaping_type, channels_first)


def predict(path: str | Path, x: np.ndarray, models_module: str | Path | None = None,
            batch_size: int = 256) -> np.ndarray:
    """Class probabilities or regression outputs of the model at `path` for raw features `x`."""
    path = Path(path)
    if path.suffix != ".pt":
        inputs = prepare(x, *preprocessing(path))
        return np.asarray(load_model(path).predict(inputs, batch_size=batch_size, verbose=0))
    import torch

    checkpoint = _checkpoint(path)  # read once: preprocessing, model and task type all come from it
    inputs = prepare(x, *_torch_preprocessing(checkpoint))
    model = _torch_model(checkpoint, path, models_module)
    softmax = checkpoint["task_type"] == "classification"
    outputs = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            out = model(torch.from_numpy(inputs[start:start + batch_size])).float()
            outputs.append(torch.softmax(out, dim=1) if softmax else out)
    return torch.cat(outputs).numpy()
