"""`xval preprocess`: real wav files written here, through the CLI and the library functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xvalkit.audio import datasets
from xvalkit.audio.features import FeatureSpec, features
from xvalkit.audio.preprocess import extract, extract_all
from xvalkit.cli import main
from xvalkit.data import load_dataset

SR = 48000
SECONDS = 0.5
# (time frames, frequency bins) of a 0.5 s datapoint at 16 kHz (8000 samples), by hand: centred
# frames, 1 + samples // hop. STFT and mel: hop 512 -> 16 frames; 1024-point FFT -> 513 bins, 64 mel
# bands. MFCC: hop 256 -> 32 frames of 40 coefficients.
SHAPES = {"stft": (16, 513), "mfcc": (32, 40), "mel": (16, 64)}


def tone(f0: float, sr: int = SR, seconds: float = SECONDS, seed: int = 0) -> np.ndarray:
    """A few harmonics of f0 with a little noise: float32 in [-1, 1]."""
    t = np.arange(int(sr * seconds)) / sr
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5))
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.4 * wave / np.abs(wave).max() + noise).astype(np.float32)


def write(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="PCM_16")
    return path


def ravdess_name(emotion: int, actor: int, take: int = 1) -> str:
    return f"03-01-{emotion:02d}-01-01-{take:02d}-{actor:02d}.wav"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config.ini: data folder in tmp_path, half-second datapoints (quick)."""
    path = tmp_path / "config.ini"
    path.write_text(f"[paths]\ndata_folder = {tmp_path / 'data'}\n[features]\nfix_length = {SECONDS}\n")
    return path


@pytest.fixture
def ravdess_dir(tmp_path: Path) -> Path:
    """3 actors x 2 emotions x 2 takes at 48 kHz, in Actor_NN folders."""
    root = tmp_path / "RAVDESS"
    for actor in (1, 2, 3):
        for emotion in (1, 5):
            for take in (1, 2):
                f0 = 100 + 20 * actor + 40 * emotion + take
                write(root / f"Actor_{actor:02d}" / ravdess_name(emotion, actor, take), tone(f0, seed=actor))
    return root


def xval(capsys, *args: str, stdout: bool = False) -> tuple[int, str]:
    """Run the real CLI entry point in this process: (exit status, stderr, after stdout if `stdout`)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, (captured.out if stdout else "") + captured.err


def spec_for(**overrides) -> FeatureSpec:
    values = {"fix_length": SECONDS, **overrides}
    return FeatureSpec(**values)


def data_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "data"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- the happy path -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["stft", "mfcc", "mel"])
def test_ravdess_cli_round_trip(tmp_path, capsys, config, ravdess_dir, kind):
    code, err = xval(capsys, "preprocess", "ravdess", "--input", str(ravdess_dir), "--config", str(config),
                     "--features", kind, "--jobs", "2", "--name", "rav")
    assert code == 0, err
    assert "12 of 12 files" in err and "12 from 48000 Hz" in err
    ds = load_dataset(tmp_path / "data", "rav")
    assert ds.items == ["Actor_01", "Actor_02", "Actor_03"]
    for item in ds.items:
        assert ds.predictors[item].shape == (4, *SHAPES[kind])  # (datapoints, time, frequency)
        assert ds.predictors[item].dtype == np.float32
        assert ds.targets[item].dtype == np.int64
        assert list(ds.targets[item]) == [0, 0, 4, 4]  # emotion codes 01 and 05
    m = ds.manifest
    assert m["task_type"] == "classification"
    assert m["classes"] == list(datasets.EMOTIONS)
    assert m["sr"] == 16000 and m["features"]["features_type"] == kind
    assert m["datapoints_per_item"] == {"Actor_01": 4, "Actor_02": 4, "Actor_03": 4}
    assert m["sources"]["Actor_02"][0] == f"Actor_02/{ravdess_name(1, 2, 1)}"
    assert data_files(tmp_path) == ["rav.xvd"]  # the memory-mapped format (issue 15)


def test_flat_ravdess_folder_and_jobs_give_identical_arrays(tmp_path, ravdess_dir):
    flat = tmp_path / "flat"
    for path in ravdess_dir.rglob("*.wav"):
        write(flat / path.name, sf.read(path, dtype="float32")[0])
    corpus = datasets.ravdess(flat)
    assert sorted({e.item for e in corpus.entries}) == ["Actor_01", "Actor_02", "Actor_03"]
    spec = spec_for()
    serial = extract_all([e.path for e in corpus.entries], spec, jobs=1)
    pooled = extract_all([e.path for e in corpus.entries], spec, jobs=2)
    for (a, sr_a), (b, sr_b) in zip(serial, pooled):
        assert sr_a == sr_b == SR and np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["stft", "mfcc", "mel"])
def test_features_equal_a_plain_librosa_loop(tmp_path, kind):
    import librosa

    path = write(tmp_path / "a.wav", tone(220))
    spec = spec_for(features_type=kind)
    y, sr = librosa.load(path, sr=16000)
    y = librosa.util.fix_length(y, size=int(SECONDS * sr))
    if kind == "stft":
        expected = np.abs(librosa.stft(y, n_fft=1024, hop_length=512)) ** spec.power_law_exponent
    elif kind == "mfcc":
        expected = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40, n_fft=512, hop_length=256, n_mels=64)
    else:
        expected = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, n_mels=64))
    x, original_sr = extract(path, spec)
    assert original_sr == SR
    np.testing.assert_array_equal(x[0], expected.T)


def test_time_frequency_orientation_and_resampling(tmp_path):
    """A 1 kHz sine at 22.05 kHz: resampled to 16 kHz, its peak in the last axis at 1 kHz, low first."""
    t = np.arange(int(22050 * SECONDS)) / 22050
    path = write(tmp_path / "sine.wav", (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 22050)
    spec = spec_for(power_law_compression=False)
    x, sr = extract(path, spec)
    assert sr == 22050 and x.shape == (1, *spec.shape) == (1, 16, 513)
    peak_bin = int(np.argmax(x[0].mean(axis=0)))
    assert abs(peak_bin * 16000 / 1024 - 1000) < 16000 / 1024  # not flipped, and at 16 kHz


def test_stereo_is_mixed_to_mono(tmp_path):
    mono = tone(300)
    left, right = mono * 1.5, mono * 0.5
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    mono_path = tmp_path / "mono.wav"
    sf.write(mono_path, (left + right) / 2, SR, subtype="FLOAT")
    spec = spec_for()
    np.testing.assert_allclose(extract(stereo, spec)[0], extract(mono_path, spec)[0], rtol=1e-5, atol=1e-6)


def test_segmentation_into_overlapping_windows(tmp_path, capsys):
    path = write(tmp_path / "corpus" / "spk1" / "yes" / "a.wav", tone(200, seconds=1.0))
    write(tmp_path / "corpus" / "spk2" / "no" / "b.wav", tone(250, seconds=1.0))
    spec = spec_for(sequence_length=0.25, sequence_overlap=0.5)
    x, _ = extract(path, spec)
    assert x.shape == (7, 8, 513)  # 1 + (16000 - 4000) // 2000 windows of 4000 samples: 1 + 4000 // 512 frames
    assert spec.datapoints(16000) == 7
    config = tmp_path / "seg.ini"
    config.write_text(f"[paths]\ndata_folder = {tmp_path / 'data'}\n"
                      "[features]\nsequence_length = 0.25\nsequence_overlap = 0.5\n")
    code, err = xval(capsys, "preprocess", "folder", "--input", str(tmp_path / "corpus"), "--config", str(config))
    assert code == 0, err
    ds = load_dataset(tmp_path / "data", "corpus")
    assert ds.manifest["classes"] == ["no", "yes"]
    assert list(ds.targets["spk1"]) == [1] * 7 and list(ds.targets["spk2"]) == [0] * 7
    assert ds.manifest["segment_starts_s"]["spk1"] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75]


def test_demo_corpus_through_the_whole_front_end(tmp_path, capsys, config):
    code, err = xval(capsys, "preprocess", "demo", "--output", str(tmp_path / "wav"), "--config", str(config),
                     "--jobs", "2")
    assert code == 0, err
    wavs = sorted((tmp_path / "wav").rglob("*.wav"))
    assert len(wavs) == 384 and wavs[0].name == "03-01-01-01-01-01-01.wav"
    ds = load_dataset(tmp_path / "data", "demo_audio")
    assert len(ds.items) == 8 and ds.items[0] == "Actor_01"
    assert ds.manifest["classes"] == ["a", "e", "i", "u"]
    assert "01..04" in ds.manifest["corpus"]["label"]
    assert ds.input_shape == (32, 513)  # 1 s at 16 kHz: 1 + 16000 // 512 frames
    assert sorted(set(np.concatenate(list(ds.targets.values())))) == [0, 1, 2, 3]
    assert not (tmp_path / "data" / "demo.xvd").exists()  # the built-in demo is untouched


# --- bad input ------------------------------------------------------------------------------------

def test_bad_files_are_skipped_named_and_counted(tmp_path, capsys, config, ravdess_dir):
    bad = {
        "corrupt": ravdess_dir / "Actor_01" / ravdess_name(2, 1),
        "truncated": ravdess_dir / "Actor_02" / ravdess_name(2, 2),
        "silent": ravdess_dir / "Actor_03" / ravdess_name(2, 3),
        "nan": ravdess_dir / "Actor_03" / ravdess_name(3, 3),
        "name": ravdess_dir / "Actor_01" / "recording one.wav",
        "emotion": ravdess_dir / "Actor_01" / ravdess_name(9, 1),
    }
    bad["corrupt"].write_bytes(b"RIFF\x00\x01\x00\x00WAVEfmt garbage" + bytes(range(256)) * 4)
    write(bad["truncated"], tone(200))
    bad["truncated"].write_bytes(bad["truncated"].read_bytes()[:30])
    write(bad["silent"], np.zeros(SR // 2, np.float32))
    sf.write(bad["nan"], np.full(SR // 2, np.nan, np.float32), SR, subtype="FLOAT")
    write(bad["name"], tone(200))
    write(bad["emotion"], tone(200))
    code, err = xval(capsys, "preprocess", "ravdess", "--input", str(ravdess_dir), "--config", str(config),
                     "--jobs", "2")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 6
    for path in bad.values():
        assert any(str(path) in line for line in warnings), path
    assert "RAVDESS form" in err and "emotion code 09" in err and "silent" in err and "corrupt" in err
    assert "12 of 18 files" in err and "skipped 6" in err
    ds = load_dataset(tmp_path / "data", "ravdess")
    assert ds.datapoints(ds.items) == 12
    assert len(ds.manifest["skipped"]) == 6


def one_line_error(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert lines[-1].startswith("error:"), err
    assert len([line for line in lines if line.startswith("error:")]) == 1
    for word in words:
        assert word in lines[-1], (word, lines[-1])


def test_missing_folder_is_a_one_line_error(tmp_path, capsys, config):
    code, err = xval(capsys, "preprocess", "ravdess", "--input", str(tmp_path / "nope"), "--config", str(config))
    one_line_error(code, err, "--input", str(tmp_path / "nope"), "no such folder")
    assert data_files(tmp_path) == []


def test_folder_without_audio_is_a_one_line_error(tmp_path, capsys, config):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    code, err = xval(capsys, "preprocess", "folder", "--input", str(tmp_path / "empty"), "--config", str(config))
    one_line_error(code, err, "no audio files")


def test_nothing_usable_is_an_error_and_writes_nothing(tmp_path, capsys, config):
    root = tmp_path / "quiet"
    for actor in (1, 2):
        write(root / ravdess_name(1, actor), np.zeros(SR // 4, np.float32))
    write(root / "misnamed.wav", tone(200))
    code, err = xval(capsys, "preprocess", "ravdess", "--input", str(root), "--config", str(config),
                     "--jobs", "2")
    one_line_error(code, err, "none of its 3 audio files is usable")
    assert err.count("warning: skipped") == 3
    assert data_files(tmp_path) == []  # not even a temporary file


def test_failed_save_leaves_no_partial_files(tmp_path, monkeypatch, ravdess_dir):
    from xvalkit import data
    from xvalkit.audio.preprocess import preprocess

    def fail(self, x, where):
        raise OSError("disk full")

    monkeypatch.setattr(data.mapped._Appender, "append", fail)
    with pytest.raises(OSError):
        preprocess(datasets.ravdess(ravdess_dir), spec_for(), tmp_path / "data", "rav", jobs=1)
    leftovers = [p.name for p in (tmp_path / "data").iterdir() if "xvd" in p.name or ".tmp" in p.name]
    assert leftovers == []


def test_a_save_stopped_halfway_never_mixes_new_predictors_with_old_targets(tmp_path, monkeypatch, ravdess_dir):
    from xvalkit import mapped
    from xvalkit.audio.preprocess import preprocess

    corpus = datasets.ravdess(ravdess_dir)
    preprocess(corpus, spec_for(), tmp_path / "data", "rav", jobs=1)  # an existing dataset
    old = load_dataset(tmp_path / "data", "rav")
    old_shape, old_first = old.input_shape, np.array(old.predictors[old.items[0]])
    save_small = mapped._save_small

    def stop_before_items(path, array):
        if path.name == "items.npy":
            raise KeyboardInterrupt  # a second Ctrl-C after the arrays, before the item names
        save_small(path, array)

    monkeypatch.setattr(mapped, "_save_small", stop_before_items)
    with pytest.raises(KeyboardInterrupt):
        preprocess(corpus, spec_for(features_type="mfcc"), tmp_path / "data", "rav", jobs=1)
    kept = load_dataset(tmp_path / "data", "rav")  # the old dataset, whole: the new folder never replaced it
    assert kept.input_shape == old_shape and np.array_equal(kept.predictors[kept.items[0]], old_first)
    assert data_files(tmp_path) == ["rav.xvd"]


def test_misplaced_file_in_labelled_folder_is_skipped(tmp_path):
    write(tmp_path / "c" / "spk1" / "yes" / "a.wav", tone(200))
    write(tmp_path / "c" / "spk1" / "stray.wav", tone(200))
    corpus = datasets.labelled_folder(tmp_path / "c")
    assert [e.item for e in corpus.entries] == ["spk1"] and corpus.classes == ["yes"]
    assert corpus.skipped[0][0].name == "stray.wav"


@pytest.mark.parametrize("args, words", [
    (["--features", "chroma"], ["features_type", "stft, mfcc, mel"]),
    (["--name", "demo"], ["--name demo", "built-in"]),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, config, ravdess_dir, args, words):
    code, err = xval(capsys, "preprocess", "ravdess", "--input", str(ravdess_dir), "--config", str(config), *args)
    one_line_error(code, err, *words)
    assert data_files(tmp_path) == []


def test_bad_config_value_names_the_key():
    from xvalkit.errors import XvalError

    with pytest.raises(XvalError, match="hop_size"):
        FeatureSpec.from_config({"hop_size": 0})
    with pytest.raises(XvalError, match="unknown key 'hopsize'"):
        FeatureSpec.from_config({"hopsize": 256})
    with pytest.raises(XvalError, match="window_type"):
        FeatureSpec.from_config({"window_type": "no-such-window"})


# --- process set-up -------------------------------------------------------------------------------

def test_numba_cache_goes_to_a_per_user_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    code = "import os, xvalkit.audio.features; print(os.environ['NUMBA_CACHE_DIR'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "cache" / "xvalkit" / "numba")
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "mine")


def test_features_shape_matches_spec():
    for kind in ("stft", "mfcc", "mel"):
        spec = spec_for(features_type=kind)
        assert spec.shape == SHAPES[kind]
        assert features(tone(200, sr=16000), spec).shape == (1, *SHAPES[kind])
    manifest = spec_for(features_type="mfcc").to_manifest()
    assert json.loads(json.dumps(manifest)) == manifest  # plain JSON: it survives the round trip
    assert manifest["features_type"] == "mfcc" and manifest["fix_length"] == SECONDS


def test_files_that_do_not_fit_their_planned_rows_are_sent_back_whole(tmp_path, monkeypatch):
    """Workers write into rows planned from headers; a file whose header misleads still comes back."""
    from xvalkit.audio import preprocess as pipeline

    paths = [write(tmp_path / f"{i}.wav", tone(200 + 50 * i, seconds=1.0)) for i in range(4)]
    spec = spec_for(sequence_length=0.25, sequence_overlap=0.5)
    serial = extract_all(paths, spec, jobs=1)
    monkeypatch.setattr(pipeline, "_planned_datapoints", lambda path, spec: 3 if path.endswith("1.wav") else 7)
    pooled = extract_all(paths, spec, jobs=2)
    for (a, _), (b, _) in zip(serial, pooled):
        assert a.shape == (7, 8, 513) and np.array_equal(a, b)


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
                                          ("FLAC", "PCM_16"), ("FLAC", "PCM_24"), ("WAV", "FLOAT")])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_audio_gives_exactly_the_samples_soundfile_gives(tmp_path, fmt, subtype, channels):
    """Integer PCM is read as integers and scaled by us (5x faster): the samples must not change."""
    from xvalkit.audio.io import read_audio

    rng = np.random.default_rng(channels)
    audio = rng.uniform(-1, 1, size=(4000, channels)).astype(np.float32)
    audio[:4] = [[-1.0] * channels, [1.0] * channels, [0.0] * channels, [2.0 ** -15] * channels]
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, audio, SR, subtype=subtype, format=fmt)
    expected = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32)
    samples, sr = read_audio(path)
    assert sr == SR and samples.dtype == np.float32 and samples.flags.c_contiguous
    np.testing.assert_array_equal(samples, expected)


def test_each_items_features_come_back_without_a_copy(tmp_path, ravdess_dir):
    """A flat RAVDESS folder interleaves actors; the corpus groups them, so each item's rows of the
    shared output are consecutive and its array is a view of them, equal to the serial one."""
    from xvalkit.audio.preprocess import Summary, build_dataset

    flat = tmp_path / "flat"
    for path in ravdess_dir.rglob("*.wav"):
        write(flat / path.name, sf.read(path, dtype="float32")[0])
    corpus = datasets.ravdess(flat)
    items = [e.item for e in corpus.entries]
    assert items == sorted(items)  # grouped, and in path order within each item:
    assert [e.path for e in corpus.entries if e.item == "Actor_02"] == sorted(flat.glob("*-02.wav"))
    spec = spec_for()
    built = {}
    for jobs in (1, 2):
        results = extract_all([e.path for e in corpus.entries], spec, jobs=jobs)
        built[jobs] = build_dataset(corpus, spec, results, Summary(name="x", files=len(items)))[0]
    for item, x in built[2].items():
        assert x.shape == (4, *SHAPES["stft"]) and np.array_equal(x, built[1][item])
        assert x.base is not None and not x.flags.owndata  # a view of the shared rows
        assert built[1][item].flags.owndata  # serial results were joined by a copy


def test_join_copies_parts_that_do_not_lie_end_to_end():
    from xvalkit.audio.preprocess import _join

    rows = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    view = _join([rows[0:2], rows[2:3], rows[3:6]])
    assert np.array_equal(view, rows) and np.shares_memory(view, rows)
    gap = _join([rows[0:2], rows[3:6]])
    assert np.array_equal(gap, rows[[0, 1, 3, 4, 5]]) and not np.shares_memory(gap, rows)
    other = rows.copy()
    mixed = _join([rows[0:3], other[3:6]])
    assert np.array_equal(mixed, rows) and not np.shares_memory(mixed, rows)


def test_pool_workers_run_with_one_blas_thread_and_reusable_memory(tmp_path):
    """Forked workers inherit the parent's one-thread limit; the parent gets its threads back."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from threadpoolctl import threadpool_info

    from xvalkit.audio.runtime import keep_freed_memory, one_blas_thread_while_pooling

    before = [pool["num_threads"] for pool in threadpool_info()]
    with one_blas_thread_while_pooling():
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            in_workers = pool.submit(threadpool_info).result()
    assert in_workers and all(p["num_threads"] == 1 for p in in_workers)
    assert [pool["num_threads"] for pool in threadpool_info()] == before
    assert keep_freed_memory() is sys.platform.startswith("linux")


def files_done(output: str, total: int) -> int:
    """The progress bar's latest 'N/total' (rich draws it on a terminal), 0 before the first."""
    import re

    found = re.findall(rf"(\d+)/{total}\b", output)
    return int(found[-1]) if found else 0


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory) -> Path:
    """240 files of 2 s: 4 actors x 8 emotions x 7.5 takes."""
    root = tmp_path_factory.mktemp("long") / "RAVDESS"
    for i in range(240):
        actor = i % 4 + 1
        write(root / f"Actor_{actor:02d}" / ravdess_name((i // 4) % 8 + 1, actor, i // 32 + 1),
              tone(150 + i, seconds=2.0, seed=i))
    return root


# Loaded by the interrupted run below (as sitecustomize): the interpreter's exit is held where
# CPython 3.11's concurrent.futures._python_exit has found a pool's wake-up pipe open and is about
# to write to it, until that pool's manager thread has ended (closing the pipe) -- the worst case
# a loaded machine's scheduler can produce, made certain. A pool still running at exit then shows
# "Exception ignored in threading ... OSError" every time instead of once in a while.
EXIT_RACE_AT_ITS_WORST = """
import sys, threading
import concurrent.futures.process as process

_wakeup = process._ThreadWakeup.wakeup


def wakeup(self):
    if sys._getframe(1).f_code.co_name == "_python_exit" and not self._closed:
        for thread in list(process._threads_wakeups):
            if thread is not threading.current_thread():
                thread.join()
        self._writer.send_bytes(b"")  # what the original does after its check
        return
    _wakeup(self)


process._ThreadWakeup.wakeup = wakeup
"""


# Loaded with EXIT_RACE_AT_ITS_WORST by the interrupted run below: every audio file (soundfile.SoundFile,
# which audio/io.py opens them with) is opened 20 ms late, in the run and in its forked workers, so
# that 240 files take seconds whatever the machine's speed.
SLOW_READS = """
import time
import soundfile


class SlowSoundFile(soundfile.SoundFile):
    def __init__(self, *args, **kwargs):
        time.sleep(0.02)
        super().__init__(*args, **kwargs)


soundfile.SoundFile = SlowSoundFile
"""


def interrupted_in_a_terminal(command: list[str], env: dict, after: int, total: int) -> tuple[int, bytes, int]:
    """Run `command` with its stderr on a terminal (rich draws its progress bar there); once the bar
    shows `after` of `total` files done, freeze it (SIGSTOP), send Ctrl-C, resume it. Its exit
    status, its terminal output, and the files the bar showed done when it was frozen."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    output = b""

    def read(timeout: float) -> bool:
        nonlocal output
        if not select.select([master], [], [], timeout)[0]:
            return True
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the process ended
            return False
        output += chunk
        return bool(chunk)

    try:
        while files_done(output.decode(errors="replace"), total) < after:
            assert read(0.05) or files_done(output.decode(errors="replace"), total) >= after, output.decode()
            assert proc.poll() is None, f"the run ended before {after} files were done: {output.decode()}"
        os.killpg(proc.pid, signal.SIGSTOP)  # frozen: no file can finish before the Ctrl-C
        frozen_at = files_done(output.decode(errors="replace"), total)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        os.killpg(proc.pid, signal.SIGCONT)
        while proc.poll() is None:
            read(0.05)
        while read(0.05):
            pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(master)
    return proc.returncode, output, frozen_at


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("after", [1, 120])  # files done when Ctrl-C comes: early, half-way
def test_ctrl_c_writes_nothing_and_prints_no_traceback(tmp_path, config, long_corpus, jobs, after):
    """Ctrl-C once the progress bar shows `after` of 240 files done: exit 130, one line, no dataset.

    The run is frozen (SIGSTOP) as soon as the bar shows that progress, the Ctrl-C sent, then the run
    resumed: it cannot finish the 240 files in between, so it must stop, whatever the machine's speed.
    Each file is opened 20 ms late (SLOW_READS): at 300 files a second the bar this test reads went
    from 0 to 240 in one frame, and the Ctrl-C came after the last file. Its exit meets a pool's
    threads at their worst timing (EXIT_RACE_AT_ITS_WORST)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(EXIT_RACE_AT_ITS_WORST + SLOW_READS)
    python_path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TERM": "xterm", "PYTHONPATH": python_path}
    command = [sys.executable, "-m", "xvalkit.cli", "preprocess", "ravdess", "--input", str(long_corpus),
               "--name", "rav", "--jobs", jobs, "--config", str(config)]
    returncode, output, frozen_at = interrupted_in_a_terminal(command, env, after, 240)
    assert frozen_at < 240, f"the run had done all 240 files when the Ctrl-C came: {output.decode()}"
    import re

    err = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # no colours
    assert returncode == 130, err
    assert "interrupted: a dataset is saved whole" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []  # not even a temp file


@pytest.mark.parametrize("presses", [1, 2])  # once: the files in progress finish; twice: stop now
def test_ctrl_c_leaves_no_pool_thread_to_race_the_exit(long_corpus, presses):
    """After Ctrl-C, extract_all returns with the pool's threads gone, not still running.

    A pool's manager thread left running (shutdown(wait=False)) closes its wake-up pipe when the
    files in progress finish, maybe while the interpreter's exit writes to that pipe: CPython 3.11
    checks, then writes, without a lock, and under load printed "Exception ignored in threading ...
    OSError: Bad file descriptor" after `xval preprocess --jobs 2` was interrupted. Checked at the
    moment that race needs: the instant the interrupt leaves extract_all, with files still in progress."""
    import signal
    import threading

    paths = sorted(long_corpus.rglob("*.wav"))
    before = set(threading.enumerate())
    finished = []

    def ctrl_c(files: int) -> None:  # at the first files done: the other worker is mid-task
        finished.append(files)
        if len(finished) == 1:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        extract_all(paths, spec_for(), jobs=2, progress=ctrl_c)
    left = [t for t in threading.enumerate() if t not in before]
    assert left == [], f"still running after the interrupt: {left}"
    assert sum(finished) < len(paths)  # interrupted, not finished
