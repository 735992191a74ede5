"""Corpus readers for `xval preprocess`: a folder of audio -> labelled files grouped by foldable item.

- `ravdess`: RAVDESS names `MM-VV-EE-II-SS-RR-AA.wav` (folders Actor_01.. or flat); the label is
  the emotion EE, the foldable item the actor AA ("Actor_07").
- `labelled_folder`: `DIR/<foldable item>/<label>/*.wav`; classes are the label folders, sorted.
- `demo`: writes the built-in demo corpus as wav files in RAVDESS naming, then reads it as RAVDESS.
- the other corpora (EMO-DB, TESS, FSDD, Speech Commands, IEMOCAP, a regex): see corpora.py,
  where every preset is a parser of names over one shared listing.

Readers only look at names; what the audio holds is checked while extracting features.
"""

from __future__ import annotations

from pathlib import Path

from .corpora import EMOTIONS, Corpus, Entry, LabelledFolder, Ravdess, audio_files, read  # noqa: F401 (re-exported)
from .io import write_wav


def ravdess(root: str | Path, classes: tuple[str, ...] = EMOTIONS, **selection) -> Corpus:
    """Read a RAVDESS corpus: label = emotion code EE (01 = classes[0]), item = actor AA.

    `selection`: labels, merge, rest, as corpora.read takes them."""
    return read(Ravdess(classes), root, **selection)


def labelled_folder(root: str | Path, **selection) -> Corpus:
    """Read `root/<foldable item>/<label>/<file>`; classes are the label names, sorted."""
    return read(LabelledFolder(), root, **selection)


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
