"""Model zoo: the contract (sizes, accepted kinds, lengths), shapes, minimum input length, padding
invariance of the waveform model, and the layer layout PANN weights expect."""

import pytest
import soundfile
import torch
import torch.nn.functional as F

from tympan.models import FFNN, AudioModel, Cnn10, Cnn14, SmallCNN, WaveformCNN, check_accepts, sizes
from tympan.models.base import SIZE_NAMES
from tympan.transforms import PannLogMel
from tympan.transforms.spec import ShapeError, Spec, waveform


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


# ---- the contract: sizes from the features' spec, accepted kinds, lengths


FRAMES = Spec("frames", 16000, frame_rate=100.0, size=64)
WAVEFORM = waveform(8000)
VECTOR = Spec("vector", 16000, size=88)
IMAGE = Spec("image", 16000, shape=(3, 32, 32))


def batch_of(spec: Spec, batch: int, length: int) -> torch.Tensor:
    """A random batch of `spec` clips, variable-length kinds `length` long."""
    if spec.kind == "waveform":
        return torch.randn(batch, length)
    if spec.kind == "frames":
        return torch.randn(batch, length, spec.size)
    if spec.kind == "vector":
        return torch.randn(batch, spec.size)
    return torch.randn(batch, *spec.shape)


@pytest.mark.parametrize(
    ("cls", "spec"),
    [(SmallCNN, FRAMES), (Cnn10, FRAMES), (Cnn14, FRAMES), (FFNN, VECTOR), (WaveformCNN, WAVEFORM)],
)
def test_every_model_builds_from_its_spec_and_keeps_the_contract(cls, spec):
    check_accepts(cls, spec)
    model = cls(**sizes(spec, 7, cls)).eval()
    assert isinstance(model, AudioModel) and spec.kind in model.accepts
    length = model.min_frames + 5
    x = batch_of(spec, 3, length)
    lengths = torch.tensor([length, length - 3, model.min_frames])
    with torch.no_grad():
        embedding = model.embed(x, lengths)
        assert embedding.ndim == 2 and embedding.shape[0] == 3
        assert torch.equal(model(x, lengths), model.head(embedding))
        assert model(x).shape == (3, 7)
        # the shortest batch the model claims to take works
        assert model(batch_of(spec, 2, model.min_frames)).shape == (2, 7)


def test_sizes_gives_the_names_each_kind_fills_in():
    assert sizes(FRAMES, 10) == {"n_outputs": 10, "sample_rate": 16000, "n_mels": 64, "n_bins": 64}
    assert sizes(VECTOR, 3) == {"n_outputs": 3, "sample_rate": 16000, "input_dim": 88}
    assert sizes(IMAGE, 2) == {"n_outputs": 2, "sample_rate": 16000, "in_channels": 3}
    assert sizes(WAVEFORM, 4) == {"n_outputs": 4, "sample_rate": 8000}
    assert set(sizes(VECTOR, 3)) <= set(SIZE_NAMES) and set(sizes(FRAMES, 3)) <= set(SIZE_NAMES)
    # with the model class: only what its constructor takes
    assert sizes(FRAMES, 10, SmallCNN) == {"n_outputs": 10, "n_mels": 64}
    assert sizes(WAVEFORM, 10, WaveformCNN) == {"n_outputs": 10, "sample_rate": 8000}
    assert sizes(VECTOR, 10, FFNN) == {"n_outputs": 10, "input_dim": 88}


@pytest.mark.parametrize(
    ("cls", "spec", "message"),
    [
        (FFNN, FRAMES, "FFNN accepts vector, but the features give frames x 64 bins at 100 frames/s"),
        (SmallCNN, VECTOR, "SmallCNN accepts frames, but the features give vector of 88"),
        (WaveformCNN, IMAGE, "WaveformCNN accepts waveform, but the features give image 3x32x32"),
        (Cnn10, WAVEFORM, "Cnn10 accepts frames, but the features give waveform at 8000 Hz"),
    ],
)
def test_check_accepts_names_the_model_and_the_features(cls, spec, message):
    with pytest.raises(ShapeError) as err:
        check_accepts(cls, spec)
    assert str(err.value) == message


def test_check_accepts_refuses_a_model_whose_embed_takes_no_lengths():
    class Old(AudioModel):  # the contract before lengths
        def embed(self, x):
            return x.mean(dim=1)

    with pytest.raises(ValueError, match=r"^Old.embed takes no lengths: define it as embed\(self, x, lengths=None\)$"):
        check_accepts(Old, FRAMES)

    class New(Old):
        def embed(self, x, lengths=None):
            return x.mean(dim=1)

    check_accepts(New, FRAMES)


def test_frame_models_ignore_lengths_and_keep_their_numbers():
    """SmallCNN and the PANNs take `lengths` but compute what they did before it existed."""
    torch.manual_seed(0)
    model = SmallCNN(n_outputs=4).eval()
    x = torch.randn(2, 40, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x, torch.tensor([40, 20])))


# ---- WaveformCNN: padding must not change a clip's answer


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Batch-norm statistics and shifts as after training, so that padding is not all zeros
    after a layer (fresh batch norms map zero to zero and would hide a missing mask)."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(0, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2, generator=generator)
            module.bias.data.normal_(0, 0.5, generator=generator)
    return model.eval()


@pytest.fixture(scope="module")
def digits(fsdd_mirror) -> list[torch.Tensor]:
    """Five real recordings of different lengths, 8 kHz."""
    paths = sorted((fsdd_mirror / "fsdd" / "recordings").glob("*_lucas_1.wav"))[:5]
    clips = [torch.from_numpy(soundfile.read(p, dtype="float32")[0]) for p in paths]
    assert len(clips) == 5 and len({len(c) for c in clips}) == 5
    return clips


def pad_batch(clips: list[torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([F.pad(c, (0, length - len(c))) for c in clips]), torch.tensor([len(c) for c in clips])


def test_waveform_cnn_embedding_does_not_depend_on_the_batch_padding(digits):
    model = trained_like(WaveformCNN(sample_rate=8000, n_outputs=10))
    short = digits[0][: model.min_frames // 2]  # shorter than the model takes: padded to min_frames alone too
    clips = [*digits, short]
    with torch.no_grad():
        alone = torch.cat([model.embed(pad_batch([c], max(len(c), model.min_frames))[0]) for c in clips])
        x, lengths = pad_batch(clips, max(map(len, clips)) + 3001)
        batched = model.embed(x, lengths)
        unmasked = model.embed(x)
    assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)
    # without lengths the padding does change the answer: the mask is what holds it still
    assert (unmasked - alone).abs().max() > 1e-2


def test_waveform_cnn_needs_exactly_min_frames_samples():
    model = WaveformCNN(sample_rate=16000, n_outputs=3, channels=[8, 8, 8, 8], window_ms=10, hop_ms=5).eval()
    assert (model.window, model.hop) == (160, 80)
    assert model.min_frames == 160 + 80 * 3  # two poolings: four frames
    with torch.no_grad():
        assert model(torch.randn(2, model.min_frames)).shape == (2, 3)
        with pytest.raises(RuntimeError):
            model(torch.randn(2, model.min_frames - 1))


# ---- FFNN


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_ffnn_variants(activation, norm):
    model = FFNN(input_dim=20, n_outputs=4, hidden=[16, 8], activation=activation, norm=norm, dropout=0.1)
    kinds = [type(m).__name__ for m in model.body]
    norm_layer = {"batch": ["BatchNorm1d"], "layer": ["LayerNorm"], "none": []}[norm]
    act = {"relu": "ReLU", "gelu": "GELU", "tanh": "Tanh"}[activation]
    assert kinds == 2 * ["Linear", *norm_layer, act, "Dropout"]
    x = torch.randn(5, 20)
    model.train()
    model(x).sum().backward()  # trains
    with torch.no_grad():
        assert model.eval().embed(x).shape == (5, 8) and model(x).shape == (5, 4)


def test_ffnn_without_hidden_layers_is_linear():
    model = FFNN(input_dim=6, n_outputs=2, hidden=[]).eval()
    x = torch.randn(3, 6)
    assert torch.equal(model.embed(x), x)
    assert torch.allclose(model(x), x @ model.out.weight.T + model.out.bias)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FFNN(activation="swish"), "activation must be one of relu, gelu, tanh, got 'swish'"),
        (lambda: FFNN(norm="group"), "norm must be one of batch, layer, none, got 'group'"),
        (lambda: FFNN(hidden="abc"), "hidden must be a list of positive integers (empty for a linear model)"),
        (lambda: FFNN(hidden=[64, 0]), "hidden must be a list of positive integers"),
        (lambda: FFNN(hidden=[True]), "hidden must be a list of positive integers"),
        (lambda: FFNN(dropout=1.0), "dropout must be a number in [0, 1), got 1.0"),
        (lambda: FFNN(input_dim=0), "input_dim must be a positive integer, got 0"),
        (lambda: WaveformCNN(window_ms=0), "window_ms must be a positive number of milliseconds, got 0"),
        (lambda: WaveformCNN(hop_ms=True), "hop_ms must be a positive number of milliseconds, got True"),
        (lambda: WaveformCNN(hop_ms=20), "hop_ms=20 is longer than window_ms=2.5"),
        (lambda: WaveformCNN(channels=[]), "channels must be a non-empty list of positive integers"),
        (lambda: WaveformCNN(sample_rate=0), "sample_rate must be a positive integer, got 0"),
        (lambda: Cnn10(pretrained=""), "pretrained must be a weights file's path or a published name or null, got ''"),
    ],
)
def test_new_constructors_refuse_bad_arguments_by_name(build, message):
    with pytest.raises(ValueError) as err:
        build()
    assert message in str(err.value)


@pytest.mark.parametrize("name", ["FFNN", "WaveformCNN"])
def test_new_presets_pass_config_checks(name):
    """The preset's args are what the class takes (config load checks them against validate_args)."""
    from tympan.config import Component, load_preset

    component = Component.model_validate(load_preset("models", name))
    component.check_args(*SIZE_NAMES)
