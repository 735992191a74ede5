"""Augmentation speed: xvalkit (pedalboard) against audiomentations, the same kinds of transforms.

    python benchmarks/augment.py [--clips 40] [--seconds 3] [--versions 5] [--rounds 3]
    python benchmarks/augment.py --quick     # 2 clips x 1 s, 1 version, 1 round: checks that it runs

Both sides get the same clips (harmonic + noise, 44.1 kHz) and the same recipe: a random non-empty
subset of {coloured noise at 5-30 dB SNR, EQ (low shelf + high shelf + 0-2 peaks), convolution with
one of the same impulse responses, time stretch 0.8-1.25}, the number of transforms uniform in 1..4
(audiomentations' SomeOf((1, None)) draws exactly so), then peak normalisation.
The figure is seconds of source audio augmented per wall second (clips x seconds x versions / time);
the pipeline rows (`xval augment`) also read and write every file and its _orig copy.

A second table compares the time-stretch engines: speed, and how close each comes to an ideal
stretch. The test signals are harmonic glides with vibrato (low, mid and high f0) whose ideal
stretch is known exactly (the same glide synthesised at the stretched length); the figure is the
RMS log-mel difference (dB, bins within 50 dB of the peak, best alignment within +-50 ms),
averaged over the glides and rates 0.8, 0.9, 1.1 and 1.25.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per process, as the augment workers run

import argparse
import dataclasses
import functools
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xvalkit.audio.augment import STRETCH_QUALITY, AugmentSpec, augment, time_stretch
from xvalkit.audio.augment_files import run_augment

SR = 44100


def make_clips(count: int, seconds: float) -> list[np.ndarray]:
    """Voiced-like clips: 5 harmonics of a gliding f0 with a syllable envelope, plus noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    clips = []
    for _ in range(count):
        f0 = rng.uniform(100, 300) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) * np.sin(np.pi * 3 * t / seconds) ** 2
        x = x + 0.02 * rng.standard_normal(t.size)
        clips.append((0.5 * x / np.max(np.abs(x))).astype(np.float32))
    return clips


def make_impulse_responses(folder: Path, count: int = 4) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        t = np.arange(int(rng.uniform(0.3, 0.8) * SR)) / SR
        ir = rng.standard_normal(t.size) * np.exp(-t / rng.uniform(0.05, 0.2))
        sf.write(folder / f"ir{i}.wav", (ir / np.max(np.abs(ir))).astype(np.float32), SR)


def audiomentations_chain(ir_folder: Path):
    import audiomentations as A

    eq = A.Compose([
        A.LowShelfFilter(min_center_freq=100, max_center_freq=900, min_gain_db=-12, max_gain_db=12, p=1.0),
        A.HighShelfFilter(min_center_freq=900, max_center_freq=8000, min_gain_db=-12, max_gain_db=12, p=1.0),
        A.PeakingFilter(min_center_freq=100, max_center_freq=8000, min_gain_db=-12, max_gain_db=12, p=0.5),
        A.PeakingFilter(min_center_freq=100, max_center_freq=8000, min_gain_db=-12, max_gain_db=12, p=0.5),
    ])
    return A.Compose([
        A.SomeOf((1, None), [
            A.AddColorNoise(min_snr_db=5, max_snr_db=30, p=1.0),
            eq,
            A.ApplyImpulseResponse(ir_path=str(ir_folder), p=1.0),
            A.TimeStretch(min_rate=0.8, max_rate=1.25, leave_length_unchanged=False, p=1.0),
        ]),
        A.Normalize(p=1.0),  # peak normalisation
    ])


_AM = None


def _am_worker(args):
    index, ir_folder, clips, versions = args
    global _AM
    if _AM is None:
        _AM = audiomentations_chain(ir_folder)
    random.seed(index)
    np.random.seed(index)
    for clip in clips:
        for _ in range(versions):
            _AM(samples=clip, sample_rate=SR)


def time_audiomentations(clips, versions, ir_folder: Path, processes: int) -> float:
    chunks = [clips[i::processes] for i in range(processes)]
    tasks = [(i, ir_folder, chunk, versions) for i, chunk in enumerate(chunks)]
    _am_worker((0, ir_folder, clips[:1], 1))  # build the chain and warm the caches outside the timing
    start = time.perf_counter()
    if processes == 1:
        _am_worker(tasks[0])
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_am_worker, tasks)
    return time.perf_counter() - start


def time_ours_in_memory(clips, versions, spec: AugmentSpec) -> float:
    augment(clips[0], SR, 0, spec)  # warm the impulse-response cache outside the timing
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for clip in clips:
        for _ in range(versions):
            augment(clip, SR, rng, spec)
    return time.perf_counter() - start


def time_ours_pipeline(in_dir: Path, out_dir: Path, versions: int, spec: AugmentSpec, jobs: int) -> float:
    from rich.console import Console

    start = time.perf_counter()
    run_augment(in_dir, out_dir, versions, spec, seed=0, jobs=jobs, overwrite=True,
                console=Console(stderr=True, quiet=True))
    return time.perf_counter() - start


GLIDES = ((90, 140, 5), (150, 250, 10), (220, 340, 15))  # f0 from, f0 to, vibrato depth (Hz)


def glide(seconds: float, f0_from: float, f0_to: float, vibrato_hz: float) -> np.ndarray:
    """8 harmonics of an f0 gliding f0_from -> f0_to with 15 vibrato cycles, all in normalised
    time, so glide(seconds / rate, ...) is the ideal stretch of glide(seconds, ...) by rate."""
    t = np.arange(int(seconds * SR)) / SR
    u = t / seconds
    f0 = f0_from + (f0_to - f0_from) * u + vibrato_hz * np.sin(2 * np.pi * 15 * u)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    return (0.3 * np.sin(np.pi * u) ** 0.5 * sum(np.sin(k * phase) / k for k in range(1, 9))).astype(np.float32)


def log_mel(x: np.ndarray) -> np.ndarray:
    import librosa

    return 10 * np.log10(librosa.feature.melspectrogram(y=x, sr=SR, n_fft=2048, hop_length=512, n_mels=80) + 1e-6)


def distance_to_ideal(stretched: np.ndarray, ideal: np.ndarray) -> float:
    n, best = min(stretched.size, ideal.size), np.inf
    for lag in range(-SR // 20, SR // 20 + 1, SR // 100):
        a = log_mel(stretched[max(0, lag):][:n - abs(lag)])
        b = log_mel(ideal[max(0, -lag):][:n - abs(lag)])
        loud = b > b.max() - 50
        best = min(best, float(np.sqrt(np.mean((a - b)[loud] ** 2))))
    return best


def stretch_engines(clips: list[np.ndarray], glide_seconds: float = 3.0) -> list[tuple[str, float, float]]:
    """(engine, audio-s/s on the clips over rates 0.8-1.25, distance to the ideal stretch in dB)."""
    import pedalboard

    from python_stretch.Signalsmith import Stretch

    engines = {f"{quality} ({engine}, {settings})": functools.partial(time_stretch, quality=quality)
               for quality, (engine, settings) in STRETCH_QUALITY.items()}

    def signalsmith_cheaper(x, sr, rate):
        stretcher = Stretch()
        stretcher.preset(1, sr, True)
        stretcher.setTimeFactor(rate)
        return stretcher.process(x[None])[0]

    # measured for the record, not offered: slower or further than the levels above
    engines["not offered (signalsmith, cheaper preset)"] = signalsmith_cheaper
    for name, settings in (("high_quality=False", {"high_quality": False}),
                           ("high_quality=False, short window", {"high_quality": False, "use_long_fft_window": False})):
        engines[f"not offered (pedalboard, {name})"] = (
            lambda x, sr, rate, settings=settings: pedalboard.time_stretch(x[None], sr, rate, **settings)[0])
    rates = (0.8, 0.9, 1.1, 1.25)
    rows = []
    for name, stretch in engines.items():
        stretch(clips[0], SR, 1.1)
        start = time.perf_counter()
        for i, clip in enumerate(clips):
            stretch(clip, SR, rates[i % len(rates)])
        speed = len(clips) * clips[0].size / SR / (time.perf_counter() - start)
        distance = np.mean([distance_to_ideal(stretch(glide(glide_seconds, *g), SR, rate), glide(glide_seconds / rate, *g))
                            for g in GLIDES for rate in rates])
        rows.append((name, speed, float(distance)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--versions", type=int, default=5, help="per clip; 5 as in `xval augment in out 5`")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the headline pair (audiomentations 1 process, xval augment fast --jobs 2)")
    parser.add_argument("--quick", action="store_true", help="2 clips x 1 s, 1 version, 1 round: check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.seconds, args.versions, args.rounds = 2, 1.0, 1, 1
    clips = make_clips(args.clips, args.seconds)
    audio_seconds = args.clips * args.seconds * args.versions
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_impulse_responses(tmp / "irs")
        (tmp / "in").mkdir()
        for i, clip in enumerate(clips):
            sf.write(tmp / "in" / f"clip{i:03d}.wav", clip, SR)
        spec = AugmentSpec(impulse_response_folder=str(tmp / "irs"))

        # The headline pair, interleaved over rounds (the machine is shared): best and median.
        fast = dataclasses.replace(spec, stretch_quality="fast")
        am_speeds, xval_speeds = [], []
        for _ in range(args.rounds):
            am_speeds.append(audio_seconds / time_audiomentations(clips, args.versions, tmp / "irs", 1))
            xval_speeds.append(audio_seconds / time_ours_pipeline(tmp / "in", tmp / "out_headline", args.versions, fast, 2))
        am1 = max(am_speeds)
        rows = [("audiomentations, 1 process", am1)]
        rows.append(("audiomentations, 2 processes", audio_seconds / time_audiomentations(clips, args.versions, tmp / "irs", 2)))
        for quality in ("high", "balanced", "fast"):
            q_spec = dataclasses.replace(spec, stretch_quality=quality)
            rows.append((f"xvalkit augment() in memory, stretch {quality}, 1 process",
                         audio_seconds / time_ours_in_memory(clips, args.versions, q_spec)))
        for quality in ("high", "fast"):
            q_spec = dataclasses.replace(spec, stretch_quality=quality)
            for jobs in (1, 2):
                seconds = time_ours_pipeline(tmp / "in", tmp / f"out_{quality}_{jobs}", args.versions, q_spec, jobs)
                rows.append((f"xval augment (read+write), stretch {quality}, --jobs {jobs}", audio_seconds / seconds))

    engines = stretch_engines(clips[:20], glide_seconds=1.0 if args.quick else 3.0)
    ratios = sorted(x / a for x, a in zip(xval_speeds, am_speeds))
    print(f"headline: xval augment --jobs 2 (stretch fast) vs audiomentations in one process: "
          f"{max(xval_speeds) / am1:.2f}x best against best; per round {', '.join(f'{r:.2f}x' for r in ratios)} "
          f"(median {ratios[len(ratios) // 2]:.2f}x)\n")
    print(f"{args.clips} clips x {args.seconds:g} s at {SR} Hz x {args.versions} versions = "
          f"{audio_seconds:g} s of audio per row; {os.cpu_count()} CPUs")
    width = max(len(name) for name, _ in rows)
    print(f"{'':{width}}  audio-s/s  vs audiomentations (1 process)")
    for name, speed in rows:
        print(f"{name:{width}}  {speed:9.1f}  {speed / am1:5.2f}x")
    print("\ntime stretch, pitch kept (stretch_quality = engine, settings)")
    width = max(len(name) for name, _, _ in engines)
    print(f"{'':{width}}  audio-s/s  dB from an ideal stretch (lower is closer)")
    for name, speed, distance in engines:
        print(f"{name:{width}}  {speed:9.1f}  {distance:5.2f}")


if __name__ == "__main__":
    main()
