"""The code snapshot and provenance of the runs, saved in <experiment folder>/code/.

- Every `xval run` gets a run id (`20261204T170512-3fa9c1`) and leaves its record in
  code/runs/<run id>.json: xvalkit and package versions, git commit and dirty flag, host, device,
  command line, the folds it set out to train and the SHA-256 of each code file. Records are never
  rewritten, and each fold record keeps the `run_id` of the run that trained it.
- code/ holds copies of the experiment module, the user's models module, the merged config, the git
  diff and provenance.json (the record of the last run that trained folds). A run with nothing to
  train leaves them as they are: they describe the folds on disk. When a run that trains has other
  code, the older snapshot moves to code/previous/<its time stamp>/, so every fold can be traced to
  the code that produced it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from . import __version__, atomic
from .environment import installed_packages

PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "torch", "numpy", "scikit-learn", "scipy", "pandas",
            "librosa", "pedalboard", "openpyxl")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def new_run_id() -> str:
    """Sortable by start time, unique without coordination (two runs started in the same second)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def provenance(experiment_path: Path, device: str, instances: list[int]) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    where = experiment_path.resolve().parent
    commit = _git(["rev-parse", "HEAD"], where)
    return {
        "xvalkit": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "instances": instances,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device,
        "packages": versions,
        "pip_freeze": installed_packages(),  # every installed package, for `xval reproduce` to name what changed
        "experiment_file": experiment_path.name,  # its copy in the code snapshot
        "git_commit": commit.strip() if commit else None,
        "git_dirty": bool(_git(["status", "--porcelain"], where)) if commit else None,
    }


def code_files(experiment_path: Path, models_paths: list[Path | None], config_text: str,
               git_commit: str | None) -> dict[str, bytes]:
    """What the snapshot keeps: the experiment module, the models modules (None entries skipped),
    the merged config and, in a git repository, the diff against HEAD."""
    files = {experiment_path.name: experiment_path.read_bytes(), "config.ini": config_text.encode()}
    for path in models_paths:
        if path is not None:
            files[path.name] = path.read_bytes()
    diff = _git(["diff", "HEAD"], experiment_path.resolve().parent) if git_commit else None
    if diff:
        files["git.diff"] = diff.encode()
    return files


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


def record_run(code_dir: Path, info: dict) -> Path:
    """Keep this run's record beside every earlier one (code/runs/<run id>.json)."""
    path = code_dir / "runs" / f"{info['run_id']}.json"
    atomic.write_text(path, json.dumps(info, indent=2, default=str))
    return path


def write_snapshot(code_dir: Path, files: dict[str, bytes], info: dict) -> None:
    """The code of a run that trains folds, and its record as provenance.json; older code with its
    provenance.json moves to code/previous/<time stamp>/."""
    if code_dir.is_dir():
        kept = {path.name for path in code_dir.iterdir() if path.is_file()} - {"provenance.json", "config.ini"}
        changed = kept != set(files) - {"config.ini"} or any(
            (code_dir / name).read_bytes() != data for name, data in files.items() if name != "config.ini"
        )
        old = code_dir / "provenance.json"
        if changed and old.is_file():
            stamp = json.loads(old.read_text()).get("time", "unknown").replace(":", "")
            target = code_dir / "previous" / stamp
            target.mkdir(parents=True, exist_ok=True)
            for path in code_dir.iterdir():
                if path.is_file():
                    shutil.move(str(path), target / path.name)
    for name, data in files.items():
        atomic.write_bytes(code_dir / name, data)
    atomic.write_text(code_dir / "provenance.json", json.dumps(info, indent=2, default=str))
