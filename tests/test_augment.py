"""`xval augment` and xvalkit.audio.augment, on real signals written with soundfile."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from xvalkit import cli
from xvalkit.audio import augment as aug
from xvalkit.audio.augment import AugmentSpec

from .conftest import assert_plain_modes

SR = 22050


# ----------------------------------------------------------------------------------------- fixtures
def harmonic(seconds: float = 1.0, f0: float = 220.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced-like signal: harmonics of f0 with a slow envelope, plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2
    x += 0.001 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def white(seconds: float = 2.0, sr: int = SR, seed: int = 1) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def burst(sr: int = SR) -> np.ndarray:
    """0.2 s of tone, then 1.3 s of silence: the silence shows any reverb tail."""
    x = np.zeros(int(1.5 * sr), np.float32)
    n = int(0.2 * sr)
    x[:n] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)
    return x


def only(*transforms: str, **ranges) -> AugmentSpec:
    return AugmentSpec(transforms=transforms, **ranges)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """IN with two subfolders (RAVDESS-like names), a stereo flac at another rate, and a text file."""
    root = tmp_path / "in"
    for i, actor in enumerate(["Actor_01", "Actor_01", "Actor_02"]):
        (root / actor).mkdir(parents=True, exist_ok=True)
        sf.write(root / actor / f"03-01-0{i + 1}-01-01-01-0{i + 1}.wav", harmonic(0.8, 150 + 60 * i, seed=i), SR)
    stereo = np.stack([harmonic(0.6, 300, 16000), white(0.6, 16000)], axis=1)
    sf.write(root / "Actor_02" / "stereo.flac", stereo, 16000)
    (root / "notes.txt").write_text("not audio")
    return root


def xval(capsys, *args) -> tuple[int, str]:
    """Run `xval ARGS` in-process as the console script does: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(a) for a in args])
    return exit_info.value.code or 0, capsys.readouterr().err


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ the CLI
def test_outputs_names_structure_and_log(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    status, err = xval(capsys, "augment", corpus, out, 3, "--seed", 5)
    assert status == 0, err
    files = tree(out)
    wavs = [name for name in files if name.endswith(".wav")]
    assert len(wavs) == 4 * (3 + 1)  # 4 audio files (the .txt ignored) x (N augmented + _orig)
    stem = "Actor_01/03-01-01-01-01-01-01"
    assert {f"{stem}_orig.wav", f"{stem}_aug1.wav", f"{stem}_aug3.wav"} <= set(wavs)
    assert "Actor_02/stereo_aug2.wav" in wavs
    info = sf.info(out / "Actor_02" / "stereo_aug1.wav")
    assert (info.samplerate, info.channels) == (16000, 1)  # rate kept, stereo mixed to mono
    orig, _ = sf.read(out / f"{stem}_orig.wav")
    assert np.max(np.abs(orig)) == pytest.approx(10 ** (-1 / 20), rel=1e-4)  # peak-normalised to -1 dBFS
    log = json.loads(files["augment_log.json"])
    assert log["seed"] == 5 and log["n"] == 3 and log["skipped"] == []
    for record in log["files"]:
        for name, output in record["outputs"].items():
            if name.endswith("_orig.wav"):
                assert output["transforms"] == []
                continue
            names = [step["transform"] for step in output["transforms"]]
            assert 1 <= len(names) == len(set(names)) and set(names) <= set(aug.TRANSFORMS)
            # the logged stretch rate explains the output's length
            rate = np.prod([s["rate"] for s in output["transforms"] if s["transform"] == "stretch"])
            length = sf.info(out / Path(record["file"]).parent / name).frames
            assert length == pytest.approx(record["seconds"] * record["sample_rate"] / rate, rel=0.01)
    assert "augmented 4 files into 16 outputs" in err
    assert_plain_modes(out)  # the wavs and augment_log.json, as a plain open() would make them


def test_seeded_runs_identical_across_jobs(corpus, tmp_path, capsys):
    runs = {}
    for name, jobs, seed in [("a", 1, 11), ("b", 2, 11), ("c", 1, 12)]:
        time.sleep(1.1 if name == "b" else 0)  # a later second: catches timestamps in the files
        status, err = xval(capsys, "augment", corpus, tmp_path / name, 2, "--seed", seed, "--jobs", jobs)
        assert status == 0, err
        runs[name] = tree(tmp_path / name)
    assert runs["a"] == runs["b"]  # bit-identical outputs and log, whatever the processing order
    differing = [k for k in runs["a"] if "_aug" in k and runs["a"][k] != runs["c"][k]]
    assert len(differing) == 8  # another seed: every augmented file differs


def test_version_does_not_depend_on_n_or_other_files(corpus, tmp_path, capsys):
    assert xval(capsys, "augment", corpus, tmp_path / "n2", 2, "--seed", 3)[0] == 0
    (corpus / "Actor_02" / "stereo.flac").unlink()
    assert xval(capsys, "augment", corpus, tmp_path / "n3", 3, "--seed", 3)[0] == 0
    name = "Actor_01/03-01-01-01-01-01-01_aug2.wav"
    assert (tmp_path / "n2" / name).read_bytes() == (tmp_path / "n3" / name).read_bytes()


# ---------------------------------------------------------------------------- the in-memory API
def test_augment_api_reproducible_and_varied():
    x = harmonic(1.0)
    first, record = aug.augment(x, SR, 42)
    again, record_again = aug.augment(x, SR, np.random.default_rng(42))
    assert np.array_equal(first, again) and record == record_again
    assert first.dtype == np.float32 and first.ndim == 1
    assert np.max(np.abs(first)) == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    orders = {tuple(s["transform"] for s in aug.augment(x[:4000], SR, seed)[1]) for seed in range(60)}
    assert {len(o) for o in orders} == {1, 2, 3, 4}  # subsets of every size
    assert len({o for o in orders if len(o) == 4}) > 1  # in more than one order


def test_noise_raises_noise_floor_at_drawn_snr(tmp_path):
    x = np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    sf.write(tmp_path / "noise.wav", white(0.5, 16000, seed=9), 16000)  # shorter, other rate: looped
    for spec in [only("noise", snr_min_db=10, snr_max_db=20),
                 only("noise", snr_min_db=10, snr_max_db=20, noise_file=str(tmp_path / "noise.wav"))]:
        noisy, step = aug.add_noise(x, SR, np.random.default_rng(0), spec)
        residual = noisy - x
        measured_snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(residual.astype(np.float64) ** 2))
        assert measured_snr == pytest.approx(step["snr_db"], abs=0.05)
        _, before = welch(x, SR, nperseg=1024)
        _, after = welch(noisy, SR, nperseg=1024)
        assert np.median(after) > 1e4 * np.median(before)  # the floor rises by more than 40 dB


def test_coloured_noise_slope():
    rng = np.random.default_rng(0)
    freqs, pink = welch(aug.coloured_noise(SR * 4, -3.0, rng), SR, nperseg=4096)
    octave_drop = 10 * np.log10(pink[(freqs > 900) & (freqs < 1100)].mean() / pink[(freqs > 1800) & (freqs < 2200)].mean())
    assert octave_drop == pytest.approx(3.0, abs=0.7)


def test_eq_changes_spectrum_by_drawn_shelf_gains():
    x = white(4.0)
    spec = only("eq", eq_max_peaks=0, eq_min_freq_hz=200, eq_max_freq_hz=5000)
    y, params = aug.random_eq(x, SR, np.random.default_rng(3), spec)
    low, high = params["filters"]
    freqs, before = welch(x, SR, nperseg=4096)
    _, after = welch(y, SR, nperseg=4096)
    change_db = 10 * np.log10(after / before)

    def band(lo: float, hi: float) -> float:
        return float(np.mean(change_db[(freqs >= lo) & (freqs <= hi)]))

    assert band(20, low["freq_hz"] / 4) == pytest.approx(low["gain_db"], abs=1.5)
    assert band(min(high["freq_hz"] * 3, 9000), 10000) == pytest.approx(high["gain_db"], abs=1.5)



def test_eq_peak_filters_change_the_spectrum_at_their_frequencies():
    """Each drawn peak filter adds its gain at its centre frequency, on top of the shelves: the
    spectrum with the peaks over the spectrum with the logged shelves alone (applied here with
    pedalboard directly) shows the peak's gain there and nothing far from it."""
    import pedalboard

    x = white(4.0)
    spec = only("eq", eq_max_peaks=1, eq_min_gain_db=-12, eq_max_gain_db=12, eq_min_freq_hz=300,
                eq_max_freq_hz=4000)
    peaks_seen = 0
    for seed in range(40):
        y, params = aug.random_eq(x, SR, np.random.default_rng(seed), spec)
        low, high, *peaks = params["filters"]
        if not peaks or abs(peaks[0]["gain_db"]) < 4:
            continue
        (peak,) = peaks
        shelves = pedalboard.Pedalboard([
            pedalboard.LowShelfFilter(cutoff_frequency_hz=low["freq_hz"], gain_db=low["gain_db"]),
            pedalboard.HighShelfFilter(cutoff_frequency_hz=high["freq_hz"], gain_db=high["gain_db"])])(x, SR)
        freqs, with_peak = welch(y, SR, nperseg=8192)
        _, shelves_only = welch(shelves, SR, nperseg=8192)
        change_db = 10 * np.log10(with_peak / shelves_only)
        centre = np.abs(freqs - peak["freq_hz"]) <= peak["freq_hz"] * 0.01
        assert np.mean(change_db[centre]) == pytest.approx(peak["gain_db"], abs=1.0), (seed, peak)
        far = (freqs < peak["freq_hz"] / 8) & (freqs > 30)
        if far.any():
            assert abs(np.mean(change_db[far])) < 1.0
        peaks_seen += 1
        if peaks_seen == 3:
            break
    assert peaks_seen == 3


def test_stretch_changes_length_by_drawn_rate():
    x = harmonic(2.0)
    for seed in range(3):
        y, params = aug.random_stretch(x, SR, np.random.default_rng(seed), only("stretch"))
        assert y.ndim == 1 and 0.8 <= params["rate"] <= 1.25
        assert y.size == pytest.approx(x.size / params["rate"], rel=0.005)


def dominant_hz(x: np.ndarray) -> float:
    freqs, power = welch(x, SR, nperseg=8192)
    return float(freqs[np.argmax(power)])


@pytest.mark.parametrize("quality", sorted(aug.STRETCH_QUALITY))
@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_every_stretch_quality_keeps_pitch_and_scales_length(quality, rate):
    x = harmonic(2.0, f0=220.0)
    y = aug.time_stretch(x, SR, rate, quality)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.size == pytest.approx(x.size / rate, rel=0.005)
    assert dominant_hz(y) == pytest.approx(220.0, abs=SR / 8192)  # the pitch is kept
    assert np.array_equal(y, aug.time_stretch(x, SR, rate, quality))  # deterministic


def test_impulse_response_convolution_equals_scipys(tmp_path):
    from scipy.signal import fftconvolve

    t = np.arange(int(0.5 * SR)) / SR
    ir = (np.random.default_rng(3).standard_normal(t.size) * np.exp(-t / 0.1)).astype(np.float32)
    sf.write(tmp_path / "ir.wav", ir, SR, subtype="FLOAT")
    x = harmonic(1.0)
    for clip in (x, x[:1000], x[:7]):  # the cached spectrum is per FFT size
        expected = fftconvolve(clip, aug._impulse_response(str(tmp_path / "ir.wav"), SR))[: clip.size]
        np.testing.assert_allclose(aug.convolve_head(clip, str(tmp_path / "ir.wav"), SR), expected,
                                   rtol=0, atol=1e-6 * np.abs(expected).max())


def decay_energy(x: np.ndarray) -> float:
    """Energy from 0.1 s after the burst's end to the end, relative to the burst's."""
    end = int(0.2 * SR)
    return float(np.sum(x[end + int(0.1 * SR):] ** 2) / np.sum(x[:end] ** 2))


def test_reverb_lengthens_decay(tmp_path):
    x = burst()
    assert decay_energy(x) == 0.0
    y, params = aug.random_reverb(x, SR, np.random.default_rng(0), only("reverb", reverb_min_wet=0.3))
    assert y.size == x.size and decay_energy(y) > 1e-4 and params["room_size"] > 0
    # convolution with an impulse response from the configured folder (0.8 s exponential decay)
    t = np.arange(int(0.8 * SR)) / SR
    ir = (np.random.default_rng(2).standard_normal(t.size) * np.exp(-t / 0.15)).astype(np.float32)
    (tmp_path / "irs").mkdir()
    sf.write(tmp_path / "irs" / "hall.wav", ir, SR)
    spec = only("reverb", impulse_response_folder=str(tmp_path / "irs"), reverb_min_wet=0.5, reverb_max_wet=0.5)
    y, params = aug.random_reverb(x, SR, np.random.default_rng(0), spec)
    assert params["impulse_response"].endswith("hall.wav") and decay_energy(y) > 1e-3


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t, c: [t / "missing", t / "out", 2], "no such folder"),
        (lambda t, c: [c / "notes.txt", t / "out", 2], "not a folder"),
        (lambda t, c: [c, c, 2], "inside IN"),
        (lambda t, c: [c, c / "Actor_01" / "aug", 2], "inside IN"),
        (lambda t, c: [c, t / "out", 0], "N = 0"),
        (lambda t, c: [c, t / "out", 2, "--jobs", 0], "--jobs 0"),
    ],
)
def test_usage_errors_one_line_exit_2(corpus, tmp_path, capsys, make_args, message):
    status, err = xval(capsys, "augment", *make_args(tmp_path, corpus))
    assert status == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (corpus / "Actor_01" / "aug").exists()


def test_empty_in(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("no audio here")
    status, err = xval(capsys, "augment", tmp_path / "empty", tmp_path / "out", 1)
    assert status == 2 and "no audio files" in err and not (tmp_path / "out").exists()


def test_corrupt_file_skipped_named_counted(corpus, tmp_path, capsys):
    (corpus / "Actor_01" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    status, err = xval(capsys, "augment", corpus, tmp_path / "out", 1, "--seed", 1)
    assert status == 1
    assert "broken.wav" in err and "1 unreadable file(s) skipped" in err and "augmented 4 files" in err
    assert not list((tmp_path / "out").rglob("broken*"))
    log = json.loads((tmp_path / "out" / "augment_log.json").read_text())
    assert [s["file"] for s in log["skipped"]] == ["Actor_01/broken.wav"]


def test_names_with_brackets_are_printed_as_they_are(corpus, tmp_path, capsys):
    """Paths go through rich: "[take 1]" must not be taken for markup and dropped."""
    (corpus / "[take 1]").mkdir()
    (corpus / "[take 1]" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    status, err = xval(capsys, "augment", corpus, tmp_path / "[out]", 1, "--seed", 1)
    assert status == 1 and "[take 1]/broken.wav" in err and f"in {tmp_path / '[out]'}" in err


def test_existing_outputs_need_overwrite(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    assert xval(capsys, "augment", corpus, out, 1, "--seed", 1)[0] == 0
    target = out / "Actor_02" / "stereo_aug1.wav"
    target.unlink()  # the others are still there: nothing may be (re)written
    before = tree(out)
    status, err = xval(capsys, "augment", corpus, out, 1, "--seed", 2)
    assert status == 2 and "--overwrite" in err and "already exists" in err
    assert tree(out) == before
    status, err = xval(capsys, "augment", corpus, out, 1, "--seed", 2, "--overwrite")
    assert status == 0 and target.exists() and tree(out) != before


def test_same_stem_collision(corpus, tmp_path, capsys):
    sf.write(corpus / "Actor_02" / "stereo.wav", harmonic(0.3), SR)
    status, err = xval(capsys, "augment", corpus, tmp_path / "out", 1)
    assert status == 2 and "would both write" in err and not (tmp_path / "out").exists()


def test_bad_config_values(corpus, tmp_path, capsys):
    for text, message in [("colour = 1", "config [augmentation]: unknown key 'colour'"),
                          ("snr_min_db = 40", "snr_min_db = 40.0 is above snr_max_db"),
                          ("stretch_quality = best", "stretch_quality = 'best'"),
                          ("eq_max_peaks = 1.5", "expected a whole number"),
                          ("peak_dbfs = 0.5", "must be <= 0"),
                          ("snr_max_db = True", "expected a number"),
                          ('noise_file = "nowhere.wav"', "no such file")]:
        (tmp_path / "bad.ini").write_text(f"[augmentation]\n{text}\n")
        status, err = xval(capsys, "augment", corpus, tmp_path / "out", 1, "--config", tmp_path / "bad.ini")
        assert status == 2 and message in err, err
    assert not (tmp_path / "out").exists()


def test_help_says_mono(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["augment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "mixed to mono" in text and "--overwrite" in text


@pytest.mark.parametrize("jobs, n, files", [("1", "30", 12), ("2", "30", 12), ("2", "1", 80)])
def test_ctrl_c_stops_between_files_and_leaves_only_complete_outputs(tmp_path, jobs, n, files):
    """Also with results coming faster than the parent's wait for them (N=1, short files)."""
    import os
    import signal
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    for i in range(files):
        sf.write(tmp_path / "in" / f"clip{i:02d}.wav", harmonic(2.0, seed=i), SR)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "xvalkit.cli", "augment", str(tmp_path / "in"), str(out), n,
                             "--seed", "1", "--jobs", jobs], stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(out.glob("*_aug1.wav"))) < 1:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "Exception ignored" not in err
    written = list(out.iterdir())
    assert written and not (out / "augment_log.json").exists()
    assert len(written) < files * (int(n) + 1)  # it stopped before the end
    assert not [p for p in written if ".tmp" in p.name]  # no temporary file left behind
    for path in written:
        assert sf.read(path)[0].size > 0  # every file there is whole


def test_spawned_workers_give_the_same_files_as_forked_ones(corpus, tmp_path, monkeypatch):
    """Where fork is unsafe (macOS, Windows) the pool spawns its workers: same outputs."""
    from rich.console import Console

    from xvalkit.audio import augment_files

    def run(out: Path) -> dict[str, bytes]:
        augment_files.run_augment(corpus, out, 2, AugmentSpec(), seed=5, jobs=2,
                                  console=Console(stderr=True, quiet=True))
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.wav")}

    forked = run(tmp_path / "forked")
    monkeypatch.setattr(augment_files, "fork_is_safe", lambda: False)
    assert run(tmp_path / "spawned") == forked


def test_a_rerun_removes_the_temporary_wav_a_killed_run_left(corpus, tmp_path, capsys):
    from .test_atomic import killed_mid_write

    out = tmp_path / "out"
    assert xval(capsys, "augment", corpus, out, 1, "--seed", 1)[0] == 0
    killed_mid_write("file", out / "Actor_02" / "stereo_aug1.wav")  # kill -9 while a wav was written
    assert [p.parent.name for p in out.rglob(".*.tmp*")] == ["Actor_02"]
    assert xval(capsys, "augment", corpus, out, 1, "--seed", 1, "--overwrite")[0] == 0
    assert not list(out.rglob(".*.tmp*"))
