"""Feature transforms on one clip: extraction (offline, stored) and online transforms (normalise, crop).

Each declares the kinds it takes and the Spec it gives (tympan.transforms.spec); the maths lives in
tympan.transforms.functional. OpenSmile imports the `opensmile` package only when built.
"""

from tympan.transforms.crop import Crop, Pad, RandomCrop
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.mfcc import MFCC
from tympan.transforms.normalize import Normalize, NotFittedError
from tympan.transforms.opensmile import OpenSmile
from tympan.transforms.spec import ShapeError, Spec, Transform
from tympan.transforms.waveform import Waveform

__all__ = [
    "MFCC",
    "Crop",
    "Normalize",
    "NotFittedError",
    "OpenSmile",
    "Pad",
    "PannLogMel",
    "RandomCrop",
    "ShapeError",
    "Spec",
    "Transform",
    "Waveform",
]
