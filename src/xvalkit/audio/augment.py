"""Random audio augmentation in memory: noise, EQ, reverb and time stretch with pedalboard.

`augment(audio, sr, rng, spec)` applies a random non-empty subset of the enabled transforms, in
random order, then peak normalisation, and returns the new audio with a record of what it drew:

>>> import numpy as np
>>> from xvalkit.audio.augment import AugmentSpec, augment
>>> sr = 16000
>>> tone = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
>>> out, record = augment(tone, sr, rng=7, spec=AugmentSpec(transforms=("stretch",)))
>>> record  # doctest: +ELLIPSIS
[{'transform': 'stretch', 'rate': ...}]
>>> np.array_equal(out, augment(tone, sr, rng=7, spec=AugmentSpec(transforms=("stretch",)))[0])
True

The same (audio, sr, seed, spec) always gives bit-identical output: every random draw comes from the
one numpy Generator passed in, and the pedalboard plugins used are deterministic.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pedalboard
import scipy.fft
from python_stretch.Signalsmith import Stretch

from ..config import check_keys
from ..errors import XvalError

TRANSFORMS = ("noise", "eq", "reverb", "stretch")

# Time stretch (pitch kept) per quality level: (engine, its settings). Signalsmith Stretch (the
# python-stretch package, audiomentations' engine) is set by its analysis block and the interval
# between blocks, in seconds; its own presets are (0.12, 0.03) "default" and (0.10, 0.04) "cheaper".
# Measured with `python benchmarks/augment.py` (3 s at 44.1 kHz, one core, rates 0.8-1.25): speed
# in audio-s/s, and the log-mel distance in dB between stretched harmonic glides and the same
# glides synthesised at the stretched length (low, mid and high f0; lower is closer):
#   high      pedalboard time_stretch (Rubber Band), high_quality=True     ~23   0.79
#   balanced  Signalsmith (0.12 s, 0.03 s), its default preset            ~100  0.97
#   fast      Signalsmith (0.06 s, 0.03 s)                                 ~205  1.36
#   not offered: Signalsmith's cheaper preset ~175 / 1.30; pedalboard high_quality=False ~70 / 2.5,
#   with a short window ~93 / 3.25 (the previous default).
STRETCH_QUALITY = {
    "high": ("pedalboard", {"high_quality": True}),
    "balanced": ("signalsmith", {"block_s": 0.12, "interval_s": 0.03}),
    "fast": ("signalsmith", {"block_s": 0.06, "interval_s": 0.03}),
}


@dataclass(frozen=True)
class AugmentSpec:
    """The ranges the transforms draw from: config.ini [augmentation], one field per key."""

    transforms: tuple[str, ...] = TRANSFORMS
    noise_file: str = ""
    snr_min_db: float = 5.0
    snr_max_db: float = 30.0
    noise_min_slope_db: float = -6.0
    noise_max_slope_db: float = 6.0
    eq_min_gain_db: float = -12.0
    eq_max_gain_db: float = 12.0
    eq_min_freq_hz: float = 100.0
    eq_max_freq_hz: float = 8000.0
    eq_max_peaks: int = 2
    eq_min_q: float = 0.5
    eq_max_q: float = 4.0
    impulse_response_folder: str = ""
    reverb_min_room_size: float = 0.1
    reverb_max_room_size: float = 0.9
    reverb_min_wet: float = 0.1
    reverb_max_wet: float = 0.5
    stretch_min_rate: float = 0.8
    stretch_max_rate: float = 1.25
    stretch_quality: str = "fast"
    peak_dbfs: float = -1.0

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> AugmentSpec:
        """Build from config.ini [augmentation]; unknown keys and bad ranges are one-line errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        check_keys("augmentation", section, fields)
        values = {}
        for key, value in section.items():
            default = fields[key].default
            if key == "transforms":
                value = (value,) if isinstance(value, str) else tuple(value)
            elif isinstance(default, str):
                value = str(value)
            elif isinstance(default, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise XvalError(f"config [augmentation] {key} = {value!r}: expected a number")
                if isinstance(default, int) and value != int(value):
                    raise XvalError(f"config [augmentation] {key} = {value!r}: expected a whole number")
                value = type(default)(value)
            values[key] = value
        spec = cls(**values)
        spec.check()
        return spec

    def check(self) -> None:
        """Raise XvalError for a transform name, range or quality that cannot work."""
        where = "config [augmentation]"
        bad = [t for t in self.transforms if t not in TRANSFORMS]
        if bad or not self.transforms:
            raise XvalError(f"{where} transforms = {self.transforms!r}: choose a non-empty subset of {TRANSFORMS}")
        for low, high in [("snr_min_db", "snr_max_db"), ("noise_min_slope_db", "noise_max_slope_db"),
                          ("eq_min_gain_db", "eq_max_gain_db"), ("eq_min_freq_hz", "eq_max_freq_hz"),
                          ("eq_min_q", "eq_max_q"), ("reverb_min_room_size", "reverb_max_room_size"),
                          ("reverb_min_wet", "reverb_max_wet"), ("stretch_min_rate", "stretch_max_rate")]:
            if getattr(self, low) > getattr(self, high):
                raise XvalError(f"{where}: {low} = {getattr(self, low)} is above {high} = {getattr(self, high)}")
        for key in ("eq_min_freq_hz", "eq_min_q", "stretch_min_rate"):
            if getattr(self, key) <= 0:
                raise XvalError(f"{where} {key} = {getattr(self, key)}: must be > 0")
        if not 0 <= self.reverb_min_room_size <= self.reverb_max_room_size <= 1:
            raise XvalError(f"{where}: reverb room sizes must lie in [0, 1]")
        if not 0 <= self.reverb_min_wet <= self.reverb_max_wet <= 1:
            raise XvalError(f"{where}: reverb wet levels must lie in [0, 1]")
        if self.peak_dbfs > 0:
            raise XvalError(f"{where} peak_dbfs = {self.peak_dbfs}: must be <= 0 (a peak above full scale clips)")
        if self.eq_max_peaks < 0:
            raise XvalError(f"{where} eq_max_peaks = {self.eq_max_peaks}: must be >= 0")
        if self.stretch_quality not in STRETCH_QUALITY:
            raise XvalError(f"{where} stretch_quality = {self.stretch_quality!r}: one of {', '.join(STRETCH_QUALITY)}")
        if self.noise_file and not Path(self.noise_file).is_file():
            raise XvalError(f"{where} noise_file = {self.noise_file!r}: no such file")
        if self.impulse_response_folder and not impulse_response_files(self.impulse_response_folder):
            raise XvalError(f"{where} impulse_response_folder = {self.impulse_response_folder!r}: no audio files there")


def augment(
    audio: np.ndarray,
    sr: int,
    rng: np.random.Generator | int | None = None,
    spec: AugmentSpec | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Augment mono `audio` at `sr`: a random non-empty subset of spec.transforms in random order.

    Returns (float32 mono audio, peak-normalised; record): one dict per transform applied, in order,
    with its drawn values, e.g. {"transform": "stretch", "rate": 1.07}. The number of transforms is
    drawn uniformly from 1..len(spec.transforms), then which ones and their order.
    """
    spec = spec or AugmentSpec()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"augment takes mono audio (1-D); got shape {audio.shape}")
    count = int(rng.integers(1, len(spec.transforms) + 1))
    chosen = [spec.transforms[i] for i in rng.permutation(len(spec.transforms))[:count]]
    record = []
    for name in chosen:
        audio, params = _APPLY[name](audio, sr, rng, spec)
        record.append({"transform": name, **params})
    return peak_normalize(audio, spec.peak_dbfs), record


def peak_normalize(audio: np.ndarray, peak_dbfs: float = -1.0) -> np.ndarray:
    """Scale so that the largest |sample| is `peak_dbfs`; silence stays silence."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio.astype(np.float32, copy=False)
    return (audio * np.float32(10 ** (peak_dbfs / 20) / peak)).astype(np.float32, copy=False)


def add_noise(audio: np.ndarray, sr: int, rng: np.random.Generator, spec: AugmentSpec):
    """Background noise at a random SNR: a slice of spec.noise_file, or coloured noise."""
    snr_db = float(rng.uniform(spec.snr_min_db, spec.snr_max_db))
    if spec.noise_file:
        noise, offset = _noise_from_file(spec.noise_file, sr, audio.size, rng)
        params = {"snr_db": snr_db, "noise_file": spec.noise_file, "offset": offset}
    else:
        slope = float(rng.uniform(spec.noise_min_slope_db, spec.noise_max_slope_db))
        noise = coloured_noise(audio.size, slope, rng)
        params = {"snr_db": snr_db, "slope_db_per_octave": slope}
    signal_power = float(np.mean(np.square(audio, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64))) or 1.0
    gain = np.sqrt(signal_power / noise_power / 10 ** (snr_db / 10))
    return (audio + gain * noise).astype(np.float32), params


def coloured_noise(n: int, slope_db_per_octave: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum falls (or rises) by `slope_db_per_octave`: -3 pink, 0 white.

    Drawn in the frequency domain: the spectrum of white Gaussian noise has independent Gaussian
    real and imaginary parts, so drawing those directly skips a forward FFT (a third of the cost).
    """
    m = scipy.fft.next_fast_len(n, real=True)  # an FFT-friendly length, cut back to n: several times faster
    bins = m // 2 + 1
    parts = rng.standard_normal((2, bins), dtype=np.float32)
    spectrum = parts[0] + np.complex64(1j) * parts[1]
    freqs = np.arange(bins, dtype=np.float32)
    freqs[0] = 1.0  # leave DC alone rather than divide by zero
    # power ∝ f^(slope / 3.01) per octave, so amplitude ∝ f^(slope / 6.02)
    spectrum *= freqs ** np.float32(slope_db_per_octave / (20 * np.log10(2)))
    return scipy.fft.irfft(spectrum, m)[:n]


def random_eq(audio: np.ndarray, sr: int, rng: np.random.Generator, spec: AugmentSpec):
    """A low shelf, a high shelf and 0..eq_max_peaks peak filters with random frequencies and gains."""
    top = min(spec.eq_max_freq_hz, 0.45 * sr)  # keep every filter below Nyquist
    bottom = min(spec.eq_min_freq_hz, top)
    middle = np.sqrt(bottom * top)

    def log_uniform(low: float, high: float) -> float:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))

    def gain() -> float:
        return float(rng.uniform(spec.eq_min_gain_db, spec.eq_max_gain_db))

    # shelves from the lower and upper halves of the range (in octaves), so neither is a plain gain
    filters = [{"type": "low_shelf", "freq_hz": log_uniform(bottom, middle), "gain_db": gain()},
               {"type": "high_shelf", "freq_hz": log_uniform(middle, top), "gain_db": gain()}]
    for _ in range(int(rng.integers(0, spec.eq_max_peaks + 1))):
        filters.append({"type": "peak", "freq_hz": log_uniform(bottom, top), "gain_db": gain(),
                        "q": float(rng.uniform(spec.eq_min_q, spec.eq_max_q))})
    board = pedalboard.Pedalboard([_eq_plugin(f) for f in filters])
    return board(audio, sr), {"filters": filters}


def _eq_plugin(f: dict[str, Any]) -> pedalboard.Plugin:
    if f["type"] == "low_shelf":
        return pedalboard.LowShelfFilter(cutoff_frequency_hz=f["freq_hz"], gain_db=f["gain_db"])
    if f["type"] == "high_shelf":
        return pedalboard.HighShelfFilter(cutoff_frequency_hz=f["freq_hz"], gain_db=f["gain_db"])
    return pedalboard.PeakFilter(cutoff_frequency_hz=f["freq_hz"], gain_db=f["gain_db"], q=f["q"])


def random_reverb(audio: np.ndarray, sr: int, rng: np.random.Generator, spec: AugmentSpec):
    """pedalboard's Reverb with a random room, or convolution with a random impulse response file.

    The length is kept: the tail rings into the audio's own end rather than past it.
    """
    wet = float(rng.uniform(spec.reverb_min_wet, spec.reverb_max_wet))
    if spec.impulse_response_folder:
        files = impulse_response_files(spec.impulse_response_folder)
        path = files[int(rng.integers(len(files)))]
        reverberant = convolve_head(audio, str(path), sr)
        out = ((1.0 - wet) * audio + wet * reverberant).astype(np.float32)
        return out, {"impulse_response": str(path), "wet": wet}
    room = float(rng.uniform(spec.reverb_min_room_size, spec.reverb_max_room_size))
    damping = float(rng.uniform(0.1, 0.9))
    plugin = pedalboard.Reverb(room_size=room, damping=damping, wet_level=wet, dry_level=1.0 - wet)
    return pedalboard.Pedalboard([plugin])(audio, sr), {"room_size": room, "damping": damping, "wet": wet}


def random_stretch(audio: np.ndarray, sr: int, rng: np.random.Generator, spec: AugmentSpec):
    """Time stretch with the pitch kept: rate > 1 shortens, the length becomes about len / rate."""
    rate = float(rng.uniform(spec.stretch_min_rate, spec.stretch_max_rate))
    return time_stretch(audio, sr, rate, spec.stretch_quality), {"rate": rate}


def time_stretch(audio: np.ndarray, sr: int, rate: float, quality: str = "fast") -> np.ndarray:
    """Mono float32 `audio` played `rate` times as fast, pitch kept (see STRETCH_QUALITY)."""
    engine, settings = STRETCH_QUALITY[quality]
    if engine == "pedalboard":
        # time_stretch returns (channels, samples) even for 1-D input: take the one channel back
        return pedalboard.time_stretch(audio[np.newaxis], sr, rate, **settings)[0]
    stretcher = Stretch()  # deterministic: same input, same output (tested)
    stretcher.configure(1, int(settings["block_s"] * sr), int(settings["interval_s"] * sr))
    stretcher.setTimeFactor(rate)
    return stretcher.process(np.ascontiguousarray(audio)[np.newaxis])[0]


_APPLY = {"noise": add_noise, "eq": random_eq, "reverb": random_reverb, "stretch": random_stretch}


@functools.cache
def impulse_response_files(folder: str) -> tuple[Path, ...]:
    """The audio files of an impulse-response folder (sorted, so draws are reproducible)."""
    from .io import find_audio_files

    return tuple(find_audio_files(folder)) if Path(folder).is_dir() else ()


@functools.lru_cache(maxsize=64)
def _read_resampled(path: str, sr: int) -> np.ndarray:
    """A noise or impulse-response file as mono float32 at `sr` (read once per process)."""
    from .io import AudioReadError, read_audio

    try:
        audio, file_sr = read_audio(path)
    except AudioReadError as exc:
        raise XvalError(str(exc)) from None
    if file_sr != sr:
        from math import gcd

        from scipy.signal import resample_poly  # scipy.signal takes about 0.5 s to import: only if needed

        g = gcd(sr, file_sr)
        audio = resample_poly(audio, sr // g, file_sr // g).astype(np.float32)
    audio.setflags(write=False)
    return audio


def convolve_head(audio: np.ndarray, ir_path: str, sr: int) -> np.ndarray:
    """The first len(audio) samples of audio convolved with an impulse response file.

    One FFT convolution of the whole clip: offline, about 3x faster than pedalboard.Convolution's
    block-by-block (real-time) partitioned convolution on 3 s clips with 0.8 s responses. The
    response's spectrum is cached for the last few FFT sizes, which saves one of the three FFTs
    when clips share a length (fixed-length corpora; versions not stretched before the reverb).
    """
    ir = _impulse_response(ir_path, sr)
    size = scipy.fft.next_fast_len(audio.size + ir.size - 1, real=True)
    spectrum = scipy.fft.rfft(audio, size) * _impulse_response_spectrum(ir_path, sr, size)
    return scipy.fft.irfft(spectrum, size)[: audio.size]


@functools.lru_cache(maxsize=16)  # at most 16 spectra (about 1.4 MB each for 6 s at 48 kHz)
def _impulse_response_spectrum(path: str, sr: int, size: int) -> np.ndarray:
    spectrum = scipy.fft.rfft(_impulse_response(path, sr), size)
    spectrum.setflags(write=False)
    return spectrum


@functools.lru_cache(maxsize=64)
def _impulse_response(path: str, sr: int) -> np.ndarray:
    """An impulse response scaled to unit energy, so that `wet` alone sets the reverb's level."""
    ir = _read_resampled(path, sr)
    energy = float(np.sqrt(np.sum(np.square(ir, dtype=np.float64))))
    return ir / np.float32(energy) if energy > 0 else ir


def _noise_from_file(path: str, sr: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """n samples of the noise file from a random offset, looped if the file is shorter."""
    noise = _read_resampled(path, sr)
    offset = int(rng.integers(noise.size))
    reps = -(-(offset + n) // noise.size)
    return np.tile(noise, reps)[offset:offset + n], offset
