"""Spectral transforms on real FSDD audio: Mel spectrogram, dB scaling, MFCC deltas, Kaldi fbank,
the PANN front ends at 8, 16 and 32 kHz, and frame stacking; each against its library's own output."""

import math

import pytest
import torch
import torchaudio
from torchaudio.compliance import kaldi

from tympan import audio, components, config
from tympan.config.presets import PRESETS, expand, load_preset
from tympan.errors import ConfigError
from tympan.targets import resolve_target
from tympan.transforms.db import AmplitudeToDB
from tympan.transforms.fbank import KaldiFbank
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.mel import MelSpectrogram
from tympan.transforms.mfcc import MFCC
from tympan.transforms.pipeline import Pipeline
from tympan.transforms.spec import ShapeError, Spec, waveform
from tympan.transforms.stack import StackFrames

RATE = 16000
WAVE = waveform(RATE)
FRAMES = Spec("frames", RATE, frame_rate=100.0, size=64)
# the rest of a config, for loading features blocks as a user's config does
REST = {"dataset": "FSDD", "model": "SmallCNN", "optimizer": "Adam"}
MINE = [
    "AmplitudeToDB",
    "KaldiFbank",
    "MelSpectrogram",
    "MFCC",
    "PannLogMel8k",
    "PannLogMel16k",
    "PannLogMel32k",
    "StackFrames",
]


def recording(fsdd_mirror, name: str = "3_jackson_7", rate: int = RATE) -> torch.Tensor:
    """One FSDD recording (8 kHz mono on disk) decoded to float32 at `rate`."""
    return torch.from_numpy(audio.load(fsdd_mirror / "fsdd" / "recordings" / f"{name}.wav", rate)[0])


@pytest.fixture(scope="module")
def clip(fsdd_mirror) -> torch.Tensor:
    return recording(fsdd_mirror)


def load_features(features: dict | str) -> Pipeline:
    """A features block (or preset name) through config load (presets expanded, the chain checked), as its pipeline."""
    return config.parse({**REST, "features": features}).features.pipeline()


def test_mel_spectrogram_equals_torchaudio(clip):
    args = {"n_fft": 512, "win_length": 400, "hop_length": 128, "n_mels": 40, "f_min": 20.0, "f_max": 7600.0}
    ours = MelSpectrogram(**args, power=1.0)
    theirs = torchaudio.transforms.MelSpectrogram(RATE, **args, power=1.0)
    x = ours(clip)
    assert x.dtype == torch.float32 and x.shape == (len(clip) // 128 + 1, 40)
    assert torch.equal(x, theirs(clip).T)
    assert ours.output(WAVE) == Spec("frames", RATE, frame_rate=125.0, size=40)
    # db: magnitude (power 1) in 20 log10, power (2) in 10 log10, each as torchaudio's AmplitudeToDB
    in_db = MelSpectrogram(**args, power=1.0, db=True, top_db=60.0)(clip)
    assert torch.equal(in_db, torchaudio.transforms.AmplitudeToDB("magnitude", top_db=60.0)(theirs(clip)).T)
    power = torchaudio.transforms.MelSpectrogram(RATE, **args)(clip)
    assert torch.equal(MelSpectrogram(**args, db=True)(clip), torchaudio.transforms.AmplitudeToDB()(power).T)


def test_amplitude_to_db_is_the_stated_log_and_top_db_clamps(clip):
    power = MelSpectrogram()(clip)
    in_db = AmplitudeToDB()(power)
    assert in_db.dtype == torch.float32 and in_db.shape == power.shape
    assert torch.allclose(in_db, 10 * torch.log10(power.clamp(min=1e-10)), atol=1e-5)
    assert torch.allclose(AmplitudeToDB("magnitude")(power), 20 * torch.log10(power.clamp(min=1e-10)), atol=1e-5)
    assert torch.allclose(AmplitudeToDB(floor=1e-3)(power), 10 * torch.log10(power.clamp(min=1e-3)), atol=1e-5)
    # top_db: nothing more than top_db below the clip's loudest value; everything above it untouched
    clamped = AmplitudeToDB(top_db=40)(power)
    loudest = in_db.max()
    assert in_db.min() < loudest - 40  # so the clamp has something to do on this clip
    assert torch.allclose(clamped.min(), loudest - 40) and clamped.max() == loudest
    kept = in_db >= loudest - 40
    assert torch.equal(clamped[kept], in_db[kept])
    assert torch.equal(clamped, torchaudio.transforms.AmplitudeToDB(top_db=40)(power.T).T)
    assert AmplitudeToDB().output(FRAMES) == FRAMES


def test_mfcc_deltas_equal_torchaudio_compute_deltas(clip):
    melkwargs = {"n_fft": 400, "hop_length": 160, "n_mels": 64, "f_min": 0.0, "f_max": None}
    coefficients = torchaudio.transforms.MFCC(RATE, n_mfcc=20, melkwargs=melkwargs)(clip)  # (20, frames)
    deltas = torchaudio.functional.compute_deltas(coefficients, win_length=7)
    delta_deltas = torchaudio.functional.compute_deltas(deltas, win_length=7)
    frames = len(clip) // 160 + 1
    assert torch.equal(MFCC(n_mfcc=20)(clip), coefficients.T)  # deltas=0: the numbers MFCC always gave
    for n, parts in ((1, [coefficients, deltas]), (2, [coefficients, deltas, delta_deltas])):
        transform = MFCC(n_mfcc=20, deltas=n, delta_win_length=7)
        x = transform(clip)
        assert x.dtype == torch.float32 and x.shape == (frames, 20 * (1 + n))
        assert torch.equal(x, torch.cat(parts).T)
        assert transform.output(WAVE).size == 20 * (1 + n)


def test_kaldi_fbank_equals_torchaudio(clip):
    ours = KaldiFbank(num_mel_bins=40, frame_length=20.0, frame_shift=8.0, window_type="hamming", use_energy=True)
    theirs = kaldi.fbank(
        clip[None], num_mel_bins=40, frame_length=20.0, frame_shift=8.0, window_type="hamming", use_energy=True
    )
    x = ours(clip)
    assert x.dtype == torch.float32 and x.shape == (1 + (len(clip) - 320) // 128, 41)
    assert torch.equal(x, theirs)
    assert ours.output(WAVE) == Spec("frames", RATE, frame_rate=125.0, size=41)
    assert torch.equal(KaldiFbank()(clip), kaldi.fbank(clip[None], num_mel_bins=80))  # Kaldi's defaults, 80 bins
    assert KaldiFbank().output(WAVE).frame_rate == 100.0  # 1000 / frame_shift


def test_kaldi_fbank_refuses_a_clip_shorter_than_one_frame(clip):
    with pytest.raises(ValueError, match=r"at least one frame \(400 samples at 16000 Hz\), got 399 samples"):
        KaldiFbank()(clip[:399])
    assert KaldiFbank()(clip[:400]).shape == (1, 80)
    with pytest.raises(ShapeError, match="got 100 samples: its input is waveform at 16000 Hz, always 100 long"):
        KaldiFbank().output(WAVE.with_(length=100))


@pytest.mark.parametrize("transform", [MelSpectrogram(), MFCC()], ids=lambda t: type(t).__name__)
def test_a_clip_too_short_for_the_centred_stft_is_a_clear_error(clip, transform):
    with pytest.raises(ValueError, match=r"longer than n_fft // 2 = 200 samples .*, got 200"):
        transform(clip[:200])
    assert transform(clip[:201]).shape[0] == 2


def test_stack_frames_rows_are_consecutive_frames(clip):
    frames = MelSpectrogram(db=True)(clip)  # (T, 64)
    t = len(frames)
    transform = StackFrames(k=4, stride=3)
    x = transform(frames)
    assert x.dtype == torch.float32 and x.shape == (math.ceil(t / 3), 4 * 64)
    for i in range(len(x)):
        picked = [frames[min(i * 3 + j, t - 1)] for j in range(4)]  # past the end: the last frame again
        assert torch.equal(x[i], torch.cat(picked))
    assert i * 3 + 3 > t - 1  # the last row ran past the end, so the repeat was checked
    assert transform.output(FRAMES) == Spec("frames", RATE, frame_rate=100 / 3, size=256)
    assert transform.output(FRAMES.with_(length=100)).length == 34
    assert StackFrames(k=2, stride=5)(frames[:3]).shape == (1, 128)  # shorter than stride: still one row


def test_a_fixed_length_input_gives_a_fixed_number_of_frames(clip):
    second = WAVE.with_(length=RATE)
    x = torch.cat([clip] * math.ceil(RATE / len(clip)))[:RATE]
    for transform, frames in ((MelSpectrogram(), 101), (MFCC(deltas=2), 101), (KaldiFbank(), 98)):
        assert transform.output(second).length == frames == len(transform(x))
        assert transform.output(WAVE).length is None


@pytest.mark.parametrize(
    "cls, args, message",
    [
        (MelSpectrogram, {"f_max": 9000}, "f_max=9000 is above the Nyquist frequency of 16000 Hz"),
        (MelSpectrogram, {"n_mels": 0}, "n_mels must be a positive integer, got 0"),
        (MelSpectrogram, {"win_length": 512}, "win_length=512 is longer than n_fft=400"),
        (MelSpectrogram, {"power": 0}, "power must be a positive number"),
        (MelSpectrogram, {"db": True, "power": 0.5}, "db: true needs power 1 .* or 2"),
        (MelSpectrogram, {"top_db": 80}, "top_db=80 limits decibels: it needs db: true"),
        (MelSpectrogram, {"db": "yes"}, "db must be true or false, got 'yes'"),
        (AmplitudeToDB, {"stype": "amplitude"}, "stype must be one of power, magnitude, got 'amplitude'"),
        (AmplitudeToDB, {"top_db": -10}, "top_db must be a positive number or null, got -10"),
        (AmplitudeToDB, {"floor": 0}, "floor must be a positive number"),
        (MFCC, {"deltas": 3}, r"deltas must be an integer in \[0, 2\], got 3"),
        (MFCC, {"deltas": True}, r"deltas must be an integer in \[0, 2\], got True"),
        (MFCC, {"deltas": 1.0}, r"deltas must be an integer in \[0, 2\], got 1.0"),
        (MFCC, {"deltas": 1, "delta_win_length": 4}, "delta_win_length must be an odd number of frames, at least 3"),
        (KaldiFbank, {"dither": 1.0}, "dither=1.0 is refused: Kaldi's dither draws from torch's global generator"),
        (KaldiFbank, {"num_mel_bins": 3}, "num_mel_bins must be an integer >= 4, got 3"),
        (KaldiFbank, {"high_freq": 9000}, r"need 0 <= low_freq < high_freq <= Nyquist \(8000 Hz"),
        (KaldiFbank, {"low_freq": 7900, "high_freq": -200}, "low_freq=7900, high_freq=-200"),
        (KaldiFbank, {"window_type": "hann"}, "window_type must be one of povey, hamming, .*, got 'hann'"),
        (KaldiFbank, {"frame_shift": 0.01}, "frame_shift must be a number of ms worth at least one sample"),
        (KaldiFbank, {"use_energy": 1}, "use_energy must be true or false"),
        (StackFrames, {"k": 0}, "k must be a positive integer, got 0"),
        (StackFrames, {"stride": 1.5}, "stride must be a positive integer, got 1.5"),
        (PannLogMel, {"expected_rate": 32000}, "is for 32000 Hz audio, but its input is waveform at 16000 Hz"),
        # upper bounds: more Mel bands than frequency bins, hops that skip samples, windows without bound
        (MelSpectrogram, {"n_mels": 202}, "n_mels=202 is more than 201: n_fft=400 gives 201 frequency bins"),
        (MelSpectrogram, {"hop_length": 401}, r"hop_length=401 is more than 400: a hop longer than the window"),
        (MelSpectrogram, {"win_length": 200, "hop_length": 201}, r"hop_length=201 is more than 200"),
        (MelSpectrogram, {"n_fft": 65537}, r"n_fft must be an integer in \(0, 65536\], got 65537"),
        (MFCC, {"n_mels": 300}, "n_mels=300 is more than 201"),
        (MFCC, {"hop_length": 10**9}, "hop_length=1000000000 is more than 400"),
        (PannLogMel, {"n_mels": 258}, "n_mels=258 is more than 257: n_fft=512 gives 257 frequency bins"),
        (PannLogMel, {"hop_length": 513}, "hop_length=513 is more than 512"),
        (KaldiFbank, {"num_mel_bins": 257}, "num_mel_bins=257 is more than 256: a 25.0 ms frame gives 256"),
        (KaldiFbank, {"frame_shift": 25.5}, "frame_shift=25.5 is more than 25: a shift longer than the frame"),
        (KaldiFbank, {"frame_length": 5000.0}, "frame_length=5000.0 is more than 4096: 65536 samples"),
    ],
)
def test_bad_args_are_refused_by_the_factory_check_and_at_config_load(cls, args, message):
    with pytest.raises(ValueError, match=message):
        components.check(cls, args)
    target = f"{cls.__module__}:{cls.__name__}"
    front = [] if "waveform" in cls.takes else [{"target": "tympan.transforms.mel:MelSpectrogram"}]
    with pytest.raises(ConfigError, match=message):
        load_features({"sample_rate": RATE, "offline": [*front, {"target": target, "args": args}]})


def test_a_band_above_8_khz_loads_on_a_32_khz_pipeline(fsdd_mirror):
    """Config load used to check a transform's band against a guessed 16 kHz (its constructor's
    default rate), so a 32 kHz front end with fmax 14000 could not be loaded at all."""
    wide = [
        {"target": "tympan.transforms.mel:MelSpectrogram", "args": {"n_fft": 1024, "hop_length": 320, "f_max": 14000}},
        {"target": "tympan.transforms.logmel:PannLogMel", "args": {"n_fft": 1024, "hop_length": 320, "fmax": 14000}},
    ]
    for item in wide:
        pipeline = load_features({"sample_rate": 32000, "offline": [item]})
        assert pipeline.output.sample_rate == 32000
        assert pipeline.extract(recording(fsdd_mirror, rate=32000).numpy()).shape[1] == 64
        with pytest.raises(ConfigError, match="14000 is above the Nyquist frequency of 16000 Hz"):
            load_features({"sample_rate": RATE, "offline": [item]})


@pytest.mark.parametrize("name, rate", [("PannLogMel8k", 8000), ("PannLogMel16k", 16000), ("PannLogMel32k", 32000)])
def test_pann_feature_presets_give_100_frames_a_second_of_64_bins(fsdd_mirror, name, rate):
    pipeline = load_features(name)
    assert pipeline.sample_rate == rate
    assert pipeline.output == Spec("frames", rate, frame_rate=100.0, size=64)
    samples = recording(fsdd_mirror, rate=rate)
    x = pipeline.extract(samples.numpy())
    assert x.dtype == "float32" and x.shape == (len(samples) * 100 // rate + 1, 64)


@pytest.mark.parametrize("name, rate", [("PannLogMel32k", 32000), ("PannLogMel8k", 8000)])
def test_a_pann_front_end_at_another_rate_is_a_shape_error_at_load(name, rate):
    message = f"is for {rate} Hz audio, but its input is waveform at 16000 Hz"
    with pytest.raises(ShapeError, match=rf"features.offline.0: PannLogMel\(expected_rate={rate}\) {message}"):
        Pipeline(RATE, [expand("transforms", name)], [], resolve=resolve_target)
    with pytest.raises(ConfigError, match=message):
        load_features({"sample_rate": RATE, "offline": [name]})


@pytest.mark.parametrize(
    "offline, online, message",
    [
        (
            ["MelSpectrogram"],
            ["StackFrames", "MelSpectrogram"],
            "MelSpectrogram takes waveform, but its input is frames",
        ),
        (["Waveform"], ["AmplitudeToDB"], "AmplitudeToDB takes frames, but its input is waveform at 16000 Hz"),
        (["Waveform"], ["StackFrames"], "StackFrames takes frames, but its input is waveform at 16000 Hz"),
        (["KaldiFbank"], ["MFCC"], "MFCC takes waveform, but its input is frames x 80 bins at 100 frames/s"),
    ],
)
def test_a_mismatched_chain_is_refused_at_load_naming_both_sides(offline, online, message):
    with pytest.raises(ConfigError, match=message):
        load_features({"sample_rate": RATE, "offline": offline, "online": online})


def test_the_mfcc_feature_preset_gives_standardised_coefficients(fsdd_mirror):
    pipeline = load_features("MFCC16k")
    assert pipeline.stored == Spec("frames", RATE, frame_rate=100.0, size=40)
    assert pipeline.output == pipeline.stored and pipeline.fits
    clips = [torch.from_numpy(pipeline.extract(recording(fsdd_mirror, f"{d}_george_{d}").numpy())) for d in range(6)]
    pipeline.fit(lambda: iter(clips))
    standardised = torch.cat([pipeline.apply(c) for c in clips])
    assert standardised.shape[1] == 40
    assert torch.allclose(standardised.mean(0), torch.zeros(40), atol=1e-4)
    assert torch.allclose(standardised.std(0), torch.ones(40), atol=1e-3)


@pytest.mark.parametrize("name", MINE)
def test_every_spectral_transform_preset_loads_and_builds_in_a_pipeline(fsdd_mirror, name):
    preset = load_preset("transforms", name)
    rate = preset["args"].get("expected_rate", RATE)
    takes_frames = "waveform" not in resolve_target(preset["target"]).takes
    offline = [{"target": "tympan.transforms.mel:MelSpectrogram"}] if takes_frames else []
    pipeline = load_features({"sample_rate": rate, "offline": [*offline, name]})
    samples = recording(fsdd_mirror, rate=rate)
    x = pipeline.extract(samples.numpy())
    assert x.dtype == "float32" and x.ndim == 2 and x.shape[1] == pipeline.output.size
    seconds = len(samples) / rate
    assert abs(len(x) - seconds * pipeline.output.frame_rate) <= 2


def test_mine_are_all_the_presets_of_these_modules():
    """MINE (above) lists every transform preset of this file's modules, so none goes untested."""
    modules = ("mel", "db", "mfcc", "fbank", "stack", "logmel")
    presets = {p.stem: load_preset("transforms", p.stem) for p in (PRESETS / "transforms").glob("*")}
    ours = {n for n, p in presets.items() if p["target"].split(":")[0].rsplit(".", 1)[1] in modules}
    assert ours - {"PannLogMel"} == set(MINE)  # PannLogMel (16 kHz, any rate) is tested in test_transforms.py
