"""`--backend slurm` on a real one-node Slurm started by the tests (slurm_cluster.py): munge, MariaDB,
slurmdbd (submitit reads every job state from sacct), slurmctld and slurmd, as a lab cluster runs them.

MaxArraySize is 4 here, so six tasks make two arrays. Tests wait on observed state (a fold file,
a running marker, sacct's answer), never on fixed sleeps; a fold held mid-training waits on a file
the test controls, so "mid-fold" is a state, not a moment.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import instance, wait_for, write_experiment
from .slurm_cluster import SlurmCluster, missing_programs
from .test_run import exp_folder, load_results

pytest.importorskip("submitit", reason="the slurm extra is not installed")
if missing_programs():
    pytest.skip(f"Slurm is not installed ({', '.join(missing_programs())} missing; .ci/run installs it)",
                allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the test cluster runs its daemons as root (CI runs as root)", allow_module_level=True)

TIMEOUT = 300  # seconds, for a loaded 2-core machine; every wait ends on observed state
MLP = ['framework="torch"', "hidden_sizes=(8,)"]
GLOBAL = ["num_epochs=3", "patience=2", "batch_size=32"]
# Not compared between runs: where and when a fold ran
WHERE = {"duration_s", "pid", "host", "run_id", "gpu_settings"}

TEST_MODELS = '''
import time
from pathlib import Path

from torch import nn

from xvalkit.models.torch_models import MLP_model

HOLD = {hold!r}
built = 0  # models built in this process


class Hold(nn.Module):
    """Holds training at its first step while the file HOLD exists."""

    def __init__(self, active):
        super().__init__()
        self.active = active

    def forward(self, x):
        while self.active and self.training and Path(HOLD).exists():
            time.sleep(0.05)
        return x


class Boom(nn.Module):
    def forward(self, x):
        if self.training:
            raise RuntimeError("boom in training [a user error]")
        return x


def _with(first, input_shape, num_outputs, task_type, name):
    model = MLP_model(input_shape, num_outputs, task_type, hidden_sizes=(8,))
    out = nn.Sequential(first, *model)
    out.architecture = name
    return out


def Second_held_model(input_shape, num_outputs, task_type):
    """The second model a process builds is held (its first fold is not): a task's second fold."""
    global built
    built += 1
    return _with(Hold(built == 2), input_shape, num_outputs, task_type, "Second_held_model")


def Held_model(input_shape, num_outputs, task_type):
    return _with(Hold(True), input_shape, num_outputs, task_type, "Held_model")


def Boom_model(input_shape, num_outputs, task_type):
    return _with(Boom(), input_shape, num_outputs, task_type, "Boom_model")
'''


@pytest.fixture(scope="module")
def cluster():
    with SlurmCluster(max_array_size=4) as nodes:
        yield nodes


def experiment(tmp_path: Path, instances: dict, hold: Path | None = None, **settings) -> Path:
    (tmp_path / "test_models.py").write_text(TEST_MODELS.format(hold=str(hold or tmp_path / "no-hold")))
    return write_experiment(tmp_path, instances, global_parameters=GLOBAL, models="test_models.py", **settings)


def xval(cluster: SlurmCluster, *args, wait: bool = True, env: dict | None = None):
    command = [sys.executable, "-m", "xvalkit.cli", *map(str, args)]
    proc = subprocess.Popen(command, env=env or cluster.env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def run_slurm(cluster, path, config, *args, **kwargs):
    return xval(cluster, "run", path, "--backend", "slurm", "--quiet", "--config", config, *args, **kwargs)


def submissions(path: Path) -> dict[str, list]:
    """{task id: [[instance, fold], ...]} of every run's jobs.json."""
    found = {}
    for jobs in sorted((exp_folder(path) / "slurm").glob("*/jobs.json")):
        found.update(json.loads(jobs.read_text()))
    return found


def attempts(cluster: SlurmCluster, task: str) -> list[str]:
    """The states of every attempt of a task, requeues included (sacct --duplicates); tasks of an
    array that never started share one line: 12_[1-3%1]."""
    array, _, index = task.partition("_")  # a lone task is a plain job: 15
    out = cluster.run("sacct", "-n", "-X", "-P", "-D", "-o", "JobID,State", "-j", array).stdout
    states = []
    for line in out.splitlines():
        job, state = line.split("|")
        ranges = re.fullmatch(rf"{array}_\[([\d,-]+)(%\d+)?\]", job)
        if job == task or index and ranges and any(int(r.split("-")[0]) <= int(index) <= int(r.split("-")[-1])
                                         for r in ranges.group(1).split(",")):
            states.append(state)
    return states


ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


def ended_attempts(cluster: SlurmCluster, task: str) -> list[str]:
    """`attempts` once the task's last attempt has ended in Slurm's accounting. xval ends when the
    folds are on disk; the task's process exits after that, and slurmdbd records it later still."""
    return wait_for(lambda: (states := attempts(cluster, task)) and not states[-1].startswith(ACTIVE) and states,
                    None, f"Slurm task {task} to end in sacct", TIMEOUT)


def ctrl_c(proc: subprocess.Popen, ready, what: str) -> str:
    """The stderr of a run stopped by Ctrl-C once `ready()` (killed if the test fails before)."""
    try:
        wait_for(ready, proc, what, TIMEOUT)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    return err


def fold_file(path: Path, run: int, fold: int) -> Path:
    return exp_folder(path) / "results" / "folds" / f"demo_exp1_run{run}_fold{fold}.pkl"


def test_a_slurm_run_gives_the_results_of_a_local_run(tmp_path, config_file, cluster):
    instances = {1: instance("a", "MLP_model", "none", *MLP),
                 2: instance("b", "MLP_model", "none", *MLP, "learning_rate=0.003")}
    local = write_experiment(tmp_path / "local", instances, global_parameters=GLOBAL)
    path = write_experiment(tmp_path / "slurm", instances, global_parameters=GLOBAL)
    one_thread = dict(cluster.env, OMP_NUM_THREADS="1")  # as each 1-CPU task trains: the same float sums
    done = xval(cluster, "run", local, "--cpu", "--quiet", "--config", config_file, env=one_thread)
    assert done.returncode == 0, done.stderr
    result = run_slurm(cluster, path, config_file)
    assert result.returncode == 0, result.stderr
    assert "submitted 6 fold(s) as 6 Slurm task(s): job(s) " in result.stderr
    for run in (1, 2):
        a, b = load_results(exp_folder(local), run)["folds"], load_results(exp_folder(path), run)["folds"]
        assert a.keys() == b.keys() == {1, 2, 3}
        for fold in a:
            assert b[fold]["pid"] != os.getpid()
            assert b[fold]["cuda_visible_devices"] == "-1"  # no GPU asked for: none used
            assert sorted(a[fold]) == sorted(b[fold])
            for key in sorted(set(a[fold]) - WHERE):
                assert pickle.dumps(a[fold][key]) == pickle.dumps(b[fold][key]), (run, fold, key)
    # six tasks, MaxArraySize 4: two arrays, each fold in exactly one task
    tasks = submissions(path)
    assert len({task.split("_")[0] for task in tasks}) == 2 and len(tasks) == 6
    assert sorted(tuple(key) for keys in tasks.values() for key in keys) == [(r, f) for r in (1, 2) for f in (1, 2, 3)]
    assert all(ended_attempts(cluster, task) == ["COMPLETED"] for task in tasks)
    record = json.loads((exp_folder(path) / "code" / "provenance.json").read_text())
    assert record["slurm"]["cpus_per_task"] == 1 and record["slurm"]["folds_per_task"] == 1
    assert record["device"].startswith("Slurm (")
    # a rerun submits only what is missing: nothing
    again = run_slurm(cluster, path, config_file)
    assert again.returncode == 0 and "submitted" not in again.stderr and submissions(path) == tasks


def test_a_task_asking_for_a_gpu_trains_on_the_one_slurm_gives_it(tmp_path, config_file, cluster):
    # The test node's two GPUs are device files without hardware (slurm_cluster.py): Slurm sets
    # CUDA_VISIBLE_DEVICES for each task as on a real GPU node, and torch, finding no GPU, uses the CPU.
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *MLP)}, global_parameters=GLOBAL,
                            num_folds=2)
    result = run_slurm(cluster, path, config_file, "--slurm", "gpus_per_task=1")
    assert result.returncode == 0, result.stderr
    assert "1 CPU, 1 GPU, 60 min per task" in result.stderr
    for fold in load_results(exp_folder(path), 1)["folds"].values():
        assert fold["cuda_visible_devices"] in ("0", "1")  # Slurm's choice, kept as it set it
        assert fold["device"] == "CPU"


# How a running task is taken off its node: an administrator's requeue (Slurm's own), or the signal
# Slurm sends before a time limit or a preemption (USR2, asked for by submitit's --signal): submitit
# then checkpoints the bundle and requeues it itself (time = 60 minutes: a preemption, not a timeout)
REQUEUES = {"scontrol requeue": ["scontrol", "requeue", "{task}"], "preemption": ["scancel", "--signal=USR2", "{task}"]}


@pytest.mark.parametrize("how", REQUEUES)
def test_a_task_requeued_mid_fold_resumes_from_the_folds_on_disk(tmp_path, config_file, cluster, how):
    hold = tmp_path / "hold"
    hold.touch()
    path = experiment(tmp_path, {1: instance("held", "Second_held_model", "none", 'framework="torch"')},
                      hold=hold, num_folds=2)
    proc = run_slurm(cluster, path, config_file, "--slurm", "folds_per_task=2", wait=False)
    try:
        running = exp_folder(path) / "results" / "running" / "run1_fold2.json"
        wait_for(lambda: fold_file(path, 1, 1).exists() and running.exists(), proc, "fold 1 done, fold 2 held", TIMEOUT)
        first = fold_file(path, 1, 1).stat().st_mtime_ns, json.loads(running.read_text())["pid"]
        (task,) = submissions(path)
        cluster.run(*(part.format(task=task) for part in REQUEUES[how]))
        out, err = proc.communicate(timeout=TIMEOUT)  # the second attempt: fold 2 is its first model, not held
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    states = ended_attempts(cluster, task)
    assert states[-1] == "COMPLETED" and len(states) == 2, states  # requeued once
    folds = load_results(exp_folder(path), 1)["folds"]
    assert fold_file(path, 1, 1).stat().st_mtime_ns == first[0]  # fold 1 was not trained again
    assert folds[2]["pid"] != first[1] and folds[2]["pid"] != folds[1]["pid"]  # fold 2: by the second attempt
    for fold in (1, 2):
        log = (exp_folder(path) / "logs" / f"run1_fold{fold}.log").read_text()
        assert log.count("done in") == 1
    assert "instance 1 done" in err
    if how == "preemption":  # submitit's checkpoint path, not Slurm's own requeue
        log = next((exp_folder(path) / "slurm").glob(f"*/{task}_0_log.err")).read_text()
        assert "xval: checkpoint: 1 of 2 fold(s) of this task are on disk" in log, log


def test_a_python_error_in_a_fold_is_recorded_once_and_not_retried(tmp_path, config_file, cluster):
    path = experiment(tmp_path, {1: instance("boom", "Boom_model", "none", 'framework="torch"'),
                                 2: instance("ok", "MLP_model", "none", *MLP)}, num_folds=2)
    result = run_slurm(cluster, path, config_file)
    assert result.returncode == 1
    assert "instance 1 fold 1/2 failed: RuntimeError: boom in training [a user error]" in result.stderr
    assert "done 2" in result.stderr and "failed 1" in result.stderr
    text = (exp_folder(path) / "results" / "error_demo_exp1_run1.txt").read_text()
    assert text.count("RuntimeError: boom in training") == 2  # once for each of its two folds
    assert all(ended_attempts(cluster, task) == ["COMPLETED"] for task in submissions(path))  # no task retried


def test_detach_then_status_then_report(tmp_path, config_file, cluster):
    path = experiment(tmp_path, {1: instance("a", "MLP_model", "none", *MLP),
                                 2: instance("boom", "Boom_model", "none", 'framework="torch"')}, num_folds=2)
    result = run_slurm(cluster, path, config_file, "--detach", "--slurm", "folds_per_task=2")
    assert result.returncode == 0, result.stderr
    tasks = submissions(path)
    assert len(tasks) == 2 and all(len(keys) == 2 for keys in tasks.values())  # a bundle per instance
    assert f"job(s) {next(iter(tasks)).split('_')[0]} " in result.stderr and "detached" in result.stderr
    assert "summary" not in result.stderr  # nothing is finished yet: no summary, no report
    status = xval(cluster, "status", path, "--config", config_file)
    assert status.returncode == 0 and "Slurm" in status.stdout
    for task in tasks:  # each fold beside its task, in some Slurm state already
        assert f"({task})" in status.stdout
    wait_for(lambda: all(attempts(cluster, t)[-1:] == ["COMPLETED"] for t in tasks), None, "both tasks to complete",
             TIMEOUT)
    status = xval(cluster, "status", path, "--config", config_file)
    rows = [line for line in status.stdout.splitlines() if "COMPLETED" in line]
    assert len(rows) == 4, status.stdout
    assert "1, 2" in next(line for line in status.stdout.splitlines() if line.startswith("│ 1 "))  # done
    assert "boom in training" in status.stdout  # the task recorded the error itself
    text = (exp_folder(path) / "results" / "error_demo_exp1_run2.txt").read_text()
    assert text.count("RuntimeError: boom in training") == 2
    report = xval(cluster, "report", path, "--config", config_file)
    assert report.returncode == 0, report.stderr
    from openpyxl import load_workbook

    from .test_run import summary_header

    ws = load_workbook(exp_folder(path) / "demo_exp1_results.xlsx")["summary"]
    header = summary_header(ws)
    statuses = {row[0]: row[header.index("status")] for row in ws.iter_rows(min_row=3, max_row=4, values_only=True)}
    assert statuses == {1: "done", 2: "failed (0/2 folds)"}


def test_ctrl_c_cancels_every_job_it_submitted(tmp_path, config_file, cluster):
    hold = tmp_path / "hold"
    hold.touch()  # never removed: every fold is held at its first step until cancelled
    path = experiment(tmp_path, {i: instance(f"h{i}", "Held_model", "none", 'framework="torch"') for i in (1, 2, 3)},
                      hold=hold, num_folds=2)
    proc = run_slurm(cluster, path, config_file, "--slurm", "array_parallelism=1", wait=False)
    err = ctrl_c(proc, lambda: list((exp_folder(path) / "results" / "running").glob("*.json")), "a fold to be held")
    tasks = submissions(path)  # jobs.json, as the run wrote it when it submitted
    arrays = sorted({task.split("_")[0] for task in tasks}, key=int)
    assert len(arrays) == 2  # six tasks: two arrays
    assert f"cancelled Slurm job(s) {', '.join(arrays)} (scancel)" in err
    wait_for(lambda: not any(job.split("_")[0] in arrays for job in cluster.jobs()), None, "the queue to let them go",
             TIMEOUT)
    wait_for(lambda: all(attempts(cluster, t) and attempts(cluster, t)[-1].startswith("CANCELLED") for t in tasks),
             None, "sacct to show every task cancelled", TIMEOUT)


def test_what_an_earlier_run_left_does_not_start_a_waiting_fold(tmp_path, config_file, cluster):
    # A cancelled run left fold 2's log (an epoch in it) and its running marker; in this run fold 2's
    # task waits behind fold 1's (array_parallelism=1), held: it never started, so Ctrl-C abandons no fold 2
    hold = tmp_path / "hold"
    hold.touch()
    path = experiment(tmp_path, {1: instance("held", "Held_model", "none", 'framework="torch"')}, hold=hold,
                      num_folds=2)
    log = exp_folder(path) / "logs" / "run1_fold2.log"
    marker = exp_folder(path) / "results" / "running" / "run1_fold2.json"
    for left in (log, marker):
        left.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("09:00:00 epoch 2 loss=0.5 val_loss=0.6\n")
    marker.write_text(json.dumps({"pid": 1, "host": "another-node", "start": 0}))
    proc = run_slurm(cluster, path, config_file, "--slurm", "array_parallelism=1", wait=False)
    running = exp_folder(path) / "results" / "running" / "run1_fold1.json"
    err = ctrl_c(proc, running.exists, "fold 1 to be held")  # the watcher has polled since the submission
    abandoned = next(line for line in err.splitlines() if "abandoned (will be redone)" in line)
    assert "fold 2/2" not in abandoned, err
    wait_for(lambda: not cluster.jobs(), None, "the queue to let them go", TIMEOUT)


@pytest.mark.parametrize("earlier_run", [False, True])
def test_a_folder_the_nodes_cannot_see_is_one_line(tmp_path, config_file, cluster, earlier_run):
    # The experiment lives on a tmpfs mounted in a mount namespace of its own: xval sees it, the
    # node's slurmd (outside the namespace) sees the empty folder beneath. An earlier run's log and
    # running marker there are not a trace of this run's task.
    private = tmp_path / "private"
    private.mkdir()
    (tmp_path / "src").mkdir()
    experiment(tmp_path / "src", {1: instance("a", "MLP_model", "none", *MLP)}, num_folds=2)
    folder = private / "results" / "demo" / "experiment_1"
    earlier = (f"mkdir -p {folder}/logs {folder}/results/running && echo old > {folder}/logs/run1_fold1.log && "
               f"echo '{{}}' > {folder}/results/running/run1_fold1.json && " if earlier_run else "")
    script = (f"mount -t tmpfs tmpfs {private} && cp {tmp_path / 'src'}/*.py {private}/ && {earlier}"
              f"exec {sys.executable} -m xvalkit.cli run {private / 'exp_test.py'} --backend slurm --quiet "
              f"--config {config_file}")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=cluster.env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: --backend slurm: the experiment folder {private / 'results' / 'demo' / 'experiment_1'} "
                               "is not visible from the compute nodes (")
    assert "Traceback" not in done.stderr and not any(private.iterdir())
    assert " failed: " not in done.stderr  # no fold of the task that left no trace is reported as failed


def test_clear_errors_before_anything_is_submitted(tmp_path, config_file, cluster):
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", *MLP)}, global_parameters=GLOBAL)
    unknown = run_slurm(cluster, path, config_file, "--slurm", "partition=nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("error: config [slurm] partition = 'nope': no such partition on this cluster; "
                                      "its partitions are debug (sinfo lists them)")
    no_slurm = run_slurm(cluster, path, config_file, env=dict(cluster.env, PATH=str(Path(sys.executable).parent)))
    assert no_slurm.returncode == 2
    assert no_slurm.stderr.strip().startswith("error: --backend slurm: sbatch is not on the PATH;")
    bad = run_slurm(cluster, path, config_file, "--slurm", "cpus_per_task=two")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: config [slurm] cpus_per_task = 'two': expected a number >= 0"
    assert not (exp_folder(path) / "slurm").exists()
