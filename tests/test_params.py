"""Parameter statements are data: parsing, type conversion, precedence and every error."""

from pathlib import Path

import pytest

from xvalkit.config import load_config
from xvalkit.errors import ParameterError, XvalError
from xvalkit.experiment import load_experiment
from xvalkit.params import coerce, parse_instance, parse_statement

from .conftest import instance, write_experiment


@pytest.mark.parametrize("statement, expected", [
    ("learning_rate=0.01", ("learning_rate", 0.01)),
    ("  num_epochs = 3 ", ("num_epochs", 3)),
    ('comment_1="reg 0.001"', ("comment_1", "reg 0.001")),
    ("kernel_size_1=(5, 3)", ("kernel_size_1", (5, 3))),
    ("hidden_sizes=[32, 16]", ("hidden_sizes", [32, 16])),
    ("shift=-2.5e-3", ("shift", -2.5e-3)),
    ("bidirectional=True", ("bidirectional", True)),
    ("x=None", ("x", None)),
])
def test_literals_are_parsed(statement, expected):
    assert parse_statement(statement, "instance 1") == expected


@pytest.mark.parametrize("statement", [
    'x=__import__("os").system("touch pwned")',
    "x=open('/etc/passwd').read()",
    "x=[i for i in range(3)]",
    "x=1+1j if True else 0",
    "x=lambda: 0",
    "x=y",
])
def test_code_is_never_executed(statement, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParameterError, match="not a Python literal"):
        parse_statement(statement, "instance 1")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("statement, message", [
    ("learning_rate", "not a single 'name=value'"),
    ("a=1; b=2", "not a single 'name=value'"),
    ("a=b=1", "not a single 'name=value'"),
    ("import os", "not a single 'name=value'"),
    ("x.y=1", "not a single 'name=value'"),
    ("x==1", "not a single 'name=value'"),
    ("lr=0.1)", "not a 'name=value' statement"),
])
def test_statements_that_are_not_assignments(statement, message):
    with pytest.raises(ParameterError, match=message) as info:
        parse_statement(statement, "exp.py: instance 4")
    assert "instance 4" in str(info.value)


def test_duplicate_parameter():
    with pytest.raises(ParameterError, match="'dropout' is set twice"):
        parse_instance(["dropout=0.1", "dropout=0.2"], "instance 1")


def test_dict_instances_accepted_but_only_literals():
    assert parse_instance({"dropout": 0.1}, "i") == {"dropout": 0.1}
    with pytest.raises(ParameterError, match="must be literals"):
        parse_instance({"dropout": object()}, "i")


@pytest.mark.parametrize("value, default, expected", [
    ("0.001", 0.1, 0.001),
    ("3", 10, 3),
    (3, 0.5, 3.0),
    (4.0, 10, 4),
    ("True", False, True),
    ("false", True, False),
    ("(5, 5)", (3, 3), (5, 5)),
    ([5, 5], (3, 3), (5, 5)),
    ("adam", "sgd", "adam"),
])
def test_quoted_numbers_take_the_type_of_the_default(value, default, expected):
    result = coerce("p", value, default, "instance 1")
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value, default", [("abc", 0.1), (2.5, 10), (1, True), ("x", (3, 3)), (3, "adam"), (True, 5)])
def test_wrong_types_are_errors(value, default):
    with pytest.raises(ParameterError, match="instance 1: p="):
        coerce("p", value, default, "instance 1")


def _resolve(tmp_path, statements, global_parameters=(), config_text=None):
    config = None
    if config_text:
        config = tmp_path / "c.ini"
        config.write_text(config_text)
    path = write_experiment(tmp_path, {1: statements}, global_parameters=list(global_parameters))
    return load_experiment(path, config_file=config).resolve(1)


def test_precedence_config_model_global_instance(tmp_path):
    cfg = "[training]\nlearning_rate = 0.05\nbatch_size = 7\n"
    # config.ini only
    p = _resolve(tmp_path, instance(), config_text=cfg)
    assert (p["learning_rate"], p["batch_size"], p["dropout"]) == (0.05, 7, 0.2)
    # global_parameters beat config.ini and the model function's default
    p = _resolve(tmp_path, instance(), ["learning_rate=0.02", "dropout=0.3"], cfg)
    assert (p["learning_rate"], p["dropout"], p["batch_size"]) == (0.02, 0.3, 7)
    # the instance beats everything
    p = _resolve(tmp_path, instance("c", "EXAMPLE_model", "cnn", "learning_rate=0.003", 'dropout="0.4"'),
                 ["learning_rate=0.02", "dropout=0.3"], cfg)
    assert (p["learning_rate"], p["dropout"]) == (0.003, 0.4)


def test_resolved_parameters_are_complete(tmp_path):
    p = _resolve(tmp_path, instance("c", "EXAMPLE_model", "cnn"))
    training = load_config().training
    assert set(training) <= set(p)
    assert p["reshaping_type"] == "conv"  # 'cnn' is accepted as 'conv'
    assert p["regularization_lambda"] == 0.001 and p["kernel_size_1"] == (3, 3)


@pytest.mark.parametrize("statements, message", [
    (instance("c", "EXAMPLE_model", "cnn", "learnig_rate=0.1"), "unknown parameter 'learnig_rate'; did you mean 'learning_rate'"),
    (instance("c", "EXAMPLE_model", "cnn", "regularisation_lambda=0.1"), "did you mean 'regularization_lambda'"),
    (['architecture="EXAMPLE_model"', 'reshaping_type="cnn"', 'comment_1="x"'], "missing mandatory parameter comment_2"),
    (instance("c", "EXAMPLE_modl"), "architecture 'EXAMPLE_modl' is not in the built-in keras models; did you mean 'EXAMPLE_model'"),
    (instance("c", "EXAMPLE_model", "2d"), "reshaping_type='2d' is not one of"),
    (instance("c", "EXAMPLE_model", "cnn", 'optimizer="adamw"'), "optimizer='adamw' is not one of"),
    (instance("c", "EXAMPLE_model", "cnn", 'num_epochs="many"'), "num_epochs='many' is not a int"),
    (instance("c", "EXAMPLE_model", "cnn", "batch_size=0"), "batch_size=0 must be at least 1"),
    (instance("c", "EXAMPLE_model", "cnn", "validation_split=0.6", "test_split=0.5"), "leaves nothing to train on"),
    (instance("c", "EXAMPLE_model", "cnn", 'save_best_model_metric="val_mae"'), "save_best_model_metric='val_mae' is not one of"),
])
def test_each_parameter_error_names_instance_and_parameter(tmp_path, statements, message):
    with pytest.raises(ParameterError, match="instance 1") as info:
        _resolve(tmp_path, statements)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_val_acc_alias(tmp_path):
    p = _resolve(tmp_path, instance("c", "EXAMPLE_model", "cnn", 'save_best_model_metric="val_acc"',
                                    'save_best_model_mode="max"'))
    assert p["save_best_model_metric"] == "val_accuracy"


def test_user_models_module(tmp_path):
    (tmp_path / "my_models.py").write_text(
        "def Tiny_model(input_shape, num_outputs, task_type, *, width: int = 5):\n"
        "    raise NotImplementedError\n"
    )
    path = write_experiment(tmp_path, {1: instance("c", "Tiny_model", "none", "width=9")}, models="my_models.py",
                            global_parameters=[])
    p = load_experiment(path).resolve(1)
    assert p["width"] == 9 and "channels_1" not in p


@pytest.mark.parametrize("body, message", [
    ("dataset = 'demo'\n", "missing settings"),
    ("experiment = {1: [\n", "syntax error"),
    ("raise RuntimeError('oops')\n", "raised RuntimeError while loading: oops"),
])
def test_bad_experiment_modules(tmp_path, body, message):
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(XvalError, match=message):
        load_experiment(path)


def test_bad_settings(tmp_path):
    path = write_experiment(tmp_path, {1: instance()}, task_type="clasification")
    with pytest.raises(XvalError, match="task_type = 'clasification' is not"):
        load_experiment(path)
    path = write_experiment(tmp_path, {1: instance()}, num_folds="3")
    with pytest.raises(XvalError, match="num_folds = '3' should be a int"):
        load_experiment(path)


def test_packaged_config_matches_repository_config():
    root = Path(__file__).resolve().parents[1]
    assert (root / "config.ini").read_bytes() == (root / "src/xvalkit/config.ini").read_bytes()


def test_example_experiment_resolves():
    root = Path(__file__).resolve().parents[1]
    exp = load_experiment(root / "experiments" / "example.py")
    for run in exp.instances:
        assert exp.resolve(run)["architecture"] == "EXAMPLE_model"
