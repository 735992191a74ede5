"""Experiment modules: load one, check every setting, and resolve its instances.

An experiment is a Python file with the names of the original scripts, so that existing
experiments port by copy (see experiments/example.py).
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from . import params as P
from .config import Config, load_config
from .errors import ParameterError, XvalError
from .porting.source import ExperimentSource, read_source
from .quiet import imports_tensorflow

TASK_TYPES = ("classification", "regression")
# name: (type, required)
SETTINGS = {
    "short_description": (str, True),
    "dataset": (str, True),
    "num_experiment": (int, True),
    "num_folds": (int, False),  # required unless `folds` names them
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
    "folds": ((dict, str), False),  # {item: fold}, a csv of item,fold, or "leave_one_group_out"
    "validation": (str, False),  # "items" (held-out items) or "within_training_items" (TESS)
}
LEAVE_ONE_GROUP_OUT = "leave_one_group_out"
VALIDATION_KINDS = ("items", "within_training_items")


def import_file(path: Path, label: str, fresh: bool = False) -> ModuleType:
    """Import a Python file as a module, once per process unless `fresh`; errors become one line."""
    if not path.is_file():
        raise XvalError(f"{path}: no such {label} file")
    name = f"_xval_{label}_{abs(hash(str(path.resolve())))}"
    if not fresh and name in sys.modules:
        return sys.modules[name]
    if imports_tensorflow(path):  # a models module written the documented way: `import keras`
        from .devices import import_keras

        import_keras()  # first, on xvalkit's terms: quietly, on the chosen device
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


def find_experiment(target: str | Path) -> Path:
    """The experiment module that `target` names, the same forms for every command: a path
    (experiments/exp1.py), the same without .py, or a bare name also looked for in ./experiments/
    (exp1, exp1.py -> experiments/exp1.py)."""
    path = Path(target)
    candidates = [path] if path.suffix == ".py" else [path, Path(f"{path}.py")]
    if len(path.parts) == 1:
        candidates.append(Path("experiments") / candidates[-1].name)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        looked = f" (looked for {', '.join(map(str, candidates))})" if len(candidates) > 1 else ""
        raise XvalError(f"{target}: no such experiment file{looked}")
    return found


def exec_experiment(path: Path) -> tuple[ModuleType, ExperimentSource]:
    """Run an experiment file as a fresh module, less an original-scripts driver block and old imports
    (see porting/source.py, whose ExperimentSource says what was not run)."""
    if not path.is_file():
        raise XvalError(f"{path}: no such experiment file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise XvalError(f"{path}: cannot be read ({exc})") from None
    try:
        source = read_source(text, str(path))
        code = compile(source.tree, str(path), "exec")
    except SyntaxError as exc:
        raise XvalError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    name = f"_xval_experiment_{abs(hash(str(path.resolve())))}"
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)  # the user's own file, as `python exp.py` would run it
    except Exception as exc:  # the user's module raised while loading
        raise XvalError(f"{path}: raised {type(exc).__name__} while loading: {exc}") from exc
    return module, source


def misspelt_settings(module: ModuleType) -> dict[str, str]:
    """{top-level name: the setting it resembles} for names that look like a misspelt setting
    (`num_fold = 5`); modules, classes and functions are the user's own helpers, never settings."""
    lowered = {name.lower(): name for name in SETTINGS}
    found = {}
    for name, value in vars(module).items():
        if name.startswith("_") or name in SETTINGS or isinstance(value, (ModuleType, type)) or callable(value):
            continue
        close = difflib.get_close_matches(name.lower(), lowered, n=1, cutoff=0.85)
        if close:
            found[name] = lowered[close[0]]
    return found


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
    framework_models: dict[str, Path] = field(default_factory=dict)  # original scripts: per framework
    config: Config = field(default_factory=load_config)
    notes: list[str] = field(default_factory=list)  # one-line warnings for the user (old files, typos)
    overrides: dict[str, Any] = field(default_factory=dict)  # -p/--set NAME=VALUE, above every instance
    folds: dict[str, Any] | Path | str | None = None  # given folds, a csv path, or LEAVE_ONE_GROUP_OUT
    validation: str = "items"

    @cached_property
    def fold_count(self) -> int:
        """Folds per repeat: num_folds, or for leave-one-group-out without it the dataset's items
        (0 when the dataset cannot be read: `xval run` will say why)."""
        if self.num_folds or self.folds != LEAVE_ONE_GROUP_OUT:
            return self.num_folds
        from .data import load_dataset
        from .errors import DatasetError

        try:
            return len(load_dataset(self.config.data_folder, self.dataset, check_values=False).items)
        except DatasetError:
            return 0

    def fold_plan(self, dataset=None, num_folds: int | None = None):
        """The protocol of the folds (folds.FoldPlan); `num_folds` is xval run's --folds."""
        from . import folds as F

        if self.folds is None:
            plan = F.GroupedKFold(num_folds or self.num_folds)
        elif num_folds is not None:
            raise XvalError(f"--folds {num_folds}: {self.path} names its folds (folds = ...); remove --folds")
        elif isinstance(self.folds, dict):
            plan = F.GivenFolds(self.folds, f"{self.path.name}")
        elif self.folds == LEAVE_ONE_GROUP_OUT:
            plan = F.LeaveOneGroupOut()
        else:
            plan = F.GivenFolds.from_csv(self.folds)
        if self.validation == "within_training_items":
            plan = F.ValidationWithinItems(plan, None if dataset is None else dataset.manifest.get("sources"))
        return plan

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

    def models_file(self, framework: str) -> Path | None:
        """The models module of a framework: `models`, else an original-scripts define_models[_torch].py."""
        return self.models_path or self.framework_models.get(framework)

    def model_function(self, framework: str, architecture: str, where: str):
        from .models import model_function

        path = self.models_file(framework)
        module = self.user_models if path == self.models_path else import_file(path, "models")
        return model_function(framework, architecture, module, where)

    def _model_defaults(self, framework: str, architecture: str, where: str) -> dict[str, Any]:
        from .models import legacy, model_defaults

        fn = self.model_function(framework, architecture, where)
        if not isinstance(fn, legacy.LegacyModel):
            return model_defaults(fn)
        shape, outputs = self.dataset_dims  # an original-scripts model's defaults depend on them
        try:
            return model_defaults(fn, shape, outputs)
        except Exception as exc:  # the user's model function raised
            raise ParameterError(
                f"{where}: model function {architecture} (original-scripts style) raised "
                f"{type(exc).__name__} when called with no user parameters for shape {shape}: {exc}"
            ) from exc

    @cached_property
    def dataset_dims(self) -> tuple[tuple[int, ...], int]:
        """(datapoint shape, number of outputs) of the dataset."""
        from .data import load_dataset
        from .fold_data import num_outputs

        dataset = load_dataset(self.config.data_folder, self.dataset)
        return dataset.input_shape, num_outputs(dataset, self.task_type)

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
            command_line=self.overrides,
        )

    def framework_of(self, instance_id: int) -> Any:
        """The framework instance `instance_id` asks for (P.requested_framework: nothing imported)."""
        return P.requested_framework(self.instances[instance_id], self.global_parameters, self.config.training,
                                     self.overrides)

    def select(self, first: int | str | None, last: int | None = None) -> list[int]:
        """Instance IDs: all (first None), or those `first` and `last` name (select_instances)."""
        ids = sorted(self.instances)
        if first is None:
            return ids
        if last is not None:  # FIRST LAST is the range FIRST-LAST
            if not str(first).strip().isdigit():
                raise XvalError(f"instances {first} {last}: give a list ('1,4-6,9') or FIRST LAST ('3 7'), not both")
            first = f"{int(first)}-{last}"
        return select_instances(str(first), ids, str(self.path))


OLD_MODELS_FILES = {"keras": "define_models.py", "torch": "define_models_torch.py"}


def find_old_models(path: Path) -> dict[str, Path]:
    """The original scripts' models modules, beside the experiment file or in the folder above it
    (where its sys.path lines pointed), for a file without a `models` setting."""
    found = {}
    for framework, name in OLD_MODELS_FILES.items():
        for folder in (path.resolve().parent, path.resolve().parent.parent):
            if (folder / name).is_file():
                found[framework] = folder / name
                break
    return found


INSTANCE_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def select_instances(text: str, ids: list[int], where: str) -> list[int]:
    """The instances of `ids` that '1,5,9', '3-7' or '1,4-6,9' names (sorted, once each).

    One rule, whatever the form (`xval run exp 3 7` is '3-7'): a number names one instance, which
    must exist; a range takes the instances whose IDs lie in it (sweep IDs are sparse), at least one.
    """
    chosen: set[int] = set()
    missing: list[int] = []
    known = set(ids)
    for part in str(text).split(","):
        match = INSTANCE_PART.match(part)
        if match is None:
            raise XvalError(f"instances {text!r}: expected numbers and ranges like 1,5,9 or 3-7 or 1,4-6,9")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise XvalError(f"instances {part.strip()}: the last instance comes before the first")
        if match[2] is None:
            if low in known:
                chosen.add(low)
            else:
                missing.append(low)
            continue
        within = [i for i in ids if low <= i <= high]
        if not within:
            raise XvalError(f"{where}: no instance between {low} and {high}; the instances are {id_ranges(ids)}")
        chosen.update(within)
    if missing:
        raise XvalError(f"{where}: no instance {', '.join(map(str, missing))}; the instances are {id_ranges(ids)}")
    return sorted(chosen)


def parse_overrides(statements: list[str] | None) -> dict[str, Any]:
    """-p/--set NAME=VALUE options as a dict; each value a literal, as in an instance."""
    out: dict[str, Any] = {}
    for statement in statements or []:
        name, value = P.parse_statement(statement, f"-p {statement}")
        if name in P.MANDATORY:
            raise ParameterError(f"-p {statement}: {name} names an instance; set it in the experiment file")
        out[name] = value
    return out


def id_ranges(ids: list[int]) -> str:
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


def load_experiment(path: str | Path, config_file: str | Path | None = None,
                    overrides: list[str] | None = None) -> Experiment:
    """Read an experiment file and check its settings and the syntax of every instance.

    `overrides` are -p/--set 'NAME=VALUE' statements applied above every instance.
    """
    path = find_experiment(path)
    command_line = parse_overrides(overrides)
    module, source = exec_experiment(path)  # run afresh every time: the file may have changed since
    typos = misspelt_settings(module)
    notes = [source.note(path)] if source.old_style else []
    notes += [f"{path}: {name} is not a setting and is ignored; did you mean {setting}?" for name, setting in typos.items()]
    values: dict[str, Any] = {}
    missing = [name for name, (_, required) in SETTINGS.items() if required and not hasattr(module, name)]
    if not hasattr(module, "num_folds") and not hasattr(module, "folds"):
        missing.insert(3, "num_folds")  # or folds, which names them
    if missing:
        hint = "".join(f" ({name} is set: a misspelling of {setting}?)" for name, setting in typos.items()
                       if setting in missing)
        raise XvalError(f"{path}: missing setting{'s' if len(missing) > 1 else ''} {', '.join(missing)}{hint}")
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
    folds = _given_folds(path, values)
    if values.get("num_folds", 1) < 1:
        raise XvalError(f"{path}: num_folds = {values['num_folds']} must be at least 1")
    if values.get("validation") == "within_training_items" and values.get("num_repeats", 1) > 1:
        raise XvalError(f"{path}: num_repeats with validation = 'within_training_items' is not supported; "
                        "remove num_repeats")
    if values.get("validation", "items") not in VALIDATION_KINDS:
        raise XvalError(f"{path}: validation = {values['validation']!r}: give 'items' (held-out items, the default) "
                        "or 'within_training_items' (source files of the training items: TESS's two speakers)")
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
    framework_models = {}
    if source.old_style and not values.get("models"):
        framework_models = find_old_models(path)
        if framework_models:
            notes.append(f"{path}: models from {', '.join(str(p) for p in framework_models.values())}")
        if source.torch_variant and "framework" not in global_parameters:
            global_parameters["framework"] = "torch"  # it imported an xval_instance_torch... variant
            notes.append(f"{path}: framework 'torch' by default (the file imported a torch variant of xval_instance)")
    base = path.resolve().parent
    models = values.get("models")
    config = load_config(config_file, experiment=path)
    return Experiment(
        path=path,
        short_description=values["short_description"],
        dataset=values["dataset"],
        num_experiment=values["num_experiment"],
        num_folds=_num_folds(path, values, folds),
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
        framework_models=framework_models,
        config=config,
        notes=notes + config.notes,
        overrides=command_line,
        folds=folds,
        validation=values.get("validation", "items"),
    )


def _num_folds(path: Path, values: dict[str, Any], folds) -> int:
    """num_folds, or how many folds `folds` names (0 for leave-one-group-out: the dataset's items);
    a num_folds beside `folds` must agree with it."""
    if folds is None or folds == LEAVE_ONE_GROUP_OUT:
        return values.get("num_folds", 0)
    from .folds import GivenFolds

    plan = GivenFolds(folds, path.name) if isinstance(folds, dict) else GivenFolds.from_csv(folds)
    named = len(set(plan.assignment.values()))
    if values.get("num_folds", named) != named:
        raise XvalError(f"{path}: num_folds = {values['num_folds']} but folds = ... names {named} folds; "
                        f"remove num_folds or make it {named}")
    return named


def _given_folds(path: Path, values: dict[str, Any]) -> dict | Path | str | None:
    """The `folds` setting checked: a dict, LEAVE_ONE_GROUP_OUT, or a csv path (relative to the file)."""
    folds = values.get("folds")
    if folds is None:
        return None
    if values.get("num_repeats", 1) > 1:
        raise XvalError(f"{path}: num_repeats = {values['num_repeats']} repeats drawn folds; folds = ... names "
                        "them, so every repeat would be the same: remove num_repeats")
    if isinstance(folds, dict):
        from .folds import GivenFolds

        GivenFolds(folds, path.name)  # its values checked now
        return folds
    if folds == LEAVE_ONE_GROUP_OUT:
        return folds
    if not folds.endswith(".csv"):
        raise XvalError(f"{path}: folds = {folds!r}: give {{item: fold}}, a csv file of item,fold "
                        f"('folds.csv'), or {LEAVE_ONE_GROUP_OUT!r}")
    csv = (path.resolve().parent / folds).resolve()
    if not csv.is_file():
        raise XvalError(f"{path}: folds = {folds!r}: no such file {csv}")
    return csv
