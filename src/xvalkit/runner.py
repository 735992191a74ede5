"""`xval run`: validate everything, then train instances x folds and fill the experiment folder.

Order of work, so that no bad input wastes a minute of training: parameters of every selected
instance -> dataset -> fold plans -> resume consistency -> a trial build of every model -> jobs
(one per unfinished fold) -> an executor (this process, local workers or Ray). This process is the
only one that writes the instance pickles, the errors and the report; jobs write their own fold
records, so folds can run in parallel anywhere.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from . import atomic, fusion
from . import params as P
from . import report
from .data import Dataset, augmented_line, load_dataset
from .data_digest import dataset_fingerprint
from .devices import current_choice
from .errors import XvalError
from .executors import plan_slots
from .faults import faults_stop
from .experiment import Experiment, id_ranges
from .fold_data import channels_first, model_input_shape, num_outputs, targets_for
from .folds import Fold, class_names, untrained_test_classes
from .metrics import diverged_folds
from .jobs import FoldJob
from .progress import ProgressView
from .quiet import framework_output_to
from .reporting.background import ReportRefresher
from .reporting.drawer import EAGER_FROM, PlotDrawer
from .snapshot import code_files, digests, new_run_id, provenance, record_run, write_snapshot
from .store import ExperimentStore, error_line, innermost, plain
from .threads import requested as requested_threads, use_threads
from .trainers import trainer_for


@dataclass
class RunOptions:
    first: int | str | None = None  # or a list of instances such as '1,4-6,9' (Experiment.select)
    last: int | None = None
    overwrite: bool = False
    debug: bool = False
    num_folds: int | None = None
    gpus: list[int] | None = None  # None: the device chosen early (one GPU or the CPU)
    jobs_per_gpu: int = 1
    cpu_workers: int = 1
    backend: str = "local"  # or "ray", or "slurm"
    address: str | None = None
    slurm: Any = None  # executors.slurm_settings.SlurmSettings, for --backend slurm
    detach: bool = False  # --backend slurm: submit and return
    quiet: bool = False
    device_note: str = ""  # how the CLI chose the device (gpu_ID without a GPU), said once the input is valid
    fuse: bool | None = None  # train compatible torch folds fused (fusion.py); None: where it is faster


@dataclass
class RunSummary:
    done: list[int] = field(default_factory=list)
    diverged: dict[int, list[int]] = field(default_factory=dict)  # finished, some folds diverged: their numbers
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    abandoned: list[str] = field(default_factory=list)

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
    fold_seed: int | None = None  # the seed its fold plan was made with
    protocol: str = ""  # how the folds were made, in words (folds.FoldPlan.describe)

    @property
    def fold_plan(self) -> dict[int, dict[str, list[str]]]:
        return {f.index: f.as_dict() for f in self.folds}


def fold_seed(exp: Experiment) -> int:
    """The seed of every instance's fold plan: the experiment's `fold_seed`, else the `seed` of
    global_parameters or config.ini [training] (what instances that keep the default seed used)."""
    if exp.fold_seed is not None:
        return exp.fold_seed
    default = exp.config.training.get("seed", 0)
    return P.coerce("seed", exp.global_parameters.get("seed", default), default, f"{exp.path}: global_parameters")


def _matches(saved: dict[int, dict[str, Any]], folds: list[Fold]) -> bool:
    plan = {f.index: f.as_dict() for f in folds}
    return all(i in plan and all(s["record"].get(k) == v for k, v in plan[i].items()) for i, s in saved.items())


def plan_instances(exp: Experiment, options: RunOptions, dataset: Dataset, store: ExperimentStore | None = None,
                   warn=None) -> list[Instance]:
    """Resolve and plan each selected instance. Every instance shares the plan of `fold_seed(exp)`;
    an instance whose saved folds were planned as before (from its own seed, validation drawn
    without regard to classes) keeps that plan, so it resumes exactly."""
    shown: set[str] = set()
    say = warn or (lambda line: print(line, file=sys.stderr))

    def warn(line: str) -> None:  # once each: several plans may hit the same sparse classes
        if line not in shown:
            shown.add(line)
            say(line)

    protocol = exp.fold_plan(dataset, options.num_folds)
    labels = None
    if exp.task_type == "classification":
        labels = {item: targets_for(exp.task_type, y, f"dataset '{dataset.name}', item '{item}'")
                  for item, y in dataset.targets.items()}
    plans: dict[tuple, list[Fold]] = {}

    def plan(validation_split, test_split, seed, stratify_held_out=True) -> list[Fold]:
        key = (validation_split, test_split, seed, stratify_held_out)
        if key not in plans:
            plans[key] = protocol.plan(dataset.items, validation_split, test_split, seed, labels, warn,
                                       stratify_held_out, exp.num_repeats)
            check_fold_count(exp, options, plans[key])
        return plans[key]

    seed = fold_seed(exp)
    files = store.fold_files() if store is not None and not options.overwrite else {}  # one listing
    instances = []
    checked: set[int] = set()  # plans whose classes were checked: a sweep's instances share one
    for run in exp.select(options.first, options.last):
        params = exp.resolve(run)
        folds, seed_used = plan(params["validation_split"], params["test_split"], seed), seed
        saved = store.load_folds(run, files.get(run, {})) if store is not None and not options.overwrite else {}
        if saved and not _matches(saved, folds):
            legacy = plan(params["validation_split"], params["test_split"], params["seed"], False)
            if _matches(saved, legacy):
                folds, seed_used = legacy, params["seed"]
                warn(f"instance {run}: keeps the fold plan its saved folds were trained on (its own seed "
                     f"{params['seed']}, validation drawn at random); --overwrite replans it with fold seed {seed}")
        if labels is not None and id(folds) not in checked:
            checked.add(id(folds))
            warn_untrained_classes(folds, labels, dataset.manifest.get("classes"), warn)
        instances.append(Instance(run, params, folds, f"{exp.path}: instance {run}", seed_used,
                                  protocol.describe(folds)))
    return instances


def check_fold_count(exp: Experiment, options: RunOptions, folds: list[Fold]) -> None:
    """A num_folds written beside leave-one-group-out must be what it makes (the dataset's items)."""
    if exp.folds is not None and exp.num_folds and options.num_folds is None:
        made = len(folds)
        if made != exp.num_folds:
            raise XvalError(f"{exp.path}: num_folds = {exp.num_folds} but folds = {exp.folds!r} makes {made} folds "
                            f"on dataset '{exp.dataset}'; remove num_folds or make it {made}")


def warn_untrained_classes(folds: list[Fold], labels: dict, classes: list[str] | None, warn) -> None:
    """Say, fold by fold, which test classes no training item holds (the fold record keeps them too)."""
    for fold in folds:
        missing = untrained_test_classes(fold, labels)
        if missing:
            names = ", ".join(map(str, class_names(missing, classes)))
            warn(f"fold {fold.index}: test class(es) {names} absent from its {len(fold.train)} training items: "
                 "the model cannot learn them, and their recall in this fold is 0 (recorded in the fold record)")


def check_resumable(store: ExperimentStore, instance: Instance, fold_files: dict[int, Path] | None = None) -> None:
    """Refuse to mix folds trained under different parameters or fold plans."""
    for index, saved in store.load_folds(instance.id, fold_files).items():
        old, new = saved["parameters"], instance.params
        changed = [k for k in sorted(set(old) | set(new))
                   if old.get(k, "<unset>") != new.get(k, "<unset>") and k not in P.HOW_TO_RUN]
        if changed:
            first = changed[0]
            raise XvalError(
                f"{instance.where}: parameters changed since its saved folds were trained "
                f"({first}: {old.get(first, '<unset>')!r} -> {new.get(first, '<unset>')!r}"
                f"{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); rerun with --overwrite to redo it"
            )
        plan = instance.fold_plan.get(index)
        if plan is None or any(saved["record"][key] != items for key, items in plan.items()):
            raise XvalError(
                f"{instance.where}: the folds differ from those of its saved results (num_folds or the "
                "dataset's items changed); rerun with --overwrite to redo it"
            )


def check_models(exp: Experiment, instances: list[Instance], dataset: Dataset) -> None:
    """Build each distinct model once, so a broken architecture fails before any training.

    Instances that differ only in training parameters share a check: a model's build depends on its
    framework, architecture, model parameters (the model function's keyword arguments), input shape
    and outputs alone.
    """
    from .models import model_defaults

    checked = set()
    for inst in instances:
        p = inst.params
        fn = exp.model_function(p["framework"], p["architecture"], inst.where)
        shape = model_input_shape(dataset.input_shape, p["reshaping_type"], channels_first(p["framework"]))
        key = (p["framework"], p["architecture"], shape,
               repr(sorted((name, p.get(name)) for name in model_defaults(fn))))
        if key in checked:
            continue
        checked.add(key)
        try:
            trainer_for(p["framework"]).check_model(fn, shape, num_outputs(dataset, exp.task_type),
                                                    exp.task_type, p)
        except Exception as exc:  # the user's model function or the framework refused
            cause = innermost(exc)  # the user's message, not Keras' 'Exception encountered when calling'
            message = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            raise XvalError(
                f"{inst.where}: architecture {p['architecture']!r} cannot be built for input shape {shape} "
                f"(reshaping_type={p['reshaping_type']!r}): {message}"
            ) from exc


def prepare(exp: Experiment, options: RunOptions, warn=None, say=None, build_models: bool = True):
    """Everything `xval run` and `xval plan` check before training: (dataset, instances, store).

    `warn(line)` receives warnings (fold planning; default: printed to stderr), `say(line)` what
    the user should know (a built-in dataset synthesised, and where). `build_models=False` leaves
    out the trial builds, the only step that imports a framework: `xval plan` without --build, and
    `xval run`, which sets its threads first."""
    dataset = load_dataset(exp.config.data_folder, exp.dataset, say=say)
    store = ExperimentStore(exp.folder, exp.dataset, exp.num_experiment)
    instances = plan_instances(exp, options, dataset, store, warn)
    if not options.overwrite:
        files = store.fold_files()
        for inst in instances:
            check_resumable(store, inst, files.get(inst.id, {}))
    if build_models:
        with framework_output_to(None):  # the builds' warnings show again in each fold's log
            check_models(exp, instances, dataset)
    return dataset, instances, store


def base_results(exp: Experiment, inst: Instance) -> dict[str, Any]:
    """An instance's results dict, less its folds and summary (rebuilt from the fold files)."""
    return {"instance": inst.id, "parameters": inst.params, "task_type": exp.task_type, "dataset": exp.dataset,
            "num_folds": len(inst.folds), "fold_plan": inst.fold_plan, "fold_seed": inst.fold_seed,
            "protocol": inst.protocol,
            "swept": exp.swept.get(inst.id, [])}


def make_jobs(exp: Experiment, inst: Instance, run_id: str | None = None) -> list[FoldJob]:
    return [
        FoldJob(instance=inst.id, fold=fold, num_folds=len(inst.folds), num_repeats=exp.num_repeats, params=inst.params,
                task_type=exp.task_type, dataset=exp.dataset, data_folder=str(exp.config.data_folder.resolve()),
                store_folder=str(exp.folder), num_experiment=exp.num_experiment, generator=exp.generator,
                models_path=_str_or_none(exp.models_file(inst.params["framework"])), run_id=run_id,
                protocol=inst.protocol)
        for fold in inst.folds
    ]


def _record_provenance(exp: Experiment, store: ExperimentStore, where: str, run_id: str, instances: list[Instance],
                       todo: dict[int, set[int]], extra: dict | None = None) -> None:
    """Every run leaves its record in code/runs/; only a run that trains replaces the code snapshot
    and provenance.json, which describe the folds on disk (a run that skips everything must not)."""
    info = provenance(exp.path, where, [i.id for i in instances])
    files = code_files(exp.path, [exp.models_path, *exp.framework_models.values()], exp.config.to_ini(),
                       info["git_commit"])
    info.update(run_id=run_id, overrides=exp.overrides, code_sha256=digests(files),
                folds_to_train={inst: sorted(folds) for inst, folds in todo.items() if folds}, **(extra or {}))
    record_run(store.code_dir, info)
    if info["folds_to_train"]:
        write_snapshot(store.code_dir, files, info)


def _str_or_none(path) -> str | None:
    return None if path is None else str(path)


# From this many planned folds, a Keras run that would train in this process trains in one worker
# process instead, replaced whenever it has grown by executors.local.RECYCLE_GROWTH_MB: Keras keeps
# about 5 MB of every model it trained in a process, clear_session() or not (upstream: keras-team/
# keras#17458), which is 15 GB over a sweep of 1000 instances x 3 folds. The worker's start (about
# 5 s, TensorFlow's import) is under 3 % of 100 folds.
KERAS_WORKER_FROM = 100


def trains_in_worker(exp: Experiment, options: RunOptions, on_cpu: bool) -> bool:
    """Whether a run on one device trains in a recycled worker process (KERAS_WORKER_FROM). The CLI
    asks before it chooses the device (the worker then owns the GPU), the runner again; both get
    the same answer from the same experiment and options. Only on the CPU or a GPU given by number:
    a process training on a GPU it picked itself (the API, no --gpu) could not tell a worker which."""
    single = len(plan_slots(options.gpus, options.jobs_per_gpu, options.cpu_workers)) == 1
    if options.backend != "local" or not single or (options.gpus and len(options.gpus) > 1):
        return False  # Ray, or worker processes already
    if not (on_cpu or options.gpus):
        return False
    ids = exp.select(options.first, options.last)
    folds = len(ids) * (options.num_folds or exp.fold_count) * exp.num_repeats
    return folds >= KERAS_WORKER_FROM and any(exp.framework_of(run) == "keras" for run in ids)


def make_executor(options: RunOptions, device: str, in_worker: bool = False, threads: int = 0, say=print):
    """`threads`: what the instances ask for (threads.requested), else 0: each job's share of the cores."""
    if options.backend == "slurm":
        from .executors.slurm import SlurmExecutor

        return SlurmExecutor(options.slurm, options.detach, say)
    if options.backend == "ray":
        from .executors.ray import RayExecutor

        gpus_per_job = (1.0 / options.jobs_per_gpu) if options.gpus else 0.0
        return RayExecutor(options.address, gpus_per_job, threads=threads or 1)
    slots = plan_slots(options.gpus, options.jobs_per_gpu, options.cpu_workers, threads)
    if len(slots) == 1 and (not options.gpus or len(options.gpus) == 1) and not in_worker:
        from .executors.inprocess import InProcessExecutor

        return InProcessExecutor(device)
    from .executors.local import LocalPoolExecutor

    return LocalPoolExecutor(slots)


def _main_metric(task_type: str) -> tuple[str, str]:
    return ("acc", "accuracy") if task_type == "classification" else ("rmse", "RMSE")


class RunListener:
    """Collects what the executor reports: rebuilds instance pickles, errors, report, progress."""

    def __init__(self, exp: Experiment, store: ExperimentStore, instances: list[Instance],
                 todo: dict[int, set[int]], view: ProgressView, summary: RunSummary, refresher: ReportRefresher):
        self.exp, self.store, self.view, self.summary = exp, store, view, summary
        self.instances = {inst.id: inst for inst in instances}
        self.todo = todo
        self.running: dict[tuple[int, int], str] = {}  # key -> label of the folds being trained
        self.key, self.label = _main_metric(exp.task_type)
        self.written: set[int] = set()  # instances whose pickle this run has written
        self.refresher = refresher

    def note(self, line: str) -> None:
        self.view.print(escape(line))

    def should_skip(self, job: FoldJob) -> bool:
        return job.instance in self.summary.failed

    def started(self, job: FoldJob, where: str) -> None:
        self.running[job.key] = job.label
        self.view.started(job, where)

    def epoch(self, job: FoldJob, epoch: int, logs: dict) -> None:
        self.view.epoch(job, epoch, logs)

    def finished(self, job: FoldJob, record: dict) -> None:
        self.store.check_present()  # else rebuilding would make a new, empty experiment folder
        self.running.pop(job.key, None)
        self.view.ended(job)
        inst = self.instances[job.instance]
        if record.get("diverged"):
            self.view.print(f"[yellow]{job.label} diverged[/]: {escape(record['diverged'])}; recorded, "
                            "not averaged")
        else:
            self.view.print(
                f"{job.label}: test {self.label} {record[f'test_{self.key}']:.4f} ({record['epochs']} epochs, "
                f"best {record['best_epoch']}, {record['duration_s']:.1f} s, {record['device']})"
            )
        first = inst.id not in self.written
        self.written.add(inst.id)
        self.todo[inst.id].discard(job.fold.index)
        complete = not self.todo[inst.id]
        # The instance pickle is derived from the fold files: written at its first fold of this run
        # (so reports show a partial instance; later folds merge in as they are read) and when done.
        if first or complete:
            files = {f.index: self.store.fold_path(inst.id, f.index) for f in inst.folds}
            results = self.store.rebuild_instance(inst.id, base_results(self.exp, inst),
                                                  {i: path for i, path in files.items() if path.is_file()})
        if complete and inst.id not in self.summary.failed:
            self.store.clear_error(inst.id)
            self.view.print(self._instance_line(inst.id, results))
            self.refresher.instance_done(inst.id, results)
        self.refresher.request()

    def _instance_line(self, run: int, results: dict) -> str:
        """The line of a finished instance, counted as done or diverged (metrics.diverged_folds)."""
        folds = results["folds"]
        diverged = diverged_folds(folds)
        s = results["summary"]["test"]
        std = s[f"std_{self.key}"]  # NaN from a single fold: no spread to show
        score = f"test {self.label} {s[f'mean_{self.key}']:.4f}" + (f" ± {std:.4f}" if std == std else "")
        if not diverged:
            self.summary.done.append(run)
            return f"[green]instance {run} done[/]: {score}"
        self.summary.diverged[run] = diverged
        where = f"all {len(folds)} folds" if len(diverged) == len(folds) else \
            f"fold(s) {', '.join(map(str, diverged))} of {len(folds)}"
        rest = "" if len(diverged) == len(folds) else f"; {score} over the other {len(folds) - len(diverged)}"
        return (f"[yellow]instance {run} diverged[/] in {where}: {escape(folds[diverged[0]]['diverged'])}{rest}; "
                "not a candidate for the best")

    def failed(self, job: FoldJob, error: str) -> None:
        self.store.check_present()
        self.running.pop(job.key, None)
        self.view.ended(job)
        error = plain(error)  # a Ray task's error text may hold terminal escape codes (Keras' bold)
        line = error_line(error)
        first = job.instance not in self.summary.failed
        self.summary.failed.setdefault(job.instance, line)
        self.store.add_error(job.instance, job.label, error, first=first)
        where = self.store.error_path(job.instance)
        self.view.print(f"[red]{job.label} failed[/]: {escape(line)} (traceback in {escape(str(where))})")
        self.refresher.request()


def run_experiment(exp: Experiment, options: RunOptions, console: Console | None = None) -> RunSummary:
    """Run the experiment; a full disk, read-only or vanished folder raises faults.EnvironmentFault
    at once (from this process's writes or a job's), keeping every finished fold."""
    with faults_stop([exp.folder, exp.config.data_folder]):
        return _run_experiment(exp, options, console)


def _run_experiment(exp: Experiment, options: RunOptions, console: Console | None = None) -> RunSummary:
    console = console or Console(stderr=True, highlight=False)
    if options.backend == "ray":
        from .executors.ray_address import check_cluster, cluster_address

        check_cluster(options.address)  # a wrong address or a missing token: said in a second, before validating
    elif options.backend == "slurm":
        from .executors.slurm_settings import check_cluster as check_slurm

        check_slurm(options.slurm)  # no sbatch here, an unknown partition: said before validating
    dataset, instances, store = prepare(exp, options, warn=lambda line: console.print(f"[yellow]warning[/]: {escape(line)}"),
                                        say=lambda line: console.print(escape(line), soft_wrap=True), build_models=False)
    threads = requested_threads([inst.params for inst in instances])
    slots = plan_slots(options.gpus, options.jobs_per_gpu, options.cpu_workers, threads)
    use_threads(slots[0].threads if len(slots) == 1 and options.backend == "local" else 1)  # before a framework starts
    with framework_output_to(None):  # the builds' warnings show again in each fold's log
        check_models(exp, instances, dataset)
    device = trainer_for(instances[0].params["framework"]).device_name()
    if options.backend == "ray":  # --address, else RAY_ADDRESS
        where = f"Ray ({cluster_address(options.address) or 'local cluster'})"
    elif options.backend == "slurm":
        where = f"Slurm ({options.slurm.describe()})"
    elif options.gpus and (len(options.gpus) > 1 or options.jobs_per_gpu > 1):
        where = f"GPUs {', '.join(map(str, options.gpus))} x {options.jobs_per_gpu} job(s) each"
    elif options.cpu_workers > 1:
        where = f"{options.cpu_workers} CPU workers"
    else:
        where = device
    in_worker = trains_in_worker(exp, options, on_cpu=device == "CPU")
    if in_worker:
        where = f"{plan_slots(options.gpus, 1, 1)[0].name}, in a worker process (Keras: replaced as it grows)"
    console.print(
        f"[bold]{exp.path.name}[/]: {len(instances)} instance(s) ({id_ranges([i.id for i in instances])}) x "
        f"{len(instances[0].folds)} fold(s) on "
        f"'{exp.dataset}' ({len(dataset.items)} foldable items), device: {where}"
    )
    if options.device_note:
        console.print(escape(options.device_note), soft_wrap=True)
    if dataset.has_augmented:
        console.print(augmented_line(dataset))
    choice = current_choice()
    if device == "CPU" and not choice.cpu and choice.gpu is not None and options.backend == "local":
        console.print(f"GPU {choice.gpu} was asked for but {instances[0].params['framework']} sees no GPU (a CPU-only "
                      "build? see the README, Installing): training on the CPU")
    store.write_description(exp.short_description)
    atomic.remove_left_behind(store.folder)  # a killed run's temporary files
    run_id = new_run_id()
    summary = RunSummary()
    jobs, todo = [], {}
    if options.overwrite:
        for inst in instances:
            store.clear_instance(inst.id)
    files = store.fold_files()
    for inst in instances:
        done = files.get(inst.id, {})
        todo[inst.id] = {f.index for f in inst.folds} - set(done)
        if done and not store.is_current(inst.id, done):  # the last run was killed before it could update it
            store.rebuild_instance(inst.id, base_results(exp, inst), done)
        if not todo[inst.id]:
            summary.skipped.append(inst.id)
            console.print(f"instance {inst.id}: all {len(inst.folds)} folds already done, skipped")
        jobs += [job for job in make_jobs(exp, inst, run_id) if job.fold.index in todo[inst.id]]
    if jobs:  # the data's SHA-256 for the fold records, read once here rather than once per training process
        fingerprint = dataset_fingerprint(jobs[0].data_folder, exp.dataset)
        jobs = [dataclasses.replace(job, data_files=fingerprint) for job in jobs]
    _record_provenance(exp, store, where, run_id, instances, todo,
                       {"slurm": options.slurm.as_dict()} if options.backend == "slurm" else None)
    folds = len(jobs)  # counted before fusion: a fused group is one job, its members end one by one
    eager = len({job.instance for job in jobs}) >= EAGER_FROM  # else the final report draws the few plots at once
    if fusion.fuses(options.fuse, options.backend, on_cpu=device == "CPU"):
        jobs = fusion.plan_groups(jobs)
        for line in fusion.describe(jobs):
            console.print(line)
    view = ProgressView(console, folds, options.quiet)
    settings = report.report_settings(store, exp.config)
    refresher = ReportRefresher(store, settings.get("refresh_seconds", 30),
                                PlotDrawer(store, exp.task_type, settings) if eager else None)
    listener = RunListener(exp, store, instances, todo, view, summary, refresher)
    try:
        make_executor(options, device, in_worker, threads, view.print).run(jobs, listener, options.debug)
    except KeyboardInterrupt:
        refresher.close(final=False)
        view.stop()
        # a worker may have written a fold whose word the interrupt cut off: on disk, it is done
        summary.abandoned = sorted(label for key, label in listener.running.items()
                                   if not store.fold_path(*key).is_file())
        for key in listener.running:  # their workers are gone: not running any more
            store.unmark_running(*key)
        report.refresh(store)
        _print_summary(console, summary, store, interrupted=True)
        raise
    except BaseException:  # an environment fault (or a bug): the CLI prints its one line
        refresher.close(final=False)
        view.stop()
        raise
    view.stop()
    if options.detach:  # the jobs train on: `xval status` and `xval report` follow them from the folder
        refresher.close(final=False)
        files = store.fold_files()
        for inst in instances:  # the pickles the report merges their folds into, as they land
            if todo[inst.id] and inst.id not in listener.written:
                store.rebuild_instance(inst.id, base_results(exp, inst), files.get(inst.id, {}))
        return summary
    refresher.close(final=True, plots=True)  # the complete report, plots included
    _print_summary(console, summary, store)
    return summary


def _print_summary(console: Console, summary: RunSummary, store: ExperimentStore, interrupted: bool = False) -> None:
    """The run's last lines: what became of each instance, and where the results are."""
    def ids(values) -> str:
        return ", ".join(map(str, values)) or "none"

    head = "[yellow]interrupted[/]" if interrupted else "[bold]summary[/]"
    text = (f"{head}: done {ids(summary.done)}; skipped (already done) {ids(summary.skipped)}; "
            f"failed {ids(summary.failed)}; diverged {ids(summary.diverged)}")
    if interrupted:
        text += f"; abandoned (will be redone) {ids(summary.abandoned)}"
    console.print(text, soft_wrap=True)
    console.print(f"results in {escape(str(store.folder))}\nworkbook: {escape(str(store.spreadsheet_path))}",
                  soft_wrap=True)
