"""Room reverberation: the clip convolved with a room impulse response from a folder of them."""

from __future__ import annotations

from typing import Any

import torch
import torchaudio.functional as AF

from tympan import audio
from tympan.augmentations import draws
from tympan.augmentations.sources import DEFAULT_ROOT, AudioFiles, Split
from tympan.augmentations.waveform import WaveformAugmentation, needs_rate
from tympan.components import PositiveInt, Unit
from tympan.errors import AudioError


class ImpulseResponse(WaveformAugmentation):
    """Convolve the clip with a room impulse response (IR) picked from a `folder` of them
    (recursively, sorted), or from a `source` dataset's files (some `splits`, the rows whose target
    is in `labels`) fetched below `root` when training prepares this
    (`tympan.augmentations.sources`): one draw after p, the file.

    The wet clip keeps the dry clip's length and starts at the IR's direct path (its largest
    sample), so the speech is not delayed, only followed by the room's tail; it is rescaled to the
    dry clip's energy, so reverberation changes the sound, not the level. IRs are decoded with
    tympan.audio at the clip's `sample_rate` (filled in from the features) when first used, and
    the last few are kept in memory; an IR with no samples or only zeros is an AudioError naming it.
    """

    cache_size = 16

    def __init__(
        self,
        folder: str | None = None,
        source: dict | None = None,
        splits: list[Split] | None = None,
        labels: list[str] | None = None,
        root: str = DEFAULT_ROOT,
        sample_rate: PositiveInt | None = None,
        p: Unit = 1.0,
    ):
        super().__init__(p)
        self.files = AudioFiles("impulse response", folder, source, splits, labels, root)
        self.sample_rate = sample_rate
        self._cache: dict[int, torch.Tensor] = {}

    def prepare(self) -> None:
        """Fetch the source (once), so building this at config load writes nothing."""
        self.files.prepare()

    @staticmethod
    def check_together(args: dict[str, Any]) -> None:
        """A folder that holds audio files, or a source dataset (each IR is checked when first decoded)."""
        AudioFiles.check(args, "impulse response")

    def response(self, index: int) -> torch.Tensor:
        """IR `index` at the clip's rate."""
        if index not in self._cache:
            path = self.files[index]
            samples, _ = audio.load(path, needs_rate(self, self.sample_rate))
            if not samples.any():
                raise AudioError(path, "an impulse response with no samples or only zeros")
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = torch.from_numpy(samples)
        return self._cache[index]

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        response = self.response(draws.integer(0, len(self.files) - 1, generator))
        return reverberate(x, response.to(x.dtype))


def reverberate(x: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """`x` convolved with `response`, from the response's direct path on, as long as `x`, at `x`'s energy."""
    peak = int(response.abs().argmax())
    wet = AF.fftconvolve(x, response)[peak : peak + len(x)]
    dry_energy, wet_energy = float(x.double().square().sum()), float(wet.double().square().sum())
    if wet_energy == 0:
        return wet  # a silent clip stays silent
    return wet * (dry_energy / wet_energy) ** 0.5
