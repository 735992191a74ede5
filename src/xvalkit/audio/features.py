"""Audio features for `xval preprocess`: pure functions from samples to (time, frequency) arrays.

A `FeatureSpec` holds every parameter (config.ini [features], overridden by CLI options). The
features are librosa's, computed so that a plain librosa loop gives the same numbers:

- stft: |STFT| (window_size, fft_size, hop_size, window_type), optionally |X| ** power_law_exponent
- mfcc: librosa.feature.mfcc from a log-power mel spectrogram (mfcc_window_size, mfcc_hop_size,
  n_mels, n_mfcc), with the mel filterbank built once per process, not at every call
- mel: log-power (dB) mel spectrogram (window_size, fft_size, hop_size, n_mels)
- cqt: |librosa.cqt| (cqt_hop_size, cqt_bins_per_octave, cqt_n_bins, cqt_fmin), as the original
  scripts' features_type = "cqt"

Each file becomes one datapoint padded or cropped to `fix_length` seconds, or, with
`sequence_length` > 0, windows of that many seconds overlapping by `sequence_overlap`.
Arrays are float32, (time, frequency), low frequencies first: never flipped.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import check_keys
from ..errors import XvalError
from .runtime import configure_numba_cache

configure_numba_cache()  # before librosa imports numba

import librosa  # noqa: E402
import soxr  # noqa: E402  (librosa's resampler)

FEATURE_TYPES = ("stft", "mfcc", "mel", "cqt")
RESAMPLE_TYPE = "soxr_hq"  # librosa.load's default, so a plain librosa.load loop matches


@dataclass(frozen=True)
class FeatureSpec:
    """Every parameter of the features; see config.ini [features] for what each key means."""

    sr_target: int = 16000
    features_type: str = "stft"
    window_size: int = 1024
    fft_size: int = 1024
    hop_size: int = 512
    window_type: str = "hann"
    power_law_compression: bool = True
    power_law_exponent: float = 2 / 3
    n_mfcc: int = 40
    mfcc_window_size: int = 512
    mfcc_hop_size: int = 256
    n_mels: int = 64
    sequence_length: float = 0.0
    sequence_overlap: float = 0.5
    fix_length: float = 3.0
    cqt_hop_size: int = 512
    cqt_bins_per_octave: int = 12
    cqt_n_bins: int = 84
    cqt_fmin: float = 32.70319566257483  # C1, librosa's default

    @classmethod
    def from_config(cls, section: dict[str, Any], **overrides: Any) -> FeatureSpec:
        """Build from config.ini [features] values; `overrides` (CLI options) win unless None."""
        check_keys("features", section, (f.name for f in dataclasses.fields(cls)))
        values = {**section, **{k: v for k, v in overrides.items() if v is not None}}
        spec = cls(**values)
        spec.check()
        return spec

    def check(self) -> None:
        """Raise XvalError naming the first bad value and what it must be."""
        def bad(key: str, must: str) -> XvalError:
            return XvalError(f"[features] {key} = {getattr(self, key)!r}: must be {must}")

        if self.features_type not in FEATURE_TYPES:
            raise bad("features_type", f"one of {', '.join(FEATURE_TYPES)}")
        for key in ("sr_target", "window_size", "fft_size", "hop_size", "n_mfcc",
                    "mfcc_window_size", "mfcc_hop_size", "n_mels", "cqt_hop_size", "cqt_bins_per_octave",
                    "cqt_n_bins"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise bad(key, "a whole number > 0")
        if self.window_size > self.fft_size:
            raise bad("window_size", f"at most fft_size ({self.fft_size})")
        if self.n_mfcc > self.n_mels:
            raise bad("n_mfcc", f"at most n_mels ({self.n_mels})")
        if not isinstance(self.power_law_compression, bool):
            raise bad("power_law_compression", "True or False")
        for key, low in (("power_law_exponent", 0), ("sequence_length", -1e-12), ("fix_length", 0),
                         ("cqt_fmin", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low:
                raise bad(key, "a number > 0" if low == 0 else "a number >= 0")
        if not 0 <= self.sequence_overlap < 1:
            raise bad("sequence_overlap", "a fraction, 0 <= overlap < 1")
        if self.features_type == "cqt":
            freqs = librosa.cqt_frequencies(self.cqt_n_bins, fmin=self.cqt_fmin,
                                            bins_per_octave=self.cqt_bins_per_octave)
            _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=self.sr_target)
            if cutoff > self.sr_target / 2:  # librosa.cqt's own test, checked before any file is read
                raise bad("cqt_n_bins", f"fewer: the highest bin's band reaches {cutoff:.0f} Hz, above the Nyquist "
                                        f"frequency ({self.sr_target / 2:.0f} Hz); or lower cqt_fmin")
        if self.sequence_length and self.segment_samples < self.frame_size:
            raise bad("sequence_length", f"at least one analysis window ({self.frame_size} samples)")
        try:
            librosa.filters.get_window(self.window_type, self.window_size)
        except Exception:  # librosa/scipy raise several types for an unknown window
            raise bad("window_type", "a scipy window name such as 'hann' or 'hamming'") from None

    @property
    def frame_size(self) -> int:
        return {"mfcc": self.mfcc_window_size, "cqt": self.cqt_hop_size}.get(self.features_type, self.fft_size)

    @property
    def hop(self) -> int:
        return {"mfcc": self.mfcc_hop_size, "cqt": self.cqt_hop_size}.get(self.features_type, self.hop_size)

    @property
    def segment_samples(self) -> int:
        """Samples per datapoint at sr_target."""
        seconds = self.sequence_length or self.fix_length
        return int(round(seconds * self.sr_target))

    @property
    def segment_step(self) -> int:
        return max(1, int(round(self.segment_samples * (1 - self.sequence_overlap))))

    def datapoints(self, samples: int) -> int:
        """How many datapoints `segments` makes of `samples` samples at sr_target."""
        if not self.sequence_length or samples <= self.segment_samples:
            return 1
        return 1 + (samples - self.segment_samples) // self.segment_step

    @property
    def shape(self) -> tuple[int, int]:
        """(time, frequency) of one datapoint."""
        frames = 1 + self.segment_samples // self.hop  # librosa's centred frames
        bins = {"stft": self.fft_size // 2 + 1, "mfcc": self.n_mfcc, "mel": self.n_mels, "cqt": self.cqt_n_bins}
        return frames, bins[self.features_type]

    def to_manifest(self) -> dict[str, Any]:
        """The parameters that shaped the features (for the dataset manifest)."""
        return {**dataclasses.asdict(self), "shape": list(self.shape), "axes": "(time, frequency)",
                "resample_type": RESAMPLE_TYPE, "librosa": librosa.__version__}


def resample(audio: np.ndarray, sr: int, sr_target: int) -> np.ndarray:
    """`audio` at `sr_target` (exactly what librosa.load(sr=sr_target) returns for the same file)."""
    if sr == sr_target:
        return audio
    # librosa.resample's soxr path, minus its check that every sample is finite (the caller has
    # checked): the same numbers (tested), 10% faster
    resampled = soxr.resample(audio, sr, sr_target, quality=RESAMPLE_TYPE)
    return librosa.util.fix_length(resampled, size=int(np.ceil(audio.size * (float(sr_target) / sr))))


def segments(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(datapoints, samples): one fixed-length datapoint, or overlapping windows (the tail that
    does not fill a window is dropped; a file shorter than one window is padded to one)."""
    size = spec.segment_samples
    if not spec.sequence_length or len(audio) <= size:
        return librosa.util.fix_length(audio, size=size)[None, :]
    return librosa.util.frame(audio, frame_length=size, hop_length=spec.segment_step, axis=0)


@functools.lru_cache(maxsize=8)
def mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """The mel filterbank, built once per process (librosa rebuilds it at every mfcc call)."""
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)


def _log_mel(audio: np.ndarray, spec: FeatureSpec, n_fft: int, hop: int, win: int) -> np.ndarray:
    """(mels, time) log-power mel spectrogram, as librosa.feature.melspectrogram + power_to_db."""
    power = np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=hop, win_length=win,
                                window=spec.window_type)) ** 2
    mel = np.einsum("...ft,mf->...mt", power, mel_basis(spec.sr_target, n_fft, spec.n_mels),
                    optimize=True)
    return librosa.power_to_db(mel)


def stft(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(time, frequency) STFT magnitude, power-law compressed if the spec says so."""
    magnitude = np.abs(librosa.stft(audio, n_fft=spec.fft_size, hop_length=spec.hop_size,
                                    win_length=spec.window_size, window=spec.window_type))
    if spec.power_law_compression:
        magnitude = magnitude ** spec.power_law_exponent
    return magnitude.T


def mfcc(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(time, n_mfcc) MFCC: librosa.feature.mfcc's numbers with a cached mel filterbank."""
    n_fft = spec.mfcc_window_size
    log_mel = _log_mel(audio, spec, n_fft, spec.mfcc_hop_size, n_fft)
    return librosa.feature.mfcc(S=log_mel, n_mfcc=spec.n_mfcc).T


def mel(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(time, n_mels) log-power mel spectrogram in dB."""
    return _log_mel(audio, spec, spec.fft_size, spec.hop_size, spec.window_size).T


def cqt(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(time, cqt_n_bins) constant-Q transform magnitude, low frequencies first."""
    return np.abs(librosa.cqt(audio, sr=spec.sr_target, hop_length=spec.cqt_hop_size, fmin=spec.cqt_fmin,
                              n_bins=spec.cqt_n_bins, bins_per_octave=spec.cqt_bins_per_octave)).T


FEATURES = {"stft": stft, "mfcc": mfcc, "mel": mel, "cqt": cqt}


def features(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(datapoints, time, frequency) float32 features of mono `audio` already at sr_target.

    Each datapoint is computed on its own, so power_to_db's 80 dB floor is relative to that
    datapoint's peak, as in a plain per-file librosa loop.
    """
    compute = FEATURES[spec.features_type]
    return np.stack([compute(np.ascontiguousarray(seg), spec) for seg in segments(audio, spec)]
                    ).astype(np.float32, copy=False)
