"""Reading and writing audio files, shared by `xval preprocess` and `xval augment`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .. import atomic

# What soundfile (libsndfile) reads; mp3 needs libsndfile >= 1.1, which the soundfile wheels ship.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioReadError(Exception):
    """A file that is not readable audio (corrupt, truncated, not audio at all)."""


def find_audio_files(root: str | Path) -> list[Path]:
    """Audio files under `root` (recursively, sorted, hidden files skipped)."""
    root = Path(root)
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate); stereo and multichannel are averaged to mono."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioReadError(f"{path}: not readable audio ({exc})") from None
    if audio.shape[0] == 0:
        raise AudioReadError(f"{path}: no samples")
    return audio.mean(axis=1, dtype=np.float32), int(sr)


def write_wav(path: str | Path, audio: np.ndarray, sr: int, subtype: str = "FLOAT") -> None:
    """Write a mono wav atomically (float32 samples by default, so nothing is clipped or dithered)."""
    with atomic.atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), sr, subtype=subtype, format="WAV")
