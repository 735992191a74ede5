"""`xval export mlflow`: a real experiment exported, read back with MLflow's own client and compared
with the folder; re-exports update without duplicates; a new instance is added; no network."""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import socket
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.mlflow_export import SIGNIFICANCE_COLUMNS

from .conftest import instance, write_experiment

pytest.importorskip("mlflow", reason='the optional extra: pip install -e ".[mlflow]"')
from mlflow import MlflowClient  # noqa: E402

runner = CliRunner()
FAST = ['num_epochs=2', 'patience=2', 'batch_size=32', 'channels_1=4', 'channels_2=4', 'hidden_size=8']
INSTANCES = {1: instance("keras", "EXAMPLE_model", "cnn"),
             2: instance("torch", "EXAMPLE_model", "cnn", "framework='torch'", "learning_rate=0.003")}


def xval(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@contextlib.contextmanager
def no_network():
    """Fail any attempt to reach another machine (telemetry, a server) while MLflow works."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access during the export: {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            raise AssertionError(f"name lookup during the export: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


def export(*args):
    with no_network():
        result = xval("export", "mlflow", *args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def exp(tmp_path_factory, data_folder):
    """A real finished experiment (2 instances, Keras and torch, 2 folds each), exported once with --models."""
    tmp = tmp_path_factory.mktemp("mlflow_exp")
    config = tmp / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    path = write_experiment(tmp, INSTANCES, num_folds=2, global_parameters=FAST)
    result = xval("run", path, "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    folder = tmp / "results" / "demo" / "experiment_1"
    export(folder, "--models", "--config", config)
    return {"path": path, "config": config, "folder": folder}


def client_of(folder: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{folder.parent / 'mlflow.db'}")


def runs_of(client: MlflowClient, name: str = "demo_exp1"):
    experiment = client.get_experiment_by_name(name)
    return experiment, client.search_runs([experiment.experiment_id], max_results=1000)


def by_role(runs) -> dict:
    out = {"instance": {}, "fold": {}, "report": []}
    for run in runs:
        tags = run.data.tags
        if tags["xvalkit.role"] == "instance":
            assert int(tags["xvalkit.instance"]) not in out["instance"], "duplicate instance run"
            out["instance"][int(tags["xvalkit.instance"])] = run
        elif tags["xvalkit.role"] == "fold":
            key = (int(tags["xvalkit.instance"]), int(tags["xvalkit.fold"]))
            assert key not in out["fold"], f"duplicate fold run {key}"
            out["fold"][key] = run
        else:
            out["report"].append(run)
    return out


def pickled(folder: Path, run: int) -> dict:
    with open(folder / "results" / f"results_demo_exp1_run{run}.pkl", "rb") as handle:
        return pickle.load(handle)


def artifact(client: MlflowClient, run, path: str, tmp: Path) -> Path:
    return Path(client.download_artifacts(run.info.run_id, path, str(tmp)))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_matches_the_folder(exp, tmp_path):
    folder = exp["folder"]
    assert (folder.parent / "mlflow.db").is_file()  # MLflow's local default, beside the experiment folder
    client = client_of(folder)
    experiment, runs = runs_of(client)
    assert experiment.artifact_location.startswith((folder.parent / "mlartifacts").as_uri())
    provenance = json.loads((folder / "code" / "provenance.json").read_text())
    assert experiment.tags["xvalkit.packages.torch"] == provenance["packages"]["torch"]
    assert experiment.tags["mlflow.note.content"] == "test experiment"
    roles = by_role(runs)
    assert sorted(roles["instance"]) == [1, 2] and sorted(roles["fold"]) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert len(roles["report"]) == 1 and len(runs) == 7

    summary = pd.read_csv(folder / "summary.csv").set_index("ID")
    for run_id, parent in roles["instance"].items():
        results = pickled(folder, run_id)
        assert parent.info.status == "FINISHED" and parent.data.tags["xvalkit.status"] == "done"
        assert parent.info.run_name == f"instance {run_id}: {results['parameters']['comment_1']}, test"
        # every resolved parameter, as text
        assert parent.data.params == {k: str(v) for k, v in results["parameters"].items()}
        assert parent.data.tags["xvalkit.packages.keras"] == provenance["packages"]["keras"]
        # summary metrics: summary.csv's columns, and by hand from the fold records (std with ddof=1)
        accs = [f["test_acc"] for f in results["folds"].values()]
        assert parent.data.metrics["test_mean_acc"] == pytest.approx(np.mean(accs))
        assert parent.data.metrics["test_std_acc"] == pytest.approx(np.std(accs, ddof=1))
        for column, value in summary.loc[run_id].items():
            if column.split("_")[1:2] in (["mean"], ["std"]) or column in SIGNIFICANCE_COLUMNS:
                if pd.isna(value):
                    assert column not in parent.data.metrics
                else:
                    assert parent.data.metrics[column] == pytest.approx(value), column
        assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"parameters.json", f"demo_exp1_run{run_id}.png"}
        saved = json.loads(artifact(client, parent, "parameters.json", tmp_path).read_text())
        assert saved["framework"] == results["parameters"]["framework"]

        for fold, record in results["folds"].items():
            child = roles["fold"][(run_id, fold)]
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert child.info.status == "FINISHED" and child.info.run_name == f"instance {run_id} fold {fold}"
            for name in ("train_acc", "val_loss", "test_acc", "test_f1", "test_recall"):
                assert child.data.metrics[name] == pytest.approx(record[name])
            assert child.data.metrics["epochs"] == record["epochs"]
            assert child.data.params["fold"] == str(fold) and child.data.params["seed"] == str(record["seed"])
            for key, values in record["history"].items():
                history = sorted(client.get_metric_history(child.info.run_id, f"history/{key}"), key=lambda m: m.step)
                assert [m.step for m in history] == list(range(1, len(values) + 1))
                assert [m.value for m in history] == pytest.approx(values)
            items = json.loads(artifact(client, child, "items.json", tmp_path / f"{run_id}_{fold}").read_text())
            assert items == {s: list(record[f"{s}_items"]) for s in ("train", "val", "test")}
            model = folder / "models" / record["model_file"]
            copied = artifact(client, child, f"model/{model.name}", tmp_path / f"m{run_id}_{fold}")
            assert sha(copied) == sha(model)
            assert {a.path for a in client.list_artifacts(child.info.run_id)} == {
                "items.json", "model", f"run{run_id}_fold{fold}.log"}

    report = roles["report"][0]
    names = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"demo_exp1_results.xlsx", "results.csv", "summary.csv", "plots", "code"} <= names
    for name in ("demo_exp1_results.xlsx", "summary.csv"):
        assert sha(artifact(client, report, name, tmp_path / "report")) == sha(folder / name)
    plots = {a.path for a in client.list_artifacts(report.info.run_id, "plots")}
    assert plots == {f"plots/{p.name}" for p in (folder / "plots").glob("*.png")}
    assert "code/provenance.json" in {a.path for a in client.list_artifacts(report.info.run_id, "code")}


def store_state(database: Path, artifacts: Path) -> tuple[list[str], list[tuple[str, int, int]]]:
    """Everything an export could change in a local MLflow store: every row of the database (runs,
    metrics with their timestamps, tags, times) and every artifact file with its size and time."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = list(connection.iterdump())
    files = [(str(p.relative_to(artifacts)), p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(artifacts.rglob("*")) if p.is_file()]
    return rows, files


def test_an_export_with_nothing_changed_changes_nothing(exp, tmp_path):
    """Exported twice, nothing changed between: the second export finds every run unchanged and
    writes nothing to the store (an instance and the report run used to count as updated each time)."""
    args = (exp["folder"], "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--models", "--config", exp["config"])
    export(*args)
    before = store_state(tmp_path / "m.db", tmp_path / "mlartifacts")
    result = export(*args)
    assert "runs 7 unchanged" in result.output, result.output  # 2 instances, 4 folds, the report
    assert store_state(tmp_path / "m.db", tmp_path / "mlartifacts") == before


def test_reexport_updates_and_adds_without_duplicates(exp):
    folder, path, config = exp["folder"], exp["path"], exp["config"]
    client = client_of(folder)
    _, before = runs_of(client)
    ids = {(r.data.tags["xvalkit.role"], r.data.tags.get("xvalkit.instance"), r.data.tags.get("xvalkit.fold")): r.info.run_id
           for r in before}

    # unchanged folder: the same runs, all untouched, no metric logged twice
    result = export(folder, "--no-report")
    assert "runs 7 unchanged" in result.output, result.output
    _, again = runs_of(client)
    assert {r.info.run_id for r in again} == set(ids.values())
    child = ids[("fold", "1", "1")]
    assert len(client.get_metric_history(child, "history/loss")) == 2  # 2 epochs, once each
    assert len(client.get_metric_history(ids[("instance", "1", None)], "test_mean_acc")) == 1

    # an export interrupted before a fold run was complete (no content tag): that run is replaced
    client.delete_tag(ids[("fold", "2", "2")], "xvalkit.content")

    # a new instance, trained for real, then exported: added beside the others
    added = instance("added", "EXAMPLE_model", "cnn", "framework='torch'")
    path.write_text(path.read_text() + f"experiment[3] = {added!r}\n")
    result = xval("run", path, "3", "--cpu", "--config", config)
    assert result.exit_code == 0, result.output
    export(folder, "--config", config)
    _, after = runs_of(client)
    roles = by_role(after)  # asserts that no instance or fold appears twice
    assert sorted(roles["instance"]) == [1, 2, 3] and len(roles["fold"]) == 6 and len(roles["report"]) == 1
    assert len(after) == 10
    for key in (("instance", "1", None), ("instance", "2", None), ("fold", "1", "1"), ("fold", "1", "2"),
                ("fold", "2", "1"), ("report", None, None)):
        assert ids[key] in {r.info.run_id for r in after}, key  # updated in place, not recreated
    assert roles["fold"][(2, 2)].info.run_id != ids[("fold", "2", "2")]
    assert roles["fold"][(2, 2)].data.tags["xvalkit.content"]
    assert roles["fold"][(3, 1)].data.tags["mlflow.parentRunId"] == roles["instance"][3].info.run_id
    # the summary metrics follow summary.csv (the significance of 1 and 2 may change with instance 3)
    summary = pd.read_csv(folder / "summary.csv").set_index("ID")
    for run_id, parent in roles["instance"].items():
        assert parent.data.metrics["test_mean_acc"] == pytest.approx(summary.loc[run_id, "test_mean_acc"])
        assert parent.data.tags["xvalkit.significance"] == summary.loc[run_id, "significance"]
    assert Counter(r.data.tags["xvalkit.role"] for r in after) == {"instance": 3, "fold": 6, "report": 1}


def test_tracking_uri_and_experiment_name(exp, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"  # where the command runs from
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'team.db'}"
    result = export(exp["folder"], "--tracking-uri", uri, "--experiment-name", "lab/speech", "--no-report")
    assert "lab/speech" in result.output
    client = MlflowClient(tracking_uri=uri)
    experiment, runs = runs_of(client, "lab/speech")
    roles = by_role(runs)
    assert len(roles["instance"]) >= 2 and len(roles["report"]) == 1
    assert client_of(exp["folder"]).get_experiment_by_name("lab/speech") is None
    # the files beside the database, nothing in the folder the command ran from (MLflow's ./mlruns)
    assert experiment.artifact_location == (tmp_path / "mlartifacts" / "lab_speech").as_uri()
    assert (tmp_path / "mlartifacts" / "lab_speech").is_dir() and not any(elsewhere.iterdir())


def test_without_the_extra_one_line_naming_it(exp, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError, as when not installed
    result = xval("export", "mlflow", exp["folder"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and '".[mlflow]"' in lines[0], result.output


def test_not_an_experiment_folder(tmp_path):
    result = xval("export", "mlflow", tmp_path)
    assert result.exit_code == 2 and "not an experiment folder" in result.output


def test_statuses_and_changed_results_on_a_crafted_folder(tmp_path, monkeypatch):
    """Known folders without training (the records of test_report): done, partial, running and failed
    instances get MLflow's statuses; on a second export a retrained fold and an instance rerun with
    other parameters are replaced, the others updated in place (a p-value gone becomes NaN, an error
    gone is untagged), an instance no longer in the folder is deleted, and nothing is duplicated."""
    import math

    from xvalkit.store import ExperimentStore

    from .test_report import fold_record, save

    store = ExperimentStore(tmp_path / "results" / "demo" / "experiment_1", "demo", 1)
    save(store, 1, [0.8, 0.9, 1.0])  # the best
    save(store, 2, [0.7, 0.6])  # partial, nothing running: interrupted
    save(store, 3, [0.5])  # partial, fold 2 being trained now
    store.mark_running(3, 2)
    store.save_error(4, "Traceback (most recent call last):\nRuntimeError: out of memory\n")
    save(store, 5, [0.6, 0.6, 0.6])
    save(store, 6, [0.4, 0.4])  # failed after 2 folds
    store.save_error(6, "Traceback (most recent call last):\nValueError: bad batch\n")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    export(store.folder, "--tracking-uri", uri)
    assert not any((tmp_path / "cwd").iterdir()) and (tmp_path / "mlartifacts" / "demo_exp1").is_dir()
    client = MlflowClient(tracking_uri=uri)
    roles = by_role(runs_of(client)[1])
    status = {i: r.info.status for i, r in roles["instance"].items()}
    assert status == {1: "FINISHED", 2: "KILLED", 3: "RUNNING", 4: "FAILED", 5: "FINISHED", 6: "FAILED"}
    assert roles["instance"][2].data.tags["xvalkit.status"] == "partial (2/3 folds)"
    assert roles["instance"][4].data.tags["xvalkit.error"] == "RuntimeError: out of memory"
    assert roles["instance"][6].data.tags["xvalkit.error"] == "ValueError: bad batch"
    assert roles["instance"][4].data.params == {}
    assert "p_value" not in roles["instance"][1].data.metrics and 0 < roles["instance"][5].data.metrics["p_value"] <= 1
    assert len(roles["fold"]) == 3 + 2 + 1 + 3 + 2
    before = {key: run.info.run_id for key, run in {**roles["instance"], **roles["fold"]}.items()}

    # 1: fold 2 retrained; 2: rerun with other parameters; 3: stopped; 4: cleared; 5: now the best;
    # 6: resumed to the end
    results = pickled(store.folder, 1)
    results["folds"][2] = {**fold_record(2, 0.2), "seed": 99}
    store.save_instance(1, results)
    save(store, 2, [0.7, 0.6, 0.5], learning_rate=0.1)
    store.unmark_running(3, 2)
    store.clear_error(4)
    save(store, 5, [0.99, 0.99, 0.99])
    save(store, 6, [0.4, 0.4, 0.4])
    store.clear_error(6)
    export(store.folder, "--tracking-uri", uri, "--no-report")
    runs = runs_of(client)[1]
    roles = by_role(runs)
    assert sorted(roles["instance"]) == [1, 2, 3, 5, 6] and len(runs) == 5 + (3 + 3 + 1 + 3 + 3) + 1
    for key in (1, 3, 5, 6, (1, 1), (1, 3), (3, 1)):
        assert roles["instance" if isinstance(key, int) else "fold"][key].info.run_id == before[key], key
    assert roles["fold"][(1, 2)].info.run_id != before[(1, 2)]  # retrained: replaced
    assert roles["fold"][(1, 2)].data.metrics["test_acc"] == pytest.approx(0.2)
    assert roles["fold"][(1, 2)].data.params["seed"] == "99"
    assert roles["instance"][1].data.metrics["test_mean_acc"] == pytest.approx(np.mean([0.8, 0.2, 1.0]))
    assert roles["instance"][2].info.run_id != before[2]  # new parameters: replaced with its folds
    assert roles["instance"][2].data.params["learning_rate"] == "0.1"
    assert roles["instance"][2].info.status == "FINISHED"
    assert {roles["fold"][(2, f)].data.tags["mlflow.parentRunId"] for f in (1, 2, 3)} == {roles["instance"][2].info.run_id}
    assert roles["instance"][3].info.status == "KILLED"  # no longer running
    assert roles["instance"][5].data.tags["xvalkit.significance"] == "best"
    assert math.isnan(roles["instance"][5].data.metrics["p_value"])  # gone: NaN, not the old value
    assert roles["instance"][1].data.metrics["p_value"] >= 0
    assert roles["instance"][6].info.status == "FINISHED" and "xvalkit.error" not in roles["instance"][6].data.tags
    deleted = client.search_runs([runs_of(client)[0].experiment_id], run_view_type=2, max_results=1000)  # DELETED_ONLY
    assert {before[4], before[(2, 1)], before[(1, 2)]} <= {r.info.run_id for r in deleted}
