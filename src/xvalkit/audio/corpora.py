"""Corpus presets for `xval preprocess`: each one a small parser of file names over one shared listing.

`read(preset, root, labels=..., merge=..., rest=...)` lists the audio files under root, lets the
preset name each file's (foldable item, label) or say why it is skipped, then applies the label
merging (`--merge exc=hap`) and selection (`--labels neu,hap,ang,sad`) and numbers the classes.
Every choice it made is recorded in `Corpus.description` (the manifest's `corpus`): the protocol,
the labels kept and merged, the files dropped per label and the files ignored as not part of it.

An augmented corpus (`xval augment`: x_orig.wav, x_aug1.wav ...) is read as the corpus it came
from: the suffix is removed before any preset or pattern sees the name, and it alone says which
files are augmented copies. Otherwise a preset skips every file, and a pattern can capture the
suffix into the item (spk0_orig tested while spk0_aug1 trains) or the label.

A preset only looks at names (and, for IEMOCAP, the label files); what the audio holds is checked
while extracting features.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..data import strip_augmentation
from ..errors import XvalError
from .io import AUDIO_EXTENSIONS, find_audio_files


@dataclass(frozen=True)
class Entry:
    """One audio file: its path, foldable item and class index."""

    path: Path
    item: str
    label: int
    augmented: bool = False  # an `xval augment` copy (<stem>_aug<N>), from its name


@dataclass
class Corpus:
    """The labelled files of a corpus, the files skipped by name (with why), and what it is."""

    root: Path
    entries: list[Entry]
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # lines for the user (printed with the summary)

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


class RelPath(NamedTuple):
    """A file's path below --input, as its parts: a pathlib path per file (relative_to) cost as
    much as listing the files."""

    parts: tuple[str, ...]

    @property
    def stem(self) -> str:
        return os.path.splitext(self.parts[-1])[0]

    @property
    def folder(self) -> str:
        """The name of the folder that holds the file ('' at the top)."""
        return self.parts[-2] if len(self.parts) > 1 else ""

    def as_posix(self) -> str:
        return "/".join(self.parts)

    def without_augmentation(self) -> tuple[RelPath, bool | None]:
        """The path as the corpus named it before `xval augment`, and whether it is an augmented copy."""
        stem, augmented = strip_augmentation(self.stem)
        if augmented is None:
            return self, None
        extension = self.parts[-1][len(self.stem):]
        return RelPath(self.parts[:-1] + (stem + extension,)), augmented


class Skip(Exception):
    """A file whose name does not fit the preset; the message says why."""


class Preset:
    """How one corpus names its files. Subclasses set the class attributes and `parse`."""

    name = ""
    label = ""  # where the label comes from, in words (recorded in the manifest)
    foldable_item = ""  # where the foldable item comes from, in words
    vocabulary: tuple[str, ...] | None = None  # the corpus's classes in order; None: the labels found, sorted
    default_labels: tuple[str, ...] | None = None  # the protocol's classes when --labels is not given
    default_merge: dict[str, str] = {}  # the protocol's merging when --merge is not given

    def prepare(self, root: Path) -> None:
        """Read what the names need besides themselves (IEMOCAP's label files)."""

    def ignore(self, rel: RelPath) -> str | None:
        """Why a file is not part of the corpus at all (not a fault, only counted), or None."""
        return None

    def parse(self, rel: RelPath) -> tuple[str, str]:
        """(foldable item, label) of the file at `rel` (relative to --input); Skip(why) if misnamed."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"corpus": self.name, "label": self.label, "foldable_item": self.foldable_item}


# RAVDESS emotion codes 01..08, in code order.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


class Ravdess(Preset):
    """RAVDESS: `MM-VV-EE-II-SS-RR-AA.wav` (folders Actor_01.. or flat); label emotion EE, item actor AA."""

    name = "ravdess"
    label = "emotion code EE of MM-VV-EE-II-SS-RR-AA"
    foldable_item = "actor AA"
    NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")

    def __init__(self, classes: tuple[str, ...] = EMOTIONS):
        self.vocabulary = tuple(classes)

    def parse(self, rel):
        match = self.NAME.match(rel.stem)
        if not match:
            raise Skip("file name not in RAVDESS form MM-VV-EE-II-SS-RR-AA")
        emotion, actor = int(match.group(3)), int(match.group(7))
        if not 1 <= emotion <= len(self.vocabulary):
            raise Skip(f"emotion code {match.group(3)} is not one of 01..{len(self.vocabulary):02d}")
        return f"Actor_{actor:02d}", self.vocabulary[emotion - 1]

    def describe(self):
        codes = {f"{code:02d}": name for code, name in enumerate(self.vocabulary, start=1)}
        return {**super().describe(), "label_codes": codes}


class LabelledFolder(Preset):
    """`DIR/<foldable item>/<label>/<file>`; classes are the label folders, sorted."""

    name = "folder"
    label = "<label> folder"
    foldable_item = "<item> folder"

    def parse(self, rel):
        if len(rel.parts) != 3:
            raise Skip("not at <foldable item>/<label>/<file> below --input")
        return rel.parts[0], rel.parts[1]


class EmoDB(Preset):
    """EMO-DB (Berlin): `03a01Fa.wav`, speaker (2 digits), text code (3), emotion letter, version."""

    name = "emodb"
    label = "emotion letter, 6th character (W L E A F T N)"
    foldable_item = "speaker, first two digits"
    LETTERS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
               "T": "sadness", "N": "neutral"}
    vocabulary = tuple(LETTERS.values())
    NAME = re.compile(r"^(\d{2})([a-z]\d{2})([A-Z])([a-z])$")

    def parse(self, rel):
        match = self.NAME.match(rel.stem)
        if not match:
            raise Skip("file name not in EMO-DB form SSTTTEV (speaker, text, emotion, version: 03a01Fa)")
        letter = match.group(3)
        if letter not in self.LETTERS:
            raise Skip(f"emotion letter {letter} is not one of {' '.join(self.LETTERS)}")
        return match.group(1), self.LETTERS[letter]


class TESS(Preset):
    """TESS (Toronto): folders `OAF_angry/` ... holding `OAF_back_angry.wav`; two speakers, OAF and YAF."""

    name = "tess"
    label = "emotion from the folder <speaker>_<emotion>"
    foldable_item = "speaker OAF or YAF, from the file name"
    vocabulary = ("angry", "disgust", "fear", "happy", "neutral", "pleasant_surprise", "sad")
    # The published folders spell some emotions differently (YAF_pleasant_surprised, OAF_Fear).
    SPELLINGS = {"ps": "pleasant_surprise", "pleasant_surprised": "pleasant_surprise"}
    FOLDER = re.compile(r"^(OAF|YAF)_(\w+)$", re.IGNORECASE)
    FILE = re.compile(r"^(OAF|YAF)_", re.IGNORECASE)

    def parse(self, rel):
        folder = self.FOLDER.match(rel.folder)
        if not folder:
            raise Skip("not in a folder <OAF|YAF>_<emotion> (OAF_angry)")
        speaker = self.FILE.match(rel.stem)
        if not speaker:
            raise Skip("file name does not start with the speaker OAF_ or YAF_")
        emotion = folder.group(2).lower()
        emotion = self.SPELLINGS.get(emotion, emotion)
        if emotion not in self.vocabulary:
            raise Skip(f"emotion {folder.group(2)} is not one of {', '.join(self.vocabulary)} (or ps)")
        return speaker.group(1).upper(), emotion


class FSDD(Preset):
    """Free Spoken Digit Dataset: `{digit}_{speaker}_{index}.wav`; label the digit, item the speaker."""

    name = "fsdd"
    label = "digit, before the first _"
    foldable_item = "speaker, between the underscores"
    vocabulary = tuple("0123456789")
    NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)$")

    def parse(self, rel):
        match = self.NAME.match(rel.stem)
        if not match:
            raise Skip("file name not in FSDD form {digit}_{speaker}_{index} (7_jackson_32)")
        return match.group(2), match.group(1)


class SpeechCommands(Preset):
    """Speech Commands: `<word>/{speaker hash}_nohash_{n}.wav`; `_background_noise_` is not a class."""

    name = "speechcommands"
    label = "word, the folder"
    foldable_item = "speaker hash, before _nohash_"
    NOISE = "_background_noise_"
    NAME = re.compile(r"^([0-9a-fA-F]+)_nohash_(\d+)$")

    def ignore(self, rel):
        return "background noise (not a class)" if rel.parts[0] == self.NOISE else None

    def parse(self, rel):
        if len(rel.parts) != 2:
            raise Skip("not at <word>/<file> below --input")
        match = self.NAME.match(rel.stem)
        if not match:
            raise Skip("file name not in Speech Commands form {speaker hash}_nohash_{n}")
        return match.group(1), rel.parts[0]

    def describe(self):
        # The official validation_list.txt / testing_list.txt split is not used: the folds are
        # grouped by speaker instead.
        return {**super().describe(), "official_split": "not used (grouped folds by speaker)"}


class IEMOCAP(Preset):
    """IEMOCAP: `Session{n}/sentences/wav/<dialog>/<utterance>.wav`, labels in
    `Session{n}/dialog/EmoEvaluation/<dialog>.txt`; item the session (Ses01), or the speaker (session
    + letter of the last part: Ses01F) with group="speaker".

    The field evaluates IEMOCAP leave-one-session-out (Busso et al. 2008; 5 sessions): a session's two
    actors speak in the same dialogues, so grouping by speaker can test Ses01F while Ses01M, her
    partner in those dialogues, trains."""

    name = "iemocap"
    label = "emotion in Session{n}/dialog/EmoEvaluation/<dialog>.txt"
    GROUPS = {"session": "session, from the utterance's name (Ses01)",
              "speaker": "speaker: session + first letter of the utterance's last part (Ses01F)"}
    vocabulary = ("neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx")
    default_labels = ("neu", "hap", "ang", "sad")
    default_merge = {"exc": "hap"}
    LINE = re.compile(r"^\[[^\]]*\]\s+(\S+)\s+(\S+)\s+\[")
    UTTERANCE = re.compile(r"^(Ses\d{2})[FM]_.*_([FM])\d+$")

    def __init__(self, group: str = "session") -> None:
        if group not in self.GROUPS:
            raise XvalError(f"--group {group}: give session (leave-one-session-out, the usual protocol) or speaker")
        self.group = group
        self.foldable_item = self.GROUPS[group]
        self.labels: dict[str, str] = {}

    def describe(self):
        return {**super().describe(), "group": self.group}

    def prepare(self, root):
        for path in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                match = self.LINE.match(line)
                if match:
                    self.labels[match.group(1)] = match.group(2)

    def ignore(self, rel):
        # Only utterances count: the sessions also hold whole-dialog recordings (dialog/wav).
        if len(rel.parts) < 4 or rel.parts[1:3] != ("sentences", "wav"):
            return "not an utterance (outside Session*/sentences/wav)"
        return None

    def parse(self, rel):
        match = self.UTTERANCE.match(rel.stem)
        if not match:
            raise Skip("file name not in IEMOCAP form Ses01F_<dialog>_F000")
        label = self.labels.get(rel.stem)
        if label is None:
            dialog = rel.folder
            raise Skip(f"no label line for it in {rel.parts[0]}/dialog/EmoEvaluation/{dialog}.txt")
        if label not in self.vocabulary:
            raise Skip(f"label {label} is not one of {' '.join(self.vocabulary)}")
        return match.group(1) + (match.group(2) if self.group == "speaker" else ""), label


def template_regex(template: str) -> str:
    """A glob-like template -> its regex: {item} and {label} are one folder or name part each
    (no /), * any characters but /, ** any folders, ? one character; the rest is literal.

    '{item}/{label}_*.wav' -> '(?P<item>[^/]+?)/(?P<label>[^/]+?)_[^/]*\\.wav'
    """
    pieces = {"{item}": "(?P<item>[^/]+?)", "{label}": "(?P<label>[^/]+?)", "**/": "(?:[^/]+/)*",
              "**": ".*", "*": "[^/]*", "?": "[^/]"}
    tokens = re.split(r"(\{item\}|\{label\}|\*\*/|\*\*|\*|\?)", template)
    return "".join(pieces.get(token) or re.escape(token) for token in tokens)


class Pattern(Preset):
    """Any corpus: a regex with named groups `item` and `label`, matched against the whole path
    relative to --input (with / between folders)."""

    name = "pattern"

    def __init__(self, regex: str | None = None, template: str | None = None):
        if (regex is None) == (template is None):
            raise XvalError("pattern: give --regex or --template (one of them)")
        if template is not None:
            if "{item}" not in template or "{label}" not in template:
                raise XvalError(f"--template {template!r}: it needs both {{item}} and {{label}} "
                                "('{item}/{label}_*.wav')")
        self.given = f"--regex {regex}" if template is None else f"--template {template}"
        regex = regex if template is None else template_regex(template)
        try:
            self.regex = re.compile(regex)
        except re.error as exc:
            raise XvalError(f"--regex {regex!r}: not a valid regular expression ({exc})") from None
        missing = [group for group in ("item", "label") if group not in self.regex.groupindex]
        if missing:
            raise XvalError(f"--regex {regex!r}: it has no named group {' or '.join(missing)}; "
                            "write (?P<item>...) and (?P<label>...) around the foldable item and the label")
        self.label = f"{{label}} of {self.given}"
        self.foldable_item = f"{{item}} of {self.given}"

    def parse(self, rel):
        match = self.regex.fullmatch(rel.as_posix())
        if not match:
            raise Skip(f"path does not match {self.given}")
        item, label = match.group("item"), match.group("label")
        if not item or not label:
            raise Skip(f"{self.given.split()[0]} matched an empty item or label")
        return item, label


PRESETS = {"ravdess": Ravdess, "folder": LabelledFolder, "emodb": EmoDB, "tess": TESS, "fsdd": FSDD,
           "speechcommands": SpeechCommands, "iemocap": IEMOCAP, "pattern": Pattern}


def parse_merge(pairs: list[str] | None) -> dict[str, str] | None:
    """['exc=hap', 'a=b,c=d'] -> {'exc': 'hap', 'a': 'b', 'c': 'd'}; ['none'] -> {}; None stays None."""
    if pairs is None:
        return None
    merge: dict[str, str] = {}
    for text in (part.strip() for pair in pairs for part in pair.split(",")):
        if not text or text == "none":
            continue
        source, sep, target = (s.strip() for s in text.partition("="))
        if not sep or not source or not target:
            raise XvalError(f"--merge {text!r}: write LABEL=CLASS (exc=hap), or none to merge nothing")
        if source in merge and merge[source] != target:
            raise XvalError(f"--merge: {source} is merged into both {merge[source]} and {target}; choose one")
        merge[source] = target
    chained = sorted(set(merge) & set(merge.values()))
    if chained:
        raise XvalError(f"--merge: {chained[0]} is merged into another class and has others merged into it; "
                        "merge every label into the final class directly")
    return merge


ALL = "all"  # --labels all: every label, whatever the preset's protocol keeps


def parse_labels(text: str | None) -> tuple[str, ...] | str | None:
    """'neu,hap' -> ('neu', 'hap'); 'all' -> ALL; None (not given: the preset's default) stays None."""
    if text is None or text.strip() == ALL:
        return text and ALL
    labels = tuple(label.strip() for label in text.split(",") if label.strip())
    if not labels:
        raise XvalError("--labels: give the classes to keep separated by commas (neu,hap,ang,sad), or all")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise XvalError(f"--labels: {duplicates[0]} is given twice")
    return labels


def read(preset: Preset, root: str | Path, labels: tuple[str, ...] | str | None = None,
         merge: dict[str, str] | None = None, rest: str | None = None) -> Corpus:
    """The corpus under `root` as `preset` names it.

    merge: {label: class} applied first (None: the preset's default); labels: the classes kept, in
    this order (None: the preset's default, else every label; ALL: every label); rest: a class for
    every other label (None: those files are dropped, and counted per label in the description).
    """
    root = Path(root)
    files = audio_files(root)
    preset.prepare(root)
    merge = dict(preset.default_merge if merge is None else merge)
    labels = preset.default_labels if labels is None else None if labels == ALL else labels
    found, skipped, ignored = _parse_all(preset, root, files)
    classes = _classes(preset, {label for _, _, label, _ in found}, labels, merge, rest)
    index = {name: i for i, name in enumerate(classes)}
    entries, dropped = [], Counter()
    for path, item, label, augmented in found:
        name = merge.get(label, label)
        if name not in index:
            if rest is None:
                dropped[label] += 1
                continue
            name = rest
        entries.append(Entry(path, item, index[name], bool(augmented)))
    check_items(root, {entry.item for entry in entries})
    check_originals(root, {(entry.item, entry.augmented) for entry in entries})

    description = preset.describe()
    description["classes_kept"] = list(labels) if labels is not None else "all"
    description["merge"] = merge
    if rest is not None:
        description["other_labels_class"] = rest
    description["dropped_files_per_label"] = dict(sorted(dropped.items()))
    description["ignored_files"] = dict(ignored)
    suffixes = Counter(augmented for *_, augmented in found if augmented is not None)
    if suffixes:
        description["augmentation"] = {"original_files": suffixes[False], "augmented_files": suffixes[True],
                                       "names": "_orig / _aug<N> removed before parsing"}
    notes = []
    if dropped:
        notes.append(f"dropped {sum(dropped.values())} files of other labels: "
                     + ", ".join(f"{label} {n}" for label, n in sorted(dropped.items())))
    if ignored:
        notes.append("ignored " + "; ".join(f"{n} {why}" for why, n in ignored.items()))
    return Corpus(root, entries, classes, skipped, description, notes)


def check_items(root: Path, items: set[str]) -> None:
    """Refuse items that are one item once an augmentation suffix is removed (spk0, spk0_aug1): its
    copies would be tested while the others train."""
    by_base: dict[str, list[str]] = {}
    for item in sorted(items):
        by_base.setdefault(strip_augmentation(item)[0], []).append(item)
    for base, names in by_base.items():
        if len(names) > 1:
            raise XvalError(f"--input {root}: items {', '.join(names)} are one item ({base}) with the "
                            "_orig / _aug<N> suffix of `xval augment` removed; name the item so that it "
                            "excludes the suffix")


def check_originals(root: Path, kinds: set[tuple[str, bool]]) -> None:
    """Refuse an item of augmented copies only: nothing of it could be validated or tested on."""
    items = {item for item, _ in kinds}
    only_copies = sorted(item for item in items if (item, False) not in kinds)
    if only_copies:
        raise XvalError(f"--input {root}: item {only_copies[0]} holds augmented copies (_aug<N>) only"
                        f"{f' (and {len(only_copies) - 1} more items)' if len(only_copies) > 1 else ''}; "
                        "keep its _orig files (xval augment writes them) to validate and test on")


def _parse_all(preset: Preset, root: Path, files: list[Path]):
    """([(path, item, label, augmented or None)], [(path, why skipped)], Counter of why files were ignored)."""
    found, skipped, ignored = [], [], Counter()
    depth = len(root.parts)  # the files were listed below root: their parts start with its parts
    for path in files:
        rel, augmented = RelPath(path.parts[depth:]).without_augmentation()
        why_ignored = preset.ignore(rel)
        if why_ignored:
            ignored[why_ignored] += 1
            continue
        try:
            item, label = preset.parse(rel)
        except Skip as exc:
            skipped.append((path, str(exc)))
            continue
        found.append((path, item, label, augmented))
    return found, skipped, ignored


def _classes(preset: Preset, found: set[str], labels: tuple[str, ...] | None, merge: dict[str, str],
             rest: str | None) -> list[str]:
    """The class names in index order; XvalError for a --merge or --labels that names no label."""
    known = preset.vocabulary or tuple(sorted(found))
    # With no file named right there is nothing to check the labels against: the files' warnings
    # and "none of its files is usable" say what is wrong.
    check = bool(found or preset.vocabulary)
    unknown_sources = [source for source in merge if source not in known]
    if unknown_sources and check:
        source = unknown_sources[0]
        where = f"of {preset.name}" if preset.vocabulary else "found under --input"
        raise XvalError(f"--merge {source}={merge[source]}: {source} is not a label {where} ({', '.join(known)})")
    merged = _merged_order(known, merge)
    if preset.vocabulary is None:
        merged.sort()  # the labels found: sorted, merged or not
    classes = list(merged)
    if labels is not None:
        missing = [label for label in labels if label not in merged]
        if missing and check:
            raise XvalError(f"--labels {missing[0]}: not a class of this corpus after merging; "
                            f"its classes: {', '.join(merged)}")
        classes = list(labels)
    if rest is not None:
        if rest in classes:
            raise XvalError(f"the class for the other labels, {rest}, is also one of --labels; remove it there")
        classes.append(rest)
    return classes


def _merged_order(known: tuple[str, ...], merge: dict[str, str]) -> list[str]:
    """The classes after merging, in the corpus's order: a merged label's new class takes the place
    of the first label that goes into it."""
    order: list[str] = []
    for label in known:
        name = merge.get(label, label)
        if name not in order:
            order.append(name)
    return order
