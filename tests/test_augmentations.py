"""Augmentations on real FSDD audio and log-Mels: places, probabilities, seeding, nesting, mixing."""

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from tympan.audio import load
from tympan.augmentations import (
    Augmentation,
    BackgroundNoise,
    Choice,
    CutMix,
    GaussianNoise,
    MixUp,
    Sequence,
    SpecAugment,
    SpeedPerturb,
    build,
)
from tympan.augmentations.mix import beta
from tympan.config.schema import Component
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.spec import ShapeError, Spec, waveform

CLIPS = ["3_jackson_7", "0_george_0", "7_lucas_3", "9_yweweler_12"]  # digits 3, 0, 7, 9
SPEED = "tympan.augmentations:SpeedPerturb"
SPEC = "tympan.augmentations:SpecAugment"


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def waves(fsdd_mirror):
    """Four FSDD clips as 16 kHz float32 waveforms (the files are 8 kHz: resampled on load)."""
    return [torch.from_numpy(load(fsdd_mirror / "fsdd/recordings" / f"{name}.wav", 16000)[0]) for name in CLIPS]


@pytest.fixture(scope="module")
def mels(waves):
    """Their log-Mels (frames, 64), as the default features give them."""
    logmel = PannLogMel()
    return [logmel(w.unsqueeze(0))[0] for w in waves]  # a batch of one: the same for a module or a Transform


@pytest.fixture(scope="module")
def batch(mels):
    """A padded batch of the four log-Mels, their lengths and one-hot soft targets."""
    frames = max(len(m) for m in mels)
    x = torch.stack([F.pad(m, (0, 0, 0, frames - len(m)), value=float(m.min())) for m in mels])
    lengths = torch.tensor([len(m) for m in mels])
    targets = F.one_hot(torch.tensor([3, 0, 7, 9]), 10).float()
    return x, lengths, targets


def clip_cases(waves, mels):
    """(augmentation, one input clip) for every clip-level augmentation."""
    return [
        (SpeedPerturb(), mels[0]),
        (SpecAugment(), mels[0]),
        (GaussianNoise(), waves[0]),
        (Choice([{"target": SPEED}, {"target": SPEC}]), mels[0]),
        (Sequence([{"target": SPEED}, {"target": SPEC}]), mels[0]),
    ]


# --- the base: probability, seeding, shapes ---


def test_p_zero_is_identity_and_p_one_always_applies(waves, mels, batch):
    for aug, x in clip_cases(waves, mels):
        aug.p = 0.0
        assert all(aug(x, seeded(s)) is x for s in range(5)), type(aug).__name__
        aug.p = 1.0
        for s in range(5):
            out = aug(x, seeded(s))
            assert out.dtype == torch.float32 and out.dim() == x.dim(), type(aug).__name__
            assert out.shape != x.shape or not torch.equal(out, x), (type(aug).__name__, s)
    for aug in (MixUp(p=0.0), CutMix(p=0.0)):
        assert aug(*batch, seeded(0)) == batch
    for aug in (MixUp(), CutMix()):
        changed = [not torch.equal(aug(*batch, seeded(s))[2], batch[2]) for s in range(10)]
        assert sum(changed) >= 7  # unchanged only when a clip's partner is itself everywhere


def test_p_is_drawn_first_from_the_generator(mels):
    """A half-probability augmentation applies exactly when the generator's first draw is below p."""
    aug = SpecAugment(p=0.5)
    for s in range(20):
        applies = float(torch.rand(1, generator=seeded(s))) < 0.5
        assert (aug(mels[1], seeded(s)) is not mels[1]) == applies


def test_same_seed_same_output_other_seed_other_output(waves, mels, batch):
    for aug, x in clip_cases(waves, mels):
        a, b, c = aug(x, seeded(1)), aug(x, seeded(1)), aug(x, seeded(2))
        assert torch.equal(a, b), type(aug).__name__
        assert a.shape != c.shape or not torch.equal(a, c), type(aug).__name__
    for aug in (MixUp(), CutMix()):
        a, b, c = aug(*batch, seeded(1)), aug(*batch, seeded(1)), aug(*batch, seeded(2))
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
        assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("p", [-0.1, 1.5, True, "1"])
def test_a_probability_outside_zero_one_is_refused_at_config_load(p):
    for target in (SPEC, "tympan.augmentations:MixUp", "tympan.augmentations:GaussianNoise"):
        with pytest.raises(ValueError, match=f"p must be a number in \\[0, 1\\], got {p!r}"):
            Component(target=target, args={"p": p}).check_args()


def test_calling_with_the_wrong_place_says_how(mels, batch):
    with pytest.raises(TypeError, match="MixUp acts on the batch: call it with \\(x, lengths, targets, generator\\)"):
        MixUp()(batch[0], seeded(0))
    with pytest.raises(TypeError, match="SpecAugment acts on the features: call it with \\(x, generator\\)"):
        SpecAugment()(*batch, seeded(0))


def test_augmentations_check_the_kind_they_get():
    frames = Spec("frames", 16000, frame_rate=100.0, size=64)
    SpecAugment().check(frames)
    with pytest.raises(ShapeError, match="SpecAugment acts on frames, but gets vector of 88"):
        SpecAugment().check(Spec("vector", 16000, size=88))
    with pytest.raises(ShapeError, match="SpeedPerturb is built for 64 Mel bins, but gets frames x 40 bins"):
        SpeedPerturb().check(frames.with_(size=40))
    with pytest.raises(ShapeError, match="GaussianNoise acts on waveform"):
        Choice([GaussianNoise()]).check(frames)
    MixUp().check(Spec("image", 16000, shape=(3, 64, 64)))


# --- the ported feature augmentations ---

# Computed with the implementation before the port (tympan/augmentations at 157a579) on the log-Mel
# of 3_jackson_7: the port keeps the generator's draws in the same order, so outputs are unchanged
# and the default experiment's SpeedPerturb run keeps its dev accuracy.
FEATURES_SUM = -133963.6935734637
PINNED_SPEED = {  # seed: (frames, sum, the generator's next three draws)
    0: (45, -118242.38380271941, [0.08847743272781372, 0.13203048706054688, 0.30742281675338745]),
    1: (52, -146726.56242740992, [0.40306925773620605, 0.7346844673156738, 0.029281556606292725]),
    7: (54, -154125.46151423082, [0.6592116951942444, 0.6568902730941772, 0.23276156187057495]),
}
PINNED_SPEC = {  # seed: (fully masked frames, fully masked bins, sum)
    0: ([3, 4, 5, 6, 7, 8, 15], [25, 26, 27, 28, 29, 30, 31, 32, 33], -135342.16229360178),
    1: ([1, 2, 3, 4, 5, 6, 19, 20], [23, 24, 25, 26, 27, 28, 29, 33, 34, 35, 36, 37, 38], -135506.1771513112),
    7: ([10, 11, 12, 13, 14, 32], [12, 13, 14, 21, 22, 23, 24, 25], -135601.96275352314),
}


def test_speed_perturb_and_spec_augment_give_what_they_gave_before_the_port(mels):
    features = mels[0]
    assert float(features.double().sum()) == pytest.approx(FEATURES_SUM, rel=1e-6), "the log-Mel itself changed"
    for seed, (frames, total, next_draws) in PINNED_SPEED.items():
        generator = seeded(seed)
        out = SpeedPerturb()(features, generator)
        assert out.shape == (frames, 64)
        assert float(out.double().sum()) == pytest.approx(total, rel=1e-6)
        assert torch.rand(3, generator=generator).tolist() == next_draws  # it drew exactly as many numbers
    for seed, (rows, cols, total) in PINNED_SPEC.items():
        out = SpecAugment()(features, seeded(seed))
        masked = out == float(features.mean())
        assert [i for i in range(out.shape[0]) if masked[i].all()] == rows
        assert [j for j in range(out.shape[1]) if masked[:, j].all()] == cols
        assert float(out.double().sum()) == pytest.approx(total, rel=1e-6)


def test_spec_augment_fills_the_bands_it_says_with_the_clip_mean(mels):
    features = mels[2]
    augment = SpecAugment(time_masks=2, time_width=10, freq_masks=2, freq_width=10)
    for seed in range(5):
        generator = seeded(seed)
        torch.rand(1, generator=generator)  # the p draw
        masks = augment.masks(features.shape, generator)
        out = augment(features, seeded(seed))
        inside = torch.zeros_like(features, dtype=torch.bool)
        for axis, start, width in masks:
            inside.narrow(axis, start, width).fill_(True)
        assert inside.any()
        assert (out[inside] == float(features.mean())).all()
        assert torch.equal(out[~inside], features[~inside])


def test_speed_perturbation_squeezes_time_and_raises_pitch(mels):
    faster = SpeedPerturb(min_rate=1.25, max_rate=1.25)(mels[0], seeded(0))
    assert faster.shape == (round(len(mels[0]) / 1.25), 64)
    assert torch.allclose(SpeedPerturb(min_rate=1.0, max_rate=1.0)(mels[0], seeded(0)), mels[0])


# --- Choice and Sequence ---


def test_choice_follows_its_weights():
    choice = Choice([{"target": SPEC}, {"target": SPEED}, {"target": SPEC}], weights=[1, 3, 0])
    generator = seeded(0)
    picks = [choice.children.index(choice.pick(generator)) for _ in range(4000)]
    assert picks.count(2) == 0
    assert picks.count(1) / len(picks) == pytest.approx(0.75, abs=0.03)


def test_choice_applies_the_child_it_picks(mels):
    choice = Choice([{"target": SPEC}, {"target": SPEED, "args": {"min_rate": 1.25, "max_rate": 1.25}}])
    shapes = set()
    for seed in range(10):
        generator = seeded(seed)
        torch.rand(1, generator=generator)  # the choice's p draw
        picked = choice.pick(generator)
        expected = picked(mels[0], generator)
        out = choice(mels[0], seeded(seed))
        assert torch.equal(out, expected)
        shapes.add(out.shape[0])
    assert shapes == {len(mels[0]), round(len(mels[0]) / 1.25)}  # both children were picked


def test_sequence_applies_its_steps_in_order(mels):
    speed, spec = SpeedPerturb(min_rate=1.25, max_rate=1.25), SpecAugment(time_width=20)
    generator = seeded(4)
    torch.rand(1, generator=generator)  # the sequence's p draw
    expected = spec(speed(mels[1], generator), generator)
    assert torch.equal(Sequence([speed, spec])(mels[1], seeded(4)), expected)
    reverse = Sequence([spec, speed])(mels[1], seeded(4))
    assert reverse.shape == expected.shape and not torch.equal(reverse, expected)


def test_nodes_nest_and_take_the_features_mel_scale_from_shared(mels):
    config = {
        "target": "tympan.augmentations:Choice",
        "args": {
            "choices": [
                {"target": "tympan.augmentations:Sequence", "args": {"steps": [{"target": SPEED}, {"target": SPEC}]}},
                {"target": SPEED, "args": {"fmin": 20.0}},
            ],
            "weights": [1, 1],
        },
    }
    node = build(config, shared={"n_mels": 40, "fmax": 7000.0, "hop_length": 160})
    sequence, speed = node.children
    assert node.place == sequence.place == "features" and isinstance(sequence, Sequence)
    assert len(sequence.children[0]._centers) == 40 and sequence.children[0]._centers.max() < 7000
    assert speed._centers.min() < sequence.children[0]._centers.min()  # its own fmin wins
    outs = {node(mels[0][:, :40], seeded(s)).shape[0] for s in range(10)}
    assert len(outs) > 1


def test_batch_nodes_pass_lengths_and_targets_through(batch):
    node = Choice([{"target": "tympan.augmentations:MixUp"}, Sequence([CutMix(), MixUp(alpha=0.2)])])
    assert node.place == "batch"
    x, lengths, targets = node(*batch, seeded(3))
    assert x.shape == batch[0].shape and lengths.shape == (4,) and targets.shape == (4, 10)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_children_of_different_places_are_refused_naming_them():
    message = "choices must all act in one place .*GaussianNoise \\(waveform\\), SpecAugment \\(features\\)"
    with pytest.raises(ValueError, match=message):
        Choice([{"target": "tympan.augmentations:GaussianNoise"}, {"target": SPEC}])
    with pytest.raises(ValueError, match="steps must all act in one place"):
        Component(
            target="tympan.augmentations:Sequence",
            args={"steps": [{"target": SPEC}, {"target": "tympan.augmentations:MixUp"}]},
        ).check_args()


def test_bad_children_are_refused_naming_where():
    with pytest.raises(ValueError, match=rf"choices\[1\]: {SPEC}: .*takes no argument 'widht'"):
        Choice([{"target": SPEED}, {"target": SPEC, "args": {"widht": 3}}])
    with pytest.raises(ValueError, match=r"steps\[0\]: .*:PannLogMel is not a tympan.augmentations.base:Augmentation"):
        Sequence([{"target": "tympan.transforms.logmel:PannLogMel"}])
    with pytest.raises(ValueError, match="choices\\[0\\]: .*Sequence: steps\\[0\\]: .*SpecAugment: p must be"):
        Choice([{"target": "tympan.augmentations:Sequence", "args": {"steps": [{"target": SPEC, "args": {"p": 2}}]}}])
    with pytest.raises(ValueError, match="steps\\[0\\]: expected \\{target"):
        Sequence([{"target": SPEC, "arg": {}}])
    with pytest.raises(ValueError, match="steps must be a non-empty list"):
        Sequence([])
    with pytest.raises(ValueError, match="weights must be 2 non-negative numbers"):
        Choice([{"target": SPEC}, {"target": SPEED}], weights=[1])


# --- MixUp and CutMix ---


def test_mixup_blends_inputs_and_one_hot_targets_alike(batch):
    x, lengths, targets = batch
    out_x, out_lengths, out_targets = MixUp(alpha=0.4)(x, lengths, targets, seeded(5))
    generator = seeded(5)
    torch.rand(1, generator=generator)  # the p draw
    lam = beta(0.4, generator)
    partner = torch.randperm(4, generator=generator)
    assert 0 < lam < 1 and not torch.equal(partner, torch.arange(4))
    assert torch.allclose(out_x, lam * x + (1 - lam) * x[partner])
    assert torch.allclose(out_targets, lam * targets + (1 - lam) * targets[partner])
    assert torch.allclose(out_targets.sum(dim=1), torch.ones(4)) and (out_targets >= 0).all()
    assert torch.equal(out_lengths, torch.maximum(lengths, lengths[partner]))
    assert out_targets.dtype == torch.float32 and out_x.dtype == torch.float32


def test_mixup_mixes_multi_label_targets_in_the_same_proportion(batch):
    x, _, _ = batch
    multi = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.float32)
    for seed in range(5):
        _, lengths, targets = MixUp()(x, None, multi, seeded(seed))
        generator = seeded(seed)
        torch.rand(1, generator=generator)
        lam, partner = beta(0.4, generator), torch.randperm(4, generator=generator)
        assert lengths is None and ((targets >= 0) & (targets <= 1)).all()
        assert torch.allclose(targets, lam * multi + (1 - lam) * multi[partner])


def test_cutmix_targets_take_the_cut_fraction(batch):
    x, lengths, targets = batch
    x = x[:, : int(lengths.min())]  # no padding: every frame of every clip is its own
    for seed in range(8):
        out_x, _, out_targets = CutMix()(x, None, targets, seeded(seed))
        for i in range(4):
            changed = (out_x[i] != x[i]).any(dim=1).float().mean()  # the frames pasted from another clip
            own = float(out_targets[i, int(targets[i].argmax())])
            assert 1 - own == pytest.approx(float(changed), abs=1e-6), (seed, i)
            assert float(out_targets[i].sum()) == pytest.approx(1.0)


def test_cutmix_with_lengths_weighs_the_valid_frames_each_clip_ends_up_with(batch):
    x, lengths, targets = batch
    for seed in range(8):
        out_x, out_lengths, out_targets = CutMix()(x, lengths, targets, seeded(seed))
        for i in range(4):
            pasted_at = (out_x[i] != x[i]).any(dim=1)
            partner = next((j for j in range(4) if j != i and (targets[j] * out_targets[i]).sum() > 0), None)
            if partner is None:
                assert torch.equal(out_targets[i], targets[i])
                continue
            span = pasted_at.nonzero().flatten()
            start, end = int(span.min()), int(span.max()) + 1
            frames = torch.arange(x.shape[1])
            in_span = (frames >= start) & (frames < end)
            own = int(((frames < lengths[i]) & ~in_span).sum())
            theirs = int(((frames < lengths[partner]) & in_span).sum())
            assert float(out_targets[i, int(targets[partner].argmax())]) == pytest.approx(theirs / (own + theirs))
            valid = ((frames < lengths[i]) & ~in_span) | ((frames < lengths[partner]) & in_span)
            assert int(out_lengths[i]) == int(valid.nonzero().max()) + 1


def test_cutmix_cuts_a_box_from_images():
    images = torch.stack([torch.full((3, 32, 40), float(k)) for k in range(4)])
    targets = torch.eye(4)
    for seed in range(5):
        out, lengths, out_targets = CutMix(alpha=1.0)(images, None, targets, seeded(seed))
        assert lengths is None and out.shape == images.shape
        for i in range(4):
            changed = (out[i] != i).float().mean()
            assert float(out_targets[i, i]) == pytest.approx(1 - float(changed), abs=1e-6)
            rows, cols = (out[i, 0] != i).nonzero().unbind(1)
            if len(rows):  # one rectangle, the same in every channel
                box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
                assert int(box) == len(rows) and torch.equal(out[i, 0], out[i, 2])


def test_batch_augmentations_refuse_class_indices(batch):
    x, lengths, _ = batch
    with pytest.raises(ValueError, match="targets must be float soft targets \\(batch, n_outputs\\)"):
        MixUp()(x, lengths, torch.tensor([3, 0, 7, 9]), seeded(0))
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        CutMix(alpha=0)


# --- waveform noise ---


def snr_db(signal: torch.Tensor, noise: torch.Tensor) -> float:
    return 10 * math.log10(float(signal.double().square().mean()) / float(noise.double().square().mean()))


def test_gaussian_noise_lands_at_the_drawn_snr(waves):
    for seed in range(5):
        out = GaussianNoise(min_snr_db=5, max_snr_db=15)(waves[1], seeded(seed))
        assert out.shape == waves[1].shape and out.dtype == torch.float32
        assert 5 - 1e-3 <= snr_db(waves[1], out - waves[1]) <= 15 + 1e-3
    out = GaussianNoise(min_snr_db=12, max_snr_db=12)(waves[1], seeded(0))
    assert snr_db(waves[1], out - waves[1]) == pytest.approx(12, abs=1e-3)
    silence = torch.zeros(1000)
    assert torch.equal(GaussianNoise()(silence, seeded(0)), silence)


@pytest.fixture
def noise_folder(fsdd_mirror, tmp_path):
    """Two 8 kHz FSDD clips as background noise, one in a subfolder."""
    (tmp_path / "noise/sub").mkdir(parents=True)
    shutil.copy(fsdd_mirror / "fsdd/recordings/1_nicolas_0.wav", tmp_path / "noise/a.wav")
    shutil.copy(fsdd_mirror / "fsdd/recordings/5_george_3.wav", tmp_path / "noise/sub/b.wav")
    (tmp_path / "noise/notes.txt").write_text("not audio")
    return tmp_path / "noise"


def circular_slice(added: torch.Tensor, noise: torch.Tensor) -> bool:
    """Whether `added` is a scaled piece of `noise` read circularly from some start."""
    tiled = noise.repeat(len(added) // len(noise) + 2)
    heads = tiled.unfold(0, 50, 1)[: len(noise)]  # the first 50 samples from every start
    scales = (heads @ added[:50]) / heads.square().sum(dim=1).clamp(min=1e-12)
    candidates = ((added[:50] - scales[:, None] * heads).abs().max(dim=1).values < 1e-6).nonzero().flatten()
    return any(
        torch.allclose(added, float(scales[s]) * tiled[int(s) : int(s) + len(added)], atol=1e-5) for s in candidates
    )


def test_background_noise_mixes_resampled_files_at_the_drawn_snr(noise_folder, waves):
    aug = BackgroundNoise(str(noise_folder), min_snr_db=3, max_snr_db=3, sample_rate=16000)
    assert [f.name for f in aug.files] == ["a.wav", "b.wav"]
    noises = [torch.from_numpy(load(f, 16000)[0]) for f in aug.files]
    clip = torch.cat([waves[2], waves[2]])  # longer than either noise file: the noise repeats
    used = set()
    for seed in range(6):
        added = aug(clip, seeded(seed)) - clip
        assert snr_db(clip, added) == pytest.approx(3, abs=1e-3)
        used.add(next(k for k, noise in enumerate(noises) if circular_slice(added, noise)))
    assert used == {0, 1}


def test_background_noise_refuses_a_missing_or_empty_folder(tmp_path):
    with pytest.raises(ValueError, match=f"noise folder {tmp_path / 'none'}: no such directory"):
        BackgroundNoise(str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.md").write_text("")
    with pytest.raises(ValueError, match=f"noise folder {tmp_path / 'empty'} holds no audio files"):
        Component(target="tympan.augmentations:BackgroundNoise", args={"folder": str(tmp_path / "empty")}).check_args()


def test_background_noise_needs_the_sample_rate(noise_folder, waves):
    with pytest.raises(ValueError, match="BackgroundNoise needs the clip's sample_rate"):
        BackgroundNoise(str(noise_folder))(waves[0], seeded(0))
    shared = build(
        {"target": "tympan.augmentations:BackgroundNoise", "args": {"folder": str(noise_folder)}},
        shared={"sample_rate": 16000},
    )
    assert shared.sample_rate == 16000 and shared.place == "waveform"
    assert waveform(16000).kind in shared.takes


def test_every_augmentation_is_an_augmentation_with_a_place():
    import tympan.augmentations as augmentations

    for name in augmentations.__all__:
        cls = getattr(augmentations, name)
        if isinstance(cls, type) and cls is not Augmentation:
            assert issubclass(cls, Augmentation) and cls.place in augmentations.PLACES, name


def test_waveform_speed_shortens_by_the_drawn_rate_and_keeps_the_sound(waves):
    from tympan.augmentations import WaveformSpeed

    x = waves[0]
    fast = WaveformSpeed(min_rate=1.25, max_rate=1.25)(x, torch.Generator().manual_seed(0))
    assert fast.dtype == x.dtype and len(fast) == round(len(x) / 1.25)
    assert torch.allclose(fast[0], x[0], atol=1e-3)  # read from the start, just faster
    drawn = [len(WaveformSpeed()(x, torch.Generator().manual_seed(s))) for s in range(20)]
    assert len(set(drawn)) > 10 and all(len(x) / 1.15 - 1 <= n <= len(x) / 0.85 + 1 for n in drawn)
    a, b = (WaveformSpeed()(x, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    assert torch.equal(WaveformSpeed(p=0.0)(x, torch.Generator().manual_seed(3)), x)
    with pytest.raises(ValueError, match="min_rate <= max_rate"):
        WaveformSpeed(min_rate=1.2, max_rate=1.1)


# --- one factory: constructors are their own argument check ---


def test_components_have_no_validate_args_and_refuse_a_bad_value_alike_at_load_and_when_built(tmp_path):
    """Every augmentation, task and dataset class (noise corpora included) checks its arguments from its
    annotated signature: no `validate_args` mirror is left, and `components.check` (config load), the
    config's Component and construction refuse a bad value with one and the same line."""
    import importlib
    import pkgutil

    from tympan import components
    from tympan.datasets.folder import Folder
    from tympan.datasets.noise import ColouredNoise
    from tympan.datasets.toy import ToyClassification
    from tympan.tasks import Classification, MultiLabel

    found = set()
    for package in ("augmentations", "tasks", "datasets"):
        for info in pkgutil.iter_modules(importlib.import_module(f"tympan.{package}").__path__):
            module = importlib.import_module(f"tympan.{package}.{info.name}")
            found |= {c for c in vars(module).values() if isinstance(c, type) and issubclass(c, components.Checked)}
    names = {c.__name__ for c in found}
    assert {"SpecAugment", "Torchaudio", "Choice", "MultiLabel", "Table", "Folder", "ToyRegression"} <= names
    assert {"FSDD", "ColouredNoise", "ImpulseResponse", "BackgroundNoise"} <= names
    assert [c.__name__ for c in found if hasattr(c, "validate_args")] == []

    cases = [
        (SpecAugment, {"time_masks": -1}, "time_masks must be a non-negative integer, got -1"),
        (MixUp, {"alpha": True}, "alpha must be a positive number, got True"),
        (SpeedPerturb, {"min_rate": 1.2, "max_rate": 1.1}, "need min_rate <= max_rate, got 1.2, 1.1"),
        (Choice, {"choices": [{"target": SPEC}], "weights": [1, 1]}, "weights must be 1 non-negative numbers"),
        (Classification, {"targets": ["a"], "class_weights": "inverse"}, "class_weights must be one of none, bal"),
        (MultiLabel, {"targets": ["a", ""]}, "targets must be a non-empty list of column names, got \\['a', ''\\]"),
        (ToyClassification, {"dev": 0}, "train and dev need clips, got train=60, dev=0"),
        (ToyClassification, {"name": "Toy Set"}, "name must be a lower-case directory name"),
        (Folder, {"root": str(tmp_path), "ratios": [0.5, 0.5, "0"]}, "ratios must be a list of 3: .*got"),
        (ColouredNoise, {"seconds": 601}, "seconds must be a number in \\(0, 600\\], got 601"),
    ]
    for cls, args, message in cases:
        with pytest.raises(ValueError, match=message) as checked:
            components.check(cls, args)
        with pytest.raises(ValueError) as built:
            cls(**args)
        assert str(built.value) == str(checked.value) and "\n" not in str(checked.value), cls.__name__
        with pytest.raises(ValueError) as loaded:
            Component(target=f"{cls.__module__}:{cls.__name__}", args=args).check_args()
        assert str(loaded.value) == str(checked.value), cls.__name__
    nested = {"target": "tympan.augmentations:Sequence", "args": {"steps": [{"target": SPEC, "args": {"p": 2}}]}}
    with pytest.raises(ValueError, match=r"^augmentation: .*Sequence: steps\[0\]: .*: p must be a number in \[0, 1\]"):
        build(nested)
