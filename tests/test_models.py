"""Model zoo: shapes, minimum input length, and the layer layout PANN weights expect."""

import pytest
import torch

from tympan.models import Cnn10, Cnn14, SmallCNN
from tympan.transforms import PannLogMel


@pytest.mark.parametrize(
    ("cls", "parameters", "min_frames"),
    [(Cnn10, 5_219_279, 16), (Cnn14, 80_753_615, 32), (SmallCNN, 241_898, 8)],
)
def test_outputs_embeddings_and_size(cls, parameters, min_frames):
    model = cls(n_mels=64, n_outputs=527 if cls is not SmallCNN else 10).eval()
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model.min_frames == min_frames
    features = torch.randn(3, min_frames, 64)
    with torch.no_grad():
        embedding = model.embed(features)
        outputs = model(features)
    assert embedding.shape[0] == 3 and outputs.shape == (3, model.head(embedding).shape[1])
    assert torch.allclose(model.head(embedding), outputs)


def test_cnn10_state_dict_uses_pann_names():
    names = set(Cnn10(n_outputs=527).state_dict())
    assert {"bn0.weight", "blocks.0.conv1.weight", "blocks.3.bn2.running_var", "fc1.weight", "fc_out.bias"} <= names


def test_input_length_does_not_change_output_size():
    model = SmallCNN(n_outputs=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 40, 64)).shape == model(torch.randn(2, 130, 64)).shape == (2, 4)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SmallCNN(channels="abc"), "channels must be a non-empty list of positive integers, got 'abc'"),
        (lambda: SmallCNN(channels=[]), "channels must be a non-empty list"),
        (lambda: SmallCNN(channels=[16, 0]), "channels must be a non-empty list"),
        (lambda: SmallCNN(dropout=True), "dropout must be a number in [0, 1), got True"),
        (lambda: Cnn10(head_dropout=-0.1), "head_dropout must be a number in [0, 1)"),
        (lambda: PannLogMel(sample_rate=-16000), "sample_rate must be a positive integer, got -16000"),
        (lambda: PannLogMel(hop_length=0), "hop_length must be a positive integer"),
        (lambda: PannLogMel(fmin=4000, fmax=2000), "0 <= fmin < fmax"),
        (lambda: PannLogMel(sample_rate=8000), "fmax=8000.0 is above the Nyquist frequency of 8000 Hz"),
    ],
)
def test_constructors_refuse_bad_arguments_by_name(build, message):
    with pytest.raises(ValueError) as err:
        build()
    assert message in str(err.value)
