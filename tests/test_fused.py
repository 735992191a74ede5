"""Fused training (trainers/fused.py, fusion.py) against unfused training, for real on the CPU.

Each check trains the same FoldJobs twice, through the same job layer: one by one (jobs.execute,
the unfused path) into one folder, as one fused group (fusion.execute_group) into another, and
compares the fold records and the saved .pt files."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import xvalkit
from xvalkit import fusion
from xvalkit.data import load_dataset
from xvalkit.experiment import load_experiment
from xvalkit.jobs import execute
from xvalkit.runner import RunOptions, make_jobs, prepare

from .conftest import instance, wait_for, write_experiment

MLP = ["hidden_sizes=(16,)"]
CNN = ["channels_1=4", "channels_2=4", "hidden_size=8"]
RTOL = 1e-4


@pytest.fixture(autouse=True)
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def fold_jobs(tmp: Path, data_folder: Path, instances: dict, num_folds: int = 4, **settings):
    """The FoldJobs `xval run` would plan for this experiment (all its instances and folds)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.ini").write_text(f"[paths]\ndata_folder = {data_folder}\n")
    exp = load_experiment(write_experiment(tmp, instances, num_folds=num_folds, **settings))
    _, planned, _ = prepare(exp, RunOptions())
    return [job for inst in planned for job in make_jobs(exp, inst)]


def moved(jobs, folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    return [dataclasses.replace(job, store_folder=str(folder)) for job in jobs]


def unfused(jobs, folder: Path) -> dict:
    return {job.key: execute(job) for job in moved(jobs, folder)}


class Collect(fusion.GroupListener):
    def __init__(self):
        self.records, self.failures, self.order = {}, {}, []
        super().__init__(epoch=lambda job, e, logs: None, finished=self.done, failed=self.fail, say=lambda line: None)

    def done(self, job, record):
        self.records[job.key] = record
        self.order.append(job.key)

    def fail(self, job, exc):
        self.failures[job.key] = exc


def fused(jobs, folder: Path) -> Collect:
    collect = Collect()
    fusion.execute_group(fusion.FusedJob(tuple(moved(jobs, folder))), collect)
    assert not collect.failures, collect.failures
    return collect


def state(folder: Path, job) -> dict:
    path = folder / "models" / f"demo_exp1_run{job.instance}_fold{job.fold.index}.pt"
    return torch.load(path, weights_only=False)["state_dict"]


def assert_same_training(jobs, alone: dict, together: dict, folder_alone: Path, folder_together: Path):
    for job in jobs:
        a, b = alone[job.key], together[job.key]
        for key in a["history"]:
            np.testing.assert_allclose(b["history"][key], a["history"][key], rtol=RTOL, err_msg=f"{job.label} {key}")
        assert (b["epochs"], b["best_epoch"]) == (a["epochs"], a["best_epoch"]), job.label
        sa, sb = state(folder_alone, job), state(folder_together, job)
        assert sa.keys() == sb.keys()
        for name in sa:
            np.testing.assert_allclose(sb[name].double().numpy(), sa[name].double().numpy(), rtol=RTOL, atol=1e-6,
                                       err_msg=f"{job.label} {name}")
        np.testing.assert_allclose(b["test_pred"], a["test_pred"], rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("architecture, reshaping, extra", [
    ("MLP_model", "none", MLP), ("EXAMPLE_model", "cnn", CNN), ("RNN_model", "rnn", ["rnn_units=6", "hidden_size=8"]),
    ("RNN_model", "rnn", ["rnn_type='lstm'", "bidirectional=True", "rnn_units=6", "hidden_size=8"])])
def test_four_folds_fused_train_as_four_unfused(tmp_path, data_folder, architecture, reshaping, extra):
    """Dropout 0: the same per-epoch losses, best epoch, weights (BatchNorm statistics included) and
    predictions as each fold trained alone."""
    jobs = fold_jobs(tmp_path / "exp", data_folder, {1: instance("a", architecture, reshaping, *extra, "dropout=0.0")},
                     global_parameters=['framework="torch"', "num_epochs=4", "patience=4", "batch_size=16"])
    assert len({len(job.fold.train) for job in jobs}) >= 1 and len(jobs) == 4
    alone, together = unfused(jobs, tmp_path / "alone"), fused(jobs, tmp_path / "together")
    assert {r["fused_members"] for r in together.records.values()} == {4}  # fused, not trained one by one
    assert_same_training(jobs, alone, together.records, tmp_path / "alone", tmp_path / "together")
    if architecture == "EXAMPLE_model":
        assert any("running_mean" in name for name in state(tmp_path / "together", jobs[0]))
    assert_tensorboard_is_history(tmp_path / "together", jobs[1], together.records[jobs[1].key]["history"])


def assert_tensorboard_is_history(folder: Path, job, history: dict) -> None:
    """The member's TensorBoard curves (torch.utils.tensorboard.SummaryWriter), read back, are its history."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for split, prefix in (("train", ""), ("validation", "val_")):
        events = EventAccumulator(str(folder / "tensorboard" / f"run{job.instance}" / f"fold{job.fold.index}" / split))
        events.Reload()
        for metric in ("loss", "accuracy"):
            scalars = events.Scalars(f"epoch_{metric}")
            assert [e.step for e in scalars] == list(range(len(history[metric])))
            np.testing.assert_allclose([e.value for e in scalars], history[prefix + metric], rtol=1e-6)


def test_members_with_their_own_learning_rate_and_regularization(tmp_path, data_folder):
    jobs = fold_jobs(tmp_path / "exp", data_folder, {
        1: instance("slow", "EXAMPLE_model", "cnn", *CNN, "dropout=0.0", "learning_rate=0.001",
                    "regularization_lambda=0.0"),
        2: instance("fast", "EXAMPLE_model", "cnn", *CNN, "dropout=0.0", "learning_rate=0.01",
                    "regularization_lambda=0.01"),
    }, num_folds=2, global_parameters=['framework="torch"', "num_epochs=3", "patience=3", "batch_size=16"])
    planned = fusion.plan_groups(jobs)
    assert len(planned) == 1 and len(planned[0].members) == 4  # two instances, one group
    alone, together = unfused(jobs, tmp_path / "alone"), fused(jobs, tmp_path / "together")
    assert_same_training(jobs, alone, together.records, tmp_path / "alone", tmp_path / "together")
    assert together.records[(1, 1)]["history"]["loss"] != together.records[(2, 1)]["history"]["loss"]
    dataset = load_dataset(data_folder, "demo")
    for job in jobs:  # a member's .pt, reloaded, predicts what the fused model gave for it
        record = together.records[job.key]
        raw = np.concatenate([dataset.predictors[item] for item in record["test_items"]])
        path = tmp_path / "together" / "models" / record["model_file"]
        np.testing.assert_allclose(xvalkit.predict(path, raw), record["test_pred"], rtol=1e-5, atol=1e-6)


def test_a_diverging_member_and_an_early_stopping_member_touch_no_other(tmp_path, data_folder):
    """Instance 2 goes NaN (learning rate 1e30), instance 3 stops early (patience 1) and restores
    its best epoch while instance 1 trains on: every member as if trained alone, the stopped one
    written first."""
    jobs = fold_jobs(tmp_path / "exp", data_folder, {
        1: instance("calm", "EXAMPLE_model", "cnn", *CNN, "dropout=0.0", "patience=8"),
        2: instance("nan", "EXAMPLE_model", "cnn", *CNN, "dropout=0.0", "learning_rate=1e30", "patience=8"),
        3: instance("stops", "EXAMPLE_model", "cnn", *CNN, "dropout=0.0", "learning_rate=0.03", "patience=1"),
    }, num_folds=2, global_parameters=['framework="torch"', "num_epochs=8", "batch_size=16"])
    assert len(fusion.plan_groups(jobs)) == 1
    alone, together = unfused(jobs, tmp_path / "alone"), fused(jobs, tmp_path / "together")
    assert_same_training(jobs, alone, together.records, tmp_path / "alone", tmp_path / "together")
    records = together.records
    assert all(records[(2, f)]["diverged"] for f in (1, 2))
    assert not any(records[(i, f)]["diverged"] for i in (1, 3) for f in (1, 2))
    stopped = records[(3, 1)]
    assert stopped["best_epoch"] < stopped["epochs"] < records[(1, 1)]["epochs"] == 8
    assert together.order.index((3, 1)) < together.order.index((1, 1))


def test_a_member_whose_begin_fails_fails_alone_and_leaves_no_running_marker(tmp_path, data_folder):
    """A folder where fold 2's log goes: its begin raises after marking it running; it fails alone,
    the others train, and no running marker is left behind (`xval status` would show it running)."""
    jobs = fold_jobs(tmp_path / "exp", data_folder, {1: instance("a", "MLP_model", "none", *MLP)}, num_folds=3,
                     global_parameters=['framework="torch"', "num_epochs=1", "batch_size=16"])
    folder = tmp_path / "together"
    (folder / "logs" / "run1_fold2.log").mkdir(parents=True)
    collect = Collect()
    fusion.execute_group(fusion.FusedJob(tuple(moved(jobs, folder))), collect)
    assert sorted(collect.records) == [(1, 1), (1, 3)]
    assert list(collect.failures) == [(1, 2)] and isinstance(collect.failures[(1, 2)], IsADirectoryError)
    assert not list((folder / "results" / "running").glob("*.json"))


GATED_MODELS = '''
import math
import time
from pathlib import Path

from torch import nn

FAILED = Path(__file__).parent / "results" / "demo" / "experiment_1" / "results" / "error_demo_exp1_run3.txt"


class Gated(nn.Module):
    """A linear model whose training waits until instance 3 has failed: its group holds one worker
    while the other worker trains the group that fails it."""

    def __init__(self, size, outputs):
        super().__init__()
        self.out = nn.Linear(size, outputs)

    def forward(self, x):
        while self.training and not FAILED.exists():
            time.sleep(0.05)
        return self.out(x.flatten(1))


def Gated_model(input_shape, num_outputs, task_type):
    return Gated(math.prod(input_shape), num_outputs)
'''


@pytest.mark.parametrize("workers, first", [("1", instance("other", "MLP_model", "none", "hidden_sizes=(8,)")),
                                             ("2", instance("gated", "Gated_model", "none"))])
def test_a_failed_instance_skips_only_its_own_folds_in_fused_groups(tmp_path, config_file, workers, first):
    """Groups of at most 3 folds: instance 1 alone (another group key), then [2.1, 2.2, 3.1] and
    [3.2, 4.1, 4.2]. Fold 3.1 fails (a folder where its log goes); the second group, which starts with
    a fold of the failed instance, still trains instance 4's folds, and only fold 3.2 is skipped. With
    two workers, instance 1's group holds one worker until 3.1 has failed, so that the second group is
    handed out after it."""
    (tmp_path / "gated.py").write_text(GATED_MODELS)
    path = write_experiment(tmp_path, {1: first, **{i: instance(c, "MLP_model", "none", *MLP) for i, c in
                                                    ((2, "a"), (3, "fails"), (4, "b"))}},
                            models="gated.py", num_folds=2, global_parameters=['framework="torch"', "num_epochs=2",
                                                                              "batch_size=16"])
    folder = tmp_path / "results" / "demo" / "experiment_1"
    (folder / "logs" / "run3_fold1.log").mkdir(parents=True)
    run = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--fuse", "--cpu-workers",
                          workers, "-q", "--config", str(config_file)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "XVAL_FUSE_MAX_MEMBERS": "3"})
    assert run.returncode == 1, run.stderr
    assert "fused group 3: 3 folds trained as one model (instance(s) 3-4, fold(s) 1-2)" in run.stderr, run.stderr
    assert "instance 3 fold 1/2 failed: IsADirectoryError" in run.stderr, run.stderr
    done, failed = re.search(r"summary: done ([\d, ]+); .* failed ([\d, ]+);", run.stderr).groups()
    assert (sorted(done.split(", ")), failed) == (["1", "2", "4"], "3"), run.stderr  # done in the order they end
    folds = folder / "results" / "folds"
    assert sorted(p.name for p in folds.glob("*.pkl")) == [f"demo_exp1_run{i}_fold{f}.pkl" for i in (1, 2, 4)
                                                           for f in (1, 2)]
    assert not (folder / "logs" / "run3_fold2.log").exists()  # never started
    assert not list((folder / "results" / "running").glob("*.json"))


DYING_MODELS = '''
import math
import os
import signal
from pathlib import Path

from torch import nn

HERE = Path(__file__).parent
FIRST_DONE = HERE / "results" / "demo" / "experiment_1" / "results" / "folds" / "demo_exp1_run1_fold2.pkl"


class Dying(nn.Module):
    """Kills its own process at its first training step once instance 1's folds are written."""

    def __init__(self, size, outputs):
        super().__init__()
        self.out = nn.Linear(size, outputs)

    def forward(self, x):
        if self.training and FIRST_DONE.exists():
            (HERE / f"died_{os.getpid()}").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.out(x.flatten(1))


def Dying_model(input_shape, num_outputs, task_type):
    return Dying(math.prod(input_shape), num_outputs)
'''


def test_a_fused_group_whose_worker_dies_twice_is_retried_once(tmp_path, config_file):
    """One group [1.1, 1.2, 2.1, 2.2]: instance 1 (one epoch) is written, then the worker dies in
    epoch 2. Its unfinished members, 2.1 and 2.2, are retried once; their worker dies again, and they
    fail. The retry was keyed by the group's first fold, 1.1, so the retried group (first fold 2.1)
    was a new job and tried a third time."""
    (tmp_path / "dying.py").write_text(DYING_MODELS)
    path = write_experiment(tmp_path, {1: instance("short", "Dying_model", "none", "num_epochs=1"),
                                       2: instance("long", "Dying_model", "none", "num_epochs=2")},
                            models="dying.py", num_folds=2, global_parameters=['framework="torch"', "batch_size=16"])
    run = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--fuse", "--cpu-workers",
                          "2", "-q", "--config", str(config_file)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr
    assert "fused group 1: 4 folds trained as one model (instance(s) 1-2, fold(s) 1-2)" in run.stderr, run.stderr
    assert len(list(tmp_path.glob("died_*"))) == 2, run.stderr
    assert re.search(r"summary: done 1; .* failed 2;", run.stderr), run.stderr
    for fold in (1, 2):
        assert f"instance 2 fold {fold}/2 failed: killed by signal 9 (out of memory?): the worker process" in run.stderr


def test_the_progress_bar_counts_the_folds_of_fused_groups(tmp_path, config_file):
    """On a terminal, the bar's total is the folds to train: 4 in one fused group end at 4/4."""
    import io

    from rich.console import Console

    from xvalkit.runner import run_experiment

    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *MLP)}, num_folds=4,
                            global_parameters=['framework="torch"', "num_epochs=1", "batch_size=16"])
    out = io.StringIO()
    summary = run_experiment(load_experiment(path, config_file=config_file), RunOptions(fuse=True),
                             Console(file=out, force_terminal=True, width=200, highlight=False))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # the terminal's escape codes
    assert summary.done == [1] and "fused group 1: 4 folds" in text
    assert re.findall(r"folds \S+ (\d+/\d+)", text)[-1] == "4/4", text


TRIPWIRE_MODELS = '''
import math
import multiprocessing
import os
import signal
from pathlib import Path

from torch import nn

DIED = Path(__file__).with_name("died")


class Tripwire:
    """Kills the worker process that frees it, once: a model's last reference goes when its group
    has written every member, before the worker says it is done. Its copies (the fused model's) are
    unarmed; the `xval run` process, which builds the model to check it, is spared."""

    def __init__(self, armed=True):
        self.armed = armed

    def __deepcopy__(self, memo):
        return Tripwire(armed=False)

    def __del__(self):
        if self.armed and multiprocessing.parent_process() is not None and not DIED.exists():
            DIED.touch()
            os.kill(os.getpid(), signal.SIGKILL)


class Linear(nn.Module):
    def __init__(self, size, outputs):
        super().__init__()
        self.out = nn.Linear(size, outputs)
        self.tripwire = Tripwire()

    def forward(self, x):
        return self.out(x.flatten(1))


def Tripwire_model(input_shape, num_outputs, task_type):
    return Linear(math.prod(input_shape), num_outputs)
'''


def test_a_worker_that_dies_after_its_group_is_written_trains_none_of_it_again(tmp_path, config_file):
    """The local worker is killed after both members of its group were written and reported, before
    its "done": nothing is retried, each fold is written and reported once."""
    (tmp_path / "tripwire.py").write_text(TRIPWIRE_MODELS)
    path = write_experiment(tmp_path, {1: instance("a", "Tripwire_model", "none")}, models="tripwire.py",
                            num_folds=2, global_parameters=['framework="torch"', "num_epochs=1", "batch_size=16"])
    run = subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--fuse", "--cpu-workers",
                          "2", "-q", "--config", str(config_file)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "died").exists()  # the worker was killed
    assert "fused group 1: 2 folds" in run.stderr
    for fold in (1, 2):
        assert run.stderr.count(f"instance 1 fold {fold}/2: test accuracy") == 1, run.stderr
    assert "summary: done 1; " in run.stderr, run.stderr


def test_kill_9_in_a_fused_group_then_resume_trains_only_its_unfinished_members(tmp_path, config_file):
    """One group of four folds: instance 1's two stop after one epoch (written at once), instance 2's
    train on; kill -9 then; the rerun keeps instance 1's folds and trains instance 2's."""
    path = write_experiment(tmp_path, {
        1: instance("short", "MLP_model", "none", *MLP, "num_epochs=1"),
        2: instance("long", "MLP_model", "none", *MLP, "num_epochs=60", "patience=60"),
    }, num_folds=2, global_parameters=['framework="torch"', "batch_size=16"])
    folder = tmp_path / "results" / "demo" / "experiment_1"
    command = [sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--fuse", "-q", "--config", str(config_file)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = [folder / "results" / "folds" / f"demo_exp1_run1_fold{f}.pkl" for f in (1, 2)]
    try:
        wait_for(lambda: all(p.exists() for p in first), proc, "instance 1's fold records", timeout=240)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not list((folder / "results" / "folds").glob("demo_exp1_run2_*.pkl")), "killed before instance 2 finished"
    kept = {p: p.read_bytes() for p in first}
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "instance 1: all 2 folds already done, skipped" in again.stderr
    assert "fused group 1: 2 folds trained as one model (instance(s) 2, fold(s) 1-2)" in again.stderr
    assert {p: p.read_bytes() for p in first} == kept  # not redone
    for f in (1, 2):
        record = pickle.loads((folder / "results" / "folds" / f"demo_exp1_run2_fold{f}.pkl").read_bytes())
        assert record["record"]["epochs"] == 60
    assert not list(folder.rglob(".*.tmp*"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_in_a_fused_group_keeps_its_finished_members_and_the_rerun_trains_the_rest(tmp_path, config_file,
                                                                                          workers):
    """Ctrl-C while a group trains (in this process, or in a local worker): the members already
    written stay, the others are said abandoned, no running marker or half-written file is left,
    and the rerun trains only the abandoned members."""
    path = write_experiment(tmp_path, {
        1: instance("short", "MLP_model", "none", *MLP, "num_epochs=1"),
        2: instance("long", "MLP_model", "none", *MLP, "num_epochs=2000", "patience=2000"),
    }, num_folds=2, global_parameters=['framework="torch"', "batch_size=16"])
    folder = tmp_path / "results" / "demo" / "experiment_1"
    first = [folder / "results" / "folds" / f"demo_exp1_run1_fold{f}.pkl" for f in (1, 2)]
    command = [sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--fuse", "--cpu-workers", workers,
               "-q", "--config", str(config_file)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: all(p.exists() for p in first), proc, "instance 1's fold records", timeout=240)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    # exactly these: a member written by a worker whose message the interrupt cut off is done, not abandoned
    assert "abandoned (will be redone) instance 2 fold 1/2, instance 2 fold 2/2\n" in err, err
    assert "Traceback" not in err
    assert not list((folder / "results" / "running").glob("*.json"))
    assert not list((folder / "results" / "folds").glob("demo_exp1_run2_*.pkl"))
    assert not list(folder.rglob("*run2*.pt")) and not list(folder.rglob(".*.tmp*"))
    kept = {p: p.read_bytes() for p in first}
    again = subprocess.run([*command[:5], "2", *command[5:], "-p", "num_epochs=2"],  # instance 2, shorter
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert {p: p.read_bytes() for p in first} == kept
    assert "fused group 1: 2 folds trained as one model (instance(s) 2, fold(s) 1-2)" in again.stderr


def test_with_dropout_fused_test_accuracy_over_20_seeds_is_that_of_unfused(tmp_path, data_folder):
    """Dropout 0.5: fused masks are drawn differently from unfused ones, so single runs differ; over
    20 seeds (fold 1 of 20 instances, paired by seed) the test accuracies are not distinguishable:
    a paired t-test (scipy.stats.ttest_rel) keeps p above 0.05, and the means are within 0.05."""
    from scipy import stats

    jobs = fold_jobs(tmp_path / "exp", data_folder,
                     {s + 1: instance(f"seed {s}", "MLP_model", "none", *MLP, f"seed={s}") for s in range(20)},
                     num_folds=2, global_parameters=['framework="torch"', "dropout=0.5", "num_epochs=3",
                                                     "patience=3", "batch_size=16"])
    jobs = [job for job in jobs if job.fold.index == 1]
    alone, together = unfused(jobs, tmp_path / "alone"), fused(jobs, tmp_path / "together").records
    a = np.array([alone[job.key]["test_acc"] for job in jobs])
    b = np.array([together[job.key]["test_acc"] for job in jobs])
    assert not np.array_equal(a, b)  # the masks did differ
    assert stats.ttest_rel(a, b).pvalue > 0.05, (a, b)
    assert abs(a.mean() - b.mean()) < 0.05, (a.mean(), b.mean())


STACKED_RNN_MODELS = '''
from torch import nn


class Stacked(nn.Module):
    """Two stacked GRU layers: ATen's recurrent kernel, which has no vmap rule, and MemberRNN
    stands in for one layer only."""

    def __init__(self, features, outputs):
        super().__init__()
        self.rnn = nn.GRU(features, 4, num_layers=2, batch_first=True)
        self.head = nn.Linear(4, outputs)

    def forward(self, x):
        return self.head(self.rnn(x)[1][-1])


def Stacked_model(input_shape, num_outputs, task_type):
    return Stacked(input_shape[-1], num_outputs)
'''


def group_of_a_user_model(tmp_path, data_folder, models: str, architecture: str,
                          overrides: tuple[tuple[str, ...], ...] = ((),)) -> tuple[Collect, list[str]]:
    """Two folds of each instance of the user's `architecture` (from the models module text `models`;
    an instance per entry of `overrides`), trained as one group: what was collected, and the lines said."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "user_models.py").write_text(models)
    instances = {i: instance(f"user{i}", architecture, "rnn", *extra) for i, extra in enumerate(overrides, 1)}
    jobs = fold_jobs(tmp_path / "exp", data_folder, instances,
                     num_folds=2, global_parameters=['framework="torch"', "num_epochs=1"],
                     extra='models = "user_models.py"\n')
    collect = Collect()
    lines = []
    collect.say = lines.append
    fusion.execute_group(fusion.FusedJob(tuple(moved(jobs, tmp_path / "together"))), collect)
    return collect, lines


def test_a_model_torch_func_cannot_run_trains_unfused_saying_why(tmp_path, data_folder):
    """A two-layer nn.GRU has no vmap rule: its folds train one by one, with one line, and are written."""
    collect, lines = group_of_a_user_model(tmp_path, data_folder, STACKED_RNN_MODELS, "Stacked_model")
    assert not collect.failures and sorted(collect.records) == [(1, 1), (1, 2)]
    assert not any("fused_members" in r for r in collect.records.values())
    assert lines == ["instance 1 fold 1/2 and 1 more fold(s) train unfused: torch.func cannot run it (RuntimeError: "
                     "Batching rule not implemented for aten::gru.input. We could not generate a fallback.)"]


NESTED_CLASS_MODELS = '''
from torch import nn


def Nested_model(input_shape, num_outputs, task_type):
    class Net(nn.Module):  # a new class at each build: its forward may close over this build's values
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(input_shape[-1], num_outputs)

        def forward(self, x):
            return self.head(x.mean(dim=1))

    return Net()
'''


def test_a_model_class_defined_in_its_model_function_trains_unfused_saying_why(tmp_path, data_folder):
    """Each build is an instance of another class (torch.func.stack_module_state refuses them, and
    their forward methods may differ): the folds train one by one, with one line, and are written."""
    collect, lines = group_of_a_user_model(tmp_path, data_folder, NESTED_CLASS_MODELS, "Nested_model")
    assert not collect.failures and sorted(collect.records) == [(1, 1), (1, 2)]
    assert lines == ["instance 1 fold 1/2 and 1 more fold(s) train unfused: its members' models are instances "
                     "of different classes (a class defined inside the model function is a new class at each "
                     "build; define it at module level to fuse)"]


FUNCTIONAL_DROPOUT_MODELS = '''
import math

import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, size, outputs, rate):
        super().__init__()
        self.rate = rate  # read by F.dropout in forward: an attribute, not an nn.Dropout module
        self.head = nn.Linear(size, outputs)

    def forward(self, x):
        return self.head(F.dropout(x.flatten(1), self.rate, self.training))


def Functional_model(input_shape, num_outputs, task_type, *, dropout=0.2):
    return Net(math.prod(input_shape), num_outputs, dropout)
'''


def test_members_whose_models_keep_different_settings_train_unfused_saying_why(tmp_path, data_folder):
    """`dropout` is fusible, but this model keeps its rate as an attribute: the fused model runs the
    first member's forward, so every member would silently drop at the first member's rate."""
    collect, lines = group_of_a_user_model(tmp_path, data_folder, FUNCTIONAL_DROPOUT_MODELS, "Functional_model",
                                           (("dropout=0.1",), ("dropout=0.5",)))
    assert not collect.failures and sorted(collect.records) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert not any("fused_members" in r for r in collect.records.values())
    assert lines == ["instance 1 fold 1/2 and 3 more fold(s) train unfused: its members' models differ in `rate` "
                     "(0.1 and 0.5), which the fused model would take from the first member for all (only "
                     "nn.Dropout's rate can differ within a group)"]


def test_members_with_the_same_settings_still_fuse(tmp_path, data_folder):
    collect, lines = group_of_a_user_model(tmp_path, data_folder, FUNCTIONAL_DROPOUT_MODELS, "Functional_model",
                                           (("learning_rate=0.01",), ("learning_rate=0.001",)))
    assert not collect.failures and lines == []
    assert all(r["fused_members"] == 4 for r in collect.records.values())


def test_settings_compare_tensors_arrays_and_plain_values():
    from torch import nn

    from xvalkit.trainers.fused import refusal

    def model(**attributes):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        for name, value in attributes.items():
            setattr(net[0], name, value)
        return net

    assert refusal([model(), model()]) is None
    assert refusal([model(scale=np.ones(3)), model(scale=np.ones(3))]) is None
    assert refusal([model(mask=torch.ones(3)), model(mask=torch.ones(3))]) is None
    assert "differ in `0.mask`" in refusal([model(mask=torch.ones(3)), model(mask=torch.zeros(3))])
    assert "differ in `0.scale`" in refusal([model(scale=np.ones(3)), model(scale=np.zeros(3))])
    assert "differ in `0.gain` (2.0 and None)" in refusal([model(gain=2.0), model()])
    other = model()
    other[1].p = 0.1  # nn.Dropout's rate: MemberDropout gives each member its own
    assert refusal([model(), other]) is None


def test_plan_shows_the_fused_groups(tmp_path, config_file):
    from typer.testing import CliRunner

    from xvalkit.cli import app

    path = write_experiment(tmp_path, {
        1: instance("a", "MLP_model", "none", *MLP, "learning_rate=0.01"),
        2: instance("b", "MLP_model", "none", *MLP, "dropout=0.5"),
        3: instance("c", "MLP_model", "none", "hidden_sizes=(8,)"),  # another shape: another group
    }, num_folds=2, global_parameters=['framework="torch"'])
    result = CliRunner().invoke(app, ["plan", str(path), "--fuse", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "fused group 1: 4 folds trained as one model (instance(s) 1-2, fold(s) 1-2)" in result.output
    assert "fused group 2: 2 folds trained as one model (instance(s) 3, fold(s) 1-2)" in result.output
    result = CliRunner().invoke(app, ["plan", str(path), "--no-fuse", "--config", str(config_file)])
    assert result.exit_code == 0 and "fused group" not in result.output


GREEDY_MODELS = '''
import torch
from torch import nn


class Greedy(nn.Module):
    """Runs out of GPU memory whenever members are fused (what too big a group does)."""

    def __init__(self, size, outputs):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(size, 8), nn.ReLU(), nn.Linear(8, outputs))

    def forward(self, x):
        functorch = torch._C._functorch
        if functorch.is_batchedtensor(x) and functorch.get_unwrapped(x).shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.body(x)


def Greedy_model(input_shape, num_outputs, task_type):
    import math
    return Greedy(math.prod(input_shape), num_outputs)
'''


def test_out_of_memory_halves_the_group_and_fails_no_fold(tmp_path, data_folder):
    """A group that runs out of GPU memory is halved until it fits; one fold alone trains unfused,
    and every fold trains as it would have alone."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "greedy.py").write_text(GREEDY_MODELS)
    jobs = fold_jobs(tmp_path / "exp", data_folder, {1: instance("greedy", "Greedy_model", "none")},
                     global_parameters=['framework="torch"', "num_epochs=2", "batch_size=16"],
                     extra='models = "greedy.py"\n')
    collect = Collect()
    lines = []
    collect.say = lines.append
    fusion.execute_group(fusion.FusedJob(tuple(moved(jobs, tmp_path / "together"))), collect)
    assert lines == ["4 folds fused need more GPU memory than is free: trying 2 and 2"] + [
        "2 folds fused need more GPU memory than is free: trying 1 and 1"] * 2  # one fold alone trains unfused
    assert not collect.failures and sorted(collect.records) == [(1, f) for f in (1, 2, 3, 4)]
    assert not any("fused_members" in r for r in collect.records.values())
    alone = unfused(jobs, tmp_path / "alone")
    assert_same_training(jobs, alone, collect.records, tmp_path / "alone", tmp_path / "together")


@pytest.mark.parametrize("free, member, wanted, fit", [(10_000, 1_000, 64, 8), (10_000, 1_000, 4, 4),
                                                       (500, 1_000, 64, 1), (10_000, 0, 3, 3)])
def test_group_size_from_free_memory(free, member, wanted, fit):
    """fused.fitting: as many members as fit in 80 % of the free GPU memory, at least one."""
    from xvalkit.trainers.fused import fitting

    assert fitting(free, member, wanted) == fit


@pytest.mark.parametrize("optimizer", ["rmsprop", "sgd"])
def test_rmsprop_and_sgd_members_train_as_unfused(tmp_path, data_folder, optimizer):
    jobs = fold_jobs(tmp_path / "exp", data_folder, {
        1: instance("a", "MLP_model", "none", *MLP, "dropout=0.0", "learning_rate=0.01", "regularization_lambda=0.01"),
        2: instance("b", "MLP_model", "none", *MLP, "dropout=0.0", "learning_rate=0.001", "regularization_lambda=0.0"),
    }, num_folds=2, global_parameters=['framework="torch"', f'optimizer="{optimizer}"', "num_epochs=3", "patience=3",
                                       "batch_size=16"])
    alone, together = unfused(jobs, tmp_path / "alone"), fused(jobs, tmp_path / "together")
    assert_same_training(jobs, alone, together.records, tmp_path / "alone", tmp_path / "together")


def test_a_fused_fold_is_reproduced_bit_for_bit_under_another_string_hash_seed(tmp_path, config_file):
    """Four L2-regularised kernels: their penalty, in the logged loss, is summed in the model's order,
    whatever order PYTHONHASHSEED gives a set of their names (0 and 5 gave different orders, and sums)."""
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", "hidden_sizes=(16, 16, 16)",
                                                   "dropout=0.0", "regularization_lambda=0.01", "num_epochs=3")},
                            num_folds=2, global_parameters=['framework="torch"', "batch_size=16"])
    base = [sys.executable, "-m", "xvalkit.cli"]
    run = subprocess.run([*base, "run", str(path), "--cpu", "--fuse", "-q", "--config", str(config_file)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert run.returncode == 0, run.stderr
    again = subprocess.run([*base, "reproduce", str(path), "1", "1", "--cpu", "--config", str(config_file)],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONHASHSEED": "5"})
    output = again.stdout + again.stderr
    assert "instance 1 fold 1: identical" in output, output


def test_a_fused_fold_records_what_reproduce_needs_and_its_group_is_reproduced_bit_for_bit(tmp_path, config_file):
    """A fused member's record carries the environment, seeds, threads and data hashes of an unfused
    fold's and its group; `xval reproduce` trains the group again, fused, and gets it bit for bit."""
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *MLP, "num_epochs=3")}, num_folds=2,
                            global_parameters=['framework="torch"', "batch_size=16"])
    base = [sys.executable, "-m", "xvalkit.cli"]
    run = subprocess.run([*base, "run", str(path), "--cpu", "--fuse", "-q", "--config", str(config_file)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "results" / "demo" / "experiment_1"
    record = pickle.loads((folder / "results" / "folds" / "demo_exp1_run1_fold1.pkl").read_bytes())["record"]
    assert record["environment"]["determinism"]["fused_group_size"] == 2
    assert record["environment"]["seeds"]["torch"] == record["seed"] and record["threads"] >= 1
    assert record["data_sha256"] and "determinism" not in record and "seeds" not in record
    again = subprocess.run([*base, "reproduce", str(path), "1", "1", "--cpu", "--config", str(config_file)],
                           capture_output=True, text=True, timeout=600)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert "trained fused with 1 other fold(s): the group is trained again" in output
    assert "instance 1 fold 1: identical" in output, output
    # a group whose other member was since retrained is not the group: the fold is trained alone and
    # (with the MLP's dropout) comes out different, saying why
    edited = folder / "results" / "folds" / "demo_exp1_run1_fold2.pkl"
    saved = pickle.loads(edited.read_bytes())
    saved["record"]["run_id"] = "a later run"
    edited.write_bytes(pickle.dumps(saved))
    alone = subprocess.run([*base, "reproduce", str(path), "1", "1", "--cpu", "--config", str(config_file)],
                           capture_output=True, text=True, timeout=600)
    output = alone.stdout + alone.stderr
    assert "instance 1 fold 2 is no longer the one trained with it: it is trained alone" in output, output
    assert "environment differs: fused_group_size 2 -> absent" in output, output
