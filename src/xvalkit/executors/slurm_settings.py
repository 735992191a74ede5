"""The [slurm] settings of `xval run --backend slurm`: config.ini, overridden by `--slurm NAME=VALUE`.

Checked before anything is validated or trained, each bad value in one line: the type of every
setting, sbatch on the PATH, the partition among the cluster's. They become submitit's parameters
of every task, and are recorded in the run's provenance.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass

from ..config import check_keys, parse_value
from ..errors import XvalError


@dataclass(frozen=True)
class SlurmSettings:
    partition: str = ""  # "": the cluster's default partition
    time: int = 60  # minutes per task (sbatch --time)
    cpus_per_task: int = 1
    mem_gb: float = 0.0  # 0: the partition's default (a float default: 1.5 GB is a valid request)
    gpus_per_task: int = 0
    account: str = ""
    qos: str = ""
    array_parallelism: int = 0  # tasks of one array running at once; 0: no cap of ours
    folds_per_task: int = 1  # folds trained one after the other by one task (short folds: several)
    max_requeues: int = 3  # requeues after running out of time (a preempted task is always requeued)
    sbatch_lines: tuple[str, ...] = ()  # e.g. ("--constraint=a100",)

    @classmethod
    def from_config(cls, section: dict, overrides: list[str] | None = None) -> "SlurmSettings":
        values = dict(section)
        for text in overrides or []:
            name, sep, value = text.partition("=")
            if not sep or not name.strip():
                raise XvalError(f"--slurm {text}: expected NAME=VALUE, e.g. --slurm partition=gpu")
            values[name.strip()] = parse_value(value)
        check_keys("slurm", values, cls.__dataclass_fields__)
        for name, value in values.items():
            values[name] = _checked(name, value, cls.__dataclass_fields__[name].default)
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = [f"partition {self.partition or '(default)'}", f"{self.cpus_per_task} CPU",
                 f"{self.gpus_per_task} GPU", f"{self.time} min"]
        if self.mem_gb:
            parts.append(f"{self.mem_gb:g} GB")
        return ", ".join(parts) + " per task"

    def submitit_parameters(self) -> dict:
        """What SlurmExecutor.update_parameters takes; unset values are the cluster's defaults."""
        params = {"job_name": "xval", "time": self.time, "cpus_per_task": self.cpus_per_task, "ntasks_per_node": 1}
        optional = {"partition": self.partition, "account": self.account, "qos": self.qos,
                    "gpus_per_task": self.gpus_per_task, "array_parallelism": self.array_parallelism}
        params.update({key: value for key, value in optional.items() if value})
        if self.mem_gb:
            params["mem"] = f"{int(self.mem_gb * 1024)}MB"
        extra = dict(sbatch_option(line) for line in self.sbatch_lines)
        if extra:
            params["additional_parameters"] = extra
        return params


def _checked(name: str, value, default):
    """The value of setting `name` if it has the type of its default, else one line saying what to give."""
    where = f"config [slurm] {name} = {value!r}"
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise XvalError(f"{where}: expected a tuple of sbatch options such as (\"--constraint=a100\",)")
        for line in value:
            sbatch_option(line, where)
        return tuple(value)
    if isinstance(default, str):
        return "" if value is None else str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise XvalError(f"{where}: expected a number >= 0")
    if isinstance(default, int) and value != int(value):
        raise XvalError(f"{where}: expected a whole number")
    if name in ("time", "cpus_per_task", "folds_per_task") and value < 1:
        raise XvalError(f"{where}: expected a number >= 1")
    return type(default)(value)


def sbatch_option(line: str, where: str = "config [slurm] sbatch_lines") -> tuple[str, object]:
    """'#SBATCH --constraint=a100' or '--constraint=a100' -> ('constraint', 'a100'); '--exclusive' -> True."""
    text = line.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH"):].strip()
    if not text.startswith("--") or " " in text.split("=", 1)[0]:
        raise XvalError(f"{where}: {line!r} is not an sbatch option; write it as \"--name=value\" (e.g. \"--constraint=a100\")")
    name, sep, value = text[2:].partition("=")
    return name, value if sep else True


def check_cluster(settings: SlurmSettings) -> None:
    """Said in a second, before the experiment is validated: no Slurm client here, an unknown partition."""
    if shutil.which("sbatch") is None:
        raise XvalError("--backend slurm: sbatch is not on the PATH; run xval on a machine of the cluster "
                        "(a login node) where the Slurm commands are installed")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise XvalError('--backend slurm needs submitit: pip install -e ".[slurm]"') from None
    if settings.partition:
        known = partitions()
        if settings.partition not in known:
            raise XvalError(f"config [slurm] partition = {settings.partition!r}: no such partition on this cluster; "
                            f"its partitions are {', '.join(known) or 'none'} (sinfo lists them)")


def partitions() -> list[str]:
    out = _slurm_command(["sinfo", "-h", "-o", "%P"])
    return sorted({name.rstrip("*") for name in out.split()})


def max_array_size() -> int:
    """The cluster's MaxArraySize: an array's task indices stay below it (1001 unless configured)."""
    for line in _slurm_command(["scontrol", "show", "config"]).splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "MaxArraySize":
            try:
                return max(1, int(value.strip()))
            except ValueError:
                break
    return 1001


def _slurm_command(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise XvalError(f"--backend slurm: {argv[0]} failed: {exc}") from None
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise XvalError(f"--backend slurm: {' '.join(argv)} failed: {reason} (is the Slurm controller reachable?)")
    return out.stdout
