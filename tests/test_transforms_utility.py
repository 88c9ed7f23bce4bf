"""Utility and image transforms on real FSDD audio: resample, gain, normalise per bin or globally,
standardise, pad modes and repeat, declared fixed lengths, frames <-> image, spectrogram images."""

import matplotlib
import numpy as np
import pytest
import torch

from tests.conftest import build_transform_for
from tympan import audio, components
from tympan import config as configuration
from tympan.config.presets import expand
from tympan.config.schema import FeaturesConfig
from tympan.errors import ConfigError
from tympan.transforms import functional as F
from tympan.transforms.crop import Crop, Pad, RandomCrop, Repeat
from tympan.transforms.gain import GainNormalize
from tympan.transforms.image import IMAGENET_MEAN, IMAGENET_STD, ColourMapImage, SpectrogramImage
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.normalize import Normalize, Standardize
from tympan.transforms.resample import Resample
from tympan.transforms.shape import ExpandChannels, Squeeze, Unsqueeze
from tympan.transforms.spec import ShapeError, Spec, waveform

RATE = 16000
WAVE = waveform(RATE)
LOGMEL = Spec("frames", RATE, frame_rate=100.0, size=64)


@pytest.fixture(scope="module")
def paths(fsdd_mirror):
    """Ten real recordings of four speakers (8 kHz files)."""
    every = sorted((fsdd_mirror / "fsdd" / "recordings").glob("*.wav"))
    speakers = ("george", "jackson", "lucas", "yweweler")
    return [p for p in every if p.stem.split("_")[1] in speakers and p.stem.split("_")[2] in ("0", "1", "2")][:10]


@pytest.fixture(scope="module")
def clips(paths) -> list[torch.Tensor]:
    return [torch.from_numpy(audio.load(p, RATE)[0]) for p in paths]


@pytest.fixture(scope="module")
def logmels(clips) -> list[torch.Tensor]:
    extractor = PannLogMel()
    return [extractor(x) for x in clips]


def parse(tmp_path, offline, online):
    """Load a config with this feature chain (what `tympan train` would load)."""
    raw = {
        "dataset": {"preset": "ToyClassification", "root": str(tmp_path)},
        "model": "SmallCNN",
        "optimizer": "AdamW",
        "features": {"sample_rate": RATE, "offline": offline, "online": online},
    }
    return configuration.parse(raw)


def pipeline(offline, online):
    """The feature pipeline config load builds for this chain."""
    return FeaturesConfig(sample_rate=RATE, offline=offline, online=online).pipeline()


# ---- resample
def test_resample_equals_decoding_at_the_new_rate(paths):
    native, rate = audio.load(paths[0])
    assert rate == 8000
    resample = Resample(RATE, sample_rate=rate)
    spec = resample.output(waveform(rate).with_(length=len(native)))
    y = resample(torch.from_numpy(native))
    assert y.dtype == torch.float32 and y.dim() == 1
    assert np.array_equal(y.numpy(), audio.load(paths[0], RATE)[0])  # the arithmetic decoding uses
    assert (spec.sample_rate, spec.frame_rate, spec.length) == (RATE, float(RATE), len(y))
    down = Resample(8000, sample_rate=RATE)
    x = torch.from_numpy(audio.load(paths[1], RATE)[0])
    assert len(down(x)) == down.output(WAVE.with_(length=len(x))).length == F.resampled_length(len(x), RATE, 8000)
    assert Resample(RATE, sample_rate=RATE)(x) is x


def test_transforms_after_resample_are_built_for_its_rate(tmp_path, clips):
    chain = pipeline([{"target": "tympan.transforms.resample:Resample", "args": {"rate": 8000}}], [])
    assert chain.stored == waveform(8000)
    logmel = {"target": "tympan.transforms.logmel:PannLogMel", "args": {"fmax": 4000}}
    chain = pipeline([{"target": "tympan.transforms.resample:Resample", "args": {"rate": 8000}}, logmel], [])
    assert chain.offline[1].sample_rate == 8000 and chain.stored.frame_rate == 8000 / 160
    features = chain.extract(clips[0].numpy())
    assert features.shape == (len(clips[0]) // 2 // 160 + 1, 64) and features.dtype == np.float32
    with pytest.raises(ConfigError, match=r"offline.1: .*fmax=8000 is above the Nyquist frequency of 8000 Hz"):
        parse(tmp_path, [{"preset": "Resample", "args": {"rate": 8000}}, "PannLogMel"], [])
    with pytest.raises(ConfigError, match="cannot resample 16000 Hz to 16001 Hz cheaply"):
        parse(tmp_path, [{"preset": "Resample", "args": {"rate": 16001}}, "PannLogMel"], [])
    with pytest.raises(ConfigError, match=r"rate must be an integer in \(0, 768000\], got 0"):
        parse(tmp_path, [{"preset": "Resample", "args": {"rate": 0}}, "PannLogMel"], [])
    with pytest.raises(ConfigError, match="'sample_rate' is filled in by tympan"):
        parse(tmp_path, [{"preset": "Resample", "args": {"sample_rate": 8000}}], [])


# ---- gain
@pytest.mark.parametrize("mode, target_db", [("peak", -1.0), ("peak", -6.0), ("rms", -20.0)])
def test_gain_normalize_sets_the_stated_level(clips, mode, target_db):
    gain = GainNormalize(mode, target_db)
    assert gain.output(WAVE) == WAVE
    for x in (clips[0], clips[1] * 0.05, clips[2] * 3.0):  # whatever level the recording had
        y = gain(x)
        assert y.dtype == torch.float32 and y.shape == x.shape
        assert 20 * np.log10(F.level(y, mode)) == pytest.approx(target_db, abs=1e-4)
        assert torch.allclose(y / y.abs().max(), x / x.abs().max(), atol=1e-6)  # only scaled


def test_gain_normalize_leaves_silence_silent():
    silence = torch.zeros(RATE)
    for mode in ("peak", "rms"):
        assert torch.equal(GainNormalize(mode, -20.0)(silence), silence)


# ---- normalise: per bin or global, per clip or with train statistics
def test_train_global_normalize_gives_the_whole_train_split_zero_mean_unit_std(logmels):
    train = logmels[:8]
    norm = Normalize("train", per="global")
    norm.fit(iter(train))
    assert norm.mean.shape == (1,) and norm.fits and norm.normalizes
    y = torch.cat([norm(x) for x in train])
    assert y.shape == torch.cat(train).shape and y.dtype == torch.float32
    assert abs(float(y.mean())) < 1e-4 and abs(float(y.std()) - 1) < 1e-4
    assert y.mean(dim=0).abs().max() > 0.1  # one statistic for all bins: the bins keep their differences
    assert norm.output(LOGMEL.with_(size=40)) == LOGMEL.with_(size=40)  # any number of bins


def test_instance_bin_normalize_gives_each_bin_of_a_clip_zero_mean_unit_std(logmels):
    norm = Normalize("instance", per="bin")
    for x in logmels[:3]:
        y = norm(x)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.mean(dim=0).abs().max() < 1e-4 and (y.std(dim=0) - 1).abs().max() < 1e-3
    assert not norm.fits and norm.output(LOGMEL) == LOGMEL


def test_normalize_defaults_keep_their_numbers(logmels):
    x = logmels[0]
    assert torch.equal(Normalize(per="global")(x), Normalize()(x))
    fitted, per_bin = Normalize("train"), Normalize("train", per="bin")
    fitted.fit(logmels[:8])
    per_bin.fit(logmels[:8])
    assert torch.equal(fitted(x), per_bin(x)) and fitted.mean.shape == (64,)


def test_normalize_per_refusals():
    with pytest.raises(ValueError, match="per must be one of global, bin or null, got 'channel'"):
        components.check(Normalize, {"per": "channel"})
    with pytest.raises(ShapeError, match="Normalize takes frames, but its input is waveform at 16000 Hz"):
        Normalize(per="bin").output(WAVE)


# ---- standardise with given statistics
def test_standardize_arithmetic(logmels):
    x = logmels[0]
    y = Standardize(-30.0, 12.0)(x)
    assert y.dtype == torch.float32 and torch.allclose(y, (x + 30) / 12)
    mean, std = x.mean(dim=0), x.std(dim=0)
    per_bin = Standardize(mean.tolist(), std.tolist())
    assert per_bin.output(LOGMEL) == LOGMEL and per_bin.normalizes
    y = per_bin(x)
    assert torch.allclose(y, (x - mean) / std, atol=1e-5)
    assert y.mean(dim=0).abs().max() < 1e-4 and (y.std(dim=0) - 1).abs().max() < 1e-4


def test_standardize_takes_one_statistic_for_a_waveform(clips):
    x = clips[0]
    assert Standardize(0.0, 0.5).output(WAVE) == WAVE
    assert torch.equal(Standardize(0.0, 0.5)(x), x / 0.5)
    with pytest.raises(
        ShapeError, match="Standardize has 2 means/stds, but its input is waveform at 16000 Hz: it takes 1$"
    ):
        Standardize([0.0, 1.0]).output(WAVE)


def test_standardize_with_imagenet_statistics_is_per_channel(logmels):
    rgb = ColourMapImage(size=[64, 64], imagenet=False)(logmels[0])
    standard = Standardize(list(IMAGENET_MEAN), list(IMAGENET_STD))
    image = Spec("image", RATE, shape=(3, 64, 64))
    assert standard.output(image) == image
    y = standard(rgb)
    for c in range(3):
        assert torch.allclose(y[c], (rgb[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-6)
    assert torch.allclose(ColourMapImage(size=[64, 64])(logmels[0]), y, atol=1e-6)  # what imagenet: true does


def test_standardize_of_the_wrong_size_is_refused_at_load_naming_both_sizes(tmp_path):
    three = {"target": "tympan.transforms.normalize:Standardize", "args": {"mean": [0, 0, 0], "std": 1}}
    with pytest.raises(
        ConfigError, match=r"Standardize has 3 means/stds, but its input is frames x 64 bins .* 1 or 64"
    ):
        parse(tmp_path, ["PannLogMel"], [three])
    with pytest.raises(ValueError, match="mean has 2 values but std has 3"):
        components.check(Standardize, {"mean": [0, 0], "std": [1, 1, 1]})
    with pytest.raises(ValueError, match=r"std must be a positive number or a non-empty list of .*, got \[1, 0\]"):
        components.check(Standardize, {"mean": 0, "std": [1, 0]})
    with pytest.raises(ConfigError, match="mean must be a number or a non-empty list of numbers, got 'zero'"):
        parse(tmp_path, ["PannLogMel"], [{"target": three["target"], "args": {"mean": "zero"}}])


# ---- padding modes, repeat, and crops that pad
NUMPY_MODES = {"reflect": "reflect", "replicate": "edge", "repeat": "wrap"}


@pytest.mark.parametrize("mode", ["reflect", "replicate", "repeat"])
def test_pad_modes_equal_numpy_even_past_one_clip_length(clips, logmels, mode):
    x, frames = clips[0], logmels[0]
    for clip, length in ((x, len(x) + 300), (frames, 10 * len(frames) + 7)):  # and ten times its length
        y = Pad(frames=length, mode=mode)(clip)
        widths = ((0, length - len(clip)),) + ((0, 0),) * (clip.dim() - 1)
        assert y.dtype == torch.float32 and y.shape == (length, *clip.shape[1:])
        assert np.array_equal(y.numpy(), np.pad(clip.numpy(), widths, mode=NUMPY_MODES[mode]))
    short = frames[:20]
    torch_mode = {"reflect": "reflect", "replicate": "replicate", "repeat": "circular"}[mode]
    expected = torch.nn.functional.pad(short.T[None], (0, 15), mode=torch_mode)[0].T
    assert torch.equal(Pad(frames=35, mode=mode)(short), expected)  # torch's own, where it reaches


def test_pad_constant_minimum_and_the_silent_default(clips, logmels):
    x, frames = clips[0], logmels[0]
    y = Pad(frames=200, mode="constant", value=-80.0)(frames)
    assert torch.equal(y[len(frames) :], torch.full((200 - len(frames), 64), -80.0))
    y = Pad(frames=len(x) + 50, mode="minimum")(x)
    assert torch.equal(y[len(x) :], x.min().expand(50))
    assert torch.equal(Pad(frames=len(x) + 50)(x)[len(x) :], torch.zeros(50))  # silence: zeros for waveforms
    assert torch.equal(Pad(frames=200)(frames), Pad(frames=200, mode="minimum")(frames))  # the minimum for frames
    assert torch.equal(Pad(frames=5, mode="reflect")(frames), frames)  # longer clips pass


def test_repeat_tiles_then_cuts_to_exactly_the_length(clips, logmels):
    frames = logmels[0]
    repeat = build_transform_for(Repeat, {"seconds": 1.0}, LOGMEL)
    y = repeat(frames)
    assert y.shape == (100, 64) and y.dtype == torch.float32
    assert torch.equal(y, torch.cat([frames] * (100 // len(frames) + 1))[:100])
    assert torch.equal(Repeat(frames=10)(frames), frames[:10])  # a longer clip keeps its start
    assert repeat.output(LOGMEL) == LOGMEL.with_(length=100)
    assert len(build_transform_for(Repeat, {"seconds": 2.0}, WAVE)(clips[0])) == 2 * RATE


def test_crops_that_pad_give_exactly_their_length(logmels):
    short, long = logmels[0][:30], logmels[1]
    generator = torch.Generator().manual_seed(0)
    for crop in (Crop(frames=50, pad="silence"), RandomCrop(frames=50, pad="reflect"), Crop(frames=50, pad="repeat")):
        assert crop.output(LOGMEL) == LOGMEL.with_(length=50)
        for x in (short, long):
            assert crop(x).shape == (50, 64) and crop(x, generator).shape == (50, 64)
    assert torch.equal(Crop(frames=50, pad="constant", value=1.5)(short)[30:], torch.full((20, 64), 1.5))
    assert torch.equal(Crop(frames=20, pad="silence")(long), Crop(frames=20)(long))  # a crop as before


@pytest.mark.parametrize(
    "transform, length_in, length_out",
    [
        (Crop(frames=30), None, None),
        (Crop(frames=30), 50, 30),
        (Crop(frames=80), 50, 50),
        (Crop(frames=80, pad="silence"), None, 80),
        (RandomCrop(frames=30), 50, 30),
        (RandomCrop(frames=80), 50, 50),
        (RandomCrop(frames=80, pad="replicate"), 50, 80),
        (Pad(frames=80), None, None),
        (Pad(frames=80), 50, 80),
        (Pad(frames=30), 50, 50),
        (Repeat(frames=80), None, 80),
        (Repeat(frames=30), 50, 30),
    ],
)
def test_length_changing_transforms_declare_the_length_they_give(logmels, transform, length_in, length_out):
    spec = transform.output(LOGMEL.with_(length=length_in))
    assert spec == LOGMEL.with_(length=length_out)
    x = logmels[2][:length_in] if length_in else logmels[2]
    assert len(x) == (length_in or len(x))
    if length_out is not None:
        assert len(transform(x)) == length_out and len(transform(x, torch.Generator().manual_seed(1))) == length_out


@pytest.mark.parametrize(
    "cls, args, message",
    [
        (Pad, {"frames": 10, "mode": "wrap"}, "mode must be one of silence, constant, .*, got 'wrap'"),
        (Pad, {"frames": 10, "mode": "reflect", "value": 1.0}, "value=1.0 is used only with mode: constant"),
        (Pad, {"frames": 10, "mode": "constant", "value": "low"}, "value must be a number, got 'low'"),
        (Crop, {"frames": 10, "pad": "zeros"}, "pad must be one of silence, constant, .* or null, got 'zeros'"),
        (RandomCrop, {"frames": 10, "value": 2.0}, "value=2.0 is used only with pad: constant, but pad is None"),
        (Repeat, {}, "give exactly one of seconds and frames"),
        (Pad, {"seconds": 600.5}, r"seconds must be a number in \(0, 600\] or null, got 600.5"),
        (Pad, {"seconds": float("inf")}, r"seconds must be a number in \(0, 600\] or null, got inf"),
        (Pad, {"seconds": float("nan")}, r"seconds must be a number in \(0, 600\] or null, got nan"),
        (Repeat, {"frames": 10**12}, "frames=1000000000000 is more than"),
        (Crop, {"seconds": 10**6}, r"seconds must be a number in \(0, 600\] or null, got 1000000"),
    ],
)
def test_bad_padding_args_are_refused_at_config_load(tmp_path, cls, args, message):
    with pytest.raises(ValueError, match=message):
        components.check(cls, args)
    target = f"tympan.transforms.crop:{cls.__name__}"
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, ["PannLogMel"], [{"target": target, "args": args}])


def test_a_length_in_frames_is_at_most_ten_minutes_at_the_input_frame_rate(tmp_path):
    """Log-Mels at 100 frames/s: 60000 frames are ten minutes. Alone, without a frame rate, the
    bound is ten minutes at the highest sample rate features may have (768 kHz)."""
    pad = "tympan.transforms.crop:Pad"
    parse(tmp_path, ["PannLogMel"], [{"target": pad, "args": {"frames": 60_000}}])
    message = "frames=60001 is more than 60000: ten minutes at 100 frames/s"
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, ["PannLogMel"], [{"target": pad, "args": {"frames": 60_001}}])
    components.check(Pad, {"frames": 600 * 768_000})
    with pytest.raises(ValueError, match="ten minutes at 768000 frames/s"):
        components.check(Pad, {"frames": 600 * 768_000 + 1})


def test_an_empty_clip_cannot_be_padded_by_its_own_values():
    empty = torch.zeros(0, 64)
    with pytest.raises(ValueError, match="cannot pad an empty clip by 'reflect'"):
        Pad(frames=10, mode="reflect")(empty)
    assert torch.equal(Pad(frames=3, mode="constant")(empty), torch.zeros(3, 64))


# ---- frames <-> image
def test_unsqueeze_and_squeeze_are_inverse(logmels):
    frames = max(logmels, key=len)[:40]
    spec = LOGMEL.with_(length=40)
    image_spec = Unsqueeze().output(spec)
    assert image_spec.kind == "image" and image_spec.shape == (1, 64, 40)
    image = Unsqueeze()(frames)
    assert image.shape == (1, 64, 40) and image.dtype == torch.float32
    assert torch.equal(image[0, :, 7], frames[7])  # a column is a frame; row 0 the lowest bin
    assert torch.equal(image[0, 0], frames[:, 0])
    assert Squeeze().output(image_spec) == spec
    assert torch.equal(Squeeze()(image), frames)


def test_unsqueeze_needs_a_fixed_length_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"online.0: Unsqueeze .* frames x 64 bins .* of any length; crop or pad"):
        parse(tmp_path, ["PannLogMel"], ["Unsqueeze"])
    crop = {"preset": "Crop", "args": {"seconds": 0.5, "pad": "silence"}}
    with pytest.raises(ConfigError, match="SmallCNN accepts frames, but the features give image 3x64x50"):
        parse(tmp_path, ["PannLogMel"], [crop, "Unsqueeze", "ExpandChannels"])  # the chain itself fits


def test_expand_channels_copies_the_one_channel(logmels):
    image = Unsqueeze()(max(logmels, key=len)[:40])
    expand_ = ExpandChannels()
    assert expand_.output(Spec("image", RATE, shape=(1, 64, 40))).shape == (3, 64, 40)
    y = expand_(image)
    assert y.shape == (3, 64, 40) and y.dtype == torch.float32
    assert all(torch.equal(y[c], image[0]) for c in range(3))
    y[0, 0, 0] = 1e6  # copies, not views of one another
    assert y[1, 0, 0] != 1e6
    with pytest.raises(ShapeError, match="ExpandChannels takes a one-channel image, but its input is image 3x64x40"):
        expand_.output(Spec("image", RATE, shape=(3, 64, 40)))


def test_squeeze_refuses_what_it_cannot_invert():
    with pytest.raises(ShapeError, match="Squeeze takes a one-channel image, but its input is image 3x64x64"):
        Squeeze().output(SpectrogramImage().output(LOGMEL))
    with pytest.raises(ShapeError, match="need a frame rate, but its input is image 1x64x64"):
        Squeeze().output(SpectrogramImage(channels=1).output(LOGMEL))


# ---- spectrogram images
def test_spectrogram_image_is_min_max_scaled_resized_and_replicated(logmels):
    frames = logmels[0]
    transform = SpectrogramImage(size=[64, 96], channels=3)
    assert transform.output(LOGMEL) == Spec("image", RATE, shape=(3, 64, 96))
    y = transform(frames)
    assert y.shape == (3, 64, 96) and y.dtype == torch.float32
    assert torch.equal(y[0], y[1]) and torch.equal(y[0], y[2])
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    exact = SpectrogramImage(size=[64, len(frames)], channels=1)(frames)  # no resizing: the scaled clip itself
    low, high = frames.min(), frames.max()
    assert torch.allclose(exact[0], ((frames - low) / (high - low)).T)
    assert exact[0].T[frames == high].eq(1).all() and exact[0].T[frames == low].eq(0).all()


@pytest.mark.parametrize("cmap", ["viridis", "magma", "gray"])
def test_colour_map_image_has_matplotlibs_colours(logmels, cmap):
    frames = logmels[1]
    rgb = ColourMapImage(cmap, size=[64, len(frames)], imagenet=False)(frames)  # no resizing
    assert rgb.shape == (3, 64, len(frames)) and rgb.dtype == torch.float32
    colours = matplotlib.colormaps[cmap]
    scaled = F.min_max(frames).T.numpy()
    assert np.allclose(rgb.permute(1, 2, 0).numpy(), colours(scaled)[..., :3], atol=1e-6)
    top, bottom = torch.tensor(colours(1.0)[:3]), torch.tensor(colours(0.0)[:3])
    t, b = divmod(int(frames.argmax()), 64)
    assert torch.allclose(rgb[:, b, t], top.float())  # the loudest cell has the map's top colour
    t, b = divmod(int(frames.argmin()), 64)
    assert torch.allclose(rgb[:, b, t], bottom.float())


def test_colour_map_image_resizes_and_standardises_with_imagenet_statistics(logmels):
    frames = logmels[1]
    transform = ColourMapImage()
    assert transform.output(LOGMEL) == Spec("image", RATE, shape=(3, 224, 224))
    y = transform(frames)
    assert y.shape == (3, 224, 224) and y.dtype == torch.float32
    rgb = ColourMapImage(imagenet=False)(frames)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(y, (rgb - mean) / std, atol=1e-6)
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    # without resizing, the quietest and the loudest cell are viridis' ends, standardised
    exact = ColourMapImage(size=[64, len(frames)])(frames)
    viridis = matplotlib.colormaps["viridis"]
    for cell, end in ((frames.argmin(), 0.0), (frames.argmax(), 1.0)):
        t, b = divmod(int(cell), 64)
        stated = [(viridis(end)[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for c in range(3)]
        assert torch.allclose(exact[:, b, t], torch.tensor(stated, dtype=torch.float32), atol=1e-5)


def test_unknown_colour_map_is_refused_at_load_naming_known_ones(tmp_path):
    bad = {"target": "tympan.transforms.image:ColourMapImage", "args": {"cmap": "virdis"}}
    with pytest.raises(ConfigError, match="unknown colour map 'virdis'; known ones include viridis, magma"):
        parse(tmp_path, ["PannLogMel"], [bad])
    with pytest.raises(ValueError, match=r"size must be a list of 2: a positive integer, .*, got \[64\]"):
        components.check(SpectrogramImage, {"size": [64]})
    with pytest.raises(ValueError, match="imagenet must be true or false"):
        ColourMapImage(imagenet="yes")
    with pytest.raises(ShapeError, match="ColourMapImage takes frames, but its input is waveform at 16000 Hz"):
        ColourMapImage().output(WAVE)


def test_spectrogram_image_feature_preset_gives_a_small_rgb_image(clips):
    features = FeaturesConfig.model_validate(expand("features", "SpectrogramImage"))
    chain = features.pipeline()
    assert chain.stored == LOGMEL and chain.output == Spec("image", RATE, shape=(3, 64, 64))
    x = chain.apply(torch.from_numpy(chain.extract(clips[3].numpy())))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    batch, lengths = chain.pad([x, x])
    assert batch.shape == (2, 3, 64, 64)
