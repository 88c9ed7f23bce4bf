"""Image backbones on spectrogram images: timm and torchvision networks as tympan models (shapes,
the model contract, pretrained ImageNet-style files into 1-channel models, refused pickles), and
a tiny run whose bundle predicts what its evaluation gave."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tympan import audio, bundle, stages
from tympan import config as configuration
from tympan.config import Component, load_preset, resolve_target
from tympan.errors import ConfigError, DataError
from tympan.models.backbones import adapt_first_conv
from tympan.models.base import SIZE_NAMES, check_accepts, sizes
from tympan.models.timm_backbone import TimmModel
from tympan.models.torchvision_backbone import SMALL, TorchvisionModel
from tympan.transforms.image import SpectrogramImage
from tympan.transforms.logmel import PannLogMel
from tympan.transforms.spec import ShapeError, Spec

TIMM = "test_efficientnet"  # timm's own test network: 0.1 M parameters, builds in milliseconds
TORCHVISION = "mobilenet_v3_small"  # its classifier.0 is a hidden Linear, classifier.3 the head


@pytest.fixture(scope="module")
def images(fsdd_mirror) -> torch.Tensor:
    """(4, 1, 32, 32) float32 spectrogram images of four real FSDD clips."""
    files = sorted((fsdd_mirror / "fsdd" / "recordings").glob("*_jackson_*.wav"))[:4]
    logmel, to_image = PannLogMel(), SpectrogramImage(size=[32, 32], channels=1)
    return torch.stack([to_image(logmel(torch.from_numpy(audio.load(path, 16000)[0]))) for path in files])


def build(cls, n_outputs: int, in_channels: int, **args):
    """The test architecture of `cls`."""
    return cls(TIMM if cls is TimmModel else TORCHVISION, n_outputs, in_channels, **args)


# ---- shapes and the model contract


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("cls", [TimmModel, TorchvisionModel])
def test_embed_head_and_forward_shapes_on_fsdd_images(cls, in_channels, images):
    model = build(cls, 7, in_channels).eval()
    x = images.repeat(1, in_channels, 1, 1)
    with torch.no_grad():
        embedding = model.embed(x, torch.ones(4, dtype=torch.long))
        outputs = model(x)
    width = 256 if cls is TimmModel else 1024  # test_efficientnet's features; mobilenet_v3_small's hidden layer
    assert embedding.shape == (4, width) and embedding.dtype == torch.float32
    assert outputs.shape == (4, 7) and outputs.dtype == torch.float32
    assert torch.equal(model.head(embedding), outputs)
    assert isinstance(model.out, torch.nn.Linear) and model.out.out_features == 7


def test_sizes_and_accepted_kinds_come_from_an_image_spec():
    image = Spec("image", 16000, shape=(1, 64, 96))
    for cls in (TimmModel, TorchvisionModel):
        assert sizes(image, 10, cls) == {"n_outputs": 10, "in_channels": 1}
        check_accepts(cls, image)
        frames = Spec("frames", 16000, frame_rate=100.0, size=64)
        with pytest.raises(ShapeError, match=f"{cls.__name__} accepts image, but the features give frames x 64 bins"):
            check_accepts(cls, frames)


def test_the_backbone_modules_import_their_libraries_only_when_used():
    """Importing them does not import timm or torchvision (seconds each), so tympan.models may export them."""
    import subprocess
    import sys

    code = (
        "import sys, tympan.models.timm_backbone, tympan.models.torchvision_backbone; "
        "print('timm' in sys.modules, 'torchvision' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


# ---- config load


def image_config(tmp_path, model, online: list | None = None) -> dict:
    """A config of FSDD's log-Mel spectrograms as 3 x 64 x 64 colour-map images into `model`."""
    features = {"preset": "SpectrogramImage", "root": str(tmp_path / "features")}
    return {
        "dataset": {"preset": "FSDD", "root": str(tmp_path / "raw")},
        "features": features if online is None else {**features, "online": online},
        "model": model,
        "optimizer": "AdamW",
    }


@pytest.mark.parametrize("preset", ["TimmMobileNetV3Small", "TorchvisionMobileNetV3Small"])
def test_presets_take_what_the_spectrogram_image_features_give(preset, tmp_path, fsdd_mirror):
    Component.model_validate(load_preset("models", preset)).check_args(*SIZE_NAMES)
    config = configuration.parse(image_config(tmp_path, preset))
    pipeline = config.features.pipeline()
    files = sorted((fsdd_mirror / "fsdd" / "recordings").glob("*_lucas_*.wav"))[:2]
    x = torch.stack([pipeline.apply(torch.from_numpy(pipeline.extract(audio.load(f, 16000)[0]))) for f in files])
    assert x.shape == (2, 3, 64, 64)
    model = config.model.build(**sizes(pipeline.output, 10, resolve_target(config.model.target))).eval()
    with torch.no_grad():
        assert model(x).shape == (2, 10)


@pytest.mark.parametrize("target", ["timm_backbone:TimmModel", "torchvision_backbone:TorchvisionModel"])
def test_frames_into_an_image_model_fail_at_config_load_naming_both(target, tmp_path):
    model = {"target": f"tympan.models.{target}", "args": {"name": "resnet18"}}
    name = target.partition(":")[2]
    with pytest.raises(ConfigError, match=f"model: {name} accepts image, but the features give frames x 64 bins"):
        configuration.parse(image_config(tmp_path, model, online=[]))


def test_a_timm_network_of_one_image_size_refuses_another_at_config_load(tmp_path):
    """A ViT is fixed to 224 x 224 (timm's `fixed_input_size`): 64 x 64 images are refused when the
    config loads, naming both sizes, instead of failing at training's first forward pass."""
    vit = {"target": "tympan.models.timm_backbone:TimmModel", "args": {"name": "vit_tiny_patch16_224"}}
    message = r"model: timm's vit_tiny_patch16_224 takes images of exactly 224 x 224, but the features give "
    message += r"image 3x64x64; set the image transform's size to \[224, 224\]"
    with pytest.raises(ConfigError, match=message):
        configuration.parse(image_config(tmp_path, vit))
    model = TimmModel("vit_tiny_patch16_224", 10, 3).eval()
    with pytest.raises(AssertionError), torch.no_grad():  # what the check saves a run from
        model(torch.zeros(1, 3, 64, 64))
    colour = {"target": "tympan.transforms.image:ColourMapImage", "args": {"size": [224, 224]}}
    config = configuration.parse(image_config(tmp_path, vit, online=[colour]))
    assert config.features.pipeline().output.shape == (3, 224, 224)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 10)
    # networks of any size are not checked
    configuration.parse(image_config(tmp_path, {**vit, "args": {"name": "resnet18"}}))


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        ("timm_backbone:TimmModel", {"name": "mobilenetv3_smal_050"},
         "timm has no model 'mobilenetv3_smal_050'; did you mean mobilenetv3_small_050.*small ones: "
         "mobilenetv3_small_050, mobilenetv3_small_100"),
        ("timm_backbone:TimmModel", {"name": 3}, "name must be a string, got 3"),
        ("timm_backbone:TimmModel", {"name": "resnet18", "drop_rate": 1.5}, r"drop_rate must be a number in \[0, 1\)"),
        ("timm_backbone:TimmModel", {"name": "resnet18", "pretrained": ""}, "pretrained must be a weights file's path"),
        ("torchvision_backbone:TorchvisionModel", {"name": "resnet19"},
         "torchvision has no model 'resnet19'; did you mean resnet18.*small ones: mobilenet_v3_small"),
        ("torchvision_backbone:TorchvisionModel", {"name": "squeezenet1_1"},
         "squeezenet1_1 is not supported: its classifier is a conv, not a Linear"),
        ("torchvision_backbone:TorchvisionModel", {"name": "googlenet"}, "returns auxiliary outputs when training"),
        ("torchvision_backbone:TorchvisionModel", {"name": "mnasnet0_5"}, "safetensors files .* do not keep"),
        ("torchvision_backbone:TorchvisionModel", {"name": "resnet18", "in_channels": 1},
         "'in_channels' is filled in by tympan"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_at_config_load_naming_the_value(target, args, message, tmp_path):
    model = {"target": f"tympan.models.{target}", "args": args}
    with pytest.raises(ConfigError, match=f"model.args: .*{message}"):
        configuration.parse(image_config(tmp_path, model))


# ---- pretrained ImageNet-style files


def imagenet_file(cls, path, drop_counters: bool = False):
    """An ImageNet-style (3 channels, 1000 classes) state dict of the test architecture, saved at
    `path` (safetensors or a torch file by its suffix); returns the state dict."""
    if cls is TimmModel:
        import timm

        network = timm.create_model(TIMM, pretrained=False, num_classes=1000)
    else:
        from torchvision import models

        network = models.get_model(TORCHVISION, weights=None, num_classes=1000)
    for parameter in network.parameters():  # away from any fresh initialisation
        parameter.data.normal_(0, 0.1)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    if drop_counters:  # as in torchvision's own ImageNet files, saved before batch-norm counted steps
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    return state


def counters(keys) -> set[str]:
    return {k for k in keys if k.endswith("num_batches_tracked")}


FIRST_CONV = {TimmModel: "conv_stem.weight", TorchvisionModel: "features.0.0.weight"}
CLASSIFIER = {TimmModel: "classifier", TorchvisionModel: "classifier.3"}


@pytest.mark.parametrize(
    ("cls", "suffix"), [(TimmModel, ".safetensors"), (TimmModel, ".pth"), (TorchvisionModel, ".pth")]
)
def test_a_3_channel_file_into_a_1_channel_model(cls, suffix, tmp_path, images):
    path = tmp_path / f"imagenet{suffix}"
    state = imagenet_file(cls, path, drop_counters=cls is TorchvisionModel)
    torch.manual_seed(0)
    model = build(cls, 10, 1, pretrained=str(path)).eval()
    own = model.network.state_dict()
    first = FIRST_CONV[cls]
    # the first conv: the RGB kernels summed; every other weight of the network: the file's
    assert own[first].shape[1] == 1 and torch.allclose(own[first], state[first].sum(1, keepdim=True))
    head = CLASSIFIER[cls] + "."
    others = {k for k in state if k != first and not k.startswith(head)}
    assert set(own) - {first} - counters(own) == others - counters(others)
    assert all(torch.equal(own[k], state[k]) for k in others)
    if cls is TorchvisionModel:  # the hidden Linear before the head is the file's, not a head
        assert torch.equal(own["classifier.0.weight"], state["classifier.0.weight"])
    # the head is fresh: as a model built without the file draws it from the same seed (timm
    # draws the first conv for the channels it builds, 3 when it loads a file)
    torch.manual_seed(0)
    fresh = build(cls, 10, 3 if cls is TimmModel else 1)
    assert torch.equal(model.out.weight, fresh.out.weight) and torch.equal(model.out.bias, fresh.out.bias)
    # the shapes the bundle rebuilds (without the file) are the adapted model's
    rebuilt = build(cls, 10, 1).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in rebuilt.items()}
    # a grey image into the 1-channel model = that image as RGB into the 3-channel one
    rgb = build(cls, 10, 3, pretrained=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(images), rgb.embed(images.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_timm_drops_the_imagenet_classifier_even_when_the_outputs_match(tmp_path):
    path = tmp_path / "imagenet.safetensors"
    state = imagenet_file(TimmModel, path)
    model = TimmModel(TIMM, 1000, 3, pretrained=str(path))
    assert not torch.equal(model.out.weight, state["classifier.weight"])
    assert torch.equal(model.network.conv_stem.weight, state["conv_stem.weight"])


def test_torchvision_loads_a_head_that_fits_and_keeps_one_that_does_not(tmp_path):
    path = tmp_path / "imagenet.pth"
    state = imagenet_file(TorchvisionModel, path)
    assert torch.equal(
        TorchvisionModel(TORCHVISION, 1000, 3, pretrained=str(path)).out.weight, state["classifier.3.weight"]
    )
    assert TorchvisionModel(TORCHVISION, 10, 3, pretrained=str(path)).out.weight.shape == (10, 1024)


@pytest.mark.parametrize("name", SMALL)
def test_each_small_torchvision_model_loads_its_own_imagenet_safetensors(name, tmp_path):
    """The head sits differently in each: resnet18's and shufflenet's `fc` on the network itself,
    mobilenet's `classifier.3` after a hidden Linear, efficientnet's `classifier.1` after a dropout."""
    from torchvision import models

    path = tmp_path / "imagenet.safetensors"
    save_file(models.get_model(name, weights=None, num_classes=1000).state_dict(), path)
    model = TorchvisionModel(name, 10, 1, pretrained=str(path)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


class RunsCode:
    """Unpickling this opens (creates) a file: a stand-in for any code a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("cls", [TimmModel, TorchvisionModel])
def test_files_that_are_not_weights_are_one_clear_error(cls, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"x": RunsCode(marker)}, evil)
    with pytest.raises(DataError, match=r"evil.pth: refused: unpickling it would run code \(it calls io.open\)"):
        build(cls, 10, 1, pretrained=str(evil))
    assert not marker.exists()
    with pytest.raises(DataError, match="missing.pth: no such weights file"):
        build(cls, 10, 1, pretrained=str(tmp_path / "missing.pth"))
    other = tmp_path / "other.pth"  # another architecture: strict, not a silent partial load
    imagenet_file(TorchvisionModel if cls is TimmModel else TimmModel, other)
    with pytest.raises(DataError, match="other.pth: weights do not fit .*keys of the model missing from the file"):
        build(cls, 10, 1, pretrained=str(other))


def test_adapting_the_first_conv_to_other_channel_counts():
    conv = torch.nn.Conv2d(3, 4, 3)
    rgb = conv.weight.detach().clone()
    adapt_first_conv(conv, 6)
    assert conv.in_channels == 6 and conv.weight.shape == (4, 6, 3, 3)
    torch.testing.assert_close(conv.weight, torch.cat([rgb, rgb], dim=1) / 2)
    x = torch.randn(1, 1, 8, 8)
    assert torch.allclose(conv(x.repeat(1, 6, 1, 1)), F.conv2d(x.repeat(1, 3, 1, 1), rgb, conv.bias), atol=1e-5)
    with pytest.raises(ValueError, match="the first conv takes 6 channels, not RGB"):
        adapt_first_conv(conv, 1)


# ---- training and the bundle


@pytest.fixture
def torch_threads():
    """Gives back the process's torch threads, which a training run sets (training.threads)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_bundle_of_an_image_model_predicts_what_the_run_evaluated(tmp_path, torch_threads):
    """Generated tones, chirps and noise (seconds of work, where FSDD's 500 dev clips take minutes
    on a busy machine) as standardised 1 x 32 x 32 spectrogram images into a timm network. One
    torch thread: on a busy machine, two threads per small op made this run ten times slower."""
    import numpy as np

    online = [
        {"target": "tympan.transforms.image:SpectrogramImage", "args": {"size": [32, 32], "channels": 1}},
        # mean 0, std 1: where batch-norm's running statistics start (12 steps hardly move them)
        {"target": "tympan.transforms.normalize:Normalize", "args": {"mode": "instance"}},
    ]
    config = configuration.parse(
        {
            "experiment": "image",
            "dataset": {"preset": "ToyClassification", "root": str(tmp_path / "raw")},
            "features": {"preset": "PannLogMel16k", "root": str(tmp_path / "features"), "online": online},
            "model": {"target": "tympan.models.timm_backbone:TimmModel", "args": {"name": TIMM, "drop_rate": 0.1}},
            "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}},
            "training": {"steps": 12, "batch_size": 16, "eval_every": 12, "progress": False, "threads": 1},
        }
    )
    stages.fetch(config)
    stages.preprocess(config)
    run_dir, summary = stages.train(config, tmp_path / "run")
    assert summary["dev"]["accuracy"] > 0.6  # it learnt (chance: 1/3), so equal metrics below are no accident
    predictor = bundle.load(run_dir / "bundle")  # tympan's own classes only: no trust_code needed
    assert predictor.manifest["input"]["kind"] == "image"
    assert predictor.manifest["model"]["args"] == {"name": TIMM, "drop_rate": 0.1, "n_outputs": 3, "in_channels": 1}
    index = stages.index_of(config)
    dev = index.split("dev")
    scores = np.stack([predictor.predict(*audio.load(index.path_of(row))).scores for row in dev])
    metrics = predictor.task.metrics(scores, predictor.task.encode(dev))
    assert metrics == pytest.approx(summary["dev"], abs=1e-9)
