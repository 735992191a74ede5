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


def trainer_for(framework: str):
    if framework == "torch":
        from . import torch as trainer
    else:
        from . import keras as trainer
    return trainer
