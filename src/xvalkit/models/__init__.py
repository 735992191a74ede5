"""Model functions: `fn(input_shape, num_outputs, task_type, **model_parameters) -> model`.

A model function's keyword defaults are the model parameters an instance may override. Built-in
models live in keras_models.py (and torch_models.py); a user's models module (the experiment's
`models = "my_models.py"`) is searched first, so a user may also redefine a built-in name.
Importing these modules never imports a framework: that happens when a model is built.
Functions of the original scripts, `NAME(time_dim, features_dim, user_parameters=[...]) -> (model, p)`,
are recognised and adapted (legacy.py): their defaults are their `p` for the dataset's shape.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any, Callable

from ..errors import ParameterError
from ..params import suggest
from . import legacy

BUILTIN_MODULES = {"keras": "xvalkit.models.keras_models", "torch": "xvalkit.models.torch_models"}
POSITIONAL = ("input_shape", "num_outputs", "task_type")


def _public_functions(module: ModuleType) -> dict[str, Callable]:
    return {
        name: obj for name, obj in vars(module).items()
        if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == module.__name__
    }


def builtin_models(framework: str) -> dict[str, Callable]:
    try:
        module = importlib.import_module(BUILTIN_MODULES[framework])
    except ModuleNotFoundError:
        return {}
    return _public_functions(module)


def model_function(framework: str, name: str, user_module: ModuleType | None, where: str) -> Callable:
    """The function named `name`: the user's models module first, then the built-ins."""
    candidates = {}
    if user_module is not None:
        candidates.update(_public_functions(user_module))
    candidates = {**builtin_models(framework), **candidates}
    if name not in candidates:
        source = f"the built-in {framework} models" + (
            f" or {user_module.__file__}" if user_module is not None else ""
        )
        raise ParameterError(
            f"{where}: architecture {name!r} is not in {source}{suggest(name, candidates)}"
        )
    fn = candidates[name]
    if legacy.is_legacy(fn):
        return legacy.adapt(fn)
    check_signature(fn, where)
    return fn


def check_signature(fn: Callable, where: str) -> None:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 3 or any(p.default is not inspect.Parameter.empty for p in params[:3]):
        raise ParameterError(
            f"{where}: model function {fn.__name__} must take (input_shape, num_outputs, task_type, "
            f"**parameters with defaults) but takes ({', '.join(p.name for p in params)})"
        )


def model_defaults(fn: Callable, input_shape=None, num_outputs: int | None = None) -> dict[str, Any]:
    """The keyword defaults of a model function: its overridable model parameters.

    An original-scripts function's defaults depend on the input shape (legacy.LegacyModel.defaults).
    """
    if isinstance(fn, legacy.LegacyModel):
        return fn.defaults(input_shape, num_outputs)
    return {
        p.name: p.default
        for p in list(inspect.signature(fn).parameters.values())[3:]
        if p.default is not inspect.Parameter.empty
    }


def build_model(fn: Callable, input_shape, num_outputs: int, task_type: str, params: dict[str, Any]):
    """Call a model function with exactly the parameters it declares."""
    if isinstance(fn, legacy.LegacyModel):
        return fn(tuple(input_shape), num_outputs, task_type, **params)
    accepted = model_defaults(fn)
    kwargs = {name: params[name] for name in accepted if name in params}
    return fn(tuple(input_shape), num_outputs, task_type, **kwargs)
