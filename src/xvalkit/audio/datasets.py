"""Corpus readers for `xval preprocess`: a folder of audio -> labelled files grouped by foldable item.

- `ravdess`: RAVDESS names `MM-VV-EE-II-SS-RR-AA.wav` (folders Actor_01.. or flat); the label is
  the emotion EE, the foldable item the actor AA ("Actor_07").
- `labelled_folder`: `DIR/<foldable item>/<label>/*.wav`; classes are the label folders, sorted.
- `demo`: writes the built-in demo corpus as wav files in RAVDESS naming, then reads it as RAVDESS.

Readers only look at names; what the audio holds is checked while extracting features.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import XvalError
from .io import AUDIO_EXTENSIONS, find_audio_files, write_wav

# RAVDESS emotion codes 01..08, in code order.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class Entry:
    """One audio file: its path, foldable item and class index."""

    path: Path
    item: str
    label: int


@dataclass
class Corpus:
    """The labelled files of a corpus, the files skipped by name (with why), and what it is."""

    root: Path
    entries: list[Entry]
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each item's files together (stable: path order within an item), so that their features
        # land in consecutive rows and an item's array needs no copy (see preprocess.build_dataset).
        self.entries = sorted(self.entries, key=lambda entry: entry.item)


def audio_files(root: str | Path) -> list[Path]:
    """The audio files under `root`; XvalError if the folder is missing or holds no audio."""
    root = Path(root)
    if not root.is_dir():
        raise XvalError(f"--input {root}: no such folder; give the folder that holds the corpus")
    files = find_audio_files(root)
    if not files:
        raise XvalError(
            f"--input {root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in it or its subfolders"
        )
    return files


def ravdess(root: str | Path, classes: tuple[str, ...] = EMOTIONS) -> Corpus:
    """Read a RAVDESS corpus: label = emotion code EE (01 = classes[0]), item = actor AA."""
    root = Path(root)
    entries, skipped = [], []
    for path in audio_files(root):
        match = RAVDESS_NAME.match(path.stem)
        if not match:
            skipped.append((path, "file name not in RAVDESS form MM-VV-EE-II-SS-RR-AA"))
            continue
        emotion, actor = int(match.group(3)), int(match.group(7))
        if not 1 <= emotion <= len(classes):
            skipped.append((path, f"emotion code {match.group(3)} is not one of 01..{len(classes):02d}"))
            continue
        entries.append(Entry(path, f"Actor_{actor:02d}", emotion - 1))
    description = {
        "corpus": "ravdess",
        "label": "emotion code EE of MM-VV-EE-II-SS-RR-AA",
        "foldable_item": "actor AA",
        "label_codes": {f"{code:02d}": name for code, name in enumerate(classes, start=1)},
    }
    return Corpus(root, entries, list(classes), skipped, description)


def labelled_folder(root: str | Path) -> Corpus:
    """Read `root/<foldable item>/<label>/<file>`; classes are the label names, sorted."""
    root = Path(root)
    found, skipped = [], []
    for path in audio_files(root):
        parts = path.relative_to(root).parts
        if len(parts) != 3:
            skipped.append((path, "not at <foldable item>/<label>/<file> below --input"))
        else:
            found.append((path, parts[0], parts[1]))
    classes = sorted({label for _, _, label in found})
    index = {label: i for i, label in enumerate(classes)}
    entries = [Entry(path, item, index[label]) for path, item, label in found]
    description = {"corpus": "folder", "label": "<label> folder", "foldable_item": "<item> folder"}
    return Corpus(root, entries, classes, skipped, description)


def write_demo_corpus(folder: str | Path, sr: int = 16000, duration: float = 1.0) -> Path:
    """Write the demo corpus (xvalkit.demo) as RAVDESS-named wavs: vowel v -> emotion code v+1,
    speaker spkNN -> actor NN, take -> statement and repetition codes. Returns the folder."""
    from ..demo import utterances

    folder = Path(folder)
    for utt in utterances(sr=sr, duration=duration):
        actor = int(utt.speaker.removeprefix("spk"))
        statement, repetition = divmod(utt.take, 2)
        name = f"03-01-{utt.vowel + 1:02d}-01-{statement + 1:02d}-{repetition + 1:02d}-{actor:02d}.wav"
        write_wav(folder / f"Actor_{actor:02d}" / name, utt.audio, sr)
    return folder


def demo(folder: str | Path, sr: int = 16000, duration: float = 1.0) -> Corpus:
    """Write the demo corpus to `folder` and read it back as a RAVDESS corpus of vowel classes."""
    from ..demo import VOWELS

    corpus = ravdess(write_demo_corpus(folder, sr, duration), classes=VOWELS)
    corpus.description.update(
        corpus="demo",
        source="xvalkit built-in demo corpus (synthetic speakers) written as RAVDESS-named wavs",
        label="vowel, stored as RAVDESS emotion code EE (01..04 = a, e, i, u)",
        foldable_item="synthetic speaker, stored as actor AA",
        demo_sr=sr, demo_duration_s=duration,
    )
    return corpus
