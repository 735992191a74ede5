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


# --- FSDD ------------------------------------------------------------------------------------------

def test_fsdd(tmp_path, capsys, config):
    root = tmp_path / "free-spoken-digit-dataset" / "recordings"
    for speaker in ("jackson", "theo", "yweweler"):
        for digit in (0, 1, 2):
            write(root / f"{digit}_{speaker}_0.wav", 200 + 50 * digit)
    write(root / "7_jackson_32.wav")
    write(root / "jackson_7.wav")  # misnamed
    ds, err = preprocess(capsys, config, "fsdd", "--input", str(tmp_path / "free-spoken-digit-dataset"),
                         "--name", "fsdd")
    assert ds.manifest["classes"] == list("0123456789")
    assert ds.items == ["jackson", "theo", "yweweler"]
    assert targets(ds) == {"jackson": [0, 1, 2, 7], "theo": [0, 1, 2], "yweweler": [0, 1, 2]}
    assert ds.manifest["datapoints_per_class"] == {"0": 3, "1": 3, "2": 3, "3": 0, "4": 0, "5": 0, "6": 0,
                                                   "7": 1, "8": 0, "9": 0}
    assert skipped(ds, tmp_path / "free-spoken-digit-dataset") == {
        "recordings/jackson_7.wav": "file name not in FSDD form {digit}_{speaker}_{index} (7_jackson_32)"}
    assert "no datapoints of class 3, 4, 5, 6, 8, 9" in err  # the model would still get 10 outputs
    ds, err = preprocess(capsys, config, "fsdd", "--input", str(root), "--name", "fsdd3", "--labels", "0,1,2")
    assert ds.manifest["classes"] == ["0", "1", "2"] and "no datapoints" not in err
    assert ds.manifest["corpus"]["dropped_files_per_label"] == {"7": 1}


# --- Speech Commands -------------------------------------------------------------------------------

@pytest.fixture
def speechcommands(tmp_path: Path) -> Path:
    root = tmp_path / "speech_commands_v0.02"
    for w, word in enumerate(("yes", "no", "up", "down")):
        for speaker in ("0a7c2a8d", "1c3f50ad"):
            write(root / word / f"{speaker}_nohash_0.wav", 200 + 60 * w)
    write(root / "yes" / "0a7c2a8d_nohash_1.wav")
    write(root / "up" / "b0ae6326_nohash_0.wav")
    write(root / "yes" / "recording.wav")  # misnamed
    write(root / "_background_noise_" / "white_noise.wav")
    write(root / "_background_noise_" / "running_tap.wav")
    (root / "validation_list.txt").write_text("yes/1c3f50ad_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/0a7c2a8d_nohash_0.wav\n")
    return root


def test_speechcommands_words_and_unknown(tmp_path, capsys, config, speechcommands):
    root = speechcommands
    ds, err = preprocess(capsys, config, "speechcommands", "--input", str(root), "--name", "sc",
                         "--labels", "yes,no", "--unknown")
    assert ds.manifest["classes"] == ["yes", "no", "unknown"]
    assert ds.items == ["0a7c2a8d", "1c3f50ad", "b0ae6326"]
    # path order: down, no, up, yes
    assert targets(ds) == {"0a7c2a8d": [2, 1, 2, 0, 0], "1c3f50ad": [2, 1, 2, 0], "b0ae6326": [2]}
    assert ds.manifest["datapoints_per_class"] == {"yes": 3, "no": 2, "unknown": 5}
    assert skipped(ds, root) == {"yes/recording.wav": "file name not in Speech Commands form {speaker hash}_nohash_{n}"}
    corpus = ds.manifest["corpus"]
    assert corpus["ignored_files"] == {"background noise (not a class)": 2}
    assert corpus["other_labels_class"] == "unknown" and corpus["dropped_files_per_label"] == {}
    assert "ignored 2 background noise (not a class)" in err
    assert not any("_background_noise_" in line for line in err.splitlines() if line.startswith("warning"))


def test_speechcommands_default_is_every_word_and_other_words_are_dropped(tmp_path, capsys, config, speechcommands):
    ds, _ = preprocess(capsys, config, "speechcommands", "--input", str(speechcommands), "--name", "all")
    assert ds.manifest["classes"] == ["down", "no", "up", "yes"]  # sorted; _background_noise_ is no class
    assert ds.manifest["datapoints_per_class"] == {"down": 2, "no": 2, "up": 3, "yes": 3}
    ds, err = preprocess(capsys, config, "speechcommands", "--input", str(speechcommands), "--name", "two",
                         "--labels", "up,down")
    assert ds.manifest["classes"] == ["up", "down"]
    assert targets(ds) == {"0a7c2a8d": [1, 0], "1c3f50ad": [1, 0], "b0ae6326": [0]}
    assert ds.manifest["corpus"]["dropped_files_per_label"] == {"no": 2, "yes": 3}
    assert "dropped 5 files of other labels: no 2, yes 3" in err


# --- IEMOCAP ---------------------------------------------------------------------------------------

# (utterance, label) per dialog, as EmoEvaluation lists them
IEMOCAP = {
    ("Session1", "Ses01F_impro01"): [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "exc"),
                                     ("Ses01F_impro01_F001", "fru"), ("Ses01F_impro01_M001", "ang")],
    ("Session1", "Ses01M_script01_1b"): [("Ses01M_script01_1b_F000", "sad"), ("Ses01M_script01_1b_M000", "hap"),
                                         ("Ses01M_script01_1b_M001", "xxx")],
    ("Session2", "Ses02F_impro02"): [("Ses02F_impro02_F000", "ang"), ("Ses02F_impro02_M000", "neu"),
                                     ("Ses02F_impro02_F001", "sur"), ("Ses02F_impro02_M001", "exc")],
}


@pytest.fixture
def iemocap(tmp_path: Path) -> Path:
    root = tmp_path / "IEMOCAP_full_release"
    for (session, dialog), utterances in IEMOCAP.items():
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, (utterance, label) in enumerate(utterances):
            write(root / session / "sentences" / "wav" / dialog / f"{utterance}.wav", 180 + 40 * i)
            lines += [f"[{i + 1.25:.4f} - {i + 2.5:.4f}]\t{utterance}\t{label}\t[2.5000, 3.0000, 2.5000]",
                      "C-E2:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
        evaluation = root / session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("\n".join(lines))
        write(root / session / "dialog" / "wav" / f"{dialog}.wav")  # the whole dialog: not an utterance
    (root / "Session1" / "dialog" / "EmoEvaluation" / "Categorical").mkdir()
    (root / "Session1" / "dialog" / "EmoEvaluation" / "Categorical" / "Ses01F_impro01_e2_cat.txt").write_text(
        "Ses01F_impro01_F000 :Anger; ()\n")
    write(root / "Session2" / "sentences" / "wav" / "Ses02F_impro02" / "Ses02F_impro02_M002.wav")  # no label line
    return root


def test_iemocap_four_class_protocol(tmp_path, capsys, config, iemocap):
    ds, err = preprocess(capsys, config, "iemocap", "--input", str(iemocap), "--name", "iemocap")
    assert ds.manifest["classes"] == ["neu", "hap", "ang", "sad"]
    # leave-one-session-out by default: a session's two actors are one item
    assert ds.items == ["Ses01", "Ses02"]
    # path order: F000, F001 (fru), M000, M001 of each dialog folder (exc counts as hap)
    assert targets(ds) == {"Ses01": [0, 1, 2, 3, 1], "Ses02": [2, 0, 1]}
    assert ds.manifest["datapoints_per_class"] == {"neu": 2, "hap": 3, "ang": 2, "sad": 1}
    corpus = ds.manifest["corpus"]
    assert corpus["group"] == "session" and corpus["foldable_item"].startswith("session")
    assert corpus["classes_kept"] == ["neu", "hap", "ang", "sad"] and corpus["merge"] == {"exc": "hap"}
    assert corpus["dropped_files_per_label"] == {"fru": 1, "sur": 1, "xxx": 1}
    assert corpus["ignored_files"] == {"not an utterance (outside Session*/sentences/wav)": 3}  # dialog/wav
    assert skipped(ds, iemocap) == {
        "Session2/sentences/wav/Ses02F_impro02/Ses02F_impro02_M002.wav":
            "no label line for it in Session2/dialog/EmoEvaluation/Ses02F_impro02.txt"}
    assert "dropped 3 files of other labels: fru 1, sur 1, xxx 1" in err
    assert "8 of 9 files" in err  # the 3 dropped and 2 dialog recordings are not the corpus's files
    # --group speaker: today's ten speakers
    ds, _ = preprocess(capsys, config, "iemocap", "--input", str(iemocap), "--name", "speakers", "--group", "speaker")
    assert ds.items == ["Ses01F", "Ses01M", "Ses02F", "Ses02M"]
    assert targets(ds) == {"Ses01F": [0, 3], "Ses01M": [1, 2, 1], "Ses02F": [2], "Ses02M": [0, 1]}
    assert ds.manifest["sources"]["Ses01M"] == [
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav",
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav",
        "Session1/sentences/wav/Ses01M_script01_1b/Ses01M_script01_1b_M000.wav"]
    assert ds.manifest["corpus"]["group"] == "speaker"


def test_iemocap_every_label_without_merging(tmp_path, capsys, config, iemocap):
    ds, _ = preprocess(capsys, config, "iemocap", "--input", str(iemocap), "--name", "all",
                       "--labels", "all", "--merge", "none", "--group", "speaker")
    assert ds.manifest["classes"] == ["neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"]
    assert targets(ds) == {"Ses01F": [0, 5, 4], "Ses01M": [2, 3, 1, 10], "Ses02F": [3, 6], "Ses02M": [0, 2]}
    assert ds.manifest["corpus"]["dropped_files_per_label"] == {}


# --- pattern ---------------------------------------------------------------------------------------

def test_pattern(tmp_path, capsys, config):
    root = tmp_path / "mycorpus"
    for speaker in ("spk1", "spk2"):
        for take, label in enumerate(("calm", "tense", "calm", "angry")):
            write(root / speaker / f"take{take}_{label}.wav", 200 + 50 * take)
    write(root / "spk2" / "take9.wav")  # no label
    write(root / "loose_calm.wav")  # not in a speaker folder
    regex = r"(?P<item>spk\d+)/take\d+_(?P<label>[a-z]+)\.wav"
    ds, err = preprocess(capsys, config, "pattern", "--input", str(root), "--regex", regex, "--name", "pat",
                         "--merge", "angry=tense")
    assert ds.manifest["classes"] == ["calm", "tense"]
    assert targets(ds) == {"spk1": [0, 1, 0, 1], "spk2": [0, 1, 0, 1]}
    assert skipped(ds, root) == {"loose_calm.wav": f"path does not match --regex {regex}",
                                 "spk2/take9.wav": f"path does not match --regex {regex}"}
    assert warned(err, root) == {"loose_calm.wav", "spk2/take9.wav"}
    assert ds.manifest["corpus"]["foldable_item"] == f"{{item}} of --regex {regex}"
    # the same corpus through a glob-like template instead of the regex
    template = "{item}/take*_{label}.wav"
    ds2, err = preprocess(capsys, config, "pattern", "--input", str(root), "--template", template, "--name", "tpl",
                          "--merge", "angry=tense")
    assert ds2.manifest["classes"] == ["calm", "tense"] and targets(ds2) == targets(ds)
    assert skipped(ds2, root) == {"loose_calm.wav": f"path does not match --template {template}",
                                  "spk2/take9.wav": f"path does not match --template {template}"}


@pytest.mark.parametrize("regex, words", [
    (r"(?P<item>spk\d+)/.*\.wav", ["--regex", "no named group label", "(?P<label>...)"]),
    (r"(?P<speaker>\w+)/(?P<emotion>\w+)", ["no named group item or label"]),
    (r"(?P<item>spk\d+/(?P<label>", ["--regex", "not a valid regular expression"]),
])
def test_pattern_regex_without_both_groups_is_a_one_line_error(tmp_path, capsys, config, regex, words):
    write(tmp_path / "c" / "spk1" / "take0_calm.wav")
    code, err = xval(capsys, "preprocess", "pattern", "--input", str(tmp_path / "c"), "--regex", regex,
                     "--config", str(config))
    one_line_error(code, err, *words)


@pytest.mark.parametrize("args, words", [
    ([], ["give --regex or --template"]),
    (["--regex", "(?P<item>a)(?P<label>b)", "--template", "{item}/{label}"], ["give --regex or --template"]),
    (["--template", "{item}/*.wav"], ["--template", "needs both {item} and {label}"]),
])
def test_pattern_needs_one_regex_or_template_with_both_fields(tmp_path, capsys, config, args, words):
    write(tmp_path / "c" / "spk1" / "take0_calm.wav")
    code, err = xval(capsys, "preprocess", "pattern", "--input", str(tmp_path / "c"), *args, "--config", str(config))
    one_line_error(code, err, *words)


def test_pattern_matching_no_file_names_the_files_not_the_labels(tmp_path, capsys, config):
    write(tmp_path / "c" / "spk1" / "take0_calm.wav")
    code, err = xval(capsys, "preprocess", "pattern", "--input", str(tmp_path / "c"), "--config", str(config),
                     "--regex", r"(?P<item>S\d+)/(?P<label>\w+)\.wav", "--labels", "calm")
    one_line_error(code, err, "none of its 1 audio files is usable")
    assert warned(err, tmp_path / "c") == {"spk1/take0_calm.wav"}


# --- end to end ------------------------------------------------------------------------------------

def test_xval_run_on_a_preset_dataset_trains_and_reports(tmp_path, capsys, config, emodb):
    import openpyxl

    preprocess(capsys, config, "emodb", "--input", str(emodb), "--name", "emodb", "--features", "mfcc")
    exp = write_experiment(tmp_path / "exp", {1: MLP}, dataset="emodb", num_folds=3, global_parameters=[])
    code, err = xval(capsys, "run", str(exp), "--cpu", "--quiet", "--config", str(config))
    assert code == 0, err
    folder = tmp_path / "exp" / "results" / "emodb" / "experiment_1"
    sheet = openpyxl.load_workbook(folder / "emodb_exp1_results.xlsx")["folds"]
    rows = list(sheet.iter_rows(values_only=True))
    assert len(rows) - 1 == 3  # one row per fold
    test_items = sorted(str(row[list(rows[0]).index("test_items")]) for row in rows[1:])
    assert test_items == ["03", "08", "16"]  # every speaker tested once


# --- the two first presets take --labels and --merge too -------------------------------------------

def test_ravdess_and_folder_take_labels_and_merge(tmp_path, capsys, config):
    rav = tmp_path / "RAVDESS"
    for actor in (1, 2):
        for emotion in (1, 2, 5, 8):  # neutral, calm, angry, surprised
            write(rav / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", 150 + 30 * emotion)
    ds, err = preprocess(capsys, config, "ravdess", "--input", str(rav), "--name", "rav",
                         "--merge", "calm=neutral", "--labels", "neutral,angry")
    assert ds.manifest["classes"] == ["neutral", "angry"]
    assert targets(ds) == {"Actor_01": [0, 0, 1], "Actor_02": [0, 0, 1]}
    assert ds.manifest["corpus"]["dropped_files_per_label"] == {"surprised": 2}
    assert ds.manifest["corpus"]["label_codes"]["02"] == "calm"
    folder = tmp_path / "byfolder"
    for item in ("a", "b"):
        for label in ("x", "y", "z"):
            write(folder / item / label / "1.wav")
    ds, _ = preprocess(capsys, config, "folder", "--input", str(folder), "--name", "fold", "--merge", "z=x")
    assert ds.manifest["classes"] == ["x", "y"]
    assert targets(ds) == {"a": [0, 1, 0], "b": [0, 1, 0]}


# --- augmented corpora (issue 30, defect 1): the _orig / _aug<N> suffix is removed before parsing ----

def augmented(path: Path, copies: int = 2, f0: float = 220.0) -> None:
    """What `xval augment` leaves for one file: <stem>_orig.wav and <stem>_aug1.wav ... (tones here)."""
    write(path.with_name(f"{path.stem}_orig.wav"), f0)
    for k in range(1, copies + 1):
        write(path.with_name(f"{path.stem}_aug{k}.wav"), f0 + 7 * k)


def test_an_augmented_ravdess_is_still_a_ravdess(tmp_path, capsys, config):
    root = tmp_path / "RAVDESS_aug"
    for actor in (1, 2):
        for emotion in (1, 5):  # neutral, angry
            augmented(root / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", 2, 150 + 20 * emotion)
    ds, _ = preprocess(capsys, config, "ravdess", "--input", str(root), "--name", "ravaug", "--labels", "neutral,angry")
    assert ds.items == ["Actor_01", "Actor_02"]
    # per actor, path order: 01_aug1, 01_aug2, 01_orig, 05_aug1, 05_aug2, 05_orig
    assert targets(ds) == {"Actor_01": [0, 0, 0, 1, 1, 1], "Actor_02": [0, 0, 0, 1, 1, 1]}
    assert ds.manifest["augmented"]["Actor_01"] == [True, True, False, True, True, False]
    assert ds.manifest["corpus"]["augmentation"]["original_files"] == 4
    assert ds.manifest["corpus"]["augmentation"]["augmented_files"] == 8


def test_a_template_never_captures_the_augmentation_suffix(tmp_path, capsys, config):
    root = tmp_path / "flat_aug"
    for speaker in ("spk0", "spk1"):
        for label in ("calm", "tense"):
            augmented(root / f"{label}_{speaker}.wav", 2, 200 if label == "calm" else 300)
    ds, _ = preprocess(capsys, config, "pattern", "--input", str(root), "--template", "{label}_{item}.wav",
                       "--name", "flat")
    assert ds.items == ["spk0", "spk1"]  # not spk0_orig, spk0_aug1, ...: one speaker, one item
    assert ds.manifest["classes"] == ["calm", "tense"]
    assert [sum(flags) for flags in ds.manifest["augmented"].values()] == [4, 4]
    # the README's template: the label is the emotion, not aug1 / orig
    nested = tmp_path / "nested_aug"
    for speaker in ("spk1", "spk2"):
        for take, label in enumerate(("calm", "angry")):
            augmented(nested / "set" / speaker / f"take{take}_{label}.wav", 1)
    ds, _ = preprocess(capsys, config, "pattern", "--input", str(nested), "--template", "**/{item}/take*_{label}.wav",
                       "--name", "nested")
    assert ds.manifest["classes"] == ["angry", "calm"] and ds.items == ["spk1", "spk2"]
    assert targets(ds) == {"spk1": [1, 1, 0, 0], "spk2": [1, 1, 0, 0]}


def test_an_item_of_augmented_copies_only_is_refused(tmp_path, capsys, config):
    root = tmp_path / "RAVDESS_aug"
    for actor in (1, 2):
        augmented(root / f"Actor_{actor:02d}" / f"03-01-01-01-01-01-{actor:02d}.wav", 2)
    (root / "Actor_02" / "03-01-01-01-01-01-02_orig.wav").unlink()
    code, err = xval(capsys, "preprocess", "ravdess", "--input", str(root), "--name", "x", "--config", str(config))
    one_line_error(code, err, "item Actor_02 holds augmented copies (_aug<N>) only", "keep its _orig files")


def test_items_equal_without_the_suffix_are_refused(tmp_path, capsys, config):
    root = tmp_path / "byfolder"
    for item in ("spk0", "spk0_aug1", "spk1"):
        for label in ("x", "y"):
            write(root / item / label / "1.wav")
    code, err = xval(capsys, "preprocess", "folder", "--input", str(root), "--name", "x", "--config", str(config))
    one_line_error(code, err, "items spk0, spk0_aug1 are one item (spk0)")


# --- issue 30, defect 6: a fold whose training lacks a test class is named ---------------------------

def fold_records(folder: Path, dataset: str, experiment: int = 1) -> dict[int, dict]:
    from xvalkit.store import ExperimentStore

    return ExperimentStore(folder, dataset, experiment).load_instance(1)["folds"]


def test_a_test_class_absent_from_training_is_warned_per_fold_and_recorded(tmp_path, capsys, config):
    root = tmp_path / "byfolder"
    for item in ("a", "b", "c", "d", "e", "f"):
        for label in ("x", "y"):
            write(root / item / label / "1.wav", 200 if label == "x" else 320)
    write(root / "f" / "z" / "1.wav", 500)  # class z: only speaker f says it
    preprocess(capsys, config, "folder", "--input", str(root), "--name", "rare")
    exp = write_experiment(tmp_path / "exp", {1: MLP}, dataset="rare", num_folds=3, global_parameters=[])
    code, out = xval(capsys, "plan", str(exp), "--config", str(config), stdout=True)
    assert code == 0, out
    warnings = [line for line in out.replace("\n ", " ").splitlines() if "absent from its" in line]
    assert len(warnings) == 1 and "test class(es) z absent from its 3 training items" in warnings[0]
    code, out = xval(capsys, "run", str(exp), "--cpu", "--quiet", "--config", str(config), stdout=True)
    assert code == 0, out
    assert "test class(es) z absent" in out.replace("\n", " ")
    records = fold_records(tmp_path / "exp" / "results" / "rare" / "experiment_1", "rare")
    missing = {index: fold["test_classes_not_trained"] for index, fold in records.items()}
    tested_f = next(index for index, fold in records.items() if "f" in fold["test_items"])
    assert missing == {index: (["z"] if index == tested_f else []) for index in records}
    assert warnings[0].startswith(f"warning: fold {tested_f}:")


# --- the field's protocols, end to end (issue 30) -----------------------------------------------------

def summary_notes(folder: Path, dataset: str, experiment: int = 1) -> str:
    import openpyxl

    ws = openpyxl.load_workbook(folder / f"{dataset}_exp{experiment}_results.xlsx")["summary"]
    return " ".join(str(c.value) for row in ws.iter_rows() for c in row if c.value)


def five_sessions(root: Path) -> Path:
    """IEMOCAP's five sessions, one improvised dialog each: F000 neu, F001 ang, F002 fru (dropped),
    M000 exc (-> hap), M001 sad."""
    for n in range(1, 6):
        session, dialog = f"Session{n}", f"Ses0{n}F_impro01"
        lines = []
        for i, (who, label) in enumerate((("F000", "neu"), ("F001", "ang"), ("F002", "fru"), ("M000", "exc"),
                                          ("M001", "sad"))):
            utterance = f"{dialog}_{who}"
            write(root / session / "sentences" / "wav" / dialog / f"{utterance}.wav", 150 + 60 * i + 3 * n)
            lines.append(f"[{i + 1.0:.4f} - {i + 2.0:.4f}]\t{utterance}\t{label}\t[2.5000, 3.0000, 2.5000]")
        evaluation = root / session / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("\n".join(lines) + "\n")
    return root


def test_iemocap_leave_one_session_out(tmp_path, capsys, config):
    ds, _ = preprocess(capsys, config, "iemocap", "--input", str(five_sessions(tmp_path / "IEMOCAP")),
                       "--name", "iemocap")
    assert ds.items == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
    assert ds.manifest["datapoints_per_class"] == {"neu": 5, "hap": 5, "ang": 5, "sad": 5}
    sessions = tmp_path / "exp" / "iemocap_sessions.csv"
    sessions.parent.mkdir(parents=True)
    sessions.write_text("item,fold\n" + "".join(f"Ses0{n},{n}\n" for n in range(1, 6)))
    for experiment, folds, protocol in ((1, "leave_one_group_out", "leave-one-group-out, 5 folds"),
                                        (2, "iemocap_sessions.csv", "given folds (iemocap_sessions.csv), 5 folds")):
        exp = write_experiment(tmp_path / "exp", {1: MLP}, name=f"exp{experiment}", dataset="iemocap",
                               num_experiment=experiment, num_folds=5, global_parameters=[], folds=folds)
        code, err = xval(capsys, "run", str(exp), "--cpu", "--quiet", "--config", str(config))
        assert code == 0, err
        folder = tmp_path / "exp" / "results" / "iemocap" / f"experiment_{experiment}"
        records = fold_records(folder, "iemocap", experiment).values()
        assert [r["test_items"] for r in records] == [[f"Ses0{n}"] for n in range(1, 6)]
        assert all(len(r["val_items"]) == 1 and len(r["train_items"]) == 3 for r in records)
        assert all(r["n_test"] == 4 and r["protocol"] == protocol for r in records)
        assert f"Folds: {protocol}." in summary_notes(folder, "iemocap", experiment)


def test_ravdess_in_emobox_folds_and_bad_fold_settings(tmp_path, capsys, config):
    root = tmp_path / "RAVDESS"
    for actor in range(1, 25):
        for emotion in (1, 5):  # neutral, angry
            write(root / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", 150 + 40 * emotion + actor)
    preprocess(capsys, config, "ravdess", "--input", str(root), "--name", "rav", "--labels", "neutral,angry")
    emobox = {f"Actor_{a:02d}": (a - 1) // 4 + 1 for a in range(1, 25)}  # 6 speaker folds, 4 actors each
    exp = write_experiment(tmp_path / "exp", {1: MLP}, dataset="rav", num_folds=6, global_parameters=[], folds=emobox)
    code, err = xval(capsys, "run", str(exp), "--cpu", "--quiet", "--config", str(config))
    assert code == 0, err
    records = fold_records(tmp_path / "exp" / "results" / "rav" / "experiment_1", "rav")
    assert [r["test_items"] for r in records.values()] == [[f"Actor_{a:02d}" for a in range(f, f + 4)]
                                                           for f in range(1, 25, 4)]
    assert all(len(r["val_items"]) == 5 and len(r["train_items"]) == 15 and r["n_test"] == 8 for r in records.values())
    bad = [({"folds": {**emobox, "Actor_99": 1}}, ["Actor_99 not an item of the dataset"]),
           ({"folds": "by_actor"}, ["folds = 'by_actor'", "a csv file of item,fold", "'leave_one_group_out'"]),
           ({"folds": "missing.csv"}, ["folds = 'missing.csv': no such file"]),
           ({"folds": emobox, "num_repeats": 2}, ["num_repeats = 2", "remove num_repeats"]),
           ({"folds": emobox, "num_folds": 5}, ["num_folds = 5 but folds = ... names 6 folds"]),
           ({"folds": "leave_one_group_out", "num_folds": 5}, ["makes 24 folds on dataset 'rav'"]),
           ({"validation": "speaker"}, ["validation = 'speaker'", "'within_training_items'"]),
           ({"validation": "within_training_items", "num_folds": 1}, ["not num_folds = 1"]),
           ({"validation": "within_training_items", "num_repeats": 2}, ["num_repeats with validation"])]
    for settings, words in bad:
        settings = {"num_folds": 6, **settings}
        exp = write_experiment(tmp_path / "bad", {1: MLP}, dataset="rav", global_parameters=[], **settings)
        code, err = xval(capsys, "run", str(exp), "--cpu", "--config", str(config))
        one_line_error(code, err, *words)
    exp = write_experiment(tmp_path / "bad", {1: MLP}, dataset="rav", num_folds=6, global_parameters=[], folds=emobox)
    code, err = xval(capsys, "run", str(exp), "--cpu", "--folds", "3", "--config", str(config))
    one_line_error(code, err, "--folds 3", "names its folds", "remove --folds")


def test_tess_leave_one_speaker_out_with_validation_within_the_training_speaker(tmp_path, capsys, config):
    root = tmp_path / "TESS_aug"  # an augmented TESS: every file as _orig and one _aug1 copy
    words = ("back", "bar", "base", "bath", "bean")
    for speaker in ("OAF", "YAF"):
        for e, emotion in enumerate(("angry", "sad")):
            for w, word in enumerate(words):
                augmented(root / f"{speaker}_{emotion}" / f"{speaker}_{word}_{emotion}.wav", 1, 180 + 120 * e + 5 * w)
    ds, _ = preprocess(capsys, config, "tess", "--input", str(root), "--name", "tess", "--labels", "angry,sad")
    assert ds.items == ["OAF", "YAF"] and ds.manifest["datapoints_per_class"] == {"angry": 20, "sad": 20}
    # without the setting, TESS keeps its refusal: no speaker is left to validate on
    exp = write_experiment(tmp_path / "plain", {1: MLP}, dataset="tess", num_folds=2, global_parameters=[],
                           folds="leave_one_group_out")
    code, err = xval(capsys, "run", str(exp), "--cpu", "--config", str(config))
    one_line_error(code, err, "leave-one-group-out with 2 foldable items", "too few for 1 validation item")
    wider = [p.replace('"mlp"', '"wider"').replace("(8,)", "(16,)") for p in MLP]
    exp = write_experiment(tmp_path / "exp", {1: MLP, 2: wider}, dataset="tess", num_folds=2, global_parameters=[],
                           folds="leave_one_group_out", validation="within_training_items")
    exp.write_text(exp.read_text().replace("num_folds = 2\n", ""))  # leave-one-out: as many folds as items
    code, out = xval(capsys, "status", str(exp), "--config", str(config), stdout=True)
    assert code == 0 and "1, 2" in out, out  # both folds pending
    code, err = xval(capsys, "run", str(exp), "--cpu", "--quiet", "--config", str(config))
    assert code == 0, err
    folder = tmp_path / "exp" / "results" / "tess" / "experiment_1"
    records = fold_records(folder, "tess")
    assert [(r["train_items"], r["val_items"], r["test_items"]) for r in records.values()] == [
        (["YAF"], [], ["OAF"]), (["OAF"], [], ["YAF"])]
    for r in records.values():
        speaker = r["train_items"][0]
        # round(0.2 x 10 files) = 2 files of the training speaker validate, one per emotion, named as
        # the corpus names them: their _orig and _aug1 datapoints both stay out of training
        assert len(r["val_sources"]) == 2 and all(s.startswith(f"{speaker}_") for s in r["val_sources"])
        assert {s.split("/")[0] for s in r["val_sources"]} == {f"{speaker}_angry", f"{speaker}_sad"}
        assert r["n_train"] == 8 * 2  # 8 files, _orig and _aug1
        assert r["n_val"] == 2 and r["n_test"] == 10  # originals only
        assert r["excluded_augmented"] == {"val": 2, "test": 10}
    protocol = ("leave-one-group-out, 2 folds; validation within the training items (held-out source files), "
                "so early stopping was speaker-dependent; with 2 folds, quote the two fold results (folds sheet): "
                "a std or p over two numbers rests on 1 degree of freedom")
    assert all(r["protocol"] == protocol for r in records.values())
    assert f"Folds: {protocol}." in summary_notes(folder, "tess")
    # two cross-speaker results: no std, no p, the comparison not tested
    import pandas as pd

    summary = pd.read_csv(folder / "summary.csv").set_index("ID")
    assert summary.filter(like="_std_").isna().all().all()
    assert summary.loc[1, "significance"] == "best" or summary.loc[2, "significance"] == "best"
    other = summary[summary["significance"] != "best"].iloc[0]
    assert other["significance"] == "untested: 2 folds (1 degree of freedom): quote the two fold results"
    assert pd.isna(other["p_value"]) and pd.isna(other["prob_best_better"])
    assert summary.filter(like="test_mean_").notna().all().all()
