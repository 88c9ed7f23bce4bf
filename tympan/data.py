"""From a feature store to batches: cropping, seeded augmentation, the pipeline's online
transforms, and length-bucketed batching so that short clips are not padded to the longest one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from tympan.store.reader import Split
from tympan.transforms.pipeline import Pipeline


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from (run seed, epoch, clip): each clip's randomness is fixed by its
    position in the run alone, whatever the worker count or resume point."""
    seed = 0x9E3779B97F4A7C15
    for part in parts:
        seed = (seed ^ (part + 0x9E3779B9 + (seed << 6) + (seed >> 2))) & 0x7FFFFFFFFFFFFFFF
    return seed


def chain(augmentations: list) -> Callable | None:
    """Clip augmentations applied in order, as one `(x, generator) -> x` (None when there are none)."""
    if not augmentations:
        return None

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for augment in augmentations:
            x = augment(x, generator)
        return x

    return apply


class ClipDataset(torch.utils.data.Dataset):
    """Clip i of a split as (model input, target): the stored clip, randomly cropped to
    `max_frames` and augmented when training, through the pipeline's online transforms."""

    def __init__(
        self,
        split: Split,
        targets: np.ndarray,
        pipeline: Pipeline,
        augmentations: dict[str, list] | None = None,
        max_frames: int | None = None,
        seed: int = 0,
        train: bool = False,
    ):
        self.split = split
        self.targets = torch.as_tensor(targets)
        self.pipeline = pipeline
        augmentations = augmentations or {}
        self.waveform_augment = chain(augmentations.get("waveform", []))
        self.features_augment = chain(augmentations.get("features", []))
        self.max_frames = max_frames
        self.seed = seed
        self.train = train
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.split.clip(i)))
        if not self.train:
            return self.pipeline.apply(x), self.targets[i]
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
        if self.max_frames is not None and len(x) > self.max_frames:
            start = int(torch.randint(0, len(x) - self.max_frames + 1, (1,), generator=generator))
            x = x[start : start + self.max_frames]
        x = self.pipeline.apply(x, generator, self.waveform_augment, self.features_augment)
        return x, self.targets[i]


class Collate:
    """A batch of (input, target) pairs as (inputs, lengths, targets), padded by the pipeline."""

    def __init__(self, pipeline: Pipeline, min_frames: int):
        self.pipeline, self.min_frames = pipeline, min_frames

    def __call__(self, batch):
        x, lengths = self.pipeline.pad([x for x, _ in batch], self.min_frames)
        return x, lengths, torch.stack([t for _, t in batch])


class BucketBatchSampler(Sampler):
    """Shuffled batches of similar-length clips.

    Each epoch: shuffle, cut into pools of `pool` batches, sort each pool by length, cut it
    into batches, shuffle the batches. Padding then costs a few frames instead of doubling
    the compute, and batches still mix the whole training set.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, pool: int = 50, bucketing: bool = True):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.pool, self.bucketing = batch_size, seed, pool, bucketing
        self.epoch = 0

    def batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng(sample_seed(self.seed, self.epoch))
        order = rng.permutation(len(self.lengths))
        size = self.batch_size
        if not self.bucketing:
            return self._no_single([order[i : i + size] for i in range(0, len(order), size)])
        batches = []
        for start in range(0, len(order), size * self.pool):
            pool = order[start : start + size * self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + size] for i in range(0, len(pool), size)]
        batches = self._no_single(batches)
        return [batches[i] for i in rng.permutation(len(batches))]

    @staticmethod
    def _no_single(batches: list[np.ndarray]) -> list[np.ndarray]:
        """A last batch of one clip joins the one before: batch norm cannot train on one clip."""
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches = [*batches[:-2], np.concatenate(batches[-2:])]
        return batches

    def __iter__(self):
        return iter([b.tolist() for b in self.batches()])

    def __len__(self) -> int:
        n, size = len(self.lengths), self.batch_size
        return -(-n // size) - (n > size and n % size == 1)


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation batches of clips of one length each, so nothing is padded and a clip's result
    is the same as when it is predicted alone (as the bundle and the server do)."""
    batches: list[list[int]] = []
    for i in np.argsort(lengths, kind="stable").tolist():
        if batches and len(batches[-1]) < batch_size and lengths[batches[-1][0]] == lengths[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def loader(dataset: ClipDataset, batch_sampler, min_frames: int, num_workers: int = 0) -> DataLoader:
    """Batches of (inputs, lengths, targets) in the sampler's order."""
    # A generator of its own keeps the loader from drawing its worker base seed from the global
    # RNG, which the model's dropout uses: a run resumed mid-epoch then draws what the
    # uninterrupted run drew. (Clip randomness is seeded per clip, so workers need no seed.)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=Collate(dataset.pipeline, min_frames),
        num_workers=num_workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
