"""A clean console: what the frameworks print during a fold goes to that fold's log file; the
console shows xvalkit's lines, and everything with --debug. Help texts keep their brackets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import write_experiment
from .test_run import exp_folder

# A model function that talks the four ways frameworks do: a Python warning, a record on the
# tensorflow logger (as tf.function's retracing warning is), a C-level write to file descriptor 2
# (as TensorFlow's C++ log lines are) and a print to stdout (as Keras' progress bars are).
CHATTY_MODELS = '''
import logging, os, warnings

def Chatty_model(input_shape, num_outputs, task_type, *, hidden_size=8):
    warnings.warn("chatter: a python warning")
    logging.getLogger("tensorflow").warning("chatter: the tensorflow logger")
    os.write(2, b"chatter: C-level stderr\\n")
    print("chatter: stdout")
    import keras
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_outputs, activation="softmax")])
'''
CHATTER = ("chatter: a python warning", "chatter: the tensorflow logger", "chatter: C-level stderr",
           "chatter: stdout")
# Every line xval run prints on this run: the header, one per fold, per instance, the summary.
XVAL_LINE = re.compile(r"^(exp_chatty\.py: 1 instance|instance 1 (fold \d/2: test accuracy|done: )|summary: "
                       r"|results in |workbook: )")


@pytest.fixture
def chatty(tmp_path):
    (tmp_path / "chatty_models.py").write_text(CHATTY_MODELS)
    return write_experiment(
        tmp_path, {1: ['architecture="Chatty_model"', 'reshaping_type="none"', 'comment_1="a"', 'comment_2="b"']},
        name="exp_chatty", num_folds=2, models="chatty_models.py",
        global_parameters=["num_epochs=1", "batch_size=32", "tensorboard=False"])


def run(path: Path, config_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xvalkit.cli", "run", str(path), "--cpu", "--quiet",
                           "--config", str(config_file), *extra],
                          capture_output=True, text=True, timeout=300, cwd=path.parent)


def test_framework_chatter_goes_to_the_fold_log_not_the_console(chatty, config_file):
    proc = run(chatty, config_file)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert [line for line in lines if not XVAL_LINE.match(line)] == [], proc.stderr
    assert len(lines) == 1 + 2 + 1 + 1 + 2  # header, 2 folds, instance done, summary, where the results are
    logs = exp_folder(chatty) / "logs"
    for fold in (1, 2):
        text = (logs / f"run1_fold{fold}.log").read_text()
        for chatter in CHATTER:
            assert chatter in text, (fold, chatter, text)
        assert "WARNING:tensorflow:chatter: the tensorflow logger" in text
        assert re.search(r"epoch 1 .*val_loss=", text) and "done in" in text  # xvalkit's own lines stay


def test_debug_shows_everything(chatty, config_file):
    proc = run(chatty, config_file, "--debug")
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    for chatter in CHATTER:
        assert chatter in console, chatter


# TensorFlow's start-up lines: 'I0000 00:00:... port.cc:153] oneDNN custom operations are on...',
# cpu_feature_guard, 'WARNING: All log messages before absl::InitializeLog() is called...'
TENSORFLOW_START_UP = re.compile(r"^[IWEF]\d{4} |oneDNN|cpu_feature_guard|absl::", re.MULTILINE)


KERAS_AT_THE_TOP = '''
import keras


def Flat_model(input_shape, num_outputs, task_type):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_outputs, activation="softmax")])
'''


def test_a_models_module_importing_keras_keeps_tensorflows_start_up_off_the_console(tmp_path, config_file):
    """`import keras` at the top of a models module, as the README shows: plan and run print
    xvalkit's lines only, as with the built-in models."""
    (tmp_path / "keras_models.py").write_text(KERAS_AT_THE_TOP)
    path = write_experiment(tmp_path, {1: ['architecture="Flat_model"', 'reshaping_type="none"',
                                           'comment_1="a"', 'comment_2="b"']},
                            name="exp_keras", num_folds=2, models="keras_models.py",
                            global_parameters=["num_epochs=1", "tensorboard=False"])
    plan = subprocess.run([sys.executable, "-m", "xvalkit.cli", "plan", str(path), "--build", "--config", str(config_file)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert not TENSORFLOW_START_UP.search(plan.stdout + plan.stderr), plan.stderr
    proc = run(path, config_file)
    assert proc.returncode == 0, proc.stderr
    assert not TENSORFLOW_START_UP.search(proc.stdout + proc.stderr), proc.stderr
    assert "instance 1 done" in proc.stderr


def commands(group, path=()):
    """(words, click command) for every command and group of `xval`."""
    yield path, group
    if hasattr(group, "commands"):  # a group (typer's own click)
        for name, command in group.commands.items():
            yield from commands(command, path + (name,))


def test_help_texts_keep_their_brackets():
    import typer
    from typer.testing import CliRunner

    from xvalkit.cli import app

    checked = 0
    for words, command in commands(typer.main.get_command(app)):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        result = CliRunner().invoke(app, [*words, "--help"], terminal_width=250, env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        shown = " ".join(result.output.split())
        assert "\\[" not in shown, (words, shown)  # rich's markup escape, shown as is in plain help
        for text in texts:
            for bracketed in re.findall(r"\[[^\]\s]*\]", text):
                assert bracketed in shown, (words, bracketed)
                checked += 1
    assert checked >= 1  # at least run's '.[ray]'
    run_help = CliRunner().invoke(app, ["run", "--help"], terminal_width=250).output
    assert 'pip install -e ".[ray]"' in run_help
    export_help = CliRunner().invoke(app, ["export", "mlflow", "--help"], terminal_width=250).output
    assert 'pip install -e ".[mlflow]"' in export_help


def test_convert_help_names_what_it_writes():
    from typer.testing import CliRunner

    from xvalkit.cli import app

    shown = " ".join(CliRunner().invoke(app, ["convert", "--help"], terminal_width=250).output.split())
    assert "NAME.xvd/" in shown and ".npz" not in shown, shown
