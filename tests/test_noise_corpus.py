"""Noise as ordinary datasets: ColouredNoise fetched like a corpus, and any dataset as the files of
BackgroundNoise and ImpulseResponse (tympan.augmentations.sources)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from tympan import config as configuration
from tympan.augmentations.noise import BackgroundNoise
from tympan.augmentations.reverb import ImpulseResponse
from tympan.augmentations.sources import AudioFiles
from tympan.datasets.noise import ColouredNoise
from tympan.errors import ConfigError, DataError

SOURCE = {"target": "tympan.datasets.noise:ColouredNoise", "args": {"files": 1, "seconds": 2.0}}


def slope(samples: np.ndarray, rate: int) -> float:
    """The log-log slope of the power spectrum between 100 Hz and 4 kHz (0 white, -1 pink, -2 brown)."""
    power = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = (freqs > 100) & (freqs < 4000)
    return float(np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0])


def test_coloured_noise_is_fetched_like_a_corpus_with_the_spectra_it_names_and_the_same_bytes_every_time(tmp_path):
    corpus = ColouredNoise(files=2, seconds=2.0)
    folder = corpus.fetch(tmp_path / "raw")
    assert folder == tmp_path / "raw" / "coloured_noise"
    rows = corpus.index(tmp_path / "raw").rows
    names = [f"{c}_{i:02d}.wav" for c in ("white", "pink", "brown", "hum") for i in range(2)]
    assert [r["path"] for r in rows] == names
    assert {r["split"] for r in rows} == {"train"} and [r["label"] for r in rows[::2]] == [
        "white",
        "pink",
        "brown",
        "hum",
    ]
    assert {float(r["duration"]) for r in rows} == {2.0} and {r["sample_rate"] for r in rows} == {"16000"}
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


def test_a_complete_copy_is_kept_and_other_settings_need_their_own_name(tmp_path):
    folder = ColouredNoise(files=1, seconds=1.0).fetch(tmp_path)
    stamp = (folder / "white_00.wav").stat().st_mtime_ns
    ColouredNoise(files=1, seconds=1.0).fetch(tmp_path)
    assert (folder / "white_00.wav").stat().st_mtime_ns == stamp  # kept
    with pytest.raises(DataError, match="coloured_noise"):
        ColouredNoise(files=1, seconds=1.0, colours=["pink"]).fetch(tmp_path)
    assert (folder / "white_00.wav").stat().st_mtime_ns == stamp  # the other copy is refused, not replaced
    pink = ColouredNoise(files=1, seconds=1.0, colours=["pink"], name="pink_noise").fetch(tmp_path)
    assert sorted(p.name for p in pink.glob("*.wav")) == ["pink_00.wav"]


def test_a_fetch_that_fails_half_way_leaves_no_copy(tmp_path, monkeypatch):
    calls = []

    def broken(colour, n, rate, rng):
        calls.append(colour)
        if len(calls) == 2:
            raise OSError("disk full")
        return np.zeros(n, np.float32)

    monkeypatch.setattr("tympan.datasets.noise.render", broken)
    with pytest.raises(OSError, match="disk full"):
        ColouredNoise(files=1).fetch(tmp_path)
    assert not (tmp_path / "coloured_noise").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ({"colours": ["purple"]}, "colours"),
        ({"files": 0}, "files"),
        ({"seconds": -1}, "seconds"),
        ({"name": "A B"}, "name"),
    ],
)
def test_bad_corpus_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        ColouredNoise(**args)


def test_background_noise_fetches_its_source_when_prepared_not_when_built(tmp_path):
    augmentation = BackgroundNoise(
        min_snr_db=10, max_snr_db=10, source=SOURCE, root=str(tmp_path / "raw"), sample_rate=16000
    )
    assert not (tmp_path / "raw").exists()  # building (as config load does) writes nothing
    augmentation.prepare()
    assert [p.name for p in augmentation.files.files] == ["white_00.wav", "pink_00.wav", "brown_00.wav", "hum_00.wav"]
    clip = torch.sin(torch.arange(16000) / 10.0) * 0.3
    out = augmentation(clip, torch.Generator().manual_seed(3))
    noise = out - clip
    assert out.shape == clip.shape and out.dtype == torch.float32
    assert abs(10 * np.log10(float(clip.square().mean()) / float(noise.square().mean())) - 10) < 0.01


def scenes(folder, rates=16000):
    """A Folder dataset of scenes: 6 one-second clips in each of two class folders."""
    for label, frequency in (("park", 300.0), ("street", 900.0)):
        (folder / label).mkdir(parents=True)
        for i in range(6):
            samples = 0.3 * np.sin(2 * np.pi * frequency * np.arange(rates) / rates) * (i + 1) / 6
            sf.write(folder / label / f"{label}_{i}.wav", samples.astype(np.float32), rates)
    return {"target": "tympan.datasets.folder:Folder", "args": {"root": str(folder), "ratios": [0.5, 0.5, 0.0]}}


def test_any_dataset_is_a_noise_source_its_splits_and_labels_selecting_the_files(tmp_path):
    source = scenes(tmp_path / "scenes")
    root = str(tmp_path / "raw")
    everything = AudioFiles("noise", source=source, root=root)
    assert len(everything) == 12
    parks = AudioFiles("noise", source=source, splits=["dev"], labels=["park"], root=root)
    assert 0 < len(parks) < 6 and all(p.parent.name == "park" for p in parks.files)
    index = {r["path"]: r["split"] for r in everything.dataset.index(root).rows}
    assert all(index[f"park/{p.name}"] == "dev" for p in parks.files)
    with pytest.raises(ValueError, match="noise source .* has no files in splits \\['test'\\]"):
        AudioFiles("noise", source=source, splits=["test"], root=root).prepare()
    with pytest.raises(ValueError, match="with label in \\['forest'\\]"):
        AudioFiles("noise", source=source, labels=["forest"], root=root).prepare()


def test_impulse_responses_come_from_a_dataset_too(tmp_path):
    rooms = tmp_path / "rooms"
    for label, decay in (("small", 400.0), ("hall", 40.0)):
        (rooms / label).mkdir(parents=True)
        for i in range(2):
            response = np.exp(-decay * np.arange(8000) / 16000) * np.random.default_rng(i).standard_normal(8000)
            response[0] = 4.0  # the direct path
            sf.write(rooms / label / f"{label}_{i}.wav", (0.2 * response).astype(np.float32), 16000)
    source = {"target": "tympan.datasets.folder:Folder", "args": {"root": str(rooms), "ratios": [0.5, 0.5, 0.0]}}
    reverb = ImpulseResponse(source=source, labels=["hall"], root=str(tmp_path / "raw"), sample_rate=16000)
    reverb.prepare()
    assert len(reverb.files) == 2 and {p.parent.name for p in reverb.files.files} == {"hall"}
    clip = torch.zeros(16000)
    clip[100] = 1.0
    wet = reverb(clip, torch.Generator().manual_seed(0))
    assert wet.shape == clip.shape and float(wet[101:].abs().sum()) > 0  # the room's tail follows the click


def config(tmp_path, **args):
    return {
        "dataset": "FSDD",
        "features": "Waveform16k",
        "model": "WaveformCNN",
        "optimizer": "Adam",
        "augmentation": [
            {"target": "tympan.augmentations:BackgroundNoise", "args": {"root": str(tmp_path / "raw"), **args}}
        ],
    }


def test_a_config_names_a_dataset_preset_as_source_and_loading_it_fetches_nothing(tmp_path):
    loaded = configuration.parse(config(tmp_path, source="ColouredNoise"))
    assert loaded.augmentation[0].args["source"] == {
        "target": "tympan.datasets.noise:ColouredNoise",
        "args": {"files": 4, "seconds": 5.0},
    }
    overridden = configuration.parse(config(tmp_path, source={"preset": "ColouredNoise", "args": {"files": 1}}))
    assert overridden.augmentation[0].args["source"]["args"] == {"files": 1, "seconds": 5.0}
    chosen = config(tmp_path)
    chosen["augmentation"] = [
        {
            "target": "tympan.augmentations:Choice",
            "args": {"choices": [{**chosen["augmentation"][0], "args": {"source": "ColouredNoise"}}]},
        }
    ]
    inner = configuration.parse(chosen).augmentation[0].args["choices"][0]
    assert inner["args"]["source"]["target"] == "tympan.datasets.noise:ColouredNoise"  # a Choice's children too
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, "give either folder .* or source .*, not neither"),
        ({"folder": "FOLDER", "source": "ColouredNoise"}, "not both"),
        ({"folder": "FOLDER", "splits": ["dev"]}, "splits selects rows of a source dataset"),
        ({"folder": "nowhere"}, "noise folder nowhere: no such directory"),
        ({"source": "NoSuchNoise"}, "unknown dataset preset 'NoSuchNoise'; known: .*ColouredNoise"),
        ({"source": {"target": "tympan.models:SmallCNN"}}, "SmallCNN is not a tympan.datasets.base:AudioDataset"),
        ({"source": {"preset": "ColouredNoise", "args": {"colours": []}}}, "colours must be a non-empty list"),
        ({"source": "ColouredNoise", "splits": ["valid"]}, "splits must be a list of"),
    ],
)
def test_a_bad_noise_source_is_one_clear_line_at_config_load(tmp_path, args, message):
    (tmp_path / "mine").mkdir()
    sf.write(tmp_path / "mine" / "a.wav", np.zeros(100, np.float32), 16000)
    args = {k: str(tmp_path / "mine") if v == "FOLDER" else v for k, v in args.items()}
    with pytest.raises(ConfigError, match=message) as error:
        configuration.parse(config(tmp_path, **args))
    assert "\n" not in str(error.value)
