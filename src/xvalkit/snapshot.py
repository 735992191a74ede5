"""The code snapshot and provenance of a run, saved in <experiment folder>/code/.

code/ holds copies of the experiment module, the user's models module, the merged config and
provenance.json (xvalkit and package versions, git commit and diff when in a repository, host,
device, command line). When a later run's code differs, the older snapshot moves to
code/previous/<its timestamp>/, so every result can be traced to the code that produced it.
"""

from __future__ import annotations

import json
import platform
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from . import __version__, atomic

PACKAGES = ("keras", "tensorflow", "tensorflow-cpu", "torch", "numpy", "scikit-learn", "scipy", "pandas",
            "librosa", "pedalboard", "openpyxl")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


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
        "git_commit": commit.strip() if commit else None,
        "git_dirty": bool(_git(["status", "--porcelain"], where)) if commit else None,
    }


def write_snapshot(code_dir: Path, experiment_path: Path, models_path: Path | list | None, config_text: str,
                   info: dict) -> None:
    """`models_path`: the models module, or a list of them (None entries skipped)."""
    files = {experiment_path.name: experiment_path.read_bytes(), "config.ini": config_text.encode()}
    for path in models_path if isinstance(models_path, list) else [models_path]:
        if path is not None:
            files[path.name] = path.read_bytes()
    diff = _git(["diff", "HEAD"], experiment_path.resolve().parent) if info.get("git_commit") else None
    if diff:
        files["git.diff"] = diff.encode()
    if code_dir.is_dir():
        changed = any(
            not (code_dir / name).is_file() or (code_dir / name).read_bytes() != data
            for name, data in files.items() if name != "config.ini"
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
