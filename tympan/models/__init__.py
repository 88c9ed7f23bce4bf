"""Model zoo: one module per family. Every model maps features (batch, frames, bins) to outputs.

Constructors take `n_mels` and `n_outputs`, which training fills in from the data; the rest
comes from the config's `model.args`.
"""

from tympan.models.base import AudioModel
from tympan.models.cnn import SmallCNN
from tympan.models.pann import Cnn10, Cnn14

__all__ = ["AudioModel", "Cnn10", "Cnn14", "SmallCNN"]
