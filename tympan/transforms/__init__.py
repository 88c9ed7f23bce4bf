"""Feature transforms on one clip: extraction (offline, stored) and online transforms (normalise, crop, ...).

Each declares the kinds it takes and the Spec it gives (tympan.transforms.spec); the maths lives in
tympan.transforms.functional. Libraries that are slow to import (opensmile, transformers,
matplotlib) are imported only when a transform that needs them is built.
"""

from tympan.transforms.crop import Crop, Pad, RandomCrop, Repeat
from tympan.transforms.db import AmplitudeToDB
from tympan.transforms.fbank import KaldiFbank
from tympan.transforms.gain import GainNormalize
from tympan.transforms.huggingface import HuggingFaceExtractor
from tympan.transforms.image import ColourMapImage, SpectrogramImage
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.mel import MelSpectrogram
from tympan.transforms.mfcc import MFCC
from tympan.transforms.normalize import Normalize, NotFittedError, Standardize
from tympan.transforms.opensmile import OpenSmile
from tympan.transforms.pooling import Statistics
from tympan.transforms.resample import Resample
from tympan.transforms.shape import ExpandChannels, Squeeze, Unsqueeze
from tympan.transforms.spec import ShapeError, Spec, Transform
from tympan.transforms.stack import StackFrames
from tympan.transforms.waveform import Waveform
from tympan.transforms.whisper import WhisperLogMel

__all__ = [
    "MFCC",
    "AmplitudeToDB",
    "ColourMapImage",
    "Crop",
    "ExpandChannels",
    "GainNormalize",
    "HuggingFaceExtractor",
    "KaldiFbank",
    "MelSpectrogram",
    "Normalize",
    "NotFittedError",
    "OpenSmile",
    "Pad",
    "PannLogMel",
    "RandomCrop",
    "Repeat",
    "Resample",
    "ShapeError",
    "Spec",
    "SpectrogramImage",
    "Squeeze",
    "StackFrames",
    "Statistics",
    "Standardize",
    "Transform",
    "Unsqueeze",
    "Waveform",
    "WhisperLogMel",
]
