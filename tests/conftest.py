"""Shared test helpers: real experiment modules written to tmp folders, tiny real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("PYTHONHASHSEED", "0")

# Tiny models: a few seconds per fold on a 2-core CPU.
TINY = ['num_epochs=3', 'patience=2', 'batch_size=32', 'channels_1=4', 'channels_2=4', 'hidden_size=8']


def write_experiment(folder: Path, instances: dict, *, name: str = "exp_test", dataset: str = "demo",
                     num_folds: int = 3, task_type: str = "classification", global_parameters=None,
                     extra: str = "", **settings) -> Path:
    """Write an experiment module as a user would, and a config.ini beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    values = dict(
        short_description="test experiment", dataset=dataset, num_experiment=1, num_folds=num_folds,
        experiment_folder="results", overwrite_results=False, debug_mode=False, task_type=task_type,
        generator=False,
    )
    values.update(settings)
    lines = [f"{key} = {value!r}" for key, value in values.items()]
    lines.append(f"global_parameters = {list(TINY if global_parameters is None else global_parameters)!r}")
    lines.append("experiment = {}")
    lines += [f"experiment[{key}] = {spec!r}" for key, spec in instances.items()]
    path = folder / f"{name}.py"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def instance(comment: str = "c", architecture: str = "EXAMPLE_model", reshaping: str = "cnn", *more: str) -> list[str]:
    return [f'architecture="{architecture}"', f'reshaping_type="{reshaping}"', f'comment_1="{comment}"',
            'comment_2="test"', *more]


@pytest.fixture(scope="session")
def data_folder(tmp_path_factory) -> Path:
    """One data folder for the session: the demo datasets are synthesised there once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def config_file(tmp_path, data_folder) -> Path:
    path = tmp_path / "test_config.ini"
    path.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    return path
