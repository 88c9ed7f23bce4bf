"""Seeded training-time augmentations of log-Mel features.

Each augmentation is called on one clip, `aug(features, generator) -> features`, with
features shaped (frames, bins) and a torch.Generator owned by the data loader, so a run's
augmentations are a function of its seed alone.
"""

from tympan.augmentations.spec_augment import SpecAugment
from tympan.augmentations.speed import SpeedPerturb

__all__ = ["SpecAugment", "SpeedPerturb"]
