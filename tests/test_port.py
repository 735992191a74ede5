"""Port by copy: an old project (tests/old_project, written from the facts of issue 11) runs under
`xval` unchanged, and gives the results of the same experiment written the new way.

The old project: experiment files with the old header (sys.path lines, `import xval_instance as
xval`) and a driver block below `#DON'T TOUCH ...` that would print, write files, create a folder
and change sys.argv; Keras and torch models modules in the old style with their own
parse_parameters; an old config.ini (bare strings, old sections); a dataset of pickled dicts saved
with np.save(path, dict) and one-hot targets, converted with `xval convert --trust-pickle`.
"""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from typer.testing import CliRunner

from xvalkit.cli import app
from xvalkit.errors import XvalError
from xvalkit.experiment import load_experiment

from .conftest import instance, write_experiment

OLD_PROJECT = Path(__file__).with_name("old_project")
KERAS_EXP, TORCH_EXP = "experiments/ID1_DEMO_EXP1_A1.py", "experiments/ID2_DEMO_EXP2_T1.py"
runner = CliRunner()

# The same experiments written the new way: keyword defaults, the same layers in the same order.
NEW_MODELS = '''
from keras import regularizers
from keras.layers import Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from keras.models import Model


def NEW_CNN(input_shape, num_outputs, task_type, *, channels=4, kernel_size_1=[3, 3], pool_size=[2, 2],
            hidden_size=8, dropout=0.2, regularization_lambda=0.001, layer_type="conv",
            stretch_factors=[0.8, 1.25]):
    reg = regularizers.l2(regularization_lambda)
    input_data = Input(shape=input_shape)
    x = Conv2D(channels, kernel_size=tuple(kernel_size_1), activation="relu", padding="same",
               kernel_regularizer=reg)(input_data)
    x = MaxPooling2D(pool_size=tuple(pool_size))(x)
    x = Flatten()(x)
    x = Dropout(dropout)(x)
    x = Dense(hidden_size, activation="relu", kernel_regularizer=reg)(x)
    return Model(inputs=input_data, outputs=Dense(num_outputs, activation="softmax")(x))


def NEW_TORCH_CNN(input_shape, num_outputs, task_type, *, channels=4, hidden_size=8, dropout=0.2,
                  layer_type="conv"):
    from torch import nn

    _, time_dim, features_dim = input_shape  # channels first
    return nn.Sequential(nn.Conv2d(1, channels, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(channels * (time_dim // 2) * (features_dim // 2), hidden_size),
                         nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, num_outputs))
'''
# config.ini [training_defaults] of the old project, in today's keys
NEW_TRAINING = ("[training]\nvalidation_split = 0.2\ntest_split = 0.2\nsave_best_model_metric = \"val_loss\"\n"
                "patience = 5\nbatch_size = 16\nnum_epochs = 2\nlearning_rate = 0.002\noptimizer = \"adam\"\n")


def xval(*args, cwd: Path | None = None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def results(folder: Path, dataset: str, num: int, run: int) -> dict:
    path = folder / "results" / dataset / f"experiment_{num}" / "results" / f"results_{dataset}_exp{num}_run{run}.pkl"
    with open(path, "rb") as handle:
        return pickle.load(handle)


def save_old_dataset(folder: Path, data_folder: Path) -> tuple[Path, Path]:
    """The demo dataset as the original preprocessing saved datasets: np.save(path, dict), one-hot targets."""
    from xvalkit.data import load_dataset

    demo = load_dataset(data_folder, "demo")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "old_predictors.npy", demo.predictors)
    np.save(folder / "old_target.npy", {item: np.eye(4)[y] for item, y in demo.targets.items()})
    return folder / "old_predictors.npy", folder / "old_target.npy"


@pytest.fixture(scope="module")
def ported(tmp_path_factory, data_folder):
    """The old project copied as is, its dataset converted, both old experiments run with `xval run`,
    then the same experiments written the new way."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("port")
    project = tmp / "old_project"
    shutil.copytree(OLD_PROJECT, project)
    before = {p.relative_to(project): p.read_bytes() for p in project.rglob("*") if p.is_file()}
    paths_config = tmp / "paths.ini"
    paths_config.write_text(f"[paths]\ndata_folder = {data_folder}\n")
    old_x, old_y = save_old_dataset(tmp / "old_data", data_folder)
    converted = xval("convert", old_x, old_y, "--name", "demo_old", "--trust-pickle", "--overwrite",
                     "--config", paths_config)
    assert converted.exit_code == 0, converted.output
    argv = list(sys.argv)
    outputs = {}
    for exp in (KERAS_EXP, TORCH_EXP):  # from the project folder: its old config.ini is ./config.ini
        result = xval("run", exp, "--cpu", "--quiet", "--config", paths_config, cwd=project, monkeypatch=mp)
        assert result.exit_code == 0, result.output
        outputs[exp] = result.output
    argv_after = list(sys.argv)
    new = tmp / "new"
    new.mkdir()
    (new / "new_models.py").write_text(NEW_MODELS)
    (new / "config.ini").write_text(NEW_TRAINING + f"\n[paths]\ndata_folder = {data_folder}\n")
    keras_new = write_experiment(new, {
        1: instance("reg 0.01", "NEW_CNN", "cnn", "regularization_lambda=0.01"),
        2: instance("wider", "NEW_CNN", "cnn", "regularization_lambda=0.001", "channels=6", "stretch_factors=[0.9, 1.1]"),
    }, name="new_keras", num_folds=2, global_parameters=[], models="new_models.py")
    torch_new = write_experiment(new, {1: instance("old torch", "NEW_TORCH_CNN", "cnn", 'framework="torch"')},
                                 name="new_torch", num_experiment=2, num_folds=2, global_parameters=[],
                                 models="new_models.py")
    for exp in (keras_new, torch_new):
        result = xval("run", exp, "--cpu", "--quiet", cwd=new, monkeypatch=mp)
        assert result.exit_code == 0, result.output
    mp.undo()
    yield {"tmp": tmp, "project": project, "new": new, "outputs": outputs, "argv": (argv, argv_after),
           "before": before, "data_folder": data_folder, "paths_config": paths_config}


def assert_same_results(old: dict, new: dict) -> None:
    assert old["folds"].keys() == new["folds"].keys()
    for fold, record in old["folds"].items():
        other = new["folds"][fold]
        assert record["test_items"] == other["test_items"]
        for key in ("train_loss", "val_loss", "test_loss", "test_acc", "test_f1"):
            assert record[key] == pytest.approx(other[key], rel=1e-5, abs=1e-6), (fold, key)
        np.testing.assert_allclose(record["test_pred"], other["test_pred"], rtol=1e-5, atol=1e-6)
        assert record["epochs"] == other["epochs"] == 2


def test_old_keras_experiment_equals_the_new_style_one(ported):
    for run in (1, 2):
        old, new = results(ported["project"], "demo_old", 1, run), results(ported["new"], "demo", 1, run)
        assert_same_results(old, new)
    params = results(ported["project"], "demo_old", 1, 2)["parameters"]
    # the old model's own defaults, resolved like keyword defaults; outputs from the dataset
    assert params["output_classes"] == 4 and params["stretch_factors"] == [0.9, 1.1] and params["channels"] == 6
    assert params["layer_type"] == "conv" and params["kernel_size_1"] == [3, 3]
    # the old config.ini, read as is: bare strings, old section, old parameter name in the instance
    assert params["optimizer"] == "adam" and params["batch_size"] == 16 and params["learning_rate"] == 0.002
    assert params["save_best_model_metric"] == "val_loss" and params["early_stopping"] is True


def test_old_torch_experiment_equals_the_new_style_one(ported):
    old, new = results(ported["project"], "demo_old", 2, 1), results(ported["new"], "demo", 2, 1)
    assert_same_results(old, new)
    assert old["parameters"]["framework"] == "torch"  # it imported xval_instance_torch
    assert old["parameters"]["fc_insize"] == 4 * 16 * 32


def test_driver_block_and_old_imports_never_ran(ported):
    project, tmp = ported["project"], ported["tmp"]
    argv, argv_after = ported["argv"]
    assert argv_after == argv and "THE_DRIVER_RAN" not in sys.argv
    assert not list(tmp.rglob("DRIVER_*")), "the driver block wrote a file or a folder"
    assert not list(tmp.rglob("XVAL_INSTANCE_WAS_IMPORTED")), "the old machinery was imported"
    assert not any(name.startswith("xval_instance") for name in sys.modules)
    for exp, output in ported["outputs"].items():
        assert "DRIVER BLOCK RAN" not in output and "finished" not in output
        line = next(line for line in output.splitlines() if "not run:" in line)
        assert "driver block" in line and "import xval_instance" in line and "sys.path" in line
    after = {p.relative_to(project): p.read_bytes() for p in project.rglob("*")
             if p.is_file() and "results" not in p.parts and "__pycache__" not in p.parts}
    assert after == ported["before"], "an old file was changed"


def test_old_config_keys_without_counterpart_get_one_note_each(ported):
    output = ported["outputs"][KERAS_EXP]
    notes = [line for line in output.splitlines() if line.startswith("note:") and "config.ini" in line]
    for key in ("train_split", "gpu_ID", "normalize_features", "trim_silence", "augmentation_factor"):
        assert sum(key in line for line in notes) == 1, key
    from xvalkit.config import load_config

    config = load_config(ported["project"] / "config.ini")
    assert config.section("features")["window_size"] == 512 and config.section("features")["sequence_length"] == 0
    assert config.training["early_stopping"] is True and config.training["optimizer"] == "adam"


def test_old_models_defaults_reach_the_spreadsheet_and_the_snapshot(ported):
    folder = ported["project"] / "results" / "demo_old" / "experiment_1"
    sheet = openpyxl.load_workbook(folder / "demo_old_exp1_results.xlsx")["summary"]
    header = [cell.value for row in sheet.iter_rows(max_row=3) for cell in row]
    assert "channels" in header and "stretch_factors" in header
    assert (folder / "code" / "ID1_DEMO_EXP1_A1.py").read_bytes() == (OLD_PROJECT / KERAS_EXP).read_bytes()
    assert (folder / "code" / "define_models.py").is_file()


def test_old_file_works_with_plan_status_and_report(ported, monkeypatch):
    plan = xval("plan", KERAS_EXP, "--config", ported["paths_config"], cwd=ported["project"], monkeypatch=monkeypatch)
    assert plan.exit_code == 0, plan.output
    assert "already done" in plan.output and "DRIVER BLOCK RAN" not in plan.output
    status = xval("status", KERAS_EXP, "2", "--config", ported["paths_config"])
    assert status.exit_code == 0 and "wider" in status.output and "reg 0.01" not in status.output
    report = xval("report", KERAS_EXP, "--no-plots", "--config", ported["paths_config"])
    assert report.exit_code == 0, report.output
    # the outputs come from the dataset: a model made for another number of classes is refused in one line
    copy = ported["project"] / "experiments" / "ID9_copy.py"  # no results yet, so no resume check
    copy.write_text((OLD_PROJECT / KERAS_EXP).read_text().replace("num_experiment = 1", "num_experiment = 9"))
    wrong = xval("plan", copy, "1", "--build", "-p", "output_classes=8", "--config", ported["paths_config"])
    assert wrong.exit_code == 2 and "outputs shape (8,), expected (4,)" in wrong.output
    assert "Traceback" not in wrong.output


def test_override_is_recorded_and_resume_refuses_to_mix(ported, monkeypatch):
    project = ported["project"]
    cfg = ported["paths_config"]
    result = xval("run", TORCH_EXP, "1", "--cpu", "-q", "-p", "num_epochs=1", "--set", 'comment_x=1', "--config", cfg,
                  cwd=project, monkeypatch=monkeypatch)
    assert result.exit_code == 2 and "-p comment_x=...: unknown parameter" in result.output
    result = xval("run", TORCH_EXP, "1", "--cpu", "-q", "-p", "num_epochs=1", "--config", cfg)
    assert result.exit_code == 2 and "num_epochs: 2 -> 1" in result.output and "--overwrite" in result.output
    result = xval("plan", TORCH_EXP, "-p", "num_epochs='one'", "--config", cfg)
    assert result.exit_code == 2 and "num_epochs='one'" in result.output


def test_override_trains_with_the_value_and_records_it(tmp_path, data_folder, monkeypatch, config_file):
    path = write_experiment(tmp_path, {1: instance("a", "MLP_model", "none", "hidden_sizes=(8,)"),
                                       2: instance("b", "MLP_model", "none", "hidden_sizes=(8,)"),
                                       3: instance("c", "MLP_model", "none", "hidden_sizes=(8,)")},
                            global_parameters=['framework="torch"', "num_epochs=3"], num_folds=1)
    result = xval("run", path, "1,3", "--cpu", "-q", "-p", "num_epochs=1", "--config", config_file)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "results" / "demo" / "experiment_1"
    assert sorted(p.name for p in (folder / "results").glob("results_*.pkl")) == [
        "results_demo_exp1_run1.pkl", "results_demo_exp1_run3.pkl"]
    saved = results(tmp_path, "demo", 1, 3)
    assert saved["parameters"]["num_epochs"] == 1 and all(f["epochs"] == 1 for f in saved["folds"].values())
    import json

    assert json.loads((folder / "code" / "provenance.json").read_text())["overrides"] == {"num_epochs": 1}


@pytest.mark.parametrize("text, expected", [("1,5,9", [1, 5, 9]), ("3-7", [3, 4, 5, 6, 7]),
                                            ("1,4-6,9", [1, 4, 5, 6, 9]), ("2", [2])])
def test_instance_lists(tmp_path, config_file, text, expected):
    path = write_experiment(tmp_path, {i: instance(str(i)) for i in range(1, 10)})
    exp = load_experiment(path, config_file=config_file)
    assert exp.select(text) == expected
    assert exp.select("3", 7) == exp.select(3, 7) == [3, 4, 5, 6, 7]


def test_one_selection_rule_for_every_form(tmp_path, config_file):
    """FIRST LAST is the range FIRST-LAST: `2 9` and `2-9` both take the instances in it (2 and 3),
    where `2 9` silently ran 2-3 and `2-9` was an error; a number alone must be an instance."""
    exp = load_experiment(write_experiment(tmp_path, {i: instance(str(i)) for i in (1, 2, 3)}), config_file=config_file)
    assert exp.select(2, 9) == exp.select("2", 9) == exp.select("2-9") == [2, 3]
    assert exp.select("1,3-9") == [1, 3]
    for text in ("2,9", "9"):
        with pytest.raises(XvalError, match="no instance 9; the instances are 1-3"):
            exp.select(text)
    with pytest.raises(XvalError, match="no instance between 5 and 9"):
        exp.select(5, 9)


def test_every_command_takes_the_same_experiment_forms(tmp_path, config_file, monkeypatch):
    """`xval run exp7` said 'no such experiment file' while `xval report exp7` found experiments/exp7.py."""
    write_experiment(tmp_path / "experiments", {1: instance("a", "MLP_model", "none", 'framework="torch"',
                                                            "hidden_sizes=(4,)")},
                     name="exp7", num_folds=2, global_parameters=["num_epochs=1", "tensorboard=False"])
    monkeypatch.chdir(tmp_path)
    result = xval("run", "exp7", "--cpu", "--quiet", "--config", config_file)
    assert result.exit_code == 0, result.output
    for command in ("run", "plan", "status", "report"):
        for target in ("exp7", "exp7.py", "experiments/exp7", "experiments/exp7.py"):
            args = [command, target] + (["--cpu", "--quiet"] if command == "run" else [])
            result = xval(*args, "--config", config_file)
            assert result.exit_code == 0, (command, target, result.output)


@pytest.mark.parametrize("args, words", [(["1,x"], "expected numbers and ranges"), (["7-3"], "comes before"),
                                         (["1,12"], "no instance 12"), (["1,2", "3"], "not both")])
def test_bad_instance_lists_are_one_line_errors(tmp_path, config_file, args, words):
    path = write_experiment(tmp_path, {i: instance(str(i)) for i in range(1, 10)})
    result = xval("status", path, *args, "--config", config_file)
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


def test_misspelt_settings_are_named(tmp_path, config_file):
    path = write_experiment(tmp_path, {1: instance()}, extra="experiment_folders = 'elsewhere'\nnumfolds = 3\n")
    result = xval("status", path, "--config", config_file)
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert any("experiment_folders is not a setting" in line and "did you mean experiment_folder?" in line for line in lines)
    assert any("numfolds" in line and "num_folds" in line for line in lines)
    text = path.read_text().replace("num_folds = 3", "num_fold = 3")
    path.write_text(text)
    result = xval("status", path, "--config", config_file)
    assert result.exit_code == 2 and "missing setting num_folds (num_fold is set: a misspelling of num_folds?)" in result.output


def test_convert_refuses_to_unpickle_without_consent(tmp_path, data_folder):
    old_x, old_y = save_old_dataset(tmp_path / "old", data_folder)
    out = tmp_path / "data"
    out.mkdir()
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {out}\n")
    result = xval("convert", old_x, old_y, "--name", "refused", "--config", config)
    assert result.exit_code == 2 and "--trust-pickle" in result.output and "run any code" in result.output
    assert len(result.output.strip().splitlines()) == 1 and list(out.iterdir()) == []


@pytest.mark.parametrize("spoil, words", [
    (lambda x, y: x.pop("spk03"), "item 'spk03' is in only one"),
    (lambda x, y: y.__setitem__("spk02", y["spk02"][:-1]), "item 'spk02' has 48 predictors but 47 targets"),
    (lambda x, y: x.__setitem__("spk04", [np.zeros((32, 64)), np.zeros((30, 64))]), "item 'spk04': the predictors are not one numeric array"),
    (lambda x, y: x["spk05"].__setitem__((0, 0, 0), np.nan), "item 'spk05': 1 predictors value(s) are NaN or infinite"),
    (lambda x, y: x.__setitem__("spk06", x["spk06"][:, :10]), "different datapoint shapes"),
])
def test_convert_bad_contents_are_one_line_errors(tmp_path, data_folder, spoil, words):
    from xvalkit.data import load_dataset

    demo = load_dataset(data_folder, "demo")
    x = {k: v.copy() for k, v in demo.predictors.items()}
    y = {k: np.eye(4)[v] for k, v in demo.targets.items()}
    spoil(x, y)
    np.save(tmp_path / "x.npy", x, allow_pickle=True)
    np.save(tmp_path / "y.npy", y, allow_pickle=True)
    out = tmp_path / "data"
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {out}\n")
    result = xval("convert", tmp_path / "x.npy", tmp_path / "y.npy", "--name", "bad", "--trust-pickle", "--config", config)
    assert result.exit_code == 2 and words in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or list(out.iterdir()) == []


def test_convert_keeps_a_dataset_of_that_name_without_overwrite(tmp_path, data_folder):
    """The dataset is NAME.xvd/: a second conversion to the same name is refused unless --overwrite."""
    old_x, old_y = save_old_dataset(tmp_path / "old", data_folder)
    out = tmp_path / "data"
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {out}\n")
    args = ("convert", old_x, old_y, "--name", "twice", "--trust-pickle", "--config", config)
    assert xval(*args).exit_code == 0 and (out / "twice.xvd").is_dir()
    first = (out / "twice.xvd").stat().st_ino  # a dataset is replaced whole: a new folder
    result = xval(*args)
    assert result.exit_code == 2 and "dataset 'twice' already exists" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and (out / "twice.xvd").stat().st_ino == first
    assert xval(*args, "--overwrite").exit_code == 0
    assert (out / "twice.xvd").stat().st_ino != first


def test_converted_dataset_has_indices_and_provenance(ported):
    import json

    from xvalkit.data import load_dataset

    data = load_dataset(ported["data_folder"], "demo_old")
    demo = load_dataset(ported["data_folder"], "demo")
    assert all(np.array_equal(data.targets[k], demo.targets[k]) and data.targets[k].dtype == np.int64 for k in demo.items)
    assert all(np.array_equal(data.predictors[k], demo.predictors[k]) for k in demo.items)
    manifest = data.manifest  # written with the dataset (its format is data.py's business)
    assert manifest["converted_from"]["predictors"].endswith("old_predictors.npy")
    assert len(manifest["converted_from"]["target_sha256"]) == 64


def test_legacy_model_gets_exactly_the_resolved_values():
    """Its own parser (eval of the text after '=') gets back the values xvalkit resolved."""
    from xvalkit.models.legacy import LegacyModel, is_legacy

    seen = []

    def OLD(time_dim, features_dim, user_parameters=['niente = 0']):
        p = {"a": 1, "name": "x", "sizes": (1, 2), "flag": False, "output_classes": 2, "nested": {"k": [1.5]}}
        for param in user_parameters:
            item, value = param.split("=", 1)
            p[item.strip()] = eval(value)
        seen.append((time_dim, features_dim, dict(p)))
        return object(), p

    assert is_legacy(OLD)
    fn = LegacyModel(OLD)
    assert fn.defaults((5, 7, 1), 3) == {"a": 1, "name": "x", "sizes": (1, 2), "flag": False, "output_classes": 3,
                                          "nested": {"k": [1.5]}}
    values = {"a": 4, "name": "it's = 'quoted'", "sizes": (3,), "flag": True, "nested": {"k": [2.5, None]}}
    fn((1, 5, 7), 3, "classification", **values, learning_rate=0.1)
    assert seen[-1] == (5, 7, {**values, "output_classes": 3})


def test_early_stopping_false_trains_every_epoch_in_both_frameworks(tmp_path, config_file):
    # learning_rate 5 with patience 0 makes the validation loss worse at once: early stopping stops
    base = ["num_epochs=4", "patience=0", "learning_rate=5.0", 'optimizer="sgd"', "hidden_sizes=(8,)"]
    path = write_experiment(tmp_path, {
        1: instance("keras", "MLP_model", "none", *base),
        2: instance("keras off", "MLP_model", "none", *base, "early_stopping=False"),
        3: instance("torch", "MLP_model", "none", *base, 'framework="torch"'),
        4: instance("torch off", "MLP_model", "none", *base, 'framework="torch"', "early_stopping=False",
                    "shuffle_training_data=False"),
    }, global_parameters=[], num_folds=1)
    result = xval("run", path, "--cpu", "-q", "--config", config_file)
    assert result.exit_code == 0, result.output
    epochs = {run: [f["epochs"] for f in results(tmp_path, "demo", 1, run)["folds"].values()] for run in (1, 2, 3, 4)}
    assert epochs[2] == epochs[4] == [4]
    assert max(epochs[1]) < 4 and max(epochs[3]) < 4  # the same settings with early stopping do stop


def test_old_parameter_names_are_aliases(tmp_path, config_file):
    path = write_experiment(tmp_path, {
        1: instance("a", "MLP_model", "none", 'save_model_metric="val_accuracy"', 'save_best_model_mode="max"',
                    "train_split=0.7", "validation_split=0.1"),
        2: instance("b", "MLP_model", "none", 'save_model_metric="val_loss"', 'save_best_model_metric="val_loss"'),
        3: instance("c", "MLP_model", "none", "train_split=0.7", "test_split=0.3"),
    }, num_folds=1, global_parameters=[])
    exp = load_experiment(path, config_file=config_file)
    p = exp.resolve(1)
    assert p["save_best_model_metric"] == "val_accuracy" and p["test_split"] == pytest.approx(0.2)
    assert "save_model_metric" not in p and "train_split" not in p
    from xvalkit.errors import ParameterError

    with pytest.raises(ParameterError, match="old name of save_best_model_metric; set only one"):
        exp.resolve(2)
    with pytest.raises(ParameterError, match="do not add up to 1"):
        exp.resolve(3)


def test_a_pt_saved_channels_last_by_an_older_xvalkit_reloads_and_predicts_the_same():
    """tests/old_project/saved_models: an EXAMPLE_model .pt written by xvalkit before inputs were
    channels first (no 'input_layout'), with the probabilities that xvalkit's predict gave then."""
    from xvalkit.loading import channels_first, load_model, predict

    pt = OLD_PROJECT / "saved_models" / "demo_exp1_run1_fold1.pt"
    expected = np.load(pt.with_name(pt.stem + "_expected.npz"))
    np.testing.assert_allclose(predict(pt, expected["x"]), expected["proba"], rtol=1e-5, atol=1e-6)
    assert channels_first(pt) and load_model(pt)[1].in_channels == 1  # rebuilt channels first


def test_torch_conv_inputs_are_channels_first_and_the_pt_says_so(ported):
    import torch

    from xvalkit.data import load_dataset
    from xvalkit.loading import predict

    pt = ported["project"] / "results" / "demo_old" / "experiment_2" / "models" / "demo_old_exp2_run1_fold1.pt"
    assert torch.load(pt, weights_only=True)["input_layout"] == "channels_first"
    record = results(ported["project"], "demo_old", 2, 1)["folds"][1]
    data = load_dataset(ported["data_folder"], "demo_old")
    x = np.concatenate([data.predictors[item] for item in record["test_items"]])
    np.testing.assert_allclose(predict(pt, x), record["test_pred"], rtol=1e-5, atol=1e-6)
