"""Which Slurm task trains which fold, kept in the experiment folder, and their states from sacct.

Each run that submits gets its own submitit folder, <experiment folder>/slurm/<run id>/ (Slurm job
IDs restart at 1 when a cluster's state is purged, so they are never reused across runs there),
with jobs.json: {task id: [[instance, fold], ...]}. `xval status` reads the latest submission of
each fold and asks sacct for the states of all of them at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .. import atomic

JOBS_FILE = "jobs.json"


def slurm_folder(store_folder: Path, run_id: str | None) -> Path:
    return store_folder / "slurm" / (run_id or "run")


def record_submission(folder: Path, tasks: list[tuple[str, list[tuple[int, int]]]]) -> None:
    atomic.write_text(folder / JOBS_FILE, json.dumps({task: [list(key) for key in keys] for task, keys in tasks},
                                                     indent=1))


def latest_tasks(store_folder: Path) -> dict[tuple[int, int], str]:
    """{(instance, fold): task id} of the last run that submitted each fold (run ids sort by time)."""
    found: dict[tuple[int, int], str] = {}
    for path in sorted((store_folder / "slurm").glob(f"*/{JOBS_FILE}")):
        try:
            submitted = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for task, keys in submitted.items():
            for instance, fold in keys:
                found[(instance, fold)] = task
    return found


def task_states(tasks: set[str]) -> dict[str, str]:
    """{task id: state} from one sacct call ('?' where sacct cannot be asked, e.g. off the cluster)."""
    if not tasks:
        return {}
    arrays = sorted({task.split("_")[0] for task in tasks}, key=int)
    if shutil.which("sacct") is None:
        return dict.fromkeys(tasks, "?")
    try:  # with its header line, as submitit reads it
        out = subprocess.run(["sacct", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return dict.fromkeys(tasks, "?")
    from submitit.slurm.slurm import SlurmInfoWatcher

    # submitit's reading of its own jobs: 123, 123_4, and a pending array's 123_[0-5%2] task by task
    info = SlurmInfoWatcher().read_info(out.stdout)
    return {task: (info.get(task, {}).get("State") or "?").split()[0] for task in tasks}  # 'CANCELLED by 0'


def fold_states(store_folder: Path) -> dict[tuple[int, int], str]:
    """{(instance, fold): 'RUNNING (task 12_3)'} for every fold some run submitted to Slurm."""
    tasks = latest_tasks(store_folder)
    try:
        states = task_states(set(tasks.values()))
    except ImportError:  # submitit not installed here: the task ids alone
        states = {}
    return {key: f"{states.get(task, '?')} ({task})" for key, task in tasks.items()}
