"""What the user sees during `xval run`: a bar over all jobs with an ETA and a line per running
job (its epoch and current validation metric) on a terminal; plain log lines otherwise or with
--quiet. One line per finished fold and per finished, failed or skipped instance either way.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .jobs import FoldJob


class ProgressView:
    def __init__(self, console: Console, total: int, quiet: bool):
        self.console = console
        self.live = console.is_terminal and not quiet and total > 0
        self.progress = None
        self.tasks: dict[tuple[int, int], int] = {}
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=console, transient=False,
            )
            self.overall = self.progress.add_task("[bold]folds", total=total)
            self.progress.start()

    def print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text, soft_wrap=True)

    def started(self, job: FoldJob, where: str) -> None:
        if self.progress:
            self.tasks[job.key] = self.progress.add_task(
                f"  {job.label} [{where}]", total=job.params["num_epochs"])

    def epoch(self, job: FoldJob, epoch: int, logs: dict) -> None:
        if self.progress and job.key in self.tasks:
            metric = job.params["save_best_model_metric"]
            value = logs.get(metric)
            text = f"  {job.label}: epoch {epoch}" + (f", {metric} {value:.4f}" if value is not None else "")
            self.progress.update(self.tasks[job.key], completed=epoch, description=text)

    def ended(self, job: FoldJob) -> None:
        if self.progress:
            task = self.tasks.pop(job.key, None)
            if task is not None:
                self.progress.remove_task(task)
            self.progress.advance(self.overall)

    def stop(self) -> None:
        if self.progress:
            self.progress.stop()
