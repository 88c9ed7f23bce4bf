"""Model zoo: one module per family, all keeping the contract in `base` (`AudioModel`).

A model declares the input kinds it `accepts`; training fills in its sizes from the feature
pipeline's output (`sizes`: `n_mels`/`n_bins`, `input_dim`, `sample_rate`, `in_channels`) and
`n_outputs` from the task; the rest comes from the config's `model.args`. Pretrained weights go
through `weights.load_weights`.
"""

from tympan.models.ast_transformer import ASTFFNN
from tympan.models.base import AudioModel, check_accepts, sizes
from tympan.models.cnn import SmallCNN
from tympan.models.crnn import CRNN
from tympan.models.ecapa import ECAPA
from tympan.models.ffnn import FFNN
from tympan.models.leaf import LEAF
from tympan.models.pann import Cnn10, Cnn14
from tympan.models.recurrent import SeqFFNN
from tympan.models.resemblyzer_encoder import Resemblyzer
from tympan.models.timm_backbone import TimmModel
from tympan.models.torchvision_backbone import TorchvisionModel
from tympan.models.w2v2 import W2V2FFNN
from tympan.models.waveform_cnn import WaveformCNN
from tympan.models.weights import load_weights
from tympan.models.whisper import WhisperFFNN

__all__ = [
    "ASTFFNN",
    "CRNN",
    "ECAPA",
    "FFNN",
    "LEAF",
    "AudioModel",
    "Cnn10",
    "Cnn14",
    "Resemblyzer",
    "SeqFFNN",
    "SmallCNN",
    "TimmModel",
    "TorchvisionModel",
    "W2V2FFNN",
    "WaveformCNN",
    "WhisperFFNN",
    "check_accepts",
    "load_weights",
    "sizes",
]
