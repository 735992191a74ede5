"""Experiment modules: load one, check every setting, and resolve its instances.

An experiment is a Python file with the names of the original scripts, so that existing
experiments port by copy (see experiments/example.py).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from . import params as P
from .config import Config, load_config
from .errors import XvalError

TASK_TYPES = ("classification", "regression")
# name: (type, required)
SETTINGS = {
    "short_description": (str, True),
    "dataset": (str, True),
    "num_experiment": (int, True),
    "num_folds": (int, True),
    "num_repeats": (int, False),
    "sweep": (dict, False),
    "experiment_folder": (str, True),
    "task_type": (str, True),
    "experiment": (dict, True),
    "overwrite_results": (bool, False),
    "debug_mode": (bool, False),
    "generator": (bool, False),
    "gpu_ID": (int, False),
    "global_parameters": ((list, tuple, dict), False),
    "models": (str, False),
    "fold_seed": (int, False),
}


def import_file(path: Path, label: str, fresh: bool = False) -> ModuleType:
    """Import a Python file as a module, once per process unless `fresh`; errors become one line."""
    if not path.is_file():
        raise XvalError(f"{path}: no such {label} file")
    name = f"_xval_{label}_{abs(hash(str(path.resolve())))}"
    if not fresh and name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise XvalError(f"{path}: cannot be imported as a Python module (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise XvalError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except Exception as exc:  # the user's module raised while loading
        raise XvalError(f"{path}: raised {type(exc).__name__} while loading: {exc}") from exc
    return module


@dataclass
class Experiment:
    path: Path
    short_description: str
    dataset: str
    num_experiment: int
    num_folds: int
    experiment_folder: Path
    task_type: str
    instances: dict[int, dict[str, Any]]
    global_parameters: dict[str, Any] = field(default_factory=dict)
    overwrite_results: bool = False
    debug_mode: bool = False
    generator: bool = False
    gpu_ID: int | None = None
    num_repeats: int = 1  # repeated grouped k-fold: num_repeats partitions of num_folds folds
    swept: dict[int, list[str]] = field(default_factory=dict)  # instance -> its swept parameters
    models_path: Path | None = None
    fold_seed: int | None = None  # None: the seed of config.ini / global_parameters (runner.fold_seed)
    config: Config = field(default_factory=load_config)

    @property
    def folder(self) -> Path:
        """<experiment_folder>/<dataset>/experiment_<N>"""
        return self.experiment_folder / self.dataset / f"experiment_{self.num_experiment}"

    @cached_property
    def user_models(self) -> ModuleType | None:
        """The user's models module, imported on first use (after the device is chosen)."""
        if self.models_path is None:
            return None
        return import_file(self.models_path, "models")

    def model_function(self, framework: str, architecture: str, where: str):
        from .models import model_function

        return model_function(framework, architecture, self.user_models, where)

    def _model_defaults(self, framework: str, architecture: str, where: str) -> dict[str, Any]:
        from .models import model_defaults

        return model_defaults(self.model_function(framework, architecture, where))

    def resolve(self, instance_id: int) -> dict[str, Any]:
        """Every parameter of one instance, resolved and checked (ParameterError otherwise)."""
        where = f"{self.path}: instance {instance_id}"
        return P.resolve(
            where,
            self.instances[instance_id],
            self.global_parameters,
            self.config.training,
            self._model_defaults,
            self.task_type,
        )

    def select(self, first: int | None, last: int | None) -> list[int]:
        """Instance IDs from first to last (all when first is None; only first when last is None)."""
        ids = sorted(self.instances)
        if first is None:
            return ids
        last = first if last is None else last
        if last < first:
            raise XvalError(f"instances {first} to {last}: the last instance comes before the first")
        chosen = [i for i in ids if first <= i <= last]
        if not chosen:
            raise XvalError(
                f"{self.path}: no instance between {first} and {last}; the instances are {_ranges(ids)}"
            )
        return chosen


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "none"
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def load_experiment(path: str | Path, config_file: str | Path | None = None) -> Experiment:
    """Import an experiment module and check its settings and the syntax of every instance."""
    path = Path(path)
    if path.suffix != ".py" and not path.exists() and path.with_suffix(".py").is_file():
        path = path.with_suffix(".py")
    module = import_file(path, "experiment", fresh=True)  # the file may have changed since
    values: dict[str, Any] = {}
    missing = [name for name, (_, required) in SETTINGS.items() if required and not hasattr(module, name)]
    if missing:
        raise XvalError(f"{path}: missing setting{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for name, (kind, _) in SETTINGS.items():
        if not hasattr(module, name):
            continue
        value = getattr(module, name)
        if name == "experiment_folder" and isinstance(value, Path):
            value = str(value)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok and not (name == "gpu_ID" and value is None):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise XvalError(f"{path}: {name} = {value!r} should be a {expected}")
        values[name] = value
    if values["task_type"] not in TASK_TYPES:
        raise XvalError(f"{path}: task_type = {values['task_type']!r} is not 'classification' or 'regression'")
    if values["num_folds"] < 1:
        raise XvalError(f"{path}: num_folds = {values['num_folds']} must be at least 1")
    if values.get("num_repeats", 1) < 1:
        raise XvalError(f"{path}: num_repeats = {values['num_repeats']} must be at least 1")
    if not values["experiment"]:
        raise XvalError(f"{path}: the experiment dict has no instances")
    instances = {}
    for key, spec in values["experiment"].items():
        if not isinstance(key, int) or isinstance(key, bool):
            raise XvalError(f"{path}: instance key {key!r} should be an int, as in experiment[1] = [...]")
        instances[key] = P.parse_instance(spec, f"{path}: instance {key}")
    swept: dict[int, list[str]] = {}
    if "sweep" in values:
        from .sweeps import expand

        instances, swept = expand(instances, values["sweep"], str(path))
    global_parameters = P.parse_instance(values.get("global_parameters", []), f"{path}: global_parameters")
    base = path.resolve().parent
    models = values.get("models")
    return Experiment(
        path=path,
        short_description=values["short_description"],
        dataset=values["dataset"],
        num_experiment=values["num_experiment"],
        num_folds=values["num_folds"],
        experiment_folder=(base / values["experiment_folder"]).resolve(),
        task_type=values["task_type"],
        instances=instances,
        global_parameters=global_parameters,
        overwrite_results=values.get("overwrite_results", False),
        debug_mode=values.get("debug_mode", False),
        generator=values.get("generator", False),
        gpu_ID=values.get("gpu_ID"),
        num_repeats=values.get("num_repeats", 1),
        swept=swept,
        models_path=(base / models).resolve() if models else None,
        fold_seed=values.get("fold_seed"),
        config=load_config(config_file),
    )
