"""Trainers: fit one fold, restore the best epoch, predict every set, save the model.

Each trainer module has `fit_predict(job) -> TrainOutput`; metrics are computed from the
predictions by xvalkit.metrics, identically for every framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..fold_data import FoldData

MODEL_EXTENSIONS = {"keras": ".hdf5", "torch": ".pt"}
# The metric of the histories besides the loss ('accuracy' / 'val_accuracy', 'mae' / 'val_mae').
METRICS = {"classification": "accuracy", "regression": "mae"}


@dataclass
class TrainJob:
    params: dict[str, Any]
    task_type: str
    data: FoldData
    model_fn: Callable
    seed: int
    model_path: Path
    log_dir: Path | None = None
    generator: bool = False
    on_epoch: Callable[[int, dict], None] | None = None  # (epoch, logs) after each epoch


@dataclass
class TrainOutput:
    history: dict[str, list[float]]
    predictions: dict[str, np.ndarray]  # set name -> class probabilities or regression outputs
    epochs: int
    best_epoch: int  # 1-based
    device: str
    extra: dict[str, Any] = field(default_factory=dict)


def build_checked(model_fn: Callable, input_shape, outputs: int, task_type: str, params: dict,
                  model_type: type, type_name: str, other_framework: str):
    """Call the model function (models.build_model) and check that it made a `model_type`."""
    from ..models import build_model

    model = build_model(model_fn, input_shape, outputs, task_type, params)
    if not isinstance(model, model_type):
        raise TypeError(
            f"model function {model_fn.__name__} returned a {type(model).__name__}, not a {type_name} "
            f"(set framework=\"{other_framework}\" for a {other_framework} model)"
        )
    return model


def check_output_shape(shape, outputs: int) -> None:
    """check_model's test of one datapoint's output: (1, outputs)."""
    if tuple(shape) != (1, outputs):
        raise ValueError(f"the model outputs shape {tuple(shape)[1:]}, expected ({outputs},)")


def stopping_patience(params: dict[str, Any]) -> int:
    """Epochs without improvement before training stops; early_stopping=False (the original
    scripts' switch) never stops early, the best epoch is still restored."""
    return params["patience"] if params.get("early_stopping", True) else params["num_epochs"] + 1


def shuffles(params: dict[str, Any]) -> bool:
    """Whether training batches are reshuffled each epoch (shuffle_training_data, default True)."""
    return bool(params.get("shuffle_training_data", True))


INFERENCE_BATCH_BYTES = 32 * 1024**2


def inference_batch_size(batch_size: int, input_shape) -> int:
    """The batch of validation passes and predictions: `batch_size`, or as many datapoints as fit
    in 32 MiB of float32 input if more. Inference treats each datapoint alone (no gradient, dropout
    off, batch norm frozen), so the batch changes no result, while each small batch costs a round of
    framework overhead: with the demo's 8 kB datapoints a fold's three predictions take one batch
    each instead of a dozen."""
    per_datapoint = 4 * int(np.prod(tuple(input_shape))) or 1
    return max(int(batch_size), INFERENCE_BATCH_BYTES // per_datapoint)


def trainer_for(framework: str):
    if framework == "torch":
        from . import torch as trainer
    else:
        from . import keras as trainer
    return trainer
