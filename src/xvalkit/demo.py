"""The built-in demo corpus: vowel-like harmonic sounds from synthetic speakers.

Deterministic, no download, a second to make. Each speaker has its own pitch and vocal-tract
length (formants scale with it), so a model must generalise across speakers, the foldable items,
to classify the vowel. `demo` targets are the vowel class; `demo_pitch` targets are the
fundamental frequency in hundreds of Hz (a regression task on the same sounds).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

VOWELS = ("a", "e", "i", "u")
# First three formants (Hz) of an average adult voice.
FORMANTS = {"a": (730, 1090, 2440), "e": (530, 1840, 2480), "i": (270, 2290, 3010), "u": (300, 870, 2240)}
NUM_SPEAKERS = 8
UTTERANCES_PER_VOWEL = 12
SEED = 20261124


@dataclass(frozen=True)
class Utterance:
    speaker: str  # foldable item, e.g. "spk01"
    vowel: int  # class index into VOWELS
    f0: float  # fundamental frequency, Hz
    take: int
    audio: np.ndarray  # float32 mono in [-1, 1]


def _speaker_traits(rng: np.random.Generator) -> tuple[float, float]:
    """(mean pitch in Hz, formant scale) of one synthetic speaker."""
    return float(rng.uniform(95, 260)), float(rng.uniform(0.88, 1.18))


def synthesize(vowel: str, f0: float, formant_scale: float, sr: int, duration: float,
               rng: np.random.Generator) -> np.ndarray:
    """One vowel: a harmonic series with slight vibrato, shaped by three formant resonances."""
    t = np.arange(int(sr * duration)) / sr
    vibrato = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sr
    harmonics = np.arange(1, int((sr / 2) // (f0 * 1.02)))
    freqs = harmonics * f0
    envelope = np.zeros_like(freqs, dtype=float)
    for formant, bandwidth in zip(FORMANTS[vowel], (90, 110, 170)):
        centre = formant * formant_scale
        envelope += 1.0 / (1.0 + ((freqs - centre) / bandwidth) ** 2)
    envelope *= harmonics ** -0.5  # glottal source tilt
    wave = (envelope[:, None] * np.sin(np.outer(harmonics, phase) + rng.uniform(0, 2 * np.pi, (len(harmonics), 1)))).sum(0)
    attack = np.minimum(1, np.minimum(t, t[-1] - t) / 0.03)  # 30 ms fade in and out
    wave = wave * attack + 0.01 * rng.standard_normal(t.shape)
    return (0.9 * wave / np.max(np.abs(wave))).astype(np.float32)


def utterances(sr: int = 8000, duration: float = 0.3, seed: int = SEED) -> Iterator[Utterance]:
    """Every utterance of the demo corpus, always the same for the same arguments."""
    rng = np.random.default_rng(seed)
    for s in range(NUM_SPEAKERS):
        mean_f0, scale = _speaker_traits(rng)
        for v, vowel in enumerate(VOWELS):
            for take in range(UTTERANCES_PER_VOWEL):
                f0 = mean_f0 * float(rng.uniform(0.85, 1.15))
                audio = synthesize(vowel, f0, scale, sr, duration, rng)
                yield Utterance(f"spk{s + 1:02d}", v, f0, take, audio)


def log_spectrogram(audio: np.ndarray, n_fft: int = 128, hop: int = 64, frames: int = 32,
                    bins: int = 64) -> np.ndarray:
    """(time, frequency) log-magnitude STFT, cropped to frames x bins."""
    window = np.hanning(n_fft).astype(np.float32)
    count = 1 + (len(audio) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    spectrum = np.abs(np.fft.rfft(audio[index] * window, axis=1))
    return np.log1p(10 * spectrum[:frames, :bins]).astype(np.float32)


def demo_dataset(kind: str = "demo") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Predictors, targets and manifest of `demo` (vowel classes) or `demo_pitch` (regression)."""
    feats: dict[str, list] = {}
    labels: dict[str, list] = {}
    for utt in utterances():
        feats.setdefault(utt.speaker, []).append(log_spectrogram(utt.audio))
        labels.setdefault(utt.speaker, []).append(utt.vowel if kind == "demo" else utt.f0 / 100.0)
    dtype = np.int64 if kind == "demo" else np.float32
    predictors = {item: np.stack(x) for item, x in feats.items()}
    targets = {item: np.asarray(y, dtype=dtype) for item, y in labels.items()}
    manifest = {
        "source": "xvalkit built-in demo corpus (synthetic speakers)",
        "task_type": "classification" if kind == "demo" else "regression",
        "classes": list(VOWELS) if kind == "demo" else None,
        "target": "vowel" if kind == "demo" else "f0 / 100 Hz",
        "features": {"type": "log-magnitude stft", "sr": 8000, "n_fft": 128, "hop": 64,
                     "shape": "(time, frequency)"},
    }
    return predictors, targets, manifest
