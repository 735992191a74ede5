"""`xval run`: validate everything, then train instances x folds and fill the experiment folder.

Order of work, so that no bad input wastes a minute of training: parameters of every selected
instance -> dataset -> fold plans -> resume consistency -> a trial build of every model -> train.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from . import report
from .data import Dataset, load_dataset
from .devices import current_choice
from .errors import XvalError
from .experiment import Experiment
from .fold_data import FoldData, model_input_shape, num_outputs
from .folds import Fold, plan_folds
from .metrics import compute, summarize
from .snapshot import provenance, write_snapshot
from .store import ExperimentStore
from .trainers import MODEL_EXTENSIONS, TrainJob, trainer_for


@dataclass
class RunOptions:
    first: int | None = None
    last: int | None = None
    overwrite: bool = False
    debug: bool = False
    num_folds: int | None = None


@dataclass
class RunSummary:
    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class Instance:
    """One selected instance, resolved and planned."""

    id: int
    params: dict[str, Any]
    folds: list[Fold]
    where: str

    @property
    def fold_plan(self) -> dict[int, dict[str, list[str]]]:
        return {f.index: f.as_dict() for f in self.folds}


def _labels(dataset: Dataset, task_type: str):
    if task_type != "classification":
        return None
    from .fold_data import targets_for

    return {item: targets_for(task_type, y, dataset.name) for item, y in dataset.targets.items()}


def plan_instances(exp: Experiment, options: RunOptions, dataset: Dataset) -> list[Instance]:
    num_folds = options.num_folds or exp.num_folds
    labels = _labels(dataset, exp.task_type)
    plans: dict[tuple, list[Fold]] = {}
    instances = []
    for run in exp.select(options.first, options.last):
        params = exp.resolve(run)
        key = (params["validation_split"], params["test_split"], params["seed"])
        if key not in plans:
            plans[key] = plan_folds(dataset.items, num_folds, *key, labels=labels)
        instances.append(Instance(run, params, plans[key], f"{exp.path}: instance {run}"))
    return instances


def check_resumable(store: ExperimentStore, instance: Instance) -> None:
    """Refuse to mix folds trained under different parameters or fold plans."""
    saved = store.load_instance(instance.id)
    if saved is None or not saved["folds"]:
        return
    changed = [k for k in sorted(set(saved["parameters"]) | set(instance.params))
               if saved["parameters"].get(k, "<unset>") != instance.params.get(k, "<unset>")]
    if changed:
        first = changed[0]
        raise XvalError(
            f"{instance.where}: parameters changed since its saved folds were trained "
            f"({first}: {saved['parameters'].get(first, '<unset>')!r} -> {instance.params.get(first, '<unset>')!r}"
            f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); rerun with --overwrite to redo it"
        )
    if saved["fold_plan"] != instance.fold_plan:
        raise XvalError(
            f"{instance.where}: the folds differ from those of its saved results (num_folds or the dataset's "
            "items changed); rerun with --overwrite to redo it"
        )


def check_models(exp: Experiment, instances: list[Instance], dataset: Dataset) -> None:
    """Build every instance's model once, so a broken architecture fails before any training."""
    for inst in instances:
        p = inst.params
        fn = exp.model_function(p["framework"], p["architecture"], inst.where)
        shape = model_input_shape(dataset.input_shape, p["reshaping_type"])
        try:
            trainer_for(p["framework"]).check_model(fn, shape, num_outputs(dataset, exp.task_type),
                                                    exp.task_type, p)
        except Exception as exc:  # the user's model function or the framework refused
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise XvalError(
                f"{inst.where}: architecture {p['architecture']!r} cannot be built for input shape {shape} "
                f"(reshaping_type={p['reshaping_type']!r}): {message}"
            ) from exc


def train_fold(exp: Experiment, store: ExperimentStore, dataset: Dataset, inst: Instance, fold: Fold) -> dict:
    p = inst.params
    start = time.perf_counter()
    data = FoldData(dataset, fold, exp.task_type, p["reshaping_type"], p["normalization"])
    seed = int(p["seed"]) + fold.index
    job = TrainJob(
        params=p, task_type=exp.task_type, data=data,
        model_fn=exp.model_function(p["framework"], p["architecture"], inst.where), seed=seed,
        model_path=store.model_path(inst.id, fold.index, MODEL_EXTENSIONS[p["framework"]]),
        log_dir=store.tensorboard_dir(inst.id, fold.index), generator=exp.generator,
    )
    out = trainer_for(p["framework"]).fit_predict(job)
    record: dict[str, Any] = {}
    for set_name, set_data in data.sets().items():
        values = compute(exp.task_type, set_data.y, out.predictions[set_name], data.num_outputs)
        for metric, value in values.items():
            record[f"{set_name}_{metric}"] = value
    record.update(fold.as_dict())
    record.update(
        history=out.history, epochs=out.epochs, best_epoch=out.best_epoch, seed=seed, device=out.device,
        test_true=data.test.y, test_pred=out.predictions["test"],
        normalization=None if data.normalizer is None else {"mean": data.normalizer.mean, "std": data.normalizer.std},
        model_file=job.model_path.name, duration_s=time.perf_counter() - start,
    )
    return record


def new_results(exp: Experiment, inst: Instance) -> dict[str, Any]:
    return {
        "instance": inst.id, "parameters": inst.params, "task_type": exp.task_type, "dataset": exp.dataset,
        "num_folds": len(inst.folds), "fold_plan": inst.fold_plan, "folds": {}, "summary": {},
    }


def _main_metric(task_type: str) -> tuple[str, str]:
    return ("acc", "accuracy") if task_type == "classification" else ("rmse", "RMSE")


def run_experiment(exp: Experiment, options: RunOptions, console: Console | None = None) -> RunSummary:
    console = console or Console(stderr=True, highlight=False)
    dataset = load_dataset(exp.config.data_folder, exp.dataset)
    instances = plan_instances(exp, options, dataset)
    store = ExperimentStore(exp.folder, exp.dataset, exp.num_experiment)
    if not options.overwrite:
        for inst in instances:
            check_resumable(store, inst)
    check_models(exp, instances, dataset)
    device = trainer_for(instances[0].params["framework"]).device_name()
    console.print(
        f"[bold]{exp.path.name}[/]: {len(instances)} instance(s) x {len(instances[0].folds)} fold(s) on "
        f"'{exp.dataset}' ({len(dataset.items)} foldable items), device: {device}"
    )
    choice = current_choice()
    if device == "CPU" and not choice.cpu and (choice.gpu is not None):
        console.print(f"GPU {choice.gpu} was asked for but no GPU is visible: training on the CPU")
    store.write_description(exp.short_description)
    write_snapshot(store.code_dir, exp.path, exp.models_path, exp.config.to_ini(),
                   provenance(exp.path, device, [i.id for i in instances]))
    summary = RunSummary()
    key, label = _main_metric(exp.task_type)
    try:
        for inst in instances:
            _run_instance(exp, store, dataset, inst, options, summary, console, key, label)
    except KeyboardInterrupt:
        report.refresh(store)
        _print_summary(console, summary, interrupted=True)
        raise
    report.refresh(store, plots=True)
    _print_summary(console, summary)
    return summary


def _run_instance(exp, store, dataset, inst, options, summary, console, key, label) -> None:
    if options.overwrite:
        store.clear_instance(inst.id)
    results = store.load_instance(inst.id) or new_results(exp, inst)
    todo = [f for f in inst.folds if f.index not in results["folds"]]
    if not todo:
        summary.skipped.append(inst.id)
        console.print(f"instance {inst.id}: all {len(inst.folds)} folds already done, skipped")
        return
    try:
        for fold in todo:
            record = train_fold(exp, store, dataset, inst, fold)
            results["folds"][fold.index] = record
            results["folds"] = dict(sorted(results["folds"].items()))
            results["summary"] = summarize(results["folds"], exp.task_type)
            store.save_instance(inst.id, results)
            console.print(
                f"instance {inst.id} fold {fold.index}/{len(inst.folds)}: test {label} "
                f"{record[f'test_{key}']:.4f} ({record['epochs']} epochs, best {record['best_epoch']}, "
                f"{record['duration_s']:.1f} s)"
            )
        store.clear_error(inst.id)
        summary.done.append(inst.id)
        s = results["summary"]["test"]
        console.print(
            f"[green]instance {inst.id} done[/]: test {label} {s[f'mean_{key}']:.4f} ± {s[f'std_{key}']:.4f}"
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if options.debug:
            raise
        store.save_error(inst.id, traceback.format_exc())
        line = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        summary.failed[inst.id] = line
        console.print(f"[red]instance {inst.id} failed[/]: {line} (traceback in {store.error_path(inst.id)})")
    finally:
        report.refresh(store)


def _print_summary(console: Console, summary: RunSummary, interrupted: bool = False) -> None:
    def ids(values) -> str:
        return ", ".join(map(str, values)) or "none"

    head = "[yellow]interrupted[/]" if interrupted else "[bold]summary[/]"
    console.print(f"{head}: done {ids(summary.done)}; skipped (already done) {ids(summary.skipped)}; "
                  f"failed {ids(summary.failed)}")
