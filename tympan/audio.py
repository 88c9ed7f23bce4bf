"""Audio decoding, mono mixdown and resampling.

Every model in tympan sees float32 mono samples at one rate, whatever the file
on disk looked like. Decoding goes through soundfile (libsndfile: WAV, FLAC,
OGG, ...) and resampling through torchaudio, so training and serving share the
exact same arithmetic. Anything that cannot be decoded becomes an `AudioError`
naming the file, never a raw libsndfile exception, so a bad clip in a dataset
or a bad upload to the server gives one clear message.
"""

from __future__ import annotations

import functools
import io
import math
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as AT

from tympan.errors import AudioError

__all__ = ["load", "decode_bytes", "probe_bytes", "resample", "to_mono"]


def load(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 mono samples, resampled to `sample_rate` if given.

    Returns `(samples, rate)`; `rate` is `sample_rate` when given, else the file's own.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return _decode(path, path, sample_rate)


def decode_bytes(data: bytes, name: str = "<bytes>", sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Like `load`, for an encoded file held in memory (an HTTP upload, say).

    `name` only labels errors, so that a client learns which input was bad.
    """
    if not data:
        raise AudioError(name, "empty input (0 bytes)")
    return _decode(io.BytesIO(data), name, sample_rate)


def probe_bytes(data: bytes, name: str = "<bytes>") -> tuple[int, int, int]:
    """`(frames, rate, channels)` as an in-memory file's header declares them, without decoding.

    A server bounds a request's work by these before it decodes anything: a few kilobytes of
    FLAC can declare an hour of audio. Decoding reads no more frames than the header declares.
    """
    if not data:
        raise AudioError(name, "empty input (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as err:
        raise AudioError(name, f"cannot decode audio ({_reason(err)})") from err
    if info.frames <= 0:
        raise AudioError(name, "no audio frames")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(name, f"cannot decode audio (header declares {info.samplerate} Hz, {info.channels} channels)")
    return info.frames, info.samplerate, info.channels


# Polyphase resampling builds a kernel of about (orig/gcd) x (new/gcd) taps: fine for common
# rates (44100 -> 16000 is 441 x 160), gigabytes for odd ones (44101 -> 16000).
MAX_RESAMPLE_TAPS = 1 << 20
# The highest rate taken: above it resampling costs more than any model (16000 * 2**20 Hz passes
# the kernel-size check and took 0.6 s of CPU before it failed).
MAX_RATE = 768_000


def check_rates(orig_sr: int, new_sr: int) -> None:
    """Refuse rates that are not positive, above MAX_RATE, or that no cheap resampling connects."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} and {new_sr}")
    if max(orig_sr, new_sr) > MAX_RATE:
        raise ValueError(f"sample rate {max(orig_sr, new_sr)} Hz is above the {MAX_RATE} Hz tympan takes")
    gcd = math.gcd(int(orig_sr), int(new_sr))
    if (orig_sr // gcd) * (new_sr // gcd) > MAX_RESAMPLE_TAPS:
        raise ValueError(f"cannot resample {orig_sr} Hz to {new_sr} Hz cheaply; use {new_sr} Hz or a common rate")


def resample(samples: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample float samples (time on the last axis) from `orig_sr` to `new_sr` Hz."""
    check_rates(orig_sr, new_sr)
    if orig_sr == new_sr:
        return samples
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return _resampler(int(orig_sr), int(new_sr))(waveform).numpy()


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int) -> AT.Resample:
    """torchaudio's sinc resampler with its kernel computed once per rate pair and process (a
    preprocessing worker resamples thousands of clips); in float32, as torchaudio.functional.resample
    computes it for float32 samples, so the result is the same bits."""
    return AT.Resample(orig_sr, new_sr, dtype=torch.float32)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of a `(frames, channels)` array into one 1-D float32 channel."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    return samples.mean(axis=1, dtype=np.float32)


def _decode(source, name, sample_rate: int | None) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(source) as f:
            samples, rate, log = f.read(dtype="float32", always_2d=True), f.samplerate, f.extra_info
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as err:
        raise AudioError(name, f"cannot decode audio ({_reason(err)})") from err
    if _truncated(log):
        raise AudioError(name, "truncated file (fewer bytes than its header declares)")
    if samples.shape[0] == 0:
        raise AudioError(name, "no audio frames")
    samples = to_mono(samples)
    if not np.isfinite(samples).all():
        raise AudioError(name, "non-finite samples (NaN or infinity)")
    if sample_rate is not None and sample_rate != rate:
        try:
            samples, rate = resample(samples, rate, sample_rate), sample_rate
        except ValueError:
            raise AudioError(
                name,
                f"sample rate unsupported ({rate} Hz cannot be resampled to {sample_rate} Hz cheaply; "
                f"convert it to {sample_rate} Hz or a common rate)",
            ) from None
    return samples, rate


# libsndfile reads a cut-off WAV without complaint and only notes it in its log,
# e.g. "data : 4768 (should be 2362)"; 0 and 0xFFFFFFFF are streaming placeholders.
_SIZE_MISMATCH = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = {0, 0xFFFFFFFF}


def _truncated(log: str) -> bool:
    return any(
        int(declared) > int(actual) and int(declared) not in _STREAMING_SIZES
        for declared, actual in _SIZE_MISMATCH.findall(log)
    )


def _reason(err: Exception) -> str:
    # LibsndfileError carries a clean message without the file name; others fall back to str().
    return getattr(err, "error_string", None) or str(err) or type(err).__name__
