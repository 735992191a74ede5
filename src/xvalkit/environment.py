"""Where a fold was trained, as its record keeps it: what `xval reproduce` compares to tell a
bit-for-bit reproduction it can expect from one that may differ within tolerance.

The fold record keeps the versions that decide the numbers (Python, xvalkit, the frameworks,
numpy, scikit-learn), the platform, CPU model, core count, device, GPU driver, the determinism
settings and seeds of its trainer, and a digest of every installed package; the whole list, as
`pip freeze` gives it, is in the run's record (code/runs/<run id>.json), once per run instead of
once per fold.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import site
import sys
from importlib import metadata

from . import __version__

KEY_PACKAGES = ("torch", "tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "h5py")


@functools.cache
def installed_packages() -> dict[str, str]:
    """{name: version} of every installed distribution: what `pip freeze` lists, without a subprocess.

    Looked for where a fresh interpreter looks (site-packages, the user's, PYTHONPATH), not on this
    process's sys.path: a library may add its vendored packages there when imported (Ray adds its
    psutil and colorama), and the list would then depend on what the process imported first."""
    paths = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    found: dict[str, str] = {}
    for dist in metadata.distributions(path=[p for p in paths if p]):
        name = dist.metadata["Name"]
        if name and name not in found:  # the first on sys.path wins, as for an import
            found[name] = dist.version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): wheels name TensorFlow's CPU build
    'tensorflow_cpu' in their metadata, which is 'tensorflow-cpu' to pip."""
    return re.sub(r"[-_.]+", "-", name).lower()


def packages_digest(packages: dict[str, str]) -> str:
    text = "".join(f"{name.lower()}=={version}\n" for name, version in sorted(packages.items(), key=lambda i: i[0].lower()))
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def gpu_driver() -> str | None:
    """The NVIDIA driver's version (from the driver's /proc entry, else nvidia-smi), None without one."""
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as handle:
            words = handle.readline().split()
        for word in words:
            if word[:1].isdigit() and "." in word:
                return word
    except OSError:
        pass
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None


def fold_environment(device: str, determinism: dict, seeds: dict) -> dict:
    """What a fold record keeps of where it ran (the module docstring); `device` as the trainer
    names it ('CPU', 'GPU 0 (NVIDIA H200)')."""
    packages = installed_packages()
    versions = {canonical(name): version for name, version in packages.items()}
    return {
        "python": sys.version.split()[0],
        "xvalkit": __version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "gpu_driver": gpu_driver() if device != "CPU" else None,
        "packages": {name: versions[name] for name in KEY_PACKAGES if name in versions},
        "packages_sha256": packages_digest(packages),
        "determinism": determinism,
        "seeds": seeds,
    }


FIELDS = (("python", "Python"), ("xvalkit", "xvalkit"), ("platform", "platform"), ("cpu", "CPU"),
          ("cpu_count", "cores"), ("device", "device"), ("gpu_driver", "GPU driver"))
MAX_NAMED_PACKAGES = 5


def differences(recorded: dict | None, now: dict, recorded_freeze: dict | None = None,
                freeze_now: dict | None = None) -> list[str]:
    """Every field that differs between two fold environments, as 'torch 2.13.0 -> 2.11.0'; the
    other packages by name when both whole lists (`pip freeze`) are at hand."""
    if not recorded:
        return ["not recorded (the fold was trained before xvalkit recorded its environment)"]
    found = [f"{label} {recorded.get(key)} -> {now.get(key)}" for key, label in FIELDS
             if recorded.get(key) != now.get(key)]
    found += _changed(recorded.get("packages", {}), now.get("packages", {}), "")
    for part in ("determinism", "seeds"):
        found += _changed(recorded.get(part, {}), now.get(part, {}), "seed " if part == "seeds" else "")
    if recorded.get("packages_sha256") != now.get("packages_sha256"):
        named = set(recorded.get("packages", {})) | set(now.get("packages", {}))
        others = [line for line in _changed(recorded_freeze or {}, freeze_now or {}, "")
                  if line.split()[0] not in named] if recorded_freeze and freeze_now else []
        found += others[:MAX_NAMED_PACKAGES]
        if len(others) > MAX_NAMED_PACKAGES:
            found.append(f"{len(others) - MAX_NAMED_PACKAGES} more installed package(s)")
        if not others and not named & {line.split()[0] for line in found}:
            found.append("other installed packages")
    return found


def _changed(a: dict, b: dict, prefix: str) -> list[str]:
    return [f"{prefix}{name} {a.get(name, 'absent')} -> {b.get(name, 'absent')}"
            for name in sorted(set(a) | set(b), key=str.lower) if a.get(name) != b.get(name)]
