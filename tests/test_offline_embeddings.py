"""A frozen backbone as an offline feature (tympan.transforms.embedding): stored once, keyed by the
weights' content, carried by the bundle and replayed online so served answers equal the run's.
The backbone is a real pretrained network: resemblyzer's speaker encoder, whose weights ship in its wheel."""

from __future__ import annotations

import pytest
import torch

from tympan import config as configuration
from tympan.errors import ConfigError
from tympan.models.resemblyzer_encoder import Resemblyzer, wheel_weights
from tympan.targets import resolve_own
from tympan.transforms.embedding import Embedding
from tympan.transforms.pipeline import Pipeline
from tympan.transforms.spec import Transform

pytest.importorskip("resemblyzer")

EMBEDDING = "tympan.transforms.embedding:Embedding"
ENCODER = {"target": "tympan.models.resemblyzer_encoder:Resemblyzer", "args": {"pretrained": "resemblyzer"}}


def resolve(target: str):
    return resolve_own(target, "tympan.transforms", Transform)


def pipeline(model: dict) -> Pipeline:
    offline = [
        {"target": "tympan.transforms.waveform:Waveform"},
        {"target": "tympan.transforms.embedding:Embedding", "args": {"model": model}},
    ]
    return Pipeline(16000, offline, [], resolve=resolve)


def clip(fsdd_mirror, name: str) -> torch.Tensor:
    from tympan.audio import load

    return torch.as_tensor(load(fsdd_mirror / "fsdd/recordings" / name, 16000)[0])


def test_the_stored_embedding_is_the_encoder_s_and_the_bundle_record_rebuilds_it(fsdd_mirror, tmp_path):
    built = pipeline(ENCODER)
    assert (built.stored.kind, built.stored.size) == ("vector", 256)
    x = clip(fsdd_mirror, "3_george_7.wav")
    stored = built.offline[1](built.offline[0](x))
    direct = Resemblyzer(n_outputs=2, pretrained="resemblyzer").eval()
    assert torch.allclose(stored, direct.embed(x.unsqueeze(0))[0], atol=1e-6)
    assert abs(float(stored.norm()) - 1) < 1e-5  # resemblyzer's embeddings have unit length

    record = built.describe()["offline"][1]["args"]
    assert record["model"]["args"] == {}  # no source: the weights travel in the pipeline's state
    state = built.state_dict()
    assert any(k.startswith("offline.1.backbone.encoder.lstm.") for k in state)
    rebuilt = Pipeline(16000, built.describe()["offline"], [], resolve=resolve)
    before = rebuilt.offline[1](x)
    rebuilt.load_state_dict(state)
    assert torch.equal(rebuilt.offline[1](x), stored) and not torch.allclose(before, stored)
    built.offline[1].train()
    assert not built.offline[1].backbone.training  # never switched to training: frozen for good


def test_the_store_key_follows_the_weights_content(tmp_path):
    file = tmp_path / "encoder.pt"
    file.write_bytes(wheel_weights().read_bytes())
    model = {"target": ENCODER["target"], "args": {"pretrained": str(file)}}
    first = Embedding.content_args({"model": model})
    assert first["model"]["args"]["pretrained"] == {
        "sha256": __import__("hashlib").sha256(file.read_bytes()).hexdigest()
    }
    file.write_bytes(file.read_bytes() + b"\0")
    assert Embedding.content_args({"model": model}) != first


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"target": "./evil.py:Net"}, "an Embedding takes one of tympan's own model classes"),
        ({"target": "tympan.models.cnn:SmallCNN"}, "Embedding's SmallCNN accepts frames, but its input is waveform"),
        ({"target": ENCODER["target"], "args": {"hiden": [3]}}, "takes no argument 'hiden'"),
        ({"target": ENCODER["target"], "args": 3}, "model.args must be a mapping"),
        ({"name": "x"}, "model must be {target: tympan.models.<module>:<Class>, args: {...}}"),
    ],
)
def test_bad_backbones_fail_at_config_load(model, message):
    raw = {
        "dataset": "FSDDSpeakers",
        "features": {
            "sample_rate": 16000,
            "offline": ["Waveform", {"target": "tympan.transforms.embedding:Embedding", "args": {"model": model}}],
        },
        "model": "FFNN",
    }
    with pytest.raises(ConfigError) as err:
        configuration.parse(raw, "stored.yaml")
    assert "features.offline.1" in str(err.value) and message in str(err.value)
