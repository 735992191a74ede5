"""Augmentation speed: xvalkit (pedalboard) against audiomentations, the same kinds of transforms.

    PYTHONPATH=src python benchmarks/augment.py [--clips 60] [--seconds 3] [--versions 2]

Both sides get the same clips (harmonic + noise, 44.1 kHz) and the same recipe: a random non-empty
subset of {coloured noise at 5-30 dB SNR, EQ (low shelf + high shelf + 0-2 peaks), convolution with
one of the same impulse responses, time stretch 0.8-1.25}, the number of transforms uniform in 1..4
(audiomentations' SomeOf((1, None)) draws exactly so), then peak normalisation.
The figure is seconds of source audio augmented per wall second (clips x seconds x versions / time);
the pipeline rows (`xval augment`) also read and write every file and its _orig copy.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per process, as the augment workers run

import argparse
import dataclasses
import multiprocessing
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from xvalkit.audio.augment import AugmentSpec, augment
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--versions", type=int, default=2)
    args = parser.parse_args()
    clips = make_clips(args.clips, args.seconds)
    audio_seconds = args.clips * args.seconds * args.versions
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_impulse_responses(tmp / "irs")
        (tmp / "in").mkdir()
        for i, clip in enumerate(clips):
            sf.write(tmp / "in" / f"clip{i:03d}.wav", clip, SR)
        spec = AugmentSpec(impulse_response_folder=str(tmp / "irs"))

        rows = []
        am1 = audio_seconds / time_audiomentations(clips, args.versions, tmp / "irs", 1)
        rows.append(("audiomentations, 1 process", am1))
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

    print(f"{args.clips} clips x {args.seconds:g} s at {SR} Hz x {args.versions} versions = "
          f"{audio_seconds:g} s of audio per row; {os.cpu_count()} CPUs")
    width = max(len(name) for name, _ in rows)
    print(f"{'':{width}}  audio-s/s  vs audiomentations (1 process)")
    for name, speed in rows:
        print(f"{name:{width}}  {speed:9.1f}  {speed / am1:5.2f}x")


if __name__ == "__main__":
    main()
