"""Adapters to audiomentations, torch-audiomentations, torchaudio and torchvision, on real FSDD audio:
shapes and dtype, the adapter's p, randomness from the run's generator only, global RNGs left as
they were, refusals at config load, and a short training that reproduces itself."""

from __future__ import annotations

import random

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from tympan import augmentations, stages
from tympan import config as configuration
from tympan.audio import load
from tympan.augmentations.adapters import Audiomentations, Torchaudio, TorchAudiomentations, Torchvision
from tympan.config.schema import FeaturesConfig
from tympan.errors import ConfigError
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.spec import ShapeError, Spec, waveform

ADAPTERS = "tympan.augmentations.adapters"
FRAMES = Spec("frames", 16000, frame_rate=100.0, size=64)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def wave(fsdd_mirror):
    """One FSDD clip as a 16 kHz float32 waveform."""
    return torch.from_numpy(load(fsdd_mirror / "fsdd/recordings/3_jackson_7.wav", 16000)[0])


@pytest.fixture(scope="module")
def mel(wave):
    """Its log-Mel (frames, 64)."""
    return PannLogMel()(wave.unsqueeze(0))[0]


@pytest.fixture(scope="module")
def image(mel):
    """The log-Mel as a 3-channel image in [0, 1] (C, bins, frames), as image backbones take it."""
    scaled = (mel.T - mel.min()) / (mel.max() - mel.min())
    return scaled.expand(3, -1, -1).contiguous()


RANDOM = {  # adapter name: (adapter, which input)
    "audiomentations.AddGaussianSNR": (
        lambda: Audiomentations("audiomentations.AddGaussianSNR", {"min_snr_db": 10, "max_snr_db": 30}, 16000),
        "wave",
    ),
    "audiomentations.Gain": (lambda: Audiomentations("audiomentations.Gain", {"min_gain_db": -12}, 16000), "wave"),
    "torch_audiomentations.Gain": (
        lambda: TorchAudiomentations(
            "torch_audiomentations.Gain", {"min_gain_in_db": -12, "max_gain_in_db": -6}, 16000
        ),
        "wave",
    ),
    "torch_audiomentations.AddColoredNoise": (
        lambda: TorchAudiomentations("torch_audiomentations.AddColoredNoise", {}, 16000),
        "wave",
    ),
    "torchaudio.transforms.FrequencyMasking": (
        lambda: Torchaudio("torchaudio.transforms.FrequencyMasking", "features", {"freq_mask_param": 20}),
        "mel",
    ),
    "torchaudio.transforms.TimeMasking": (
        lambda: Torchaudio("torchaudio.transforms.TimeMasking", "features", {"time_mask_param": 20}),
        "mel",
    ),
    "torchvision.transforms.v2.RandomErasing": (
        lambda: Torchvision("torchvision.transforms.v2.RandomErasing", {"value": 0}),
        "image",
    ),
    "torchvision.transforms.v2.ColorJitter": (
        lambda: Torchvision("torchvision.transforms.v2.ColorJitter", {"brightness": 0.5, "contrast": 0.5}),
        "image",
    ),
}


@pytest.fixture(params=list(RANDOM))
def case(request, wave, mel, image):
    """(a built adapter around a random transform, a real input clip of its kind)."""
    make, which = RANDOM[request.param]
    return make(), {"wave": wave, "mel": mel, "image": image}[which]


def test_shape_dtype_and_the_adapters_probability(case):
    aug, x = case
    aug.p = 0.0
    assert all(aug(x, seeded(s)) is x for s in range(3))
    aug.p = 1.0
    for s in range(4):
        out = aug(x, seeded(s))
        assert out.dtype == torch.float32 and out.shape == x.shape
        assert not torch.equal(out, x), (aug.name, s)  # the inner p is 1.0: it always acts


def test_same_seed_same_output_other_seed_other_output(case):
    aug, x = case
    first, again, other = aug(x, seeded(1)), aug(x, seeded(1)), aug(x, seeded(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_global_rngs_are_left_as_they_were_and_do_not_decide_the_output(case):
    aug, x = case
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    python, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    out = aug(x, seeded(3))
    assert random.getstate() == python
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    random.seed(6)
    np.random.seed(6)
    torch.manual_seed(6)
    assert torch.equal(aug(x, seeded(3)), out)


def test_audiomentations_is_the_library_seeded_by_the_draw_after_p(wave):
    """The adapter's draws: p, then one 32-bit seed for the library's globals."""
    from audiomentations import AddGaussianSNR

    generator = seeded(4)
    torch.rand(1, generator=generator)  # p
    seed = int(torch.randint(0, 2**32, (1,), generator=generator))
    random.seed(seed)
    np.random.seed(seed)
    expected = AddGaussianSNR(min_snr_db=10, max_snr_db=30, p=1.0)(wave.numpy().copy(), 16000)
    aug = Audiomentations("audiomentations.AddGaussianSNR", {"min_snr_db": 10, "max_snr_db": 30}, 16000)
    assert torch.equal(aug(wave, seeded(4)), torch.from_numpy(expected))


def test_deterministic_transforms_give_the_librarys_own_output(wave, mel, image):
    flip = Audiomentations("audiomentations.PolarityInversion", {}, 16000)
    assert torch.equal(flip(wave, seeded(0)), -wave)
    flip = TorchAudiomentations("torch_audiomentations.PolarityInversion", {}, 16000)
    assert torch.equal(flip(wave, seeded(0)), -wave)
    vol = Torchaudio("torchaudio.transforms.Vol", "waveform", {"gain": 0.5})
    assert torch.equal(vol(wave, seeded(0)), torchaudio.transforms.Vol(0.5)(wave))
    mirror = Torchvision("torchvision.transforms.v2.RandomHorizontalFlip")  # the inner p is 1.0: always flips
    assert torch.equal(mirror(image, seeded(0)), image.flip(-1))


def test_torchaudio_frequency_masking_zeroes_one_band_of_bins(mel):
    """Features are (frames, bins) in tympan and (bins, frames) in torchaudio: the band is of bins."""
    masked = Torchaudio("torchaudio.transforms.FrequencyMasking", "features", {"freq_mask_param": 20})(mel, seeded(0))
    zeroed = (masked == 0).all(dim=0).nonzero().flatten().tolist()
    assert zeroed and zeroed == list(range(zeroed[0], zeroed[-1] + 1))
    keep = torch.ones(64, dtype=torch.bool)
    keep[zeroed] = False
    assert torch.equal(masked[:, keep], mel[:, keep])


def test_audiomentations_background_noise_from_a_folder(wave, tmp_path):
    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "white.wav", rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    hum = 0.2 * np.sin(2 * np.pi * 120 * np.arange(48000) / 16000)
    soundfile.write(tmp_path / "hum.wav", hum.astype(np.float32), 16000)
    args = {"sounds_path": str(tmp_path), "min_snr_db": 10.0, "max_snr_db": 10.0}
    aug = Audiomentations("audiomentations.AddBackgroundNoise", args, 16000)
    for s in range(4):
        out = aug(wave, seeded(s))
        assert out.dtype == torch.float32 and out.shape == wave.shape
        snr = 10 * torch.log10(wave.double().square().mean() / (out - wave).double().square().mean())
        assert float(snr) == pytest.approx(10.0, abs=0.1)
    assert torch.equal(aug(wave, seeded(1)), aug(wave, seeded(1)))


def waveform_config(root, augmentation: list, features: dict | None = None) -> dict:
    """A tiny waveform experiment on the toy data (generated tones: no mirror needed)."""
    return {
        "experiment": "adapters",
        "dataset": {"preset": "ToyClassification", "root": str(root / "raw")},
        "features": {
            "preset": "Waveform16k",
            "online": ["Normalize"],
            "root": str(root / "features"),
            **(features or {}),
        },
        "model": {"preset": "WaveformCNN", "args": {"channels": [8, 8, 16]}},
        "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}},
        "training": {"steps": 6, "eval_every": 3, "batch_size": 16, "progress": False},
        "augmentation": augmentation,
    }


def adapter(name: str, **args) -> dict:
    return {"target": f"{ADAPTERS}:{name}", "args": args}


def test_configs_with_adapters_load_and_build_with_the_features_rate(tmp_path):
    config = configuration.parse(
        waveform_config(
            tmp_path,
            [
                adapter("Audiomentations", transform="audiomentations.AddGaussianSNR", args={"min_snr_db": 10}, p=0.5),
                adapter("TorchAudiomentations", transform="torch_audiomentations:Gain"),
                adapter("Torchaudio", transform="torchaudio.transforms.Vol", place="waveform", args={"gain": 0.8}),
            ],
        )
    )
    shared = config.features.shared_args()
    assert "args" not in shared  # not the *args of a Transform without __init__ (nn.Module's): it filled args=()
    built = [augmentations.build(a, shared) for a in config.augmentation]
    assert [(type(a).__name__, a.place, a.p) for a in built] == [
        ("Audiomentations", "waveform", 0.5),
        ("TorchAudiomentations", "waveform", 1.0),
        ("Torchaudio", "waveform", 1.0),
    ]
    assert built[0].sample_rate == built[1].sample_rate == 16000 and built[1].inner.p == 1.0
    logmel = {"preset": "PannLogMel16k", "online": []}
    masking = adapter("Torchaudio", transform="torchaudio.transforms.TimeMasking", place="features")
    masking["args"]["args"] = {"time_mask_param": 10}
    configuration.parse(waveform_config(tmp_path, [masking], logmel) | {"model": "SmallCNN"})


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        ("torch_audiomentations.AddBackgroundNoise", "tympan.augmentations.noise:BackgroundNoise"),
        ("torch_audiomentations.ApplyImpulseResponse", "tympan.augmentations.reverb:ImpulseResponse"),
    ],
)
def test_torch_audiomentations_file_readers_are_refused_at_load(tmp_path, transform, message):
    with pytest.raises(
        ConfigError,
        match=f"augmentation.0.args: {transform} reads its files with torchaudio.info, .*; use {message} instead",
    ):
        configuration.parse(waveform_config(tmp_path, [adapter("TorchAudiomentations", transform=transform)]))


@pytest.mark.parametrize(
    ("name", "transform", "message"),
    [
        ("Audiomentations", "os.system", "must be an import path inside audiomentations"),
        ("Audiomentations", "tympan.augmentations.noise.GaussianNoise", "inside audiomentations"),
        ("TorchAudiomentations", "audiomentations.Gain", "inside torch_audiomentations"),
        ("Torchaudio", "torchaudio.functional.gain", "inside torchaudio.transforms"),
        ("Torchaudio", "torch.nn.Identity", "inside torchaudio.transforms"),
        ("Torchvision", "torchvision.models.resnet18", "inside torchvision.transforms"),
        ("Audiomentations", "audiomentations.core.transforms_interface.random", "not a class of audiomentations"),
        ("Audiomentations", "audiomentations.Compose", "is not a subclass of audiomentations.core.transforms_interf"),
        (
            "Torchvision",
            "torchvision.transforms.v2.Compose",
            "composes other transforms: nest adapters in tympan's Seq",
        ),
        (
            "TorchAudiomentations",
            "torch_audiomentations.utils.object_dict.ObjectDict",
            "is not a subclass of torch_audiomentations.core.transforms_interface.BaseWaveformTransform",
        ),
        ("Audiomentations", "audiomentations.NoSuchThing", "audiomentations has no 'NoSuchThing'"),
    ],
)
def test_a_target_outside_the_adapters_library_is_refused_at_load(tmp_path, name, transform, message):
    place = {"place": "waveform"} if name == "Torchaudio" else {}
    with pytest.raises(ConfigError, match=f"augmentation.0.args: .*{message}"):
        configuration.parse(waveform_config(tmp_path, [adapter(name, transform=transform, **place)]))


SNR = "audiomentations.AddGaussianSNR"


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        ({"min_snr_db": 40, "max_snr_db": 10}, f"{SNR} refused its args: ValueError: min_snr_db must not be greater"),
        ({"snr": 10}, f"{SNR} takes no argument 'snr'; it takes: min_snr_db, max_snr_db, p"),
        ({"p": 0.5}, rf"{SNR}: args.p: the adapter's p \(beside transform\) decides whether it applies"),
        ([10, 30], r"args must be a mapping or null, got \[10, 30\]"),
    ],
)
def test_a_bad_inner_argument_is_a_config_error_naming_it(tmp_path, inner, message):
    aug = adapter("Audiomentations", transform=SNR, args=inner)
    with pytest.raises(ConfigError, match=f"augmentation.0.args: {message}"):
        configuration.parse(waveform_config(tmp_path, [aug]))


def test_a_transform_that_cannot_act_at_its_place_is_refused_at_load(tmp_path):
    mel = adapter("Torchaudio", transform="torchaudio.transforms.MelSpectrogram", place="waveform")
    with pytest.raises(
        ConfigError,
        match=r"augmentation.0 \(tympan.augmentations.adapters:Torchaudio\): Torchaudio\(torchaudio.transforms"
        r".MelSpectrogram\) gave shape \(128, 81\) for a clip of shape \(16000,\)",
    ):
        configuration.parse(waveform_config(tmp_path, [mel]))
    bad_place = adapter("Torchaudio", transform="torchaudio.transforms.Vol", place="batch", args={"gain": 2})
    with pytest.raises(ConfigError, match="augmentation.0.args: place must be one of waveform, features, got 'batch'"):
        configuration.parse(waveform_config(tmp_path, [bad_place]))
    stretch = Torchaudio("torchaudio.transforms.TimeStretch", "features", {"n_freq": 64})
    with pytest.raises(ShapeError, match="TimeStretch\\) does not run on a frames x 64 bins at 100 frames/s"):
        stretch.check(FRAMES)
    with pytest.raises(ShapeError, match="Torchaudio acts on frames, but gets image 3x64x100"):
        Torchaudio("torchaudio.transforms.FrequencyMasking", "features", {"freq_mask_param": 4}).check(
            Spec("image", 16000, shape=(3, 64, 100))
        )


def test_torchvision_acts_on_the_image_a_real_feature_pipeline_gives(mel):
    features = FeaturesConfig(
        offline=[{"target": "tympan.transforms.logmel:PannLogMel"}],
        online=[{"target": "tympan.transforms.image:SpectrogramImage", "args": {"size": [64, 96]}}],
    )
    pipeline = features.pipeline()
    spec = pipeline.spec_for("features")
    erase = Torchvision("torchvision.transforms.v2.RandomErasing", {"value": 0})
    erase.check(spec)
    image = pipeline.apply(mel)
    out = erase(image, seeded(0))
    assert spec.shape == (3, 64, 96) and out.shape == image.shape and out.dtype == torch.float32
    erased = (out != image).any(dim=0)  # one box, the same in every channel
    rows, cols = erased.any(dim=1).nonzero().flatten(), erased.any(dim=0).nonzero().flatten()
    assert len(rows) and bool((out[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] == 0).all())
    with pytest.raises(ShapeError, match="gave shape \\(3, 32, 32\\) for a clip of shape \\(3, 64, 96\\)"):
        Torchvision("torchvision.transforms.v2.RandomResizedCrop", {"size": 32}).check(spec)


def test_waveform_adapters_get_the_stored_rate_and_refuse_another(tmp_path):
    resampled = {"sample_rate": 16000, "offline": [{"preset": "Resample", "args": {"rate": 8000}}], "online": []}
    gain = adapter("Audiomentations", transform="audiomentations.Gain")
    config = configuration.parse(waveform_config(tmp_path, [gain], resampled))
    assert augmentations.build(config.augmentation[0], config.features.shared_args()).sample_rate == 8000
    gain["args"]["sample_rate"] = 16000
    with pytest.raises(ConfigError, match="Audiomentations was built for 16000 Hz, but its input is waveform at 8000"):
        configuration.parse(waveform_config(tmp_path, [gain], resampled))


def test_shape_contracts_are_checked_against_the_spec():
    image = Spec("image", 16000, shape=(3, 64, 100))
    Torchvision("torchvision.transforms.v2.RandomErasing").check(image)
    with pytest.raises(ShapeError, match="gave shape \\(3, 32, 32\\) for a clip of shape \\(3, 64, 100\\)"):
        Torchvision("torchvision.transforms.v2.RandomResizedCrop", {"size": 32}).check(image)
    with pytest.raises(ShapeError, match="Torchvision acts on image, but gets frames"):
        Torchvision("torchvision.transforms.v2.RandomErasing").check(FRAMES)
    stretch = Audiomentations("audiomentations.TimeStretch", {"leave_length_unchanged": False}, 16000)
    stretch.check(waveform(16000))  # a variable length may change
    with pytest.raises(ShapeError, match="gives \\d+ long clips, but its input is waveform at 16000 Hz, always 16000"):
        stretch.check(waveform(16000).with_(length=16000))
    with pytest.raises(ShapeError, match="Audiomentations was built for 8000 Hz, but its input is waveform at 16000"):
        Audiomentations("audiomentations.Gain", {}, sample_rate=8000).check(waveform(16000))


def test_training_with_adapters_is_reproducible_in_process_and_in_workers(tmp_path):
    """The adapters put the global RNGs back, so the model's dropout draws what it draws without
    them: a run whose loader works in the main process equals one whose workers do the augmenting."""
    raw = waveform_config(
        tmp_path,
        [
            adapter("Audiomentations", transform="audiomentations.AddGaussianSNR", args={"min_snr_db": 5}, p=0.7),
            adapter("TorchAudiomentations", transform="torch_audiomentations.Gain", p=0.7),
        ],
    )
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config)
    here, _ = stages.train(config, tmp_path / "here")
    workers = configuration.parse({**raw, "training": {**raw["training"], "num_workers": 2}})
    there, _ = stages.train(workers, tmp_path / "workers")
    assert (here / "metrics.csv").read_bytes() == (there / "metrics.csv").read_bytes()
