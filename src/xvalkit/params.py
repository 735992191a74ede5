"""Instance parameters: 'name=value' statements parsed as data, never executed, then resolved.

Precedence (later wins): config.ini [training] < the model function's keyword defaults <
global_parameters < the instance's own statements. Every resolved value is checked against the
type of its default, so a typo or a wrong type stops the run before any training starts.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ParameterError

# Parameters every instance must set (after global_parameters are applied).
MANDATORY = ("comment_1", "comment_2", "architecture", "reshaping_type")
RESHAPING_TYPES = {"conv": "conv", "cnn": "conv", "rnn": "rnn", "none": "none"}
# Allowed values of training parameters with a closed set of choices.
CHOICES = {
    "framework": ("keras", "torch"),
    "optimizer": ("adam", "sgd", "rmsprop"),
    "save_best_model_mode": ("auto", "min", "max"),
    "normalization": ("standard", "none"),
}
HISTORY_METRICS = {
    "classification": ("loss", "accuracy", "val_loss", "val_accuracy"),
    "regression": ("loss", "mae", "val_loss", "val_mae"),
}
METRIC_ALIASES = {"acc": "accuracy", "val_acc": "val_accuracy"}
# The checkpoint mode each history metric needs: higher accuracy is better, lower loss / MAE.
METRIC_MODES = {"loss": "min", "val_loss": "min", "accuracy": "max", "val_accuracy": "max",
                "mae": "min", "val_mae": "min"}
# Old names of the original scripts, accepted in instances, global_parameters and -p.
ALIASES = {"save_model_metric": "save_best_model_metric"}
# Training switches of the original scripts that are resolved only when set (so that results saved
# before they existed still resume): name -> default.
OPTIONAL_TRAINING = {"early_stopping": True, "shuffle_training_data": True}
# Parameters that say how to run, not what to train: changing them does not stop a resume.
HOW_TO_RUN = ("threads",)
LITERAL_TYPES = (str, int, float, bool, type(None), tuple, list, dict, set, bytes, complex)


def parse_statement(statement: str, where: str) -> tuple[str, Any]:
    """Parse one 'name=literal' statement; `where` names the instance for error messages.

    >>> parse_statement('learning_rate=0.01', 'instance 1')
    ('learning_rate', 0.01)
    """
    if not isinstance(statement, str):
        raise ParameterError(f"{where}: {statement!r} is not a 'name=value' string")
    text = statement.strip()
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError:
        raise ParameterError(f"{where}: {statement!r} is not a 'name=value' statement") from None
    if (
        len(tree.body) != 1
        or not isinstance(tree.body[0], ast.Assign)
        or len(tree.body[0].targets) != 1
        or not isinstance(tree.body[0].targets[0], ast.Name)
    ):
        raise ParameterError(
            f"{where}: {statement!r} is not a single 'name=value' statement (one per string)"
        )
    name = tree.body[0].targets[0].id
    try:
        value = ast.literal_eval(tree.body[0].value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ParameterError(
            f"{where}: the value of {name!r} in {statement!r} is not a Python literal "
            "(numbers, strings, True/False/None, tuples, lists, dicts); values are data, never code"
        ) from None
    return name, value


def parse_instance(spec: Iterable[str] | Mapping[str, Any], where: str) -> dict[str, Any]:
    """A list of 'name=value' strings, or a dict {name: value}, as a dict of parameters."""
    if isinstance(spec, Mapping):
        out = {}
        for name, value in spec.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ParameterError(f"{where}: parameter name {name!r} is not an identifier")
            if not isinstance(value, LITERAL_TYPES):
                raise ParameterError(
                    f"{where}: parameter {name!r} is a {type(value).__name__}; values must be literals"
                )
            out[name] = value
        return out
    if isinstance(spec, str) or not isinstance(spec, Iterable):
        raise ParameterError(
            f"{where}: expected a list of 'name=value' strings or a dict, got {type(spec).__name__}"
        )
    out = {}
    for statement in spec:
        name, value = parse_statement(statement, where)
        if name in out:
            raise ParameterError(f"{where}: parameter {name!r} is set twice")
        out[name] = value
    return out


def _parse_quoted(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return ast.literal_eval(text.strip())


def coerce(name: str, value: Any, default: Any, where: str) -> Any:
    """Convert `value` to the type of `default`; a quoted number ("0.001") becomes a number."""
    if default is None or value is None:
        return value
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = _parse_quoted(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ParameterError(
                f"{where}: {name}={value!r} is not a {type(default).__name__} like its default {default!r}"
            ) from None
    wrong = ParameterError(
        f"{where}: {name}={value!r} is a {type(value).__name__}, expected a "
        f"{type(default).__name__} like its default {default!r}"
    )
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise wrong
    if isinstance(default, int):
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise wrong
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise wrong
    if isinstance(default, (tuple, list)):
        if isinstance(value, (tuple, list)):
            return type(default)(value)
        raise wrong
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise wrong
    return value


def differing_parameters(params: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the parameters whose values are not the same in every dict (comments aside), in the
    order they first appear."""
    params = list(params)
    names: list[str] = []
    for p in params:
        names += [k for k in p if k not in names and k not in ("comment_1", "comment_2")]
    return [k for k in names if len({repr(p.get(k, "<unset>")) for p in params}) > 1]


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate_training(params: dict[str, Any], task_type: str, where: str) -> None:
    """Check the values of training parameters whose range is known."""
    for name, choices in CHOICES.items():
        if name in params and params[name] not in choices:
            raise ParameterError(
                f"{where}: {name}={params[name]!r} is not one of {', '.join(map(repr, choices))}"
            )
    positive = ("batch_size", "num_epochs")
    for name in positive:
        if name in params and params[name] < 1:
            raise ParameterError(f"{where}: {name}={params[name]!r} must be at least 1")
    if params.get("threads", 0) < 0:
        raise ParameterError(f"{where}: threads={params['threads']!r} must be 0 (xvalkit decides) or a number of threads")
    if params.get("patience", 0) < 0:
        raise ParameterError(f"{where}: patience={params['patience']!r} must be 0 or more")
    if params.get("learning_rate", 1) <= 0:
        raise ParameterError(f"{where}: learning_rate={params['learning_rate']!r} must be positive")
    for name in ("validation_split", "test_split"):
        if name in params and not 0 < params[name] < 1:
            raise ParameterError(f"{where}: {name}={params[name]!r} must be a fraction between 0 and 1")
    if params.get("validation_split", 0) + params.get("test_split", 0) >= 1:
        raise ParameterError(
            f"{where}: validation_split + test_split = "
            f"{params['validation_split'] + params['test_split']:.3g} leaves nothing to train on"
        )
    metric = params.get("save_best_model_metric")
    if metric is not None:
        metric = METRIC_ALIASES.get(metric, metric)
        allowed = HISTORY_METRICS[task_type]
        if metric not in allowed:
            raise ParameterError(
                f"{where}: save_best_model_metric={params['save_best_model_metric']!r} is not one of "
                f"{', '.join(map(repr, allowed))} for a {task_type} task"
            )
        params["save_best_model_metric"] = metric
        _resolve_mode(params, metric, where)


def _resolve_mode(params: dict[str, Any], metric: str, where: str) -> None:
    """save_best_model_mode 'auto' becomes the metric's own mode; a contradicting mode is refused
    (it would stop on the worst epoch and restore it)."""
    mode, needed = params.get("save_best_model_mode", "auto"), METRIC_MODES[metric]
    if mode not in ("auto", needed):
        better = "higher" if needed == "max" else "lower"
        raise ParameterError(
            f"{where}: save_best_model_mode={mode!r} contradicts save_best_model_metric={metric!r} "
            f"({better} is better): use {needed!r} or 'auto'"
        )
    params["save_best_model_mode"] = needed


def _requested_framework(overrides: dict[str, Any], training_defaults: dict[str, Any]) -> Any:
    return overrides.get("framework", training_defaults.get("framework", "keras"))


def requested_framework(instance: dict[str, Any], global_parameters: dict[str, Any],
                        training_defaults: dict[str, Any], command_line: dict[str, Any] | None = None) -> Any:
    """The framework an instance asks for, found without resolving it: no model module is imported
    (a module importing a framework before the device is chosen would defeat the GPU choice)."""
    try:
        overrides = {**_renamed(global_parameters, ""), **_renamed(instance, ""), **_renamed(command_line or {}, "")}
    except ParameterError:  # said with its place when the instance is resolved
        overrides = {}
    return _requested_framework(overrides, training_defaults)


def _renamed(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Old parameter names (ALIASES) under today's names; both given is an error."""
    out = dict(params)
    for old, new in ALIASES.items():
        if old in out:
            if new in out:
                raise ParameterError(f"{where}: {old} is the old name of {new}; set only one of them")
            out[new] = out.pop(old)
    return out


def _apply_train_split(resolved: dict[str, Any], explicit: dict[str, Any], where: str) -> None:
    """train_split of the original scripts: the training fraction; the test fraction is what
    train_split and validation_split leave (with k >= 2 folds the test set is one fold anyway)."""
    train = resolved.pop("train_split")
    if not isinstance(train, (int, float)) or isinstance(train, bool) or not 0 < train < 1:
        raise ParameterError(f"{where}: train_split={train!r} must be a fraction between 0 and 1")
    test = 1.0 - train - resolved["validation_split"]
    if "test_split" in explicit and abs(resolved["test_split"] - test) > 1e-9:
        raise ParameterError(
            f"{where}: train_split={train!r}, validation_split={resolved['validation_split']!r} and "
            f"test_split={resolved['test_split']!r} do not add up to 1; set two of them"
        )
    if test <= 0:
        raise ParameterError(f"{where}: train_split + validation_split = {train + resolved['validation_split']:.3g} "
                             "leaves nothing to test on")
    resolved["test_split"] = round(test, 12)


def resolve(
    where: str,
    instance: dict[str, Any],
    global_parameters: dict[str, Any],
    training_defaults: dict[str, Any],
    model_defaults_for,
    task_type: str,
    command_line: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve an instance's parameters (every value, in precedence order).

    `model_defaults_for(framework, architecture)` returns the model function's keyword defaults,
    raising ParameterError for an unknown architecture. `command_line` (-p/--set) wins over all.
    """
    command_line = _renamed(command_line or {}, "-p/--set")
    overrides = {**_renamed(global_parameters, where), **_renamed(instance, where), **command_line}
    missing = [name for name in MANDATORY if name not in overrides]
    if missing:
        raise ParameterError(
            f"{where}: missing mandatory parameter{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (set {'them' if len(missing) > 1 else 'it'} in the instance or in global_parameters)"
        )
    reshaping = overrides["reshaping_type"]
    if reshaping not in RESHAPING_TYPES:
        raise ParameterError(
            f"{where}: reshaping_type={reshaping!r} is not one of 'conv' (or 'cnn'), 'rnn', 'none'"
        )
    overrides["reshaping_type"] = RESHAPING_TYPES[reshaping]
    for name in ("comment_1", "comment_2"):
        overrides[name] = str(overrides[name])
    if not isinstance(overrides["architecture"], str):
        raise ParameterError(f"{where}: architecture={overrides['architecture']!r} must be a model name string")
    framework = coerce("framework", _requested_framework(overrides, training_defaults), "keras", where)
    if framework not in CHOICES["framework"]:
        raise ParameterError(f"{where}: framework={framework!r} is not one of 'keras', 'torch'")
    model_defaults = model_defaults_for(framework, overrides["architecture"], where)
    defaults = {**training_defaults, **model_defaults}
    optional = {**OPTIONAL_TRAINING, "train_split": 0.6}
    known = set(defaults) | set(MANDATORY) | set(optional)
    resolved = dict(defaults)
    for name, value in overrides.items():
        if name not in known:
            source = f"-p {name}=...: " if name in command_line else ""
            raise ParameterError(f"{where}: {source}unknown parameter {name!r}{suggest(name, known)}")
        if name in MANDATORY:
            resolved[name] = value
            continue
        resolved[name] = coerce(name, value, defaults[name] if name in defaults else optional[name], where)
    if "train_split" in resolved:
        _apply_train_split(resolved, overrides, where)
    validate_training(resolved, task_type, where)
    return resolved
