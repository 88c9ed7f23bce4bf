"""Noise corpora (tympan.datasets.noise) and BackgroundNoise filling its folder from one."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from tympan import config as configuration
from tympan.augmentations.noise import BackgroundNoise
from tympan.datasets.noise import SETTINGS, ColouredNoise
from tympan.errors import ConfigError

SOURCE = {"target": "tympan.datasets.noise:ColouredNoise", "args": {"files": 1, "seconds": 2.0}}


def slope(samples: np.ndarray, rate: int) -> float:
    """The log-log slope of the power spectrum between 100 Hz and 4 kHz (0 white, -1 pink, -2 brown)."""
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = (freqs > 100) & (freqs < 4000)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


def test_coloured_noise_has_the_spectra_it_names_and_the_same_bytes_every_time(tmp_path):
    corpus = ColouredNoise(files=2, seconds=2.0)
    folder = corpus.fetch(tmp_path / "noise")
    names = sorted(p.name for p in folder.glob("*.wav"))
    assert names == [f"{c}_{i:02d}.wav" for c in ("brown", "hum", "pink", "white") for i in range(2)]
    slopes = {}
    for colour in ("white", "pink", "brown"):
        samples, rate = sf.read(folder / f"{colour}_00.wav", dtype="float32")
        assert rate == 16000 and len(samples) == 32000
        assert abs(np.abs(samples).max() - 0.5) < 1e-6
        slopes[colour] = slope(samples, rate)
    assert abs(slopes["white"]) < 0.2 and abs(slopes["pink"] + 1) < 0.2 and abs(slopes["brown"] + 2) < 0.2
    hum, _ = sf.read(folder / "hum_00.wav", dtype="float32")
    spectrum = np.abs(np.fft.rfft(hum))
    assert np.fft.rfftfreq(len(hum), 1 / 16000)[spectrum.argmax()] in (50.0, 60.0, 100.0, 120.0, 150.0, 180.0)

    again = ColouredNoise(files=2, seconds=2.0).fetch(tmp_path / "again")
    for name in names:
        assert (folder / name).read_bytes() == (again / name).read_bytes()


def test_a_folder_made_with_other_settings_is_made_again_and_a_complete_one_is_kept(tmp_path):
    folder = ColouredNoise(files=1, seconds=1.0).fetch(tmp_path / "noise")
    stamp = (folder / "white_00.wav").stat().st_mtime_ns
    ColouredNoise(files=1, seconds=1.0).fetch(folder)
    assert (folder / "white_00.wav").stat().st_mtime_ns == stamp  # kept
    ColouredNoise(files=1, seconds=1.0, colours=["pink"]).fetch(folder)
    assert sorted(p.name for p in folder.glob("*.wav")) == ["pink_00.wav"]
    assert json.loads((folder / SETTINGS).read_text())["colours"] == ["pink"]


def test_a_fetch_that_fails_half_way_leaves_no_folder(tmp_path, monkeypatch):
    calls = []

    def broken(colour, n, rate, rng):
        calls.append(colour)
        if len(calls) == 2:
            raise OSError("disk full")
        return np.zeros(n, np.float32)

    monkeypatch.setattr("tympan.datasets.noise.render", broken)
    with pytest.raises(OSError, match="disk full"):
        ColouredNoise(files=1).fetch(tmp_path / "noise")
    assert not (tmp_path / "noise").exists()


@pytest.mark.parametrize(
    "args, message",
    [({"colours": ["purple"]}, "colours"), ({"files": 0}, "files"), ({"seconds": -1}, "seconds")],
)
def test_bad_corpus_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        ColouredNoise(**args)


def test_background_noise_fills_its_folder_from_its_source_when_prepared_not_when_built(tmp_path):
    folder = tmp_path / "noise"
    augmentation = BackgroundNoise(str(folder), min_snr_db=10, max_snr_db=10, source=SOURCE, sample_rate=16000)
    assert not folder.exists()  # building (as config load does) writes nothing
    augmentation.prepare()
    assert len(augmentation.files) == 4
    clip = torch.sin(torch.arange(16000) / 10.0) * 0.3
    out = augmentation(clip, torch.Generator().manual_seed(3))
    noise = out - clip
    assert out.shape == clip.shape and out.dtype == torch.float32
    assert abs(10 * np.log10(float(clip.square().mean()) / float(noise.square().mean())) - 10) < 0.01


def test_a_config_with_a_noise_source_loads_without_the_folder_and_a_bad_source_is_refused(tmp_path):
    def config(source):
        return {
            "dataset": "FSDD",
            "features": "Waveform16k",
            "model": "WaveformCNN",
            "optimizer": "Adam",
            "augmentation": [
                {"target": "tympan.augmentations:BackgroundNoise", "args": {"folder": str(tmp_path / "n"), **source}}
            ],
        }

    configuration.parse(config({"source": SOURCE}))
    assert not (tmp_path / "n").exists()
    with pytest.raises(ConfigError, match="no such directory"):
        configuration.parse(config({}))
    with pytest.raises(ConfigError, match="source: .*fsdd:FSDD is not a tympan.datasets.noise:NoiseCorpus"):
        configuration.parse(config({"source": {"target": "tympan.datasets.fsdd:FSDD"}}))
    with pytest.raises(ConfigError, match="colours"):
        configuration.parse(config({"source": {**SOURCE, "args": {"colours": []}}}))
