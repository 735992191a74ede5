"""config.ini: the defaults of xvalkit, layered key by key.

The packaged copy (always present) < the experiment's project config.ini (beside the experiment
file, else in the folder above it) < ./config.ini (if any) < --config FILE (if given).
Values are Python literals (`0.001`, `"adam"`, `True`, `(3, 3)`); a bare word is kept as a string,
so `data_folder = data` and `data_folder = "data"` mean the same.

A relative data_folder is relative to the folder of the config file that set it, so that a command
run from another folder finds the same data; the packaged default, `data`, set by no file of the
user's, is relative to the current folder.
"""

from __future__ import annotations

import ast
import configparser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import XvalError

PACKAGED_CONFIG = Path(__file__).with_name("config.ini")
SECTIONS = ("paths", "training", "features", "augmentation", "report", "slurm")


def parse_value(text: str) -> Any:
    """Parse one config value as a Python literal; fall back to the bare string."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


@dataclass
class Config:
    """The merged configuration: one dict of parsed values per section."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line per key of an old config.ini without a counterpart
    data_base: Path | None = None  # the folder of the config file that set data_folder (None: the packaged one)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name, {}))

    @property
    def training(self) -> dict[str, Any]:
        return self.section("training")

    @property
    def data_folder(self) -> Path:
        folder = Path(str(self.sections["paths"]["data_folder"])).expanduser()
        return folder if self.data_base is None else self.data_base / folder

    def to_ini(self) -> str:
        """The merged configuration as ini text (saved with each experiment's code snapshot)."""
        lines = [f"# merged from: {', '.join(str(f) for f in self.files)}"]
        for name, values in self.sections.items():
            lines.append(f"\n[{name}]")
            lines += [f"{key} = {value!r}" for key, value in values.items()]
        return "\n".join(lines) + "\n"


def _read_ini(path: Path) -> dict[str, dict[str, Any]]:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=None)
    parser.optionxform = str  # keep the case of keys
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise XvalError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except configparser.Error as exc:
        first_line = str(exc).splitlines()[0]
        raise XvalError(f"{path}: not a valid ini file: {first_line}") from None
    return {name: {k: parse_value(v) for k, v in parser[name].items()} for name in parser.sections()}


def project_config(experiment: Path) -> Path | None:
    """The config.ini of an experiment's project: beside the experiment file, else in the folder
    above it (the project of experiments/exp1.py)."""
    folder = experiment.resolve().parent
    return next((f / "config.ini" for f in (folder, folder.parent) if (f / "config.ini").is_file()), None)


def load_config(extra: str | Path | None = None, cwd: Path | None = None, experiment: Path | None = None) -> Config:
    """Load the packaged defaults, then the project's config.ini of `experiment`, then ./config.ini,
    then `extra`; later files win key by key."""
    files = [PACKAGED_CONFIG]
    for found in (project_config(experiment) if experiment is not None else None, (cwd or Path.cwd()) / "config.ini"):
        if found is not None and found.is_file() and found.resolve() not in {f.resolve() for f in files}:
            files.append(found)
    if extra is not None:
        extra = Path(extra)
        if not extra.is_file():
            raise XvalError(f"--config {extra}: no such file")
        files.append(extra)
    from .porting import config as old_config

    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    notes: list[str] = []
    data_base = None
    for path in files:
        sections = _read_ini(path)
        if old_config.is_old(sections):  # an original-scripts config.ini: mapped onto today's keys
            known = {name: set(values) for name, values in merged.items()}
            sections, more = old_config.map_old(sections, known, path)
            notes += more
        for name, values in sections.items():
            if name not in merged:
                raise XvalError(
                    f"{path}: unknown section [{name}]; the sections are {', '.join(SECTIONS)}"
                )
            merged[name].update(values)
        if "data_folder" in sections.get("paths", {}):
            data_base = None if path == PACKAGED_CONFIG else path.resolve().parent
    return Config(sections=merged, files=files, notes=notes + selection_notes(merged["report"]), data_base=data_base)


def selection_notes(report: dict[str, Any]) -> list[str]:
    """A warning per [report] selection metric that is a test metric: choosing on test is optimistic."""
    return [f"config [report] {key} = {value!r} chooses the best instance on a test metric: its test values and "
            f"the selection row are then optimistic; use a validation metric (e.g. {value.replace('test_', 'val_', 1)!r})"
            for key, value in sorted(report.items())
            if key.startswith("selection_metric_") and isinstance(value, str) and value.startswith("test_")]


def check_keys(section_name: str, section: dict[str, Any], known) -> None:
    """XvalError naming the first key of config section `section_name` that is not in `known`."""
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise XvalError(f"config [{section_name}]: unknown key '{unknown[0]}'; "
                        f"the keys are {', '.join(sorted(known))}")
