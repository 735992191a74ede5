"""`xval export mlflow`: an experiment folder mirrored into MLflow, rebuilt from the folder alone.

Layout in MLflow (one MLflow experiment per xvalkit experiment, `<dataset>_exp<N>` by default):
  - one parent run per instance: resolved parameters, status, summary metrics (summary.csv's
    columns: `<set>_mean_<metric>`, `<set>_std_<metric>`, `p_value`), its plot, parameters.json;
  - one nested run per finished fold: its metrics, the per-epoch history as metric steps
    (`history/<name>`, step = epoch from 1), items.json, its log and, with `models`, its model file
    (an export without `models` keeps the model files uploaded before);
  - one `report` run: the workbook, results.csv, summary.csv, plots/ and the code snapshot.
Runs are found again by their tags (xvalkit.experiment, xvalkit.instance, xvalkit.fold,
xvalkit.role), so exporting again updates them instead of adding new ones. A fold run whose content
changed (the fold was retrained) and an instance whose parameters changed are replaced (the old run
is deleted, MLflow's soft delete); runs of folds or instances no longer in the folder are deleted.
The `xvalkit.content` tag (a hash of what was logged) is set last, so a run left half-written by an
interrupted export is replaced (a fold) or updated (an instance, the report) by the next one, and a
run whose content is unchanged is left untouched: an export with nothing new writes nothing.

MLflow is imported only here, on first use: it is the optional extra `xvalkit[mlflow]`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import XvalError
from .metrics import SETS
from .report import read_tables, refresh
from .reporting.tables import InstanceInfo, ReportData, cell, metric_columns
from .store import ExperimentStore

INSTALL_HINT = 'xval export mlflow needs MLflow: pip install -e ".[mlflow]" (mlflow-skinny, sqlalchemy, alembic)'
STORE_FILE, ARTIFACTS_FOLDER = "mlflow.db", "mlartifacts"  # MLflow's own local defaults (sqlite, server's artifacts)
TAG = "xvalkit."
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value
# summary.csv's significance columns (the later ones come with the Holm and Bayesian comparisons)
SIGNIFICANCE_COLUMNS = ("p_value", "p_holm", "prob_best_better", "prob_equivalent", "prob_other_better")
BATCH = 500  # entities per log_batch call (MLflow allows 1000, at most 100 of them parameters)


@dataclass
class ExportSummary:
    tracking_uri: str
    experiment_name: str
    experiment_id: str
    counts: dict[str, int] = field(default_factory=dict)  # 'created', 'updated', 'unchanged', 'deleted'

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def default_tracking_uri(store: ExperimentStore) -> str:
    """sqlite:///<folder above the experiment folder>/mlflow.db: MLflow's local default file, beside
    the experiment, so every experiment of a dataset lands in one store that `mlflow ui` opens there."""
    return f"sqlite:///{(store.folder.resolve().parent / STORE_FILE).as_posix()}"


def export(store: ExperimentStore, config=None, *, tracking_uri: str | None = None,
           experiment_name: str | None = None, models: bool = False, report: bool = True) -> ExportSummary:
    """Mirror the experiment folder of `store` into MLflow (see the module docstring)."""
    client, uri = _client(store, tracking_uri)
    if report:
        try:
            refresh(store, plots=True, config=config)
        except OSError as exc:  # a read-only folder (someone else's results): send what is there
            raise XvalError(f"{store.folder}: cannot rebuild the report ({exc.strerror or exc}); "
                            "add --no-report to export the files as they are") from None
    data, summary_rows, _, _ = read_tables(store, config)
    name = experiment_name or store.prefix
    try:
        experiment_id = _experiment(client, store, name, uri)
        result = ExportSummary(uri, name, experiment_id)
        Exporter(client, store, data, experiment_id, models, result).run(summary_rows)
    except _mlflow_errors() as exc:
        raise XvalError(f"MLflow at {uri}: {_first_line(exc)}") from None
    return result


# --- MLflow client and experiment ------------------------------------------------------------

def _client(store: ExperimentStore, tracking_uri: str | None):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # an export sends nothing but the runs
    try:
        import sqlalchemy  # noqa: F401  (the local sqlite store needs it; mlflow-skinny does not bring it)
        from mlflow import MlflowClient
    except ImportError:
        raise XvalError(INSTALL_HINT) from None
    # its 'Creating initial MLflow database tables' lines: our summary line says where the store is
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    uri = tracking_uri or default_tracking_uri(store)
    try:
        return MlflowClient(tracking_uri=uri), uri
    except ImportError:
        raise XvalError(INSTALL_HINT) from None
    except _mlflow_errors() as exc:
        raise XvalError(f"--tracking-uri {uri}: {_first_line(exc)}") from None


def _mlflow_errors() -> tuple[type[Exception], ...]:
    from mlflow.exceptions import MlflowException

    return (MlflowException,)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _experiment(client, store: ExperimentStore, name: str, uri: str) -> str:
    """The id of MLflow experiment `name`, created if needed; its tags describe the folder."""
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise XvalError(f"MLflow experiment {name!r} at {uri} was deleted; restore it (mlflow experiments restore "
                        f"--experiment-id {found.experiment_id}) or give another --experiment-name")
    if found is None:
        experiment_id = client.create_experiment(name, artifact_location=_artifact_location(uri, name))
        owner, current = store.prefix, {}
    else:
        experiment_id, current = found.experiment_id, found.tags
        owner = current.get(TAG + "experiment", store.prefix)
    if owner == store.prefix:  # an experiment shared with other runs keeps its own description
        tags = {TAG + "experiment": store.prefix, TAG + "folder": str(store.folder.resolve()),
                **_provenance_tags(store)}
        if store.description_path.is_file():
            tags["mlflow.note.content"] = store.description_path.read_text(encoding="utf-8").strip()
        for key, value in tags.items():
            if current.get(key) != value:  # an export with nothing new writes nothing
                client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def _artifact_location(uri: str, name: str) -> str | None:
    """For a sqlite file: mlartifacts/<name> beside it, as `mlflow ui` run in its folder keeps them
    (MLflow's client would use ./mlruns in whatever folder the command runs from). Servers and
    other databases: None, their own default."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    database = Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve()
    return (database.parent / ARTIFACTS_FOLDER / re.sub(r"[^A-Za-z0-9_.-]", "_", name)).as_uri()


def _provenance_tags(store: ExperimentStore) -> dict[str, str]:
    """code/provenance.json as tags: the git commit (shown by the MLflow UI), versions, host, device."""
    path = store.code_dir / "provenance.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        info = {}
    tags = {}
    if info.get("git_commit"):
        tags["mlflow.source.git.commit"] = tags[TAG + "git_commit"] = str(info["git_commit"])
        tags[TAG + "git_dirty"] = str(info.get("git_dirty"))
    for key in ("xvalkit", "python", "platform", "host", "device", "time"):
        if info.get(key) is not None:
            tags[TAG + ("version" if key == "xvalkit" else key)] = str(info[key])
    for package, version in (info.get("packages") or {}).items():
        tags[f"{TAG}packages.{package}"] = str(version)
    return tags


# --- runs ------------------------------------------------------------------------------------

class Exporter:
    """Creates, updates or replaces the runs of one experiment folder in one MLflow experiment."""

    def __init__(self, client, store: ExperimentStore, data: ReportData, experiment_id: str, models: bool,
                 result: ExportSummary):
        self.client, self.store, self.data = client, store, data
        self.experiment_id, self.models, self.result = experiment_id, models, result
        self.provenance = _provenance_tags(store)
        self.running = {run for run, _ in store.running()}

    def run(self, summary_rows: list[dict[str, Any]]) -> None:
        existing = self._existing_runs()
        rows = {row["ID"]: row for row in summary_rows}
        kept: set[tuple[str, ...]] = set()
        for inst in self.data.instances:
            parent = self._instance_run(inst, rows[inst.id], existing)
            kept.add(("instance", str(inst.id)))
            for fold, record in inst.folds.items():
                self._fold_run(inst, fold, record, parent, existing)
                kept.add(("fold", str(inst.id), str(fold)))
        self._report_run(existing)
        kept.add(("report",))
        for key, runs in existing.items():  # instances and folds no longer in the folder
            if key not in kept:
                for run in runs:
                    self._delete(run)

    def _existing_runs(self) -> dict[tuple[str, ...], list]:
        """Active runs of this folder in the experiment, by identity; extra copies (from an export
        interrupted between creating a run and finding it again) are deleted."""
        query = f"tags.`{TAG}experiment` = '{self.store.prefix}'"
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        found: dict[tuple[str, ...], list] = {}
        for run in sorted(runs, key=lambda r: r.info.start_time or 0):
            found.setdefault(_identity(run.data.tags), []).append(run)
        for key, copies in found.items():
            complete = [r for r in copies if TAG + "content" in r.data.tags] or copies
            keep = complete[0]
            for run in copies:
                if run is not keep:
                    self._delete(run)
            found[key] = [keep]
        return found

    def _delete(self, run) -> None:
        self.client.delete_run(run.info.run_id)
        self.result.count("deleted")

    def _take(self, existing, key: tuple[str, ...]):
        runs = existing.pop(key, [])
        return runs[0] if runs else None

    # instance (parent) runs
    def _instance_run(self, inst: InstanceInfo, row: dict[str, Any], existing) -> str:
        params = {k: _param_value(v) for k, v in inst.params.items()}
        params_hash = _digest(params)
        run = self._take(existing, ("instance", str(inst.id)))
        if run is not None and run.data.tags.get(TAG + "params") != params_hash:
            # MLflow parameters cannot change: an instance rerun with new parameters is replaced,
            # and so are its fold runs, all trained under the old ones
            for key in [k for k in existing if k[:2] == ("fold", str(inst.id))]:
                for child in existing.pop(key):
                    self._delete(child)
            self._delete(run)
            run = None
        start, end = self._instance_times(inst)
        metrics = {k: row.get(k) for k in metric_columns(self.data.metrics)}
        metrics.update({k: row.get(k) for k in SIGNIFICANCE_COLUMNS if k in row}, folds_done=len(inst.folds))
        tags = {**self.provenance, TAG + "status": inst.status, TAG + "significance": str(row.get("significance")),
                TAG + "folds_done": str(len(inst.folds)), TAG + "num_folds": str(inst.num_folds),
                TAG + "task_type": self.data.task_type, "mlflow.runName": _instance_name(inst)}
        if inst.error_line:
            tags[TAG + "error"] = inst.error_line
        plot = self.store.folder / "plots" / f"{self.store.prefix}_run{inst.id}.png"
        # everything the run shows: an export that would log the same leaves the run untouched
        content = _digest({"metrics": metrics, "tags": tags, "params": params_hash, "error": inst.error,
                           "plot": _stat(plot), "end": self._finish_state(inst, end)})
        if run is not None and run.data.tags.get(TAG + "content") == content:
            self.result.count("unchanged")
            return run.info.run_id
        if run is None:
            run_id = self.client.create_run(self.experiment_id, start_time=start, run_name=_instance_name(inst),
                                            tags=self._identity_tags("instance", inst.id)).info.run_id
            self._log(run_id, params=params)
            self.client.set_tag(run_id, TAG + "params", params_hash)
            latest: dict[str, float] = {}
            self.result.count("created")
        else:
            run_id, latest = run.info.run_id, run.data.metrics
            if not inst.error_line and TAG + "error" in run.data.tags:  # rerun since, without error
                self.client.delete_tag(run_id, TAG + "error")
            self.result.count("updated")
        # a value gone since the last export (the p-value of the new best instance) becomes NaN:
        # MLflow cannot delete a metric, and its old value would still show
        metrics = {k: math.nan if v is None and k in latest else v for k, v in metrics.items()}
        changed = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not _same(latest.get(k), float(v))}
        self._log(run_id, metrics=changed, tags=tags)
        if inst.params:
            self.client.log_dict(run_id, {k: cell(v) for k, v in inst.params.items()}, "parameters.json")
        if inst.error:
            self.client.log_text(run_id, inst.error, "error.txt")
        if plot.is_file():
            self.client.log_artifact(run_id, str(plot))
        self._finish(run_id, inst, end)
        self.client.set_tag(run_id, TAG + "content", content)  # last: an interrupted update is redone
        return run_id

    def _finish_state(self, inst: InstanceInfo, end: int | None) -> tuple[str, int | None]:
        """The status `_finish` gives the run, and its end time."""
        if inst.status == "done":
            return "FINISHED", end
        if inst.error:
            return "FAILED", end
        if inst.id in self.running:
            return "RUNNING", None
        return "KILLED", end  # partial and nothing running: interrupted

    def _finish(self, run_id: str, inst: InstanceInfo, end: int | None) -> None:
        status, end = self._finish_state(inst, end)
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status, end_time=end)

    def _instance_times(self, inst: InstanceInfo) -> tuple[int, int | None]:
        spans = [self._fold_times(inst.id, f, r) for f, r in inst.folds.items()]
        if spans:
            return min(s for s, _ in spans), max(e for _, e in spans)
        # no fold: when the error or the results were written (the same on every export)
        written = [p.stat().st_mtime for p in (self.store.error_path(inst.id), self.store.results_path(inst.id))
                   if p.is_file()]
        stamp = _ms(written[0] if written else time.time())
        return stamp, stamp

    def _fold_times(self, run: int, fold: int, record: dict[str, Any]) -> tuple[int, int]:
        """(start, end) in ms: the fold file was written when the fold finished."""
        for path in (self.store.fold_path(run, fold), self.store.results_path(run)):
            if path.is_file():
                end = path.stat().st_mtime
                break
        else:
            end = time.time()
        duration = record.get("duration_s")
        duration = float(duration) if isinstance(duration, (int, float)) and duration >= 0 else 0.0
        return _ms(end - duration), _ms(end)

    # fold (nested) runs
    def _fold_run(self, inst: InstanceInfo, fold: int, record: dict[str, Any], parent_id: str, existing) -> None:
        metrics = {f"{s}_{m}": record.get(f"{s}_{m}") for s in SETS for m in self.data.metrics}
        metrics.update({k: record.get(k) for k in ("epochs", "best_epoch", "duration_s", "n_train", "n_val", "n_test")})
        metrics = {k: float(v) for k, v in metrics.items() if _number(v)}
        history = {name: [float(v) for v in values if _number(v)]
                   for name, values in (record.get("history") or {}).items()}
        items = {s: [cell(i) for i in record.get(f"{s}_items", ())] for s in SETS}
        params = {"fold": str(fold), **{k: _param_value(record[k])
                                        for k in ("repeat", "fold_in_repeat", "seed", "device") if k in record}}
        model = self._model_path(inst.id, fold, record) if self.models else None
        log = self.store.log_path(inst.id, fold)
        content = _digest({"metrics": metrics, "history": history, "items": items, "params": params,
                           "log": _stat(log), "parent": parent_id})
        run = self._take(existing, ("fold", str(inst.id), str(fold)))
        if run is not None and run.data.tags.get(TAG + "content") == content:
            # the model is added by a later export with --models; one without keeps what was uploaded
            uploaded = model is not None and self._upload_model(run.info.run_id, model, run.data.tags)
            self.result.count("updated" if uploaded else "unchanged")
            return
        if run is not None:  # retrained, or half-written by an interrupted export: replaced whole
            self._delete(run)
        start, end = self._fold_times(inst.id, fold, record)
        name = f"instance {inst.id} fold {fold}"
        tags = {**self._identity_tags("fold", inst.id, fold), "mlflow.parentRunId": parent_id}
        run_id = self.client.create_run(self.experiment_id, start_time=start, run_name=name, tags=tags).info.run_id
        timestamp = end
        steps = [(f"history/{k}", v, epoch) for k, values in history.items() for epoch, v in enumerate(values, 1)]
        self._log(run_id, params=params, metrics=metrics, steps=steps, timestamp=timestamp,
                  tags={**self.provenance, TAG + "task_type": self.data.task_type})
        self.client.log_dict(run_id, items, "items.json")
        if log.is_file():
            self.client.log_artifact(run_id, str(log))
        if model is not None:
            self._upload_model(run_id, model, {})
        self.client.set_terminated(run_id, "FINISHED", end_time=end)
        self.client.set_tag(run_id, TAG + "content", content)
        self.result.count("created")

    def _upload_model(self, run_id: str, model: Path, tags: dict[str, str]) -> bool:
        """Upload the fold's model file unless this very file (name, size, time) already was."""
        stamp = _digest(_stat(model))
        if tags.get(TAG + "model") == stamp:
            return False
        self.client.log_artifact(run_id, str(model), "model")
        self.client.set_tag(run_id, TAG + "model", stamp)
        return True

    def _model_path(self, run: int, fold: int, record: dict[str, Any]) -> Path | None:
        named = record.get("model_file")
        if isinstance(named, str) and (self.store.models_dir / named).is_file():
            return self.store.models_dir / named
        return next((p for p in sorted(self.store.models_dir.glob(f"{self.store.prefix}_run{run}_fold{fold}.*"))
                     if p.suffix in (".hdf5", ".pt", ".keras")), None)

    # the report run: the experiment-wide files
    def _report_run(self, existing) -> None:
        folder = self.store.folder
        files = [(path, None) for path in (self.store.spreadsheet_path, folder / "results.csv",
                                           folder / "summary.csv", self.store.description_path) if path.is_file()]
        files += [(path, "plots") for path in sorted((folder / "plots").glob("*.png"))]
        if self.store.code_dir.is_dir():
            files += [(path, "code") for path in sorted(p for p in self.store.code_dir.iterdir() if p.is_file())]
        content = _digest({"files": [(under, _stat(path)) for path, under in files], "tags": self.provenance})
        run = self._take(existing, ("report",))
        if run is not None and run.data.tags.get(TAG + "content") == content:
            self.result.count("unchanged")
            return
        if run is None:
            run_id = self.client.create_run(self.experiment_id, run_name=f"report ({self.store.prefix})",
                                            tags=self._identity_tags("report")).info.run_id
            self.result.count("created")
        else:
            run_id = run.info.run_id
            self.result.count("updated")
        for path, under in files:
            self.client.log_artifact(run_id, str(path), under)
        self._log(run_id, tags=self.provenance)
        self.client.set_terminated(run_id, "FINISHED")
        self.client.set_tag(run_id, TAG + "content", content)  # last: an interrupted update is redone

    # helpers
    def _identity_tags(self, role: str, instance: int | None = None, fold: int | None = None) -> dict[str, str]:
        tags = {TAG + "experiment": self.store.prefix, TAG + "role": role}
        if instance is not None:
            tags[TAG + "instance"] = str(instance)
        if fold is not None:
            tags[TAG + "fold"] = str(fold)
        return tags

    def _log(self, run_id: str, *, params: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
             steps: Iterable[tuple[str, float, int]] = (), tags: dict[str, str] | None = None,
             timestamp: int | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        stamp = timestamp if timestamp is not None else _ms(time.time())
        entities: list = [Param(k, v) for k, v in (params or {}).items()]
        entities += [Metric(k, v, stamp, 0) for k, v in (metrics or {}).items()]
        entities += [Metric(k, v, stamp, step) for k, v, step in steps]
        entities += [RunTag(k, v) for k, v in (tags or {}).items()]
        for start in range(0, len(entities), 100 if params else BATCH):  # <= 100 params per call
            chunk = entities[start:start + (100 if params else BATCH)]
            self.client.log_batch(run_id, metrics=[e for e in chunk if isinstance(e, Metric)],
                                  params=[e for e in chunk if isinstance(e, Param)],
                                  tags=[e for e in chunk if isinstance(e, RunTag)])


def _identity(tags: dict[str, str]) -> tuple[str, ...]:
    role = tags.get(TAG + "role", "")
    if role == "instance":
        return ("instance", tags.get(TAG + "instance", ""))
    if role == "fold":
        return ("fold", tags.get(TAG + "instance", ""), tags.get(TAG + "fold", ""))
    return (role,)


def _instance_name(inst: InstanceInfo) -> str:
    comments = ", ".join(str(inst.params[c]) for c in ("comment_1", "comment_2") if inst.params.get(c))
    return f"instance {inst.id}" + (f": {comments}" if comments else "")


def _param_value(value: Any) -> str:
    """A parameter as MLflow keeps it: text, cut to MLflow's limit (parameters.json has it whole)."""
    text = str(cell(value))
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or (
        hasattr(value, "item") and getattr(value, "ndim", 1) == 0 and isinstance(value.item(), (int, float)))


def _same(old: float | None, new: float) -> bool:
    return old is not None and (old == new or (math.isnan(old) and math.isnan(new)))


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stat(path: Path | None) -> list[Any] | None:
    if path is None or not path.is_file():
        return None
    info = path.stat()
    return [path.name, info.st_size, info.st_mtime_ns]


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
