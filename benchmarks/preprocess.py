"""Files per second of `xval preprocess` against a naive serial librosa loop, same features.

    python benchmarks/preprocess.py [--files 300] [--seconds 3] [--jobs 2]
    python benchmarks/preprocess.py --quick   # 24 files x 1 s, 1 round: checks that it runs

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
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from xvalkit.audio import datasets  # noqa: E402
from xvalkit.audio.features import FeatureSpec  # noqa: E402
from xvalkit.audio.preprocess import extract_all, preprocess  # noqa: E402
from xvalkit.config import load_config  # noqa: E402
from xvalkit.data import load_dataset  # noqa: E402

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


def naive_run(paths: list[Path], items: list[str], spec: FeatureSpec, out: Path) -> tuple[list, float, float]:
    """(features, seconds for the features, seconds including an np.savez of them)."""
    start = time.perf_counter()
    feats = [naive(p, spec) for p in paths]
    features_s = time.perf_counter() - start
    by_item: dict[str, list] = {}
    for item, x in zip(items, feats):
        by_item.setdefault(item, []).append(x)
    np.savez(out / "naive.npz", **{item: np.stack(xs) for item, xs in by_item.items()})
    return feats, features_s, time.perf_counter() - start


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="24 files x 1 s, 1 round: check that it runs")
    args = parser.parse_args()
    if args.quick:
        args.files, args.seconds, args.rounds = 24, 1.0, 1
    with tempfile.TemporaryDirectory() as tmp:
        corpus_dir, out = Path(tmp) / "corpus", Path(tmp) / "data"
        corpus_dir.mkdir()
        out.mkdir()
        write_corpus(corpus_dir, args.files, args.seconds)
        corpus = datasets.ravdess(corpus_dir)
        paths, items = [e.path for e in corpus.entries], [e.item for e in corpus.entries]
        n = len(paths)
        print(f"{n} files x {args.seconds} s at {SR_FILES} Hz -> 16 kHz, pipeline --jobs {args.jobs}; "
              f"files/s, best of {args.rounds} interleaved rounds")
        for kind in ("stft", "mfcc"):
            spec = FeatureSpec.from_config(load_config().section("features"), features_type=kind,
                                           fix_length=args.seconds)
            naive(paths[0], spec)  # warm-up: imports, numba cache
            t: dict[str, list[float]] = {key: [] for key in (
                "naive", "naive+save", "naive1", "naive1+save", "pipe", "pipe+save", "worker_cpu")}
            for _ in range(args.rounds):
                reference, features_s, total_s = naive_run(paths, items, spec, out)
                t["naive"].append(features_s)
                t["naive+save"].append(total_s)
                with threadpool_limits(limits=1):
                    _, features_s, total_s = naive_run(paths, items, spec, out)
                t["naive1"].append(features_s)
                t["naive1+save"].append(total_s)
                cpu, start = children_cpu(), time.perf_counter()
                extract_all(paths, spec, jobs=args.jobs)
                t["pipe"].append(time.perf_counter() - start)
                t["worker_cpu"].append(children_cpu() - cpu)
                start = time.perf_counter()
                preprocess(corpus, spec, out, f"bench_{kind}", jobs=args.jobs)
                t["pipe+save"].append(time.perf_counter() - start)
            best = {key: min(value) for key, value in t.items()}
            ds = load_dataset(out, f"bench_{kind}")
            by_item: dict[str, list] = {}
            for item, ref in zip(items, reference):
                by_item.setdefault(item, []).append(ref)
            equal = all(np.array_equal(ds.predictors[i], np.stack(refs)) for i, refs in by_item.items())
            assert all(np.allclose(ds.predictors[i], np.stack(refs)) for i, refs in by_item.items()), \
                f"{kind}: the pipeline's features differ from the naive loop's"
            rate = {key: n / value for key, value in best.items()}
            print(f"{kind}: features only: naive {rate['naive']:.0f} (1 BLAS thread {rate['naive1']:.0f}), "
                  f"pipeline {rate['pipe']:.0f} -> {best['naive'] / best['pipe']:.2f}x "
                  f"({best['naive1'] / best['pipe']:.2f}x vs 1 BLAS thread)")
            print(f"{kind}: saved dataset: naive+np.savez {rate['naive+save']:.0f} (1 BLAS thread "
                  f"{rate['naive1+save']:.0f}), xval preprocess {rate['pipe+save']:.0f} -> "
                  f"{best['naive+save'] / best['pipe+save']:.2f}x "
                  f"({best['naive1+save'] / best['pipe+save']:.2f}x vs 1 BLAS thread); "
                  f"identical features: {equal}")
            print(f"{kind}: CPU ms per file: naive (1 BLAS thread) {1000 * best['naive1'] / n:.2f}, "
                  f"pipeline workers {1000 * best['worker_cpu'] / n:.2f}")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
              "(other work on the machine lowers the pipeline's figures most)")


if __name__ == "__main__":
    main()
