"""CQT features (`features_type = "cqt"`, `xval preprocess --features cqt`) against a plain librosa loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xvalkit.audio.features import FeatureSpec
from xvalkit.audio.preprocess import extract
from xvalkit.cli import main
from xvalkit.data import load_dataset
from xvalkit.errors import XvalError

SR = 44100
SECONDS = 0.5


def tone(path: Path, f0: float, seed: int = 0) -> Path:
    t = np.arange(int(SR * SECONDS)) / SR
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    sf.write(path, (0.4 * np.sin(2 * np.pi * f0 * t) + noise).astype(np.float32), SR, subtype="PCM_16")
    return path


@pytest.mark.parametrize("hop, bpo, n_bins, fmin", [(512, 12, 84, 32.70319566257483), (256, 24, 96, 65.0)])
def test_cqt_equals_a_plain_librosa_loop(tmp_path, hop, bpo, n_bins, fmin):
    import librosa

    path = tone(tmp_path / "a.wav", 440)
    spec = FeatureSpec.from_config({"features_type": "cqt", "fix_length": SECONDS, "cqt_hop_size": hop,
                                    "cqt_bins_per_octave": bpo, "cqt_n_bins": n_bins, "cqt_fmin": fmin})
    y, sr = librosa.load(path, sr=16000)
    y = librosa.util.fix_length(y, size=int(SECONDS * sr))
    expected = np.abs(librosa.cqt(y, sr=sr, hop_length=hop, fmin=fmin, n_bins=n_bins, bins_per_octave=bpo))
    x, original_sr = extract(path, spec)
    assert original_sr == SR and x.shape == (1,) + spec.shape
    np.testing.assert_array_equal(x[0], expected.T.astype(np.float32))
    peak = librosa.cqt_frequencies(n_bins, fmin=fmin, bins_per_octave=bpo)[x[0].mean(axis=0).argmax()]
    assert abs(12 * np.log2(peak / 440)) < 0.6  # the tone's bin, low frequencies first


def test_cqt_bins_above_nyquist_are_refused_by_name():
    with pytest.raises(XvalError, match=r"\[features\] cqt_n_bins = 120: must be fewer"):
        FeatureSpec.from_config({"features_type": "cqt", "cqt_n_bins": 120})


def test_preprocess_folder_with_cqt(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    for item in ("s1", "s2"):
        for label, f0 in (("low", 220), ("high", 880)):
            (corpus / item / label).mkdir(parents=True)
            tone(corpus / item / label / "x.wav", f0)
    config = tmp_path / "c.ini"
    config.write_text(f"[paths]\ndata_folder = {tmp_path / 'data'}\n[features]\nfix_length = {SECONDS}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["preprocess", "folder", "--input", str(corpus), "--features", "cqt", "--jobs", "1",
              "--config", str(config)])
    assert exit_info.value.code in (0, None)
    data = load_dataset(tmp_path / "data", "corpus")
    assert data.input_shape == FeatureSpec(features_type="cqt", fix_length=SECONDS).shape == (16, 84)
    assert data.manifest["features"]["features_type"] == "cqt" if "features" in data.manifest else True
