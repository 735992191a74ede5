"""Model functions of the original scripts: `NAME(time_dim, features_dim, user_parameters=[...])`.

Such a function fills a dict `p` of defaults, lets its own `parse_parameters(p, user_parameters)`
overwrite them from 'name=value' strings, builds a Keras Model or a torch nn.Module and returns
`(model, p)`. `LegacyModel` makes it a model function like the others:

- its defaults are the `p` it returns when called with no user parameters for the dataset's
  (time, frequency) shape (computed once per shape); `output_classes`, when `p` has it, defaults to
  the dataset's number of outputs, since the outputs come from the dataset;
- it is built with `user_parameters=['name=<repr(value)>', ...]` for every key of `p`, so its own
  parser gets back exactly the resolved values (Python literals);
- it gets (time_dim, features_dim) of the datapoints; the channel axis that 'conv' adds is the
  trainer's business (Keras: last, torch: first).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

OUTPUTS_KEY = "output_classes"


def is_legacy(fn: Callable) -> bool:
    """An old-style function: a `user_parameters` parameter after (time_dim, features_dim)."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return "user_parameters" in names and names.index("user_parameters") >= 2


def datapoint_dims(input_shape) -> tuple[int, int]:
    """(time_dim, features_dim) of a model input shape: (t, f), (t, f, 1) or (1, t, f)."""
    shape = tuple(int(n) for n in input_shape)
    if len(shape) == 3:
        shape = shape[:2] if shape[2] == 1 else shape[1:]
    if len(shape) != 2:
        raise ValueError(f"an original-scripts model takes (time, features) datapoints, got shape {tuple(input_shape)}")
    return shape


class LegacyModel:
    """An old-style model function seen as `fn(input_shape, num_outputs, task_type, **params)`."""

    legacy = True

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__module__ = fn.__module__
        self.__wrapped_function__ = fn  # for the source file of a saved model (trainers/torch.py)
        self._defaults: dict[tuple, dict[str, Any]] = {}
        self._last: dict[str, Any] | None = None

    def _call(self, dims: tuple[int, int], user_parameters: list[str]):
        result = self.fn(dims[0], dims[1], user_parameters=user_parameters)
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            raise TypeError(f"model function {self.__name__} should return (model, p), "
                            f"as the original scripts' models do; it returned a {type(result).__name__}")
        return result

    def defaults(self, input_shape=None, num_outputs: int | None = None) -> dict[str, Any]:
        """The function's own `p` for this input shape (the last shape asked for when None)."""
        if input_shape is None:
            if self._last is None:
                raise ValueError(f"the defaults of {self.__name__} depend on the input shape; none is known yet")
            return dict(self._last)
        key = (datapoint_dims(input_shape), num_outputs)
        if key not in self._defaults:
            _, p = self._call(key[0], [])
            p = dict(p)
            if OUTPUTS_KEY in p and num_outputs is not None:
                p[OUTPUTS_KEY] = int(num_outputs)
            self._defaults[key] = p
        self._last = self._defaults[key]
        return dict(self._last)

    def __call__(self, input_shape, num_outputs, task_type, **params):
        defaults = self.defaults(input_shape, num_outputs)
        values = {**defaults, **{k: v for k, v in params.items() if k in defaults}}
        model, _ = self._call(datapoint_dims(input_shape), [f"{k}={v!r}" for k, v in values.items()])
        return model


_ADAPTERS: dict[Callable, LegacyModel] = {}


def adapt(fn: Callable) -> LegacyModel:
    """One adapter per function and process, so its defaults are computed once."""
    if fn not in _ADAPTERS:
        _ADAPTERS[fn] = LegacyModel(fn)
    return _ADAPTERS[fn]
