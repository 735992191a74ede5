"""The dataset's SHA-256 as fold records keep them, read once and trusted again only while a file's
size and modification time say it is unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time

import numpy as np

from xvalkit import jobs
from xvalkit.data import load_dataset
from xvalkit.data_digest import RACY_NS, dataset_fingerprint, digests_of


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def aged(folder, seconds: float = 3600) -> None:
    """Date every file of `folder` back, as a dataset written some time before a run is."""
    then = time.time() - seconds
    for path in folder.rglob("*"):
        os.utime(path, (then, then))


def test_digests_are_the_files_sha256(tmp_path):
    load_dataset(tmp_path, "demo")
    files = sorted((tmp_path / "demo.xvd").iterdir())
    assert digests_of(dataset_fingerprint(tmp_path, "demo")) == {f"demo.xvd/{p.name}": sha(p) for p in files}


def test_an_unchanged_file_keeps_its_known_digest_and_a_changed_one_is_read_again(tmp_path):
    load_dataset(tmp_path, "demo")
    aged(tmp_path)
    first = dataset_fingerprint(tmp_path, "demo")
    # a planted digest shows the known one is reused, not computed again
    planted = {path: {**entry, "sha256": "planted"} for path, entry in first.items()}
    assert set(digests_of(dataset_fingerprint(tmp_path, "demo", planted)).values()) == {"planted"}
    predictors = tmp_path / "demo.xvd" / "predictors.npy"
    changed = bytearray(predictors.read_bytes())
    changed[-1] ^= 1
    predictors.write_bytes(bytes(changed))  # same size, a new modification time
    again = digests_of(dataset_fingerprint(tmp_path, "demo", planted))
    assert again.pop("demo.xvd/predictors.npy") == sha(predictors) != first["demo.xvd/predictors.npy"]["sha256"]
    assert set(again.values()) == {"planted"}


def test_a_file_written_just_before_its_hashing_is_not_trusted(tmp_path):
    """Racy: a second write within the file system's timestamp tick keeps size and time."""
    load_dataset(tmp_path, "demo")
    fresh = dataset_fingerprint(tmp_path, "demo")
    assert all(entry["hashed_ns"] - entry["mtime_ns"] < RACY_NS for entry in fresh.values())
    planted = {path: {**entry, "sha256": "planted"} for path, entry in fresh.items()}
    assert "planted" not in digests_of(dataset_fingerprint(tmp_path, "demo", planted)).values()


def test_a_fold_uses_the_runs_fingerprint_and_notices_a_file_changed_since(tmp_path, monkeypatch):
    """What a training process records: the run's digests while the files are as the run found them,
    the new digest of a file rewritten during the run."""
    monkeypatch.setattr(jobs, "_FINGERPRINTS", {})
    load_dataset(tmp_path, "demo")
    aged(tmp_path)
    planted = {path: {**entry, "sha256": "from the run"} for path, entry in dataset_fingerprint(tmp_path, "demo").items()}
    job = jobs.FoldJob(instance=1, fold=None, num_folds=2, params={}, task_type="classification", dataset="demo",
                       data_folder=str(tmp_path), store_folder=str(tmp_path / "results"), num_experiment=1,
                       generator=False, data_files=planted)
    assert set(jobs.data_digests_for(job).values()) == {"from the run"}
    targets = tmp_path / "demo.xvd" / "targets.npy"
    np.save(targets, np.load(targets) * 0)
    recorded = jobs.data_digests_for(dataclasses.replace(job, instance=2))
    assert recorded.pop("demo.xvd/targets.npy") == sha(targets)
    assert set(recorded.values()) == {"from the run"}
