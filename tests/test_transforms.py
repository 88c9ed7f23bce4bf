"""The feature transforms on real FSDD audio: declared specs, their maths, and their refusals."""

import inspect
import typing

import librosa
import numpy as np
import pytest
import torch
import torchaudio
from safetensors.torch import load_file, save_file
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from tests.conftest import build_transform_for
from tympan import audio, components, transforms
from tympan.config.presets import PRESETS
from tympan.config.yaml12 import load_yaml
from tympan.targets import resolve_target
from tympan.transforms import (
    MFCC,
    Crop,
    Normalize,
    NotFittedError,
    OpenSmile,
    Pad,
    PannLogMel,
    RandomCrop,
    ShapeError,
    Spec,
    Transform,
    Waveform,
)
from tympan.transforms import functional as F
from tympan.transforms.pipeline import Pipeline
from tympan.transforms.spec import waveform

RATE = 16000
WAVE = waveform(RATE)
LOGMEL = Spec("frames", RATE, frame_rate=100.0, size=64)


@pytest.fixture(scope="module")
def clips(fsdd_mirror) -> list[torch.Tensor]:
    """Twelve real recordings (four speakers) as float32 waveforms at 16 kHz."""
    paths = sorted((fsdd_mirror / "fsdd" / "recordings").glob("*.wav"))
    chosen = [p for p in paths if p.stem.split("_")[2] in ("0", "1", "2")]
    chosen = [p for p in chosen if p.stem.split("_")[1] in ("george", "jackson", "lucas", "yweweler")][:12]
    return [torch.from_numpy(audio.load(p, RATE)[0]) for p in chosen]


@pytest.fixture(scope="module")
def logmels(clips) -> list[torch.Tensor]:
    extractor = PannLogMel()
    return [extractor(x) for x in clips]


def assert_fits(x: torch.Tensor, spec: Spec, seconds: float) -> None:
    """`x` is one clip of `spec`; a variable-length one as long as `seconds` of audio at its frame rate."""
    assert x.dtype == torch.float32
    if spec.kind == "vector":
        assert x.shape == (spec.size,)
    elif spec.kind == "waveform":
        assert x.dim() == 1
    else:
        assert x.dim() == 2 and x.shape[1] == spec.size
    if spec.variable_length:
        assert abs(len(x) - seconds * spec.frame_rate) <= 0.1 * spec.frame_rate


@pytest.mark.parametrize(
    "cls, args, kind, size",
    [
        (PannLogMel, {}, "frames", 64),
        (MFCC, {"n_mfcc": 20}, "frames", 20),
        (Waveform, {}, "waveform", None),
        (OpenSmile, {}, "vector", 88),
        (OpenSmile, {"feature_level": "LowLevelDescriptors"}, "frames", 25),
    ],
)
def test_extractor_output_matches_its_spec(clips, cls, args, kind, size):
    transform = build_transform_for(cls, args, WAVE)
    spec = transform.output(WAVE)
    assert (spec.kind, spec.size, spec.sample_rate) == (kind, size, RATE)
    x = clips[0]
    assert_fits(transform(x), spec, len(x) / RATE)


def test_pann_logmel_is_torchlibrosas_front_end_through_an_fft(fsdd_mirror, clips):
    """PANN's own front end (torchlibrosa, an STFT by convolution) computed through torch.stft: the
    same frames and bins, within float32 rounding of it and of a float64 reference (librosa's Slaney
    filters); a batch gives each clip's own bits; nothing fixed is saved as state."""
    spectrogram = Spectrogram(n_fft=512, hop_length=160, win_length=512)
    logmel = LogmelFilterBank(sr=RATE, n_fft=512, n_mels=64, fmin=50, fmax=8000, top_db=None)
    filters = torch.from_numpy(librosa.filters.mel(sr=RATE, n_fft=512, n_mels=64, fmin=50, fmax=8000).T).double()
    window = torch.hann_window(512, periodic=True, dtype=torch.float64)
    extractor = PannLogMel()
    errors = {"tympan": [], "torchlibrosa": []}
    for x in clips:
        ours, theirs = extractor(x), logmel(spectrogram(x[None]))[0, 0]
        assert ours.shape == theirs.shape == (len(x) // 160 + 1, 64) and ours.dtype == torch.float32
        assert (ours - theirs).abs().max() < 0.03
        stft = torch.stft(x.double(), 512, 160, window=window, center=True, pad_mode="reflect", return_complex=True)
        reference = 10 * torch.log10(torch.clamp(stft.abs().square().T @ filters, min=1e-10))
        errors["tympan"].append((ours - reference).abs().mean().item())
        errors["torchlibrosa"].append((theirs - reference).abs().mean().item())
    assert np.mean(errors["tympan"]) < 2e-4 and np.mean(errors["torchlibrosa"]) < 2e-4, errors  # dB
    batch = extractor(torch.stack([clips[0], clips[0].flip(0)]))
    assert batch.shape == (2, len(clips[0]) // 160 + 1, 64) and torch.equal(batch[0], extractor(clips[0]))
    assert extractor.state_dict() == {}
    # numbers of the class before the port, on 0_george_0.wav
    samples, _ = audio.load(fsdd_mirror / "fsdd" / "recordings" / "0_george_0.wav", RATE)
    pinned = torch.tensor([-20.3428, -8.9212, -9.0304, -24.1783])
    assert torch.allclose(extractor(torch.from_numpy(samples))[10, :4], pinned, atol=1e-3)


def test_mfcc_equals_torchaudio(clips):
    args = {
        "n_mfcc": 13,
        "n_fft": 512,
        "hop_length": 256,
        "n_mels": 40,
        "f_min": 20.0,
        "f_max": 7000.0,
        "log_mels": True,
    }
    ours = MFCC(**args)
    melkwargs = {k: args[k] for k in ("n_fft", "hop_length", "n_mels", "f_min", "f_max")}
    theirs = torchaudio.transforms.MFCC(RATE, n_mfcc=13, log_mels=True, melkwargs=melkwargs)
    x = clips[2]
    assert torch.equal(ours(x), theirs(x).T)
    assert ours.output(WAVE).frame_rate == RATE / 256
    assert torch.equal(
        MFCC()(x), torchaudio.transforms.MFCC(RATE, n_mfcc=40, melkwargs={"n_mels": 64, "hop_length": 160})(x).T
    )


def test_waveform_passes_through(clips):
    assert Waveform().output(WAVE) == WAVE
    assert torch.equal(Waveform()(clips[0]), clips[0])


def test_opensmile_functionals_are_finite_and_deterministic(clips):
    first, second = OpenSmile(), OpenSmile()
    values = first(clips[3])
    assert values.shape == (88,) and bool(torch.isfinite(values).all())
    assert torch.equal(values, first(clips[3])) and torch.equal(values, second(clips[3]))
    assert not torch.equal(values, first(clips[4]))  # it does depend on the audio
    assert len(first.feature_names) == 88


def test_opensmile_sizes_come_without_audio():
    """The spec is known at config load: ComParE_2016 functionals are 6373 values."""
    assert OpenSmile("ComParE_2016").output(WAVE) == Spec("vector", RATE, size=6373)
    assert OpenSmile("ComParE_2016", "LowLevelDescriptors").output(WAVE) == Spec("frames", RATE, 100.0, 65)


@pytest.mark.filterwarnings("ignore:Segment too short")
def test_opensmile_refuses_a_too_short_clip_naming_its_length(clips):
    with pytest.raises(ValueError, match=r"800 samples \(0\.050 s at 16000 Hz\)"):
        OpenSmile()(clips[0][:800])


@pytest.mark.filterwarnings("ignore:Segment too short")
def test_a_pad_before_opensmile_is_the_way_to_keep_too_short_clips(clips):
    """tympan's decision for a clip too short for openSMILE: an error naming its length (so the store
    stops, or skips it with `on_unreadable: skip`), unless the chain pads it with silence first."""
    offline = [
        {"target": "tympan.transforms.crop:Pad", "args": {"seconds": 0.5}},
        {"target": "tympan.transforms.opensmile:OpenSmile"},
    ]
    pipeline = Pipeline(RATE, offline, [], resolve=resolve_target)
    values = pipeline.extract(clips[0][:800].numpy())
    assert values.shape == (88,) and np.isfinite(values).all()


def test_compare_low_level_descriptors_and_their_deltas_on_speech(clips):
    plain = OpenSmile("ComParE_2016", "LowLevelDescriptors")(clips[2])
    deltas = OpenSmile("ComParE_2016", "LowLevelDescriptors_Deltas")(clips[2])
    assert plain.shape[1] == deltas.shape[1] == 65 and plain.dtype == deltas.dtype == torch.float32
    for frames in (plain.shape[0], deltas.shape[0]):
        assert abs(frames - len(clips[2]) / RATE * 100) <= 5  # 100 frames a second
    # a delta is a local slope along time: its mean over a clip is near zero, the descriptors' is not
    assert float(deltas.mean(0).abs().median()) < float(plain.mean(0).abs().median())


def test_instance_normalize_gives_zero_mean_unit_std(logmels):
    norm = Normalize()
    for x in (logmels[0], OpenSmile()(torch.zeros(RATE) + torch.linspace(-0.1, 0.1, RATE))):
        y = norm(x)
        assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-4
    # the maths of the old per-utterance normalisation, so the default experiment keeps its numbers
    std, mean = torch.std_mean(logmels[0], dim=(-2, -1), keepdim=True)
    assert torch.equal(norm(logmels[0]), (logmels[0] - mean) / (std + 1e-5))
    assert norm.output(LOGMEL) == LOGMEL and norm.normalizes and not norm.fits


def test_train_normalize_standardizes_each_bin_over_the_train_clips(logmels):
    train = logmels[:8]
    norm = Normalize("train")
    assert norm.fits and norm.normalizes
    norm.fit(iter(train))  # one pass over a stream
    y = torch.cat([norm(x) for x in train])
    assert y.shape[1] == 64
    assert y.mean(dim=0).abs().max() < 1e-4
    assert (y.std(dim=0) - 1).abs().max() < 1e-3
    # each bin on its own: a clip-level normaliser would not give this
    assert not torch.allclose(norm(train[0]), Normalize()(train[0]), atol=1e-2)


def test_train_normalize_is_saved_and_loaded(logmels, tmp_path):
    norm = Normalize("train")
    norm.fit(logmels[:8])
    save_file(norm.state_dict(), tmp_path / "norm.safetensors")
    fresh = Normalize("train")
    fresh.load_state_dict(load_file(tmp_path / "norm.safetensors"))
    assert torch.equal(fresh(logmels[9]), norm(logmels[9]))
    with pytest.raises(ShapeError, match="fitted on 64 features, but its input is frames x 40 bins"):
        fresh.output(LOGMEL.with_(size=40))


def test_unfitted_train_normalize_is_refused(logmels):
    with pytest.raises(NotFittedError, match="fit it on the train split"):
        Normalize("train")(logmels[0])
    with pytest.raises(ValueError, match="at least 2"):
        Normalize("train").fit([])


def test_train_normalize_on_vectors_is_per_element(clips):
    smile = OpenSmile()
    vectors = [smile(x) for x in clips[:6]]
    norm = Normalize("train")
    norm.fit(vectors)
    y = torch.stack([norm(v) for v in vectors])
    assert norm.mean.shape == (88,)
    assert y.mean(dim=0).abs().max() < 1e-3


def test_streamed_moments_equal_the_whole(logmels):
    moments = (0, None, None)
    for x in logmels:
        moments = F.merge_moments(moments, x)
    whole = torch.cat(logmels).double()
    count, mean, m2 = moments
    assert count == len(whole)
    assert torch.allclose(mean, whole.mean(0)) and torch.allclose(m2 / (count - 1), whole.var(0))


def test_crop_and_pad_lengths(clips, logmels):
    x, frames = clips[0], logmels[0]
    one_second = build_transform_for(Crop, {"seconds": 1.0}, WAVE)
    assert one_second.length == RATE and len(one_second(torch.cat([x] * 5))) == RATE
    assert len(build_transform_for(Crop, {"seconds": 0.25}, LOGMEL)(frames)) == 25  # seconds count frames at 100/s
    assert torch.equal(Crop(frames=10, anchor="start")(frames), frames[:10])
    assert torch.equal(Crop(frames=10, anchor="end")(frames), frames[-10:])
    assert torch.equal(Crop(frames=10)(frames), frames[(len(frames) - 10) // 2 :][:10])
    assert torch.equal(Crop(frames=10_000)(frames), frames)  # shorter clips pass as they are
    padded = Pad(frames=len(x) + 100)(x)
    assert len(padded) == len(x) + 100 and torch.equal(padded[: len(x)], x) and not padded[len(x) :].any()
    padded = build_transform_for(Pad, {"seconds": 2.0}, LOGMEL)(frames)
    assert padded.shape == (200, 64) and torch.equal(padded[len(frames) :], frames.min().expand(200 - len(frames), 64))
    assert torch.equal(Pad(frames=5)(frames), frames)


def test_random_crop_draws_from_the_generator_and_is_centred_without_one(logmels):
    """The pipeline passes a generator only when training, so inference always crops the centre."""
    frames = logmels[0]
    crop = RandomCrop(frames=10)

    def draw(seed):
        return crop(frames, torch.Generator().manual_seed(seed))

    assert crop.random and all(draw(s).shape == (10, 64) for s in range(5))
    assert torch.equal(draw(3), draw(3))
    assert any(not torch.equal(draw(0), draw(s)) for s in range(1, 5))
    # the same draw as the trainer's max_duration crop, so a run cropped either way sees the same windows
    start = int(torch.randint(0, len(frames) - 10 + 1, (1,), generator=torch.Generator().manual_seed(7)))
    assert torch.equal(draw(7), frames[start : start + 10])
    centre = Crop(frames=10)(frames)
    assert torch.equal(crop(frames), centre)  # no generator


@pytest.mark.parametrize(
    "transform, spec, message",
    [
        (PannLogMel(), LOGMEL, "PannLogMel takes waveform, but its input is frames x 64 bins at 100 frames/s"),
        (MFCC(), Spec("vector", RATE, size=88), "MFCC takes waveform, but its input is vector of 88"),
        (Waveform(), LOGMEL, "Waveform takes waveform, but its input is frames x 64 bins"),
        (Crop(frames=3), Spec("vector", RATE, size=88), "Crop takes waveform or frames, but its input is vector of 88"),
        (Normalize("train"), WAVE, "Normalize takes frames or vector, but its input is waveform at 16000 Hz"),
        (PannLogMel(), waveform(8000), "PannLogMel was built for 16000 Hz, but its input is waveform at 8000 Hz"),
        (Crop(seconds=1.0, frame_rate=100.0), LOGMEL.with_(frame_rate=50.0), "counts 100 frames/s, but its input"),
    ],
)
def test_a_wrong_input_is_refused_naming_both_sides(transform, spec, message):
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        transform.output(spec)


@pytest.mark.parametrize(
    "cls, args, message",
    [
        (PannLogMel, {"hop_length": 0}, "hop_length must be a positive integer"),
        (PannLogMel, {"fmax": 9000}, "above the Nyquist frequency"),
        (MFCC, {"n_mfcc": 80}, "n_mfcc=80 is more than n_mels=64"),
        (MFCC, {"f_max": 9000}, "f_max=9000 is above the Nyquist frequency of 16000 Hz"),
        (MFCC, {"f_min": 5000, "f_max": 4000}, "0 <= f_min < f_max"),
        (MFCC, {"log_mels": "yes"}, "log_mels must be true or false"),
        (OpenSmile, {"feature_set": "eGeMAPSv03"}, "unknown openSMILE feature_set 'eGeMAPSv03'; known: ComParE_2016"),
        (OpenSmile, {"feature_level": "lld"}, "feature_level must be one of Functionals, LowLevelDescriptors, .*'lld'"),
        (OpenSmile, {"feature_level": "LowLevelDescriptors_Deltas"}, "not available for feature set 'eGeMAPSv02'"),
        (Normalize, {"mode": "utterance"}, "mode must be one of instance, train, got 'utterance'"),
        (Crop, {}, "give exactly one of seconds and frames"),
        (Crop, {"seconds": 1.0, "frames": 100}, "give exactly one of seconds and frames"),
        (Crop, {"seconds": -1}, r"seconds must be a number in \(0, 600\] or null, got -1"),
        (Pad, {"frames": True}, "frames must be a positive integer or null, got True"),
        (RandomCrop, {"frames": 2.5}, "frames must be a positive integer or null, got 2.5"),
        (Crop, {"frames": 10, "anchor": "middle"}, "anchor must be one of start, centre, end, got 'middle'"),
    ],
)
def test_bad_args_are_refused_at_config_load_and_by_the_constructor(cls, args, message):
    with pytest.raises(ValueError, match=message):
        components.check(cls, args)  # the factory's check, before anything is built
    with pytest.raises(ValueError, match=message):
        build_transform_for(cls, args, WAVE)  # what config load builds


def test_seconds_need_the_input_frame_rate():
    with pytest.raises(ValueError, match=r"seconds=1.0 needs the input's frame_rate"):
        Crop(seconds=1.0)


def one_second_inputs(clips) -> list[tuple[Spec, torch.Tensor]]:
    """1 s of real audio as each kind a transform may take: the waveform (at 16, 8 and 32 kHz), its
    log-Mel frames (100, a fixed length), and those frames as an image of one channel (with their
    frame rate) and of three."""
    x = torch.cat(clips)[:RATE]
    frames = PannLogMel()(x)[:100]
    image = Spec("image", RATE, frame_rate=100.0, shape=(1, 64, 100))
    return [
        (WAVE, x),
        *[(waveform(rate), torch.from_numpy(audio.resample(x.numpy(), RATE, rate))) for rate in (8000, 32000)],
        (LOGMEL.with_(length=100), frames),
        (image, frames.T[None]),
        (image.with_(shape=(3, 64, 100), frame_rate=None), frames.T[None].repeat(3, 1, 1)),
    ]


def takes(cls, args: dict, spec: Spec) -> bool:
    """Whether `cls(args)`, built for input `spec`, takes it."""
    try:
        build_transform_for(cls, args, spec).output(spec)
    except (ShapeError, ValueError):
        return False
    return True


@pytest.mark.parametrize("path", sorted((PRESETS / "transforms").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_transform_preset_builds(clips, path):
    """Each preset runs on 1 s of audio, as the first of `one_second_inputs` that it takes."""
    preset = load_yaml(path.read_text())
    rate = preset["args"].get("expected_rate", RATE)
    if rate != RATE:
        pytest.skip(f"a front end for {rate} Hz audio: test_transforms_spectral.py builds it at that rate")
    cls = resolve_target(preset["target"])
    first = next(((spec, x) for spec, x in one_second_inputs(clips) if takes(cls, preset["args"], spec)), None)
    if first is None:
        pytest.fail(f"{path.stem} takes none of: a waveform, frames, a 1- or 3-channel image")
    spec, x = first
    transform = build_transform_for(cls, preset["args"], spec)
    out = transform.output(spec)
    y = transform(x)
    if out.kind == "image":
        assert y.dtype == torch.float32 and y.shape == out.shape
    else:
        assert_fits(y, out, 1.0)


# a bad value of one annotated argument of each transform tympan.transforms exports
BAD_VALUES = {
    "AmplitudeToDB": ("stype", "amplitude"),
    "ColourMapImage": ("size", [224, 0]),
    "Crop": ("anchor", "middle"),
    "ExpandChannels": ("channels", 0),
    "GainNormalize": ("target_db", 3.0),
    "WhisperLogMel": ("n_mels", 80.0),
    "HuggingFaceExtractor": ("extractor", 3),
    "KaldiFbank": ("preemphasis_coefficient", 1.5),
    "MFCC": ("n_mels", 0),
    "MelSpectrogram": ("power", True),
    "Normalize": ("per", "channel"),
    "OpenSmile": ("feature_level", "lld"),
    "Pad": ("mode", "wrap"),
    "PannLogMel": ("fmin", -50.0),
    "RandomCrop": ("frames", 2.5),
    "Repeat": ("seconds", 601),
    "Resample": ("rate", 10**6),
    "SpectrogramImage": ("channels", "3"),
    "StackFrames": ("stride", 0),
    "Statistics": ("stats", ["mean", "median"]),
    "Standardize": ("std", [1.0, 0.0]),
}
TAKE_NOTHING = {"Squeeze", "Unsqueeze", "Waveform"}


def test_every_transform_is_checked_by_its_annotations_alone():
    """No transform keeps a hand-written mirror of its constructor: every argument is annotated
    (each annotation evaluates), and a bad value is refused by the factory's check and by direct
    construction with the same one line, the annotation's description."""
    exported = {
        name: cls
        for name in transforms.__all__
        if isinstance(cls := getattr(transforms, name), type) and issubclass(cls, Transform) and cls is not Transform
    }
    assert exported.keys() == BAD_VALUES.keys() | TAKE_NOTHING
    for name, cls in exported.items():
        assert not hasattr(cls, "validate_args"), name
        hints = typing.get_type_hints(inspect.unwrap(cls.__init__), include_extras=True)
        arguments = set(inspect.signature(cls).parameters)
        assert arguments <= hints.keys(), f"{name} leaves {arguments - hints.keys()} unannotated"
        if name in TAKE_NOTHING:
            assert not arguments
            with pytest.raises(ValueError, match=f"{name} takes no argument 'size'; it takes: nothing"):
                components.check(cls, {"size": 3})
            continue
        key, value = BAD_VALUES[name]
        with pytest.raises(ValueError) as checked:
            components.check(cls, {key: value})
        with pytest.raises(ValueError) as built:
            cls(**{key: value})
        assert (
            str(checked.value) == str(built.value) == f"{key} must be {components.describe(hints[key])}, got {value!r}"
        )


def test_the_pipeline_builds_transforms_through_the_factory():
    """Names are checked before anything is built (a rate is the pipeline's to fill in), a class
    that is not a Transform is never built, and the record holds every argument, defaults and rates."""
    with pytest.raises(ValueError, match=r"features.offline.0: .*MelSpectrogram: 'sample_rate' is filled in"):
        Pipeline(
            RATE,
            [{"target": "tympan.transforms.mel:MelSpectrogram", "args": {"sample_rate": RATE}}],
            [],
            resolve_target,
        )
    with pytest.raises(ValueError, match=r"features.online.0: .*Normalize: .*Normalize takes no argument 'mod'"):
        Pipeline(
            RATE, [], [{"target": "tympan.transforms.normalize:Normalize", "args": {"mod": "train"}}], resolve_target
        )
    built = []
    with pytest.raises(ValueError, match=r"torch.nn:Identity is not a tympan Transform"):
        Pipeline(RATE, [{"target": "torch.nn:Identity"}], [], lambda target: built.append(target) or torch.nn.Identity)
    assert built == ["torch.nn:Identity"]  # resolved by the caller's resolver, then refused unbuilt
    pipeline = Pipeline(8000, [{"target": "tympan.transforms.mfcc:MFCC", "args": {"n_mfcc": 13}}], [], resolve_target)
    args = pipeline.resolved[0]["args"]
    assert args == {**components.all_args(MFCC, {"n_mfcc": 13}), "sample_rate": 8000}
    assert list(args) == list(inspect.signature(MFCC).parameters)  # in the constructor's order
