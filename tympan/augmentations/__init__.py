"""Seeded training-time augmentations that say where they act: waveform, features or batch.

Clip-level ones are called `aug(x, generator) -> x`, batch-level ones (MixUp, CutMix)
`aug(x, lengths, targets, generator) -> (x, lengths, targets)`, with a torch.Generator owned by
the data loader, so a run's augmentations are a function of its seed alone (see base.py).
Choice and Sequence nest; `build` makes any of them from config. External libraries come in
through the adapters (audiomentations, torch-audiomentations, torchaudio, torchvision), each
imported only when an adapter is built.
"""

from tympan.augmentations.adapters import Audiomentations, Torchaudio, TorchAudiomentations, Torchvision
from tympan.augmentations.base import PLACES, Augmentation, build, resolved
from tympan.augmentations.masking import FrequencyMask, TimeMask, TimeWarp
from tympan.augmentations.mix import CutMix, MixUp
from tympan.augmentations.noise import BackgroundNoise, GaussianNoise
from tympan.augmentations.reverb import ImpulseResponse
from tympan.augmentations.spec_augment import SpecAugment
from tympan.augmentations.speed import SpeedPerturb, WaveformSpeed
from tympan.augmentations.structure import Choice, Sequence
from tympan.augmentations.waveform import Gain, PitchShift, PolarityInversion, TimeShift

__all__ = [
    "PLACES",
    "Audiomentations",
    "Augmentation",
    "BackgroundNoise",
    "Choice",
    "CutMix",
    "FrequencyMask",
    "Gain",
    "GaussianNoise",
    "ImpulseResponse",
    "MixUp",
    "PitchShift",
    "PolarityInversion",
    "Sequence",
    "SpecAugment",
    "SpeedPerturb",
    "TimeMask",
    "TimeShift",
    "TimeWarp",
    "TorchAudiomentations",
    "Torchaudio",
    "Torchvision",
    "WaveformSpeed",
    "build",
    "resolved",
]
