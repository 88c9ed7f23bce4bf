"""Properties of every augmentation in tympan.augmentations, on real FSDD audio: 16 kHz waveforms,
or their PANN log-Mel frames for feature augmentations.

The shared properties run for each one: the output's shape and dtype, p=0 is the identity, p=1
always applies, the same seed gives the same output and other seeds other outputs, no global RNG
is used, and a kind it cannot act on is refused. Then each one's own property (a mask fills the
band it says, Gain changes the level by the drawn dB, ...), multi-label MixUp and CutMix with a
tiny training, and what config load says about each new augmentation.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import math
import pkgutil
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import tympan.augmentations
from tympan import config as configuration
from tympan import stages
from tympan.audio import load
from tympan.augmentations import build
from tympan.augmentations.base import Augmentation
from tympan.augmentations.draws import nonzero
from tympan.augmentations.masking import FrequencyMask, TimeMask, TimeWarp
from tympan.augmentations.mix import CutMix, MixUp, beta
from tympan.augmentations.noise import BackgroundNoise, GaussianNoise
from tympan.augmentations.reverb import ImpulseResponse
from tympan.augmentations.spec_augment import SpecAugment
from tympan.augmentations.speed import SpeedPerturb, WaveformSpeed
from tympan.augmentations.structure import Choice, Sequence
from tympan.augmentations.waveform import Gain, PitchShift, PolarityInversion, TimeShift
from tympan.config.schema import Component
from tympan.errors import AudioError, ConfigError
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.spec import ShapeError, Spec, waveform

CLIPS = ["3_jackson_7", "0_george_0", "7_lucas_3", "9_yweweler_12"]
RATE = 16000
MASKING = "tympan.augmentations.masking"
WAVEFORM = "tympan.augmentations.waveform"
SEEDS = range(8)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def after_p(seed: int) -> torch.Generator:
    """The generator an augmentation's `apply` sees for `seed`: the p draw already taken."""
    generator = seeded(seed)
    torch.rand(1, generator=generator)
    return generator


@pytest.fixture(scope="module")
def waves(fsdd_mirror):
    """Four FSDD clips as 16 kHz float32 waveforms (the files are 8 kHz: resampled on load)."""
    return [torch.from_numpy(load(fsdd_mirror / "fsdd/recordings" / f"{name}.wav", RATE)[0]) for name in CLIPS]


@pytest.fixture(scope="module")
def mels(waves):
    """Their PANN log-Mels (frames, 64)."""
    logmel = PannLogMel()
    return [logmel(w) for w in waves]


@pytest.fixture(scope="module")
def batch(mels):
    """The four log-Mels padded into a batch, their lengths, and multi-label 0/1 targets with
    several 1s a row (one row empty)."""
    frames = max(len(m) for m in mels)
    x = torch.stack([F.pad(m, (0, 0, 0, frames - len(m)), value=float(m.min())) for m in mels])
    targets = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    return x, torch.tensor([len(m) for m in mels]), targets


def room_response(rng: np.random.Generator, delay: int, length: int = 3000, decay: float = 500.0) -> np.ndarray:
    """A synthetic room impulse response: silence, a direct path of 1 at `delay`, then an
    exponentially decaying noise tail (smaller than the direct path)."""
    response = np.zeros(delay + length, np.float32)
    tail = rng.standard_normal(length - 1) * 0.3 * np.exp(-np.arange(1, length) / decay)
    response[delay] = 1.0
    response[delay + 1 :] = tail
    return response


@pytest.fixture(scope="module")
def folders(tmp_path_factory, fsdd_mirror):
    """`noise`: two FSDD clips as background noise; `rooms`: three impulse responses at 16 kHz
    (one in a subfolder) and one at 8 kHz, with a note that is not audio."""
    root = tmp_path_factory.mktemp("augmentation-files")
    (root / "noise").mkdir()
    shutil.copy(fsdd_mirror / "fsdd/recordings/1_nicolas_0.wav", root / "noise/a.wav")
    shutil.copy(fsdd_mirror / "fsdd/recordings/5_george_3.wav", root / "noise/b.wav")
    (root / "rooms/sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, delay, rate in [("a.wav", 40, RATE), ("b.flac", 0, RATE), ("sub/c.wav", 200, RATE), ("d.wav", 10, 8000)]:
        sf.write(root / "rooms" / name, room_response(rng, delay) * 0.5, rate)
    (root / "rooms/README.txt").write_text("not audio")
    return root


# ---------------------------------------------------------------- the cases


@dataclass
class Case:
    """How to build an augmentation and what it acts on: "waveform" (a 16 kHz FSDD clip),
    "frames" (its log-Mel) or "batch" (four log-Mels, lengths and multi-label targets)."""

    make: Callable
    data: str
    keeps_shape: bool = True
    outcomes: int | None = None  # how many outputs it can give once applied (None: a continuum)


CASES = {
    "GaussianNoise": Case(lambda f: GaussianNoise(), "waveform"),
    "BackgroundNoise": Case(lambda f: BackgroundNoise(str(f / "noise"), sample_rate=RATE), "waveform"),
    "TimeShift": Case(lambda f: TimeShift(max_fraction=0.3), "waveform"),
    "TimeShift-rollover": Case(lambda f: TimeShift(max_seconds=0.1, rollover=True, sample_rate=RATE), "waveform"),
    "Gain": Case(lambda f: Gain(), "waveform"),
    "PolarityInversion": Case(lambda f: PolarityInversion(), "waveform", outcomes=1),
    "PitchShift": Case(lambda f: PitchShift(), "waveform", outcomes=47),  # factors 178/200 to 224/200
    "WaveformSpeed": Case(lambda f: WaveformSpeed(), "waveform", keeps_shape=False),
    "ImpulseResponse": Case(lambda f: ImpulseResponse(str(f / "rooms"), sample_rate=RATE), "waveform", outcomes=4),
    "SpecAugment": Case(lambda f: SpecAugment(), "frames"),
    "SpeedPerturb": Case(lambda f: SpeedPerturb(), "frames", keeps_shape=False),
    "TimeMask": Case(lambda f: TimeMask(10, masks=2), "frames"),
    "FrequencyMask": Case(lambda f: FrequencyMask(10, fill=0.0), "frames"),
    "TimeWarp": Case(lambda f: TimeWarp(5), "frames"),
    "Choice": Case(
        lambda f: Choice(
            [{"target": f"{MASKING}:TimeWarp"}, {"target": f"{MASKING}:FrequencyMask", "args": {"max_width": 8}}]
        ),
        "frames",
    ),
    "Sequence": Case(
        lambda f: Sequence(
            [{"target": f"{WAVEFORM}:TimeShift", "args": {"max_fraction": 0.2}}, {"target": f"{WAVEFORM}:Gain"}]
        ),
        "waveform",
    ),
    "MixUp": Case(lambda f: MixUp(), "batch"),
    "CutMix": Case(lambda f: CutMix(), "batch"),
}
# Each wrapped library has its own suite of these properties there.
ELSEWHERE = {"tympan.augmentations.adapters": "tests/test_augmentation_adapters.py"}


@pytest.fixture
def case_data(waves, mels, batch, folders):
    """`get(name)`: the case's fresh augmentation and its input, as a tuple of call arguments."""

    def get(name: str) -> tuple[Augmentation, tuple]:
        case = CASES[name]
        inputs = {"waveform": (waves[0],), "frames": (mels[0],), "batch": batch}[case.data]
        return case.make(folders), inputs

    return get


def outputs(result) -> tuple:
    """A clip's output, or a batch's (x, lengths, targets), as a tuple."""
    return result if isinstance(result, tuple) else (result,)


def equal(a, b) -> bool:
    return all(
        (u is None and v is None) or (u is not None and v is not None and u.shape == v.shape and torch.equal(u, v))
        for u, v in zip(outputs(a), outputs(b), strict=True)
    )


def leaf_classes() -> dict[str, type]:
    """Every Augmentation subclass defined in tympan/augmentations that nothing subclasses (the
    others are bases: Augmentation, SnrNoise, Mask, Node, ...), by its import path."""
    found = {}
    for module in pkgutil.iter_modules(tympan.augmentations.__path__):
        loaded = importlib.import_module(f"tympan.augmentations.{module.name}")
        for cls in vars(loaded).values():
            if inspect.isclass(cls) and issubclass(cls, Augmentation) and cls.__module__ == loaded.__name__:
                found[f"{cls.__module__}:{cls.__name__}"] = cls
    bases = {base for cls in found.values() for base in cls.__mro__[1:]}
    return {path: cls for path, cls in found.items() if cls not in bases}


def test_every_augmentation_has_a_case(folders):
    covered = {type(case.make(folders)) for case in CASES.values()}
    missing = [
        path for path, cls in leaf_classes().items() if cls not in covered and path.partition(":")[0] not in ELSEWHERE
    ]
    assert not missing, f"add a property case for {missing}"


# ---------------------------------------------------------------- shared properties


@pytest.mark.parametrize("name", CASES)
def test_shape_and_dtype(case_data, name):
    aug, inputs = case_data(name)
    for seed in SEEDS:
        for out, x in zip(outputs(aug(*inputs, seeded(seed))), inputs, strict=True):
            if x is None:
                assert out is None
                continue
            assert out.dtype == x.dtype and out.dim() == x.dim(), (name, seed)
            if CASES[name].keeps_shape:
                assert out.shape == x.shape, (name, seed)
            else:  # a speed change: time scales by at most 1 / 0.85, the bins stay
                assert out.shape[1:] == x.shape[1:] and 0.8 * len(x) <= len(out) <= 1.2 * len(x), (name, seed)


@pytest.mark.parametrize("name", CASES)
def test_p_zero_is_the_identity(case_data, name):
    aug, inputs = case_data(name)
    aug.p = 0.0
    for seed in SEEDS:
        out = outputs(aug(*inputs, seeded(seed)))
        assert all(o is x for o, x in zip(out, inputs, strict=True)), (name, seed)


@pytest.mark.parametrize("name", CASES)
def test_p_one_always_applies(case_data, name):
    aug, inputs = case_data(name)
    assert aug.p == 1.0
    for seed in SEEDS:
        assert not equal(aug(*inputs, seeded(seed)), inputs if len(inputs) > 1 else inputs[0]), (name, seed)


@pytest.mark.parametrize("name", CASES)
def test_same_seed_same_output_other_seeds_other_outputs(case_data, name):
    aug, inputs = case_data(name)
    results = [aug(*inputs, seeded(seed)) for seed in SEEDS]
    assert all(equal(aug(*inputs, seeded(seed)), results[seed]) for seed in (0, 3)), name
    distinct = []
    for result in results:
        if not any(equal(result, seen) for seen in distinct):
            distinct.append(result)
    outcomes = CASES[name].outcomes
    if outcomes is None:
        assert len(distinct) == len(SEEDS), name
    else:
        assert min(outcomes, 2) <= len(distinct) <= outcomes, name


@pytest.mark.parametrize("name", CASES)
def test_draws_come_from_the_generator_alone(case_data, name):
    """The process-wide RNGs neither change the output nor are drawn from."""
    aug, inputs = case_data(name)
    expected = aug(*inputs, seeded(5))
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert equal(aug(*inputs, seeded(5)), expected), name
    assert torch.equal(torch.get_rng_state(), states[0]), name
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2], name


KIND_EXAMPLES = {
    "waveform": waveform(RATE),
    "frames": Spec("frames", RATE, frame_rate=100.0, size=64),
    "vector": Spec("vector", RATE, size=88),
    "image": Spec("image", RATE, shape=(3, 64, 64)),
}


@pytest.mark.parametrize("name", CASES)
def test_a_kind_it_cannot_act_on_is_refused_naming_it(case_data, name):
    aug, _ = case_data(name)
    if CASES[name].data == "batch":
        for spec in KIND_EXAMPLES.values():
            aug.check(spec)  # a batch of anything can be mixed
        return
    data = CASES[name].data
    aug.check(KIND_EXAMPLES[data])
    named = [type(child).__name__ for child in getattr(aug, "children", [aug])]  # a node's child names it
    for kind, spec in KIND_EXAMPLES.items():
        if kind != data:
            with pytest.raises(
                ShapeError, match=f"^({'|'.join(named)}) acts on {data}, but gets {re.escape(spec.describe())}$"
            ):
                aug.check(spec)


# ---------------------------------------------------------------- masks and warping


@pytest.mark.parametrize("cls", [TimeMask, FrequencyMask])
def test_a_mask_zeroes_exactly_the_bands_it_says(mels, cls):
    features = mels[1]
    aug = cls(max_width=12, masks=3, fill=0.0)
    widths = []
    for seed in SEEDS:
        bands = aug.bands(features.shape, after_p(seed))
        out = aug(features, seeded(seed))
        inside = torch.zeros_like(features, dtype=torch.bool)
        for axis, start, width in bands:
            assert axis == cls.axis and 1 <= width <= 12 and start + width <= features.shape[axis]
            inside.narrow(axis, start, width).fill_(True)
            widths.append(width)
        assert (out[inside] == 0).all() and torch.equal(out[~inside], features[~inside])
        assert (features[inside] != 0).all()  # a log-Mel has no zeros of its own: the mask made them
    assert len(set(widths)) > 5


def test_a_mean_mask_fills_with_the_clip_mean_and_a_mask_never_exceeds_the_axis(mels):
    features = mels[2]
    out = TimeMask(max_width=8)(features, seeded(4))
    masked_rows = (out == float(features.mean())).all(dim=1)
    assert 1 <= int(masked_rows.sum()) <= 8
    tiny = features[:3]
    for seed in SEEDS:  # max_width above the clip's 3 frames: at most the whole clip
        bands = TimeMask(max_width=50).bands(tiny.shape, after_p(seed))
        assert all(1 <= width <= 3 and start + width <= 3 for _, start, width in bands)


def test_time_warp_moves_the_centre_frame_by_the_shift_and_keeps_the_ends(mels):
    features = mels[0]
    frames = len(features)
    aug = TimeWarp(max_warp=6)
    shifts = set()
    for seed in SEEDS:
        centre, shift = aug.warp(frames, after_p(seed))
        out = aug(features, seeded(seed))
        assert 7 <= centre <= frames - 8 and 1 <= abs(shift) <= 6
        assert torch.allclose(out[centre + shift], features[centre], atol=1e-4)
        assert torch.equal(out[0], features[0]) and torch.allclose(out[-1], features[-1], atol=1e-4)
        # between two frames of the input, linearly: a frame past the centre reads the part after it
        t = centre + shift + 1
        source = centre + (t - centre - shift) * (frames - 1 - centre) / (frames - 1 - centre - shift)
        low = math.floor(source)
        expected = features[low] + (source - low) * (features[min(low + 1, frames - 1)] - features[low])
        assert torch.allclose(out[t], expected, atol=1e-4)
        shifts.add(shift)
    assert any(s < 0 for s in shifts) and any(s > 0 for s in shifts)
    short = features[:4]
    assert TimeWarp(5)(short, seeded(0)) is short  # under 5 frames: nothing to warp


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        (f"{MASKING}:TimeMask", {"max_width": 0}, "max_width must be a positive integer, got 0"),
        (f"{MASKING}:FrequencyMask", {"max_width": 4, "masks": 1.5}, "masks must be a positive integer, got 1.5"),
        (f"{MASKING}:TimeMask", {"max_width": 4, "fill": "median"}, "fill must be a number or 'mean'.*'median'"),
        (f"{MASKING}:TimeWarp", {"max_warp": -1}, "max_warp must be a positive integer, got -1"),
        (f"{WAVEFORM}:TimeShift", {}, "give one of max_seconds or max_fraction"),
        (f"{WAVEFORM}:TimeShift", {"max_seconds": 0.1, "max_fraction": 0.1}, "give one of max_seconds or max_fraction"),
        (f"{WAVEFORM}:TimeShift", {"max_fraction": 1.5}, r"max_fraction must be a number in \(0, 1\] or null, got 1.5"),
        (f"{WAVEFORM}:TimeShift", {"max_seconds": 0.1, "rollover": "yes"}, "rollover must be true or false"),
        (f"{WAVEFORM}:Gain", {"min_db": 6, "max_db": -6}, "need min_db <= max_db, got 6, -6"),
        (f"{WAVEFORM}:PitchShift", {"max_semitones": 30}, "max_semitones must be a number in \\[-24, 24\\], got 30"),
        (f"{WAVEFORM}:PolarityInversion", {"p": 2}, "p must be a number in \\[0, 1\\], got 2"),
    ],
)
def test_a_bad_argument_is_refused_at_config_load_naming_it(target, args, message):
    with pytest.raises(ValueError, match=message):
        Component(target=target, args=args).check_args()


# ---------------------------------------------------------------- waveform


def test_time_shift_moves_the_signal_by_the_drawn_shift(waves):
    x = waves[1]
    most = int(0.3 * len(x))
    shifts = []
    for seed in SEEDS:
        shift = nonzero(most, after_p(seed))
        out = TimeShift(max_fraction=0.3)(x, seeded(seed))
        if shift > 0:
            assert torch.equal(out[shift:], x[:-shift]) and not out[:shift].any()
        else:
            assert torch.equal(out[:shift], x[-shift:]) and not out[shift:].any()
        rolled = TimeShift(max_fraction=0.3, rollover=True)(x, seeded(seed))
        assert torch.equal(rolled, torch.roll(x, shift))
        shifts.append(shift)
    assert all(1 <= abs(s) <= most for s in shifts) and len(set(shifts)) == len(shifts)


def test_time_shift_in_seconds_uses_the_clip_rate(waves):
    x = waves[0]
    for seed in SEEDS:
        out = TimeShift(max_seconds=0.01, sample_rate=RATE, rollover=True)(x, seeded(seed))
        shift = next(s for s in range(-160, 161) if torch.equal(out, torch.roll(x, s)))
        assert 1 <= abs(shift) <= 160  # 10 ms at 16 kHz
    with pytest.raises(ValueError, match="TimeShift needs the clip's sample_rate"):
        TimeShift(max_seconds=0.01)(x, seeded(0))
    shared = build({"target": f"{WAVEFORM}:TimeShift", "args": {"max_seconds": 0.01}}, {"sample_rate": RATE})
    assert shared.sample_rate == RATE


def level_db(x: torch.Tensor) -> float:
    return 10 * math.log10(float(x.double().square().mean()))


def test_gain_changes_the_level_by_the_drawn_db(waves):
    x = waves[2]
    gains = []
    for seed in SEEDS:
        drawn = -9 + float(torch.rand(1, generator=after_p(seed))) * 12
        out = Gain(min_db=-9, max_db=3)(x, seeded(seed))
        assert level_db(out) - level_db(x) == pytest.approx(drawn, abs=1e-4)
        assert torch.allclose(out, x * 10 ** (drawn / 20))
        gains.append(drawn)
    assert min(gains) < -3 < max(gains)


def test_polarity_inversion_negates(waves):
    for x in waves:
        assert torch.equal(PolarityInversion()(x, seeded(0)), -x)


def dominant_hz(x: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(x * torch.hann_window(len(x))).abs()
    return float(spectrum.argmax()) * RATE / len(x)


def test_pitch_shift_keeps_the_length_and_moves_a_tone_by_the_drawn_semitones(waves):
    for x in waves:
        assert len(PitchShift(min_semitones=-3, max_semitones=3)(x, seeded(1))) == len(x)
    tone = torch.sin(2 * math.pi * 440 * torch.arange(RATE) / RATE)
    aug = PitchShift(min_semitones=-4, max_semitones=4)
    moved = []
    for seed in SEEDS:
        semitones = -4 + float(torch.rand(1, generator=after_p(seed))) * 8
        factor = aug.factor(semitones)
        assert abs(1200 * math.log2(float(factor)) - 100 * semitones) <= 5  # within 5 cents
        out = aug(tone, seeded(seed))
        assert len(out) == len(tone) and out.dtype == tone.dtype
        assert dominant_hz(out) == pytest.approx(440 * float(factor), abs=1.5)  # 1 Hz bins
        # the tone stays whole (an STFT that pads by reflection, as torchaudio's does, loses over half)
        assert float(out.square().sum() / tone.square().sum()) > 0.75
        moved.append(semitones)
    assert min(moved) < -1 and max(moved) > 1


def test_pitch_shift_by_an_octave_moves_speech_up_or_down(waves):
    """Speech raised an octave has its spectral centroid higher; lowered, lower."""
    x = waves[0]

    def centroid(y):
        spectrum = torch.stft(y, 512, 128, window=torch.hann_window(512), return_complex=True).abs().sum(dim=1)
        return float((torch.arange(len(spectrum)) * spectrum).sum() / spectrum.sum())

    up = PitchShift(min_semitones=12, max_semitones=12)(x, seeded(0))
    down = PitchShift(min_semitones=-12, max_semitones=-12)(x, seeded(0))
    assert centroid(up) > 1.4 * centroid(x) and centroid(down) < 0.75 * centroid(x)
    short = x[:200]
    assert PitchShift()(short, seeded(0)) is short  # within half an STFT window: left as it is


# ---------------------------------------------------------------- reverberation


def test_a_unit_impulse_response_gives_the_clip_back_even_when_delayed(waves, tmp_path):
    for delay in (0, 123):
        folder = tmp_path / f"impulse-{delay}"
        folder.mkdir()
        response = np.zeros(delay + 500, np.float32)
        response[delay] = 0.25  # any level: the wet clip is rescaled to the dry one's energy
        sf.write(folder / "impulse.wav", response, RATE, subtype="FLOAT")
        out = ImpulseResponse(str(folder), sample_rate=RATE)(waves[3], seeded(0))
        assert out.shape == waves[3].shape and torch.allclose(out, waves[3], atol=1e-5)


def test_reverb_is_the_aligned_convolution_at_the_dry_energy(waves, folders):
    aug = ImpulseResponse(str(folders / "rooms"), sample_rate=RATE)
    assert [f.relative_to(folders / "rooms").as_posix() for f in aug.files] == ["a.wav", "b.flac", "d.wav", "sub/c.wav"]
    x = waves[1]
    picked = set()
    for seed in SEEDS:
        index = int(torch.randint(0, len(aug.files), (1,), generator=after_p(seed)))
        response = load(aug.files[index], RATE)[0]  # the 8 kHz one resampled to the clip's rate
        peak = int(np.abs(response).argmax())
        full = np.convolve(x.double().numpy(), response.astype(np.float64))
        expected = full[peak : peak + len(x)]
        expected *= math.sqrt(float(x.double().square().sum()) / float((expected**2).sum()))
        out = aug(x, seeded(seed))
        assert out.shape == x.shape and out.dtype == torch.float32
        assert np.allclose(out.numpy(), expected, atol=1e-4)
        assert float(out.double().square().sum()) == pytest.approx(float(x.double().square().sum()), rel=1e-4)
        picked.add(index)
    assert len(picked) >= 3


def test_impulse_response_folders_and_files_are_checked(tmp_path, waves):
    target = "tympan.augmentations.reverb:ImpulseResponse"
    with pytest.raises(ValueError, match=f"impulse response folder {tmp_path / 'none'}: no such directory"):
        Component(target=target, args={"folder": str(tmp_path / "none")}).check_args()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/notes.md").write_text("")
    with pytest.raises(ValueError, match=f"impulse response folder {tmp_path / 'empty'} holds no audio files"):
        Component(target=target, args={"folder": str(tmp_path / "empty")}).check_args()
    (tmp_path / "silent").mkdir()
    sf.write(tmp_path / "silent/zero.wav", np.zeros(400, np.float32), RATE)
    aug = ImpulseResponse(str(tmp_path / "silent"), sample_rate=RATE)
    with pytest.raises(AudioError, match="zero.wav: an impulse response with no samples or only zeros"):
        aug(waves[0], seeded(0))
    with pytest.raises(ValueError, match="ImpulseResponse needs the clip's sample_rate"):
        ImpulseResponse(str(tmp_path / "silent"))(waves[0], seeded(0))


# ---------------------------------------------------------------- the existing ones' own properties


def snr_db(signal: torch.Tensor, noise: torch.Tensor) -> float:
    return level_db(signal) - level_db(noise)


@pytest.mark.parametrize("name", ["GaussianNoise", "BackgroundNoise"])
def test_noise_lands_in_its_snr_range(case_data, name):
    aug, (x,) = case_data(name)
    aug.min_snr_db, aug.max_snr_db = 5, 15
    snrs = [snr_db(x, aug(x, seeded(seed)) - x) for seed in SEEDS]
    assert all(5 - 1e-3 <= s <= 15 + 1e-3 for s in snrs) and max(snrs) - min(snrs) > 3


@pytest.mark.parametrize(("aug", "data"), [(WaveformSpeed(), "waveform"), (SpeedPerturb(), "frames")])
def test_speed_changes_the_length_by_the_drawn_rate(waves, mels, aug, data):
    x = waves[0] if data == "waveform" else mels[0]
    for seed in SEEDS:
        rate = 0.85 + float(torch.rand(1, generator=after_p(seed))) * 0.3
        expected = round(len(x) / rate) if data == "waveform" else max(1, round(len(x) / rate))
        assert len(aug(x, seeded(seed))) == expected


# ---------------------------------------------------------------- multi-label MixUp and CutMix


def test_mixup_mixes_multi_label_targets_convexly(batch):
    x, lengths, targets = batch
    for seed in SEEDS:
        out_x, out_lengths, out_targets = MixUp(alpha=0.4)(x, lengths, targets, seeded(seed))
        generator = after_p(seed)
        lam = beta(0.4, generator)
        partner = torch.randperm(4, generator=generator)
        assert torch.allclose(out_targets, lam * targets + (1 - lam) * targets[partner])
        assert torch.allclose(out_x, lam * x + (1 - lam) * x[partner])
        assert ((out_targets >= 0) & (out_targets <= 1)).all()
        # where both clips carry a label it stays 1, where neither does 0
        both, neither = (targets == 1) & (targets[partner] == 1), (targets == 0) & (targets[partner] == 0)
        assert (out_targets[both] == 1).all() and (out_targets[neither] == 0).all()
        assert torch.equal(out_lengths, torch.maximum(lengths, lengths[partner]))


def test_cutmix_mixes_multi_label_targets_by_the_share_pasted(batch):
    x, lengths, targets = batch
    x = x[:, : int(lengths.min())]  # no padding: the share is the cut fraction
    mixed_rows = 0
    for seed in SEEDS:
        out_x, _, out_targets = CutMix()(x, None, targets, seeded(seed))
        generator = after_p(seed)
        beta(1.0, generator)
        partner = torch.randperm(4, generator=generator)
        assert ((out_targets >= 0) & (out_targets <= 1)).all()
        for i in range(4):
            share = float((out_x[i] != x[i]).any(dim=1).float().mean())
            if share > 0:  # pasted frames that differ from the clip's own
                mixed_rows += 1
                expected = (1 - share) * targets[i] + share * targets[partner[i]]
                assert torch.allclose(out_targets[i], expected, atol=1e-6), (seed, i)
    assert mixed_rows >= 10


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    """A tiny ToyMultiLabel training with MixUp and CutMix: `(run dir, summary)`. Two epochs of two
    steps: the end-to-end suite trains multi-label with MixUp longer, but never with CutMix."""
    root = tmp_path_factory.mktemp("multilabel-mixing")
    raw = {
        "experiment": "multilabel-mixing",
        "seed": 1,
        "dataset": {"preset": "ToyMultiLabel", "root": str(root / "raw"), "args": {"train": 16, "dev": 4, "test": 4}},
        "features": {
            "preset": "PannLogMel16k",
            "root": str(root / "features"),
            "online": [{"target": "tympan.transforms.normalize:Normalize", "args": {"mode": "instance"}}],
        },
        "model": {"preset": "SmallCNN", "args": {"channels": [4, 8]}},
        "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}},
        "augmentation": [
            {"target": "tympan.augmentations.mix:MixUp", "args": {"alpha": 0.4}},
            {"target": "tympan.augmentations.mix:CutMix", "args": {"p": 0.5}},
        ],
        "training": {"epochs": 2, "batch_size": 8, "progress": False},
    }
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config)
    return stages.train(config, root / "run")


def test_a_tiny_multi_label_training_with_mixup_and_cutmix_runs(multilabel_run):
    run_dir, summary = multilabel_run
    assert summary["task"]["name"] == "multilabel" and summary["task"]["tracking_metric"] == "mAP"
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len(rows) == 2 and all(math.isfinite(float(row["train_loss"])) for row in rows)
    assert 0 <= summary["dev"]["mAP"] <= 1


# ---------------------------------------------------------------- config load

LOGMEL = {"dataset": "FSDD", "features": "PannLogMel16k", "model": "SmallCNN", "optimizer": "Adam"}
WAVE = {"dataset": "FSDD", "features": "Waveform16k", "model": "WaveformCNN", "optimizer": "Adam"}
VECTOR = {"dataset": "FSDD", "features": "EGeMAPS", "model": "FFNN", "optimizer": "Adam"}
NEW = {
    "TimeMask": (LOGMEL, f"{MASKING}:TimeMask", {"max_width": 8, "masks": 2}),
    "FrequencyMask": (LOGMEL, f"{MASKING}:FrequencyMask", {"max_width": 8, "fill": 0.0}),
    "TimeWarp": (LOGMEL, f"{MASKING}:TimeWarp", {"max_warp": 4, "p": 0.5}),
    "TimeShift": (WAVE, f"{WAVEFORM}:TimeShift", {"max_seconds": 0.1}),
    "Gain": (WAVE, f"{WAVEFORM}:Gain", {"min_db": -3}),
    "PolarityInversion": (WAVE, f"{WAVEFORM}:PolarityInversion", {"p": 0.5}),
    "PitchShift": (WAVE, f"{WAVEFORM}:PitchShift", {"min_semitones": -1, "max_semitones": 1}),
    "ImpulseResponse": (WAVE, "tympan.augmentations.reverb:ImpulseResponse", {"folder": "ROOMS"}),
}


@pytest.mark.parametrize("name", NEW)
def test_each_new_augmentation_loads_by_import_path_where_it_fits(folders, name):
    base, target, args = NEW[name]
    args = {k: str(folders / "rooms") if v == "ROOMS" else v for k, v in args.items()}
    config = configuration.parse({**base, "augmentation": [{"target": target, "args": args}]})
    built = build(config.augmentation[0], config.features.shared_args())
    assert type(built).__name__ == name
    if hasattr(built, "sample_rate"):
        assert built.sample_rate == RATE  # filled in from the features


@pytest.mark.parametrize("name", NEW)
def test_each_new_augmentation_is_refused_where_it_cannot_act_naming_it(folders, name):
    base, target, args = NEW[name]
    args = {k: str(folders / "rooms") if v == "ROOMS" else v for k, v in args.items()}
    wrong = WAVE if base is LOGMEL else LOGMEL
    expected = (
        "acts on the features, but the features pipeline gives a waveform"
        if base is LOGMEL
        else "acts on the waveform, but features.offline stores frames x 64 bins"
    )
    with pytest.raises(ConfigError, match=f"augmentation.0 \\({target}\\) {expected}"):
        configuration.parse({**wrong, "augmentation": [{"target": target, "args": args}]})


def test_a_mask_on_a_vector_is_a_shape_error_at_load_naming_both_sides():
    augmentation = [{"target": f"{MASKING}:TimeMask", "args": {"max_width": 4}}]
    with pytest.raises(
        ConfigError, match=f"augmentation.0 \\({MASKING}:TimeMask\\): TimeMask acts on frames, but gets vector of 88"
    ):
        configuration.parse({**VECTOR, "augmentation": augmentation})


def test_a_bad_value_is_a_config_error_naming_the_augmentation_and_the_value():
    augmentation = [{"target": f"{WAVEFORM}:Gain", "args": {"min_db": 10, "max_db": 0}}]
    with pytest.raises(ConfigError, match="augmentation.0.args: need min_db <= max_db, got 10, 0"):
        configuration.parse({**WAVE, "augmentation": augmentation})
