"""`xval preprocess <corpus>`: small fake corpora with each corpus's real naming (synthesised audio),
through the real CLI; items, labels, counts and skipped files checked against values written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xvalkit.data import load_dataset

from .conftest import write_experiment
from .test_preprocess import one_line_error, xval

MLP = ['architecture="MLP_model"', 'reshaping_type="none"', 'comment_1="mlp"', 'comment_2="test"',
       'framework="torch"', "hidden_sizes=(8,)", "num_epochs=2", "batch_size=8"]
SR = 16000
SECONDS = 0.1


def write(path: Path, f0: float = 220.0, audio: np.ndarray | None = None) -> Path:
    """A short 16-bit wav of a few harmonics of f0 (or `audio`)."""
    if audio is None:
        t = np.arange(int(SR * SECONDS)) / SR
        audio = (0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SR, subtype="PCM_16")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(f"[paths]\ndata_folder = {tmp_path / 'data'}\n[features]\nfix_length = {SECONDS}\n")
    return path


def preprocess(capsys, config: Path, *args: str):
    """Run `xval preprocess ARGS`; (dataset, stderr) after checking it succeeded."""
    code, err = xval(capsys, "preprocess", *args, "--config", str(config), "--jobs", "1")
    assert code == 0, err
    name = args[args.index("--name") + 1]
    return load_dataset(config.parent / "data", name), err


def targets(ds) -> dict[str, list[int]]:
    return {item: ds.targets[item].tolist() for item in ds.items}


def skipped(ds, root: Path) -> dict[str, str]:
    return {str(Path(s["file"]).relative_to(root)): s["reason"] for s in ds.manifest["skipped"]}


def warned(err: str, root: Path) -> set[str]:
    """The files named by 'warning: skipped' lines, relative to root."""
    return {line.split(" ", 2)[2].split(": ")[0].removeprefix(f"{root}/")
            for line in err.splitlines() if line.startswith("warning: skipped")}


# --- EMO-DB ----------------------------------------------------------------------------------------

@pytest.fixture
def emodb(tmp_path: Path) -> Path:
    """3 speakers x 7 emotions, one file each (speaker 08 says two anger texts), and bad files."""
    root = tmp_path / "emodb" / "wav"
    for s, speaker in enumerate(("03", "08", "16")):
        for e, letter in enumerate("WLEAFTN"):
            write(root / f"{speaker}a01{letter}a.wav", 150 + 30 * e + 5 * s)
    write(root / "08b02Wb.wav", 170)
    write(root / "03a02Xa.wav")  # no emotion X
    write(root / "notes.wav")  # not an EMO-DB name
    write(root / "16a02Na.wav", audio=np.zeros(1600, np.float32))  # silent
    return root


def test_emodb(tmp_path, capsys, config, emodb):
    ds, err = preprocess(capsys, config, "emodb", "--input", str(emodb), "--name", "emo")
    classes = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
    assert ds.manifest["classes"] == classes
    # path order within an item: letters A E F L N T W = fear disgust happiness boredom neutral sadness anger
    assert targets(ds) == {"03": [3, 2, 4, 1, 6, 5, 0], "08": [3, 2, 4, 1, 6, 5, 0, 0],
                           "16": [3, 2, 4, 1, 6, 5, 0]}
    assert ds.manifest["sources"]["08"][-2:] == ["08a01Wa.wav", "08b02Wb.wav"]
    assert ds.manifest["datapoints_per_class"] == {"anger": 4, "boredom": 3, "disgust": 3, "fear": 3,
                                                   "happiness": 3, "sadness": 3, "neutral": 3}
    assert ds.manifest["datapoints_per_item_and_class"]["08"] == {
        "anger": 2, "boredom": 1, "disgust": 1, "fear": 1, "happiness": 1, "sadness": 1, "neutral": 1}
    assert skipped(ds, emodb) == {
        "03a02Xa.wav": "emotion letter X is not one of W L E A F T N",
        "notes.wav": "file name not in EMO-DB form SSTTTEV (speaker, text, emotion, version: 03a01Fa)",
        "16a02Na.wav": "silent (peak below -80 dBFS)",
    }
    assert warned(err, emodb) == {"03a02Xa.wav", "notes.wav", "16a02Na.wav"}
    assert "22 of 25 files" in err and "in 3 foldable items" in err
    assert "per class: anger 4, boredom 3, disgust 3, fear 3, happiness 3, sadness 3, neutral 3" in err
    assert "only 3 foldable items: grouped k-fold with num_folds at most 3" in err
    corpus = ds.manifest["corpus"]
    assert corpus["corpus"] == "emodb" and corpus["classes_kept"] == "all" and corpus["merge"] == {}


def test_emodb_labels_and_merge_are_applied_and_recorded(tmp_path, capsys, config, emodb):
    ds, err = preprocess(capsys, config, "emodb", "--input", str(emodb), "--name", "emo3",
                         "--labels", "neutral,anger,sad", "--merge", "sadness=sad,boredom=sad")
    assert ds.manifest["classes"] == ["neutral", "anger", "sad"]
    # per speaker, path order: boredom (2), neutral (0), sadness (2), anger (1)
    assert targets(ds) == {"03": [2, 0, 2, 1], "08": [2, 0, 2, 1, 1], "16": [2, 0, 2, 1]}
    corpus = ds.manifest["corpus"]
    assert corpus["classes_kept"] == ["neutral", "anger", "sad"]
    assert corpus["merge"] == {"sadness": "sad", "boredom": "sad"}
    assert corpus["dropped_files_per_label"] == {"disgust": 3, "fear": 3, "happiness": 3}
    assert "dropped 9 files of other labels: disgust 3, fear 3, happiness 3" in err
    assert ds.manifest["datapoints_per_class"] == {"neutral": 3, "anger": 4, "sad": 6}
    assert list(skipped(ds, emodb)) == ["03a02Xa.wav", "notes.wav", "16a02Na.wav"]


@pytest.mark.parametrize("args, words", [
    (["--labels", "anger,joy"], ["--labels joy", "not a class", "anger, boredom"]),
    (["--labels", "anger,anger"], ["--labels", "anger is given twice"]),
    (["--merge", "boredom"], ["--merge 'boredom'", "LABEL=CLASS"]),
    (["--merge", "joy=anger"], ["--merge joy=anger", "not a label of emodb"]),
    (["--merge", "boredom=sadness", "--merge", "sadness=neutral"], ["--merge: sadness", "directly"]),
])
def test_bad_labels_and_merges_are_one_line_errors(tmp_path, capsys, config, emodb, args, words):
    code, err = xval(capsys, "preprocess", "emodb", "--input", str(emodb), "--config", str(config), *args)
    one_line_error(code, err, *words)
    assert not (tmp_path / "data").exists()


# --- TESS ------------------------------------------------------------------------------------------

def test_tess(tmp_path, capsys, config):
    root = tmp_path / "TESS Toronto emotional speech set data"
    for speaker in ("OAF", "YAF"):
        for folder, suffix in (("angry", "angry"), ("Fear", "fear"), ("neutral", "neutral")):
            for word in ("back", "bar"):
                write(root / f"{speaker}_{folder}" / f"{speaker}_{word}_{suffix}.wav")
    write(root / "YAF_pleasant_surprised" / "YAF_back_ps.wav")  # the published spellings
    write(root / "OAF_Pleasant_surprise" / "OAF_back_ps.wav")
    write(root / "OAF_bored" / "OAF_back_bored.wav")  # no such emotion
    write(root / "extra" / "OAF_back_angry.wav")  # not in an emotion folder
    ds, err = preprocess(capsys, config, "tess", "--input", str(root), "--name", "tess",
                         "--labels", "angry,fear,pleasant_surprise,neutral")
    assert ds.manifest["classes"] == ["angry", "fear", "pleasant_surprise", "neutral"]
    assert ds.items == ["OAF", "YAF"]
    # path order: OAF_Fear, OAF_Pleasant_surprise, OAF_angry, OAF_neutral (capitals sort first)
    assert targets(ds) == {"OAF": [1, 1, 2, 0, 0, 3, 3], "YAF": [1, 1, 0, 0, 3, 3, 2]}
    assert ds.manifest["datapoints_per_class"] == {"angry": 4, "fear": 4, "pleasant_surprise": 2, "neutral": 4}
    assert skipped(ds, root) == {
        "OAF_bored/OAF_back_bored.wav": "emotion bored is not one of angry, disgust, fear, happy, neutral, "
                                        "pleasant_surprise, sad (or ps)",
        "extra/OAF_back_angry.wav": "not in a folder <OAF|YAF>_<emotion> (OAF_angry)",
    }
    # two speakers: said at preprocess time, and `xval run` refuses more folds than items in one line
    assert "only 2 foldable item(s)" in err and "cannot split this dataset by item" in err
    for folds, words in ((3, ["num_folds = 3", "only 2 foldable items", "at most 2 folds"]),
                         (2, ["num_folds = 2 with 2 foldable items", "too few for 1 validation item"])):
        exp = write_experiment(tmp_path / "exp", {1: MLP}, dataset="tess", num_folds=folds, global_parameters=[])
        code, err = xval(capsys, "run", str(exp), "--cpu", "--config", str(config))
        one_line_error(code, err, *words)
