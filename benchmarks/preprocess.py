"""Files per second of `xval preprocess` against a naive serial librosa loop, same features.

    PYTHONPATH=src python benchmarks/preprocess.py [--files 300] [--seconds 3] [--jobs 2]

Synthesises a RAVDESS-named corpus (48 kHz, 16-bit, harmonic tones in noise) in a temporary
folder, then for stft and mfcc times
  naive:    for each file: librosa.load(sr=16000), fix_length, librosa.stft / librosa.feature.mfcc
  pipeline: xvalkit.audio.preprocess.preprocess(..., jobs=N) (features + the saved dataset)
and checks that both give exactly the same arrays. Both run in this process after one warm-up
call, so neither pays numba's compilation. The naive loop is also timed with BLAS limited to one
thread (threadpoolctl), the fairer baseline: librosa's default BLAS threads slow MFCC down.
Each is run --rounds times, interleaved, and the best round is reported (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from threadpoolctl import threadpool_limits

from xvalkit.audio import datasets
from xvalkit.audio.features import FeatureSpec
from xvalkit.audio.preprocess import preprocess
from xvalkit.config import load_config
from xvalkit.data import load_dataset

import librosa  # noqa: E402  (after xvalkit, which places the numba cache)

SR_FILES = 48000


def write_corpus(folder: Path, files: int, seconds: float) -> None:
    """RAVDESS-named 16-bit wavs: 24 actors, 8 emotions, a few harmonics with noise each."""
    rng = np.random.default_rng(0)
    t = np.arange(int(SR_FILES * seconds)) / SR_FILES
    for i in range(files):
        actor, emotion, take = i % 24 + 1, (i // 24) % 8 + 1, i // 192
        f0 = rng.uniform(90, 300)
        audio = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
        audio = 0.3 * audio / np.abs(audio).max() + 0.01 * rng.standard_normal(t.size)
        name = f"03-01-{emotion:02d}-01-01-{take + 1:02d}-{actor:02d}.wav"
        (folder / f"Actor_{actor:02d}").mkdir(exist_ok=True)
        sf.write(folder / f"Actor_{actor:02d}" / name, audio, SR_FILES, subtype="PCM_16")


def naive(path: Path, spec: FeatureSpec) -> np.ndarray:
    """The plain loop body: what a user would write with librosa alone."""
    y, sr = librosa.load(path, sr=spec.sr_target)
    y = librosa.util.fix_length(y, size=int(spec.fix_length * sr))
    if spec.features_type == "stft":
        x = np.abs(librosa.stft(y, n_fft=spec.fft_size, hop_length=spec.hop_size)) ** spec.power_law_exponent
    else:
        x = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=spec.n_mfcc, n_fft=spec.mfcc_window_size,
                                 hop_length=spec.mfcc_hop_size, n_mels=spec.n_mels)
    return x.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir, out = Path(tmp) / "corpus", Path(tmp) / "data"
        corpus_dir.mkdir()
        write_corpus(corpus_dir, args.files, args.seconds)
        corpus = datasets.ravdess(corpus_dir)
        paths = [e.path for e in corpus.entries]
        print(f"{len(paths)} files x {args.seconds} s at {SR_FILES} Hz -> 16 kHz, {args.jobs} jobs")
        for kind in ("stft", "mfcc"):
            spec = FeatureSpec.from_config(load_config().section("features"), features_type=kind,
                                           fix_length=args.seconds)
            naive(paths[0], spec)  # warm-up: imports, numba cache
            times: dict[str, list[float]] = {"naive": [], "naive 1 BLAS thread": [], "pipeline": []}
            for _ in range(args.rounds):
                start = time.perf_counter()
                reference = [naive(p, spec) for p in paths]
                times["naive"].append(time.perf_counter() - start)
                with threadpool_limits(limits=1):
                    start = time.perf_counter()
                    [naive(p, spec) for p in paths]
                    times["naive 1 BLAS thread"].append(time.perf_counter() - start)
                start = time.perf_counter()
                preprocess(corpus, spec, out, f"bench_{kind}", jobs=args.jobs)
                times["pipeline"].append(time.perf_counter() - start)
            ds = load_dataset(out, f"bench_{kind}")
            by_item = {}
            for entry, ref in zip(corpus.entries, reference):
                by_item.setdefault(entry.item, []).append(ref)
            equal = all(np.array_equal(ds.predictors[item], np.stack(refs)) for item, refs in by_item.items())
            close = all(np.allclose(ds.predictors[item], np.stack(refs)) for item, refs in by_item.items())
            assert close, f"{kind}: the pipeline's features differ from the naive loop's"
            n, best = len(paths), {key: min(value) for key, value in times.items()}
            rates = " | ".join(f"{key} {n / value:4.0f}" for key, value in best.items())
            print(f"{kind}: files/s, best of {args.rounds}: {rates} (pipeline incl. saving) | "
                  f"speedup {best['naive'] / best['pipeline']:.2f}x, "
                  f"{best['naive 1 BLAS thread'] / best['pipeline']:.2f}x vs 1 BLAS thread | "
                  f"identical: {equal}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
