"""`xval plan` and `xval status`: what a run would do, and where an experiment stands."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .data import augmented_line
from .devices import visible_gpus
from .executors import plan_slots
from .experiment import Experiment
from .metrics import diverged_folds
from .params import differing_parameters
from .store import ExperimentStore, error_line
from .sweeps import swept_values
from .threads import TINY_MODEL_PARAMETERS, requested as requested_threads

console = Console(highlight=False)
if not console.is_terminal:  # piped to a file or a log: no 80-column wrapping of the tables
    console = Console(highlight=False, width=200)


def print_plan(exp: Experiment, first, last, num_folds, gpus, jobs_per_gpu: int, cpu_workers: int,
               build: bool = False, fuse: bool | None = None) -> None:
    """What `xval run` would do; `build`: build each model once too (imports its framework)."""
    from .runner import RunOptions, prepare, trains_in_worker

    options = RunOptions(first=first, last=last, num_folds=num_folds, gpus=gpus, jobs_per_gpu=jobs_per_gpu,
                         cpu_workers=cpu_workers)
    dataset, instances, store = prepare(exp, options, warn=lambda line: console.print(f"[yellow]warning[/]: {escape(line)}"),
                                        say=lambda line: console.print(escape(line)), build_models=build)
    threads = requested_threads([inst.params for inst in instances])
    slots = plan_slots(gpus, jobs_per_gpu, cpu_workers, threads)
    differ = differing_parameters([inst.params for inst in instances])
    table = Table(title=Text(f"{exp.path.name}: '{exp.dataset}', {len(dataset.items)} foldable items, "
                             f"{dataset.datapoints(dataset.items)} datapoints, input {dataset.input_shape}"))
    for column in ("ID", "comment_1", "comment_2", *differ, "folds to train", "already done"):
        table.add_column(column)
    total = 0
    files = store.fold_files()  # one listing; no fold file is read
    for inst in instances:
        done = sorted(files.get(inst.id, {}))
        todo = [f.index for f in inst.folds if f.index not in done]
        total += len(todo)
        table.add_row(*_plain(str(inst.id), inst.params["comment_1"], inst.params["comment_2"],
                              *[repr(inst.params.get(n, "")) for n in differ],
                              ", ".join(map(str, todo)) or "-", ", ".join(map(str, done)) or "-"))
    console.print(table)
    fold = instances[0].folds[0]
    if dataset.has_augmented:
        console.print(augmented_line(dataset))
    console.print(f"fold seed {instances[0].fold_seed} (the same folds for every instance; `seed` drives training)")
    validates = (f"{len(fold.val_sources)} held-out source files of them" if fold.val_sources
                 else f"{len(fold.val)}")
    console.print(f"folds: {escape(instances[0].protocol)}; e.g. fold 1 trains on {len(fold.train)} items, "
                  f"validates on {validates}, tests on {len(fold.test)} ({escape(', '.join(fold.test))})")
    on_cpu = not (gpus or visible_gpus())  # as the run decides, asking nvidia-smi instead of the framework
    worker = trains_in_worker(exp, options, on_cpu)
    worker = " (in a worker process, replaced as it grows: a long Keras run)" if worker else ""
    print_groups(exp, instances, files, fuse, on_cpu)
    tiny = any(inst.params["framework"] == "torch" for inst in instances) and not threads
    tiny = f" (one for a torch model under {TINY_MODEL_PARAMETERS:,} parameters)" if tiny else ""
    console.print(f"{total} job(s) over {len(slots)} slot(s): {', '.join(s.name for s in slots)}{worker}, "
                  f"{slots[0].threads} thread(s) each{tiny}; "
                  f"results in {escape(str(store.folder))}")
    if build:
        console.print("[green]valid[/]: every parameter, architecture, the dataset and the folds were checked")
    else:
        console.print("[green]valid[/]: every parameter, the dataset and the folds were checked; the architectures "
                      "are built when the run starts (`xval plan --build` builds each one now)")


def slurm_states(folder) -> dict[tuple[int, int], str]:
    if not (folder / "slurm").is_dir():
        return {}
    from .executors.slurm_jobs import fold_states

    return fold_states(folder)


def print_groups(exp: Experiment, instances, files: dict, fuse: bool | None, on_cpu: bool) -> None:
    """The fused groups the run would train (fusion.py), one line each."""
    from . import fusion
    from .runner import make_jobs

    if not fusion.fuses(fuse, "local", on_cpu):
        return
    jobs = [job for inst in instances for job in make_jobs(exp, inst)
            if job.fold.index not in files.get(inst.id, {})]
    for line in fusion.describe(fusion.plan_groups(jobs)):
        console.print(line)


def _plain(*cells: str) -> list[Text]:
    """Table cells shown as they are: comments, values and error lines are not rich markup (a
    comment 'lr [x]' lost its '[x]', and an error line with '[/...]' stopped the table with a
    MarkupError); not parsing them also saves a sixth of the rendering of a thousand rows."""
    return [Text(cell) for cell in cells]


def print_status(exp: Experiment, selected: list[int] | None = None) -> None:
    """A table of every instance (of the file or with results), or only the `selected` ones."""
    store = ExperimentStore(exp.folder, exp.dataset, exp.num_experiment)
    running = store.running()
    table = Table(title=Text(f"{exp.path.name}: {store.folder}"))
    slurm = slurm_states(store.folder)  # {} unless a run submitted folds to Slurm
    slurm_lines: dict[int, list[str]] = {}  # instance: 'fold: state' lines, in fold order
    for (instance, fold), state in sorted(slurm.items()):
        slurm_lines.setdefault(instance, []).append(f"{fold}: {state}")
    for column in ("ID", "comment_1", "done", "diverged", "running", "pending", "failed") + (("Slurm",) if slurm else ()):
        table.add_column(column)
    ids = sorted(set(exp.instances) | set(store.instance_ids())) if selected is None else selected
    files = store.fold_files()  # one listing; every finished fold's record read, for divergence
    for run in ids:
        saved = store.load_folds(run, files.get(run, {}))
        num = next(iter(saved.values()))["num_folds"] if saved else exp.fold_count * exp.num_repeats
        diverged = diverged_folds({f: fold["record"] for f, fold in saved.items()})
        folds = [f for f in saved if f not in diverged]
        now = sorted(f for (r, f) in running if r == run)
        pending = [f for f in range(1, num + 1) if f not in saved and f not in now]
        error = store.error_text(run)
        last_line = error_line(error, 120) if error else ""
        comment = ""
        if run in exp.instances:
            comment = str(exp.instances[run].get("comment_1", exp.global_parameters.get("comment_1", "")))
            if exp.swept.get(run):  # else every combination reads 'sweep of instance 1'
                comment += f": {swept_values(exp.instances[run], exp.swept[run])}"
        cells = _plain(str(run), comment, *(", ".join(map(str, f)) or "-" for f in (folds, diverged, now, pending)))
        cells.append(Text(last_line, style="red") if error else "-")
        if slurm:  # each fold's Slurm state beside its file state
            cells += _plain("\n".join(slurm_lines.get(run, [])) or "-")
        table.add_row(*cells)
    console.print(table)
