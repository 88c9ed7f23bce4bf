"""The transformers audio families: W2V2FFNN (wav2vec2, HuBERT, WavLM, data2vec-audio), WhisperFFNN
and ASTFFNN. Tiny random networks are built from config objects and saved with save_pretrained
(the hub is out of reach here); each loads through a tympan config alone with every weight of its
network, while tampered, code-asking and code-carrying sources are refused. A clip gives the same
output alone as in a padded batch; each learns a fixed batch; each trains an epoch on the toy data,
and its bundle, rebuilt without the source, is served with the answers of in-process prediction; a
W2V2FFNN run killed mid-run resumes to the numbers of one that never stopped."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from tests.conftest import free_port, kill_once_last_exists
from tests.test_sequence_models import alone_and_batched
from tympan import audio, bundle, stages
from tympan import config as configuration
from tympan.errors import ConfigError, DataError
from tympan.models.ast_transformer import ASTFFNN
from tympan.models.w2v2 import W2V2FFNN
from tympan.models.whisper import WhisperFFNN
from tympan.transforms.whisper import WhisperLogMel

httpx = pytest.importorskip("httpx")
transformers = pytest.importorskip("transformers")

W2V2_TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "conv_dim": [32] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2], "vocab_size": 12,
}  # fmt: skip
WHISPER_TINY = {
    "d_model": 32, "encoder_layers": 2, "decoder_layers": 1, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_source_positions": 50,
    "max_target_positions": 20, "vocab_size": 16, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    "decoder_start_token_id": 3, "num_mel_bins": 80,
}  # fmt: skip
AST_TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "num_mel_bins": 128, "max_length": 100, "frequency_stride": 10, "time_stride": 10,
}  # fmt: skip
AST_EXTRACTOR = {"feature_extractor_type": "ASTFeatureExtractor", "num_mel_bins": 128, "max_length": 100}
# each source: the transformers task model saved (its head is tympan's to replace) and its config
SOURCES = {
    "wav2vec2": ("Wav2Vec2ForCTC", "Wav2Vec2Config", W2V2_TINY),  # group-norm feature encoder
    "hubert": (
        "HubertModel",
        "HubertConfig",
        {**W2V2_TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True},
    ),
    "wavlm": ("WavLMForSequenceClassification", "WavLMConfig", {**W2V2_TINY, "num_labels": 4}),
    "data2vec-audio": ("Data2VecAudioModel", "Data2VecAudioConfig", {**W2V2_TINY, "num_conv_pos_embeddings": 2}),
    "whisper": ("WhisperForConditionalGeneration", "WhisperConfig", WHISPER_TINY),
    "ast": ("ASTForAudioClassification", "ASTConfig", {**AST_TINY, "num_labels": 5}),
}
MODELS = {"whisper": WhisperFFNN, "ast": ASTFFNN}  # the rest are W2V2FFNN
FEATURES = {  # the features each family takes, at 16 kHz
    "w2v2": [{"target": "tympan.transforms.huggingface:HuggingFaceExtractor",
              "args": {"extractor": {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True}}}],
    "whisper": [{"target": "tympan.transforms.whisper:WhisperLogMel", "args": {"n_mels": 80}}],
    "ast": [{"target": "tympan.transforms.huggingface:HuggingFaceExtractor", "args": {"extractor": AST_EXTRACTOR}}],
}  # fmt: skip


def family(kind: str) -> str:
    return kind if kind in MODELS else "w2v2"


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, tuple]:
    """kind -> (directory written by save_pretrained, the transformers model saved there)."""
    transformers.utils.logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("sources")
    found = {}
    for kind, (model_class, config_class, settings) in SOURCES.items():
        torch.manual_seed(len(found))
        model = getattr(transformers, model_class)(getattr(transformers, config_class)(**settings)).eval()
        model.save_pretrained(root / kind)
        found[kind] = (root / kind, model)
    return found


@pytest.fixture(scope="module")
def digits(fsdd_mirror) -> list[torch.Tensor]:
    """Four real recordings of different lengths at 16 kHz."""
    paths = sorted((fsdd_mirror / "fsdd/recordings").glob("*_jackson_3.wav"))[:4]
    return [torch.from_numpy(audio.load(p, 16000)[0]) for p in paths]


def built(kind: str, directory, **args):
    """The model of `kind` from `directory` through a whole tympan config (loaded and checked),
    sized by training's rule."""
    raw = {
        "dataset": {"preset": "ToyClassification"},
        "features": {"sample_rate": 16000, "offline": FEATURES[family(kind)], "online": []},
        "model": {"target": target(kind), "args": {"pretrained": str(directory), **args}},
    }
    config = configuration.parse(raw)
    from tympan.models.base import sizes

    spec = config.features.pipeline().output
    return config.model.build_checked("model", **sizes(spec, 3, MODELS.get(kind, W2V2FFNN)))


def target(kind: str) -> str:
    cls = MODELS.get(kind, W2V2FFNN)
    return f"{cls.__module__}:{cls.__name__}"


def inner(source) -> torch.nn.Module:
    """The network inside a saved task model (the part tympan loads)."""
    base = source.base_model
    return base.encoder if isinstance(base, transformers.WhisperModel) else base


@pytest.mark.parametrize("kind", list(SOURCES))
def test_a_source_loads_through_the_config_every_weight_of_its_network_arriving(kind, sources):
    directory, source = sources[kind]
    model = built(kind, directory, layer=1).eval()
    ours, theirs = model.network.state_dict(), inner(source).state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    # and the network runs as transformers runs it (Whisper on its full 30 s, here 100 frames)
    torch.manual_seed(0)
    with torch.no_grad():
        if kind == "whisper":
            x = torch.randn(2, 100, 80)
            states, _ = model.encode(x)
            expected = inner(source)(x.transpose(1, 2))
        elif kind == "ast":
            x = torch.randn(2, 100, 128)
            states = model.encode(x)
            expected = inner(source)(x, output_hidden_states=True)
        else:
            x = torch.randn(2, 8000)
            states, _ = model.encode(x)
            expected = inner(source)(x, output_hidden_states=True)
    if kind != "whisper":  # layer 1 as transformers records it
        assert torch.allclose(states[1], expected.hidden_states[1], atol=1e-5)
    assert torch.allclose(states[-1], expected.last_hidden_state, atol=1e-5)
    # the bundle's record rebuilds the same architecture with no source
    args = model.rebuild_args()
    assert "pretrained" not in args and isinstance(json.dumps(args), str)  # plain data, for bundle.json
    with torch.device("meta"):  # as the bundle sizes it before reading its weights
        rebuilt = type(model)(**json.loads(json.dumps(args)))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_sources_that_do_not_fit_or_ask_for_code_are_refused_naming_why(sources, tmp_path, monkeypatch):
    directory, _ = sources["wav2vec2"]
    # a key renamed in the file: both sides named
    tampered = shutil.copytree(directory, tmp_path / "tampered")
    weights = load_file(tampered / "model.safetensors")
    weights["wav2vec2.encoder.layers.1.final_layer_norm.weights"] = weights.pop(
        "wav2vec2.encoder.layers.1.final_layer_norm.weight"
    )
    save_file(weights, tampered / "model.safetensors")
    with pytest.raises(DataError) as err:
        built("wav2vec2", tampered)
    assert "missing from the file: encoder.layers.1.final_layer_norm.weight" in str(err.value)
    assert "unknown to the network: encoder.layers.1.final_layer_norm.weights" in str(err.value)
    # a config that asks for code shipped with the model
    remote = shutil.copytree(directory, tmp_path / "remote")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Net"}}))
    with pytest.raises(DataError, match=r"config.json.auto_map: the config asks for code shipped with the model"):
        W2V2FFNN(pretrained=str(remote))
    with pytest.raises(ValueError, match=r"config.auto_map: the config asks for code"):
        W2V2FFNN(config={"model_type": "wav2vec2", "auto_map": {"AutoModel": "evil.Net"}})
    # a model_type outside the allow-list, and one of another family
    (remote / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(
        DataError, match=r"model_type must be one of wav2vec2, hubert, wavlm, data2vec-audio, got 'bert'"
    ):
        W2V2FFNN(pretrained=str(remote))
    with pytest.raises(DataError, match=r"model_type must be one of whisper, got 'wav2vec2'"):
        WhisperFFNN(pretrained=str(directory))
    # a torch file whose unpickling would run code: refused, and the code never ran
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(directory / "config.json", pickled)
    marker = tmp_path / "ran"
    torch.save({"weights": Payload(str(marker))}, pickled / "pytorch_model.bin")
    with pytest.raises(DataError, match=r"pytorch_model.bin: refused: unpickling it would run code \(it calls"):
        W2V2FFNN(pretrained=str(pickled))
    assert not marker.exists()
    # a hub id while the hub is out of reach: at once, saying so; from the weights mirror, as from the hub
    started = time.monotonic()
    with pytest.raises(DataError, match=r"pretrained 'facebook/wav2vec2-base': cannot get it from the hub"):
        W2V2FFNN(pretrained="facebook/wav2vec2-base")
    assert time.monotonic() - started < 10
    monkeypatch.setenv("TYMPAN_WEIGHTS_MIRROR", str(tmp_path / "mirror"))
    shutil.copytree(directory, tmp_path / "mirror/huggingface/facebook/wav2vec2-base")
    model = W2V2FFNN(pretrained="facebook/wav2vec2-base")
    assert model.provenance.name == "facebook/wav2vec2-base"
    assert model.provenance.sha256 == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    # settings the config cannot take, at config load where no network is needed
    for config, message in (
        ({"model_type": "wav2vec2", "hiden_size": 8}, "Wav2Vec2Config has no setting hiden_size"),
        ({"model_type": "wav2vec2", "hidden_dropout": float("nan")}, "config.hidden_dropout must be a finite number"),
        ({"hidden_size": 8}, "config.model_type: without pretrained, config is the whole architecture"),
    ):
        with pytest.raises(ValueError, match=message):
            W2V2FFNN(config=config)
    with pytest.raises(ValueError, match=r"layer must be at most 2 \(the network's number of layers\), got 3"):
        W2V2FFNN(config={**W2V2_TINY, "model_type": "wav2vec2"}, layer=3)
    with pytest.raises(
        ConfigError, match=r"WhisperFFNN's network takes 80 Mel bins, but the features give frames x 64"
    ):
        configuration.parse(
            {"dataset": "FSDD", "features": "PannLogMel16k", "model": {"target": target("whisper"),
             "args": {"pretrained": str(sources["whisper"][0])}}}
        )  # fmt: skip


def test_a_manifest_takes_a_network_config_inline_but_no_non_finite_number_in_it(tmp_path):
    from tympan.manifest import ModelRecord, read_manifest

    config = {**W2V2_TINY, "model_type": "wav2vec2", "id2label": {"0": "a"}, "layer_norm_eps": 1e-5}
    record = {"target": target("wav2vec2"), "args": {"config": config, "layer": "weighted"}}
    assert ModelRecord.model_validate(record).model_dump()["args"]["config"] == config
    for bad in ("NaN", "Infinity", "1e999"):
        text = json.dumps({"format": "tympan-bundle/2", "model": record}).replace("1e-05", bad)
        (tmp_path / "bundle.json").write_text(text)
        with pytest.raises(DataError, match=r"bundle.json: not valid JSON"):
            read_manifest(tmp_path)


class Payload:
    """Pickles as a call to os.system, which creating a marker file would show."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper", "ast"])
def test_a_real_clip_gives_the_same_output_alone_as_in_a_padded_batch(kind, sources, digits):
    directory, _ = sources[kind]
    model = MODELS.get(kind, W2V2FFNN)(pretrained=str(directory), layer="weighted", pooling="attention").eval()
    if kind == "whisper":
        clips, pad_value = [WhisperLogMel(80)(c) for c in digits], -5.0
    elif kind == "ast":
        clips, pad_value = [WhisperLogMel(128)(c) for c in digits], -5.0  # variable-length frames: masked, then padded
    else:
        clips, pad_value = [*digits, digits[0][:300]], 0.0  # a clip shorter than one frame's 400 samples too
    alone, batched = alone_and_batched(model, clips, pad_value)
    assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)
    if kind == "wav2vec2":  # group norm over the padded batch: what running the encoder clip by clip prevents
        model.per_clip = False
        _, unmasked = alone_and_batched(model, clips, pad_value)
        assert (unmasked - alone).abs().max() > 1e-3


def test_whisper_on_a_clip_s_own_length_and_what_that_changes(sources, digits):
    """On 30 s of input (here 100 frames) the model is transformers' Whisper encoder; the clip's own
    frames equal the padded extraction's but for the last, and without the silence to attend to the
    outputs change."""
    directory, source = sources["whisper"]
    model = WhisperFFNN(pretrained=str(directory), pooling="mean").eval()
    clip = digits[0]
    padded = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)(
        clip.numpy(), sampling_rate=16000, return_tensors="pt"
    )["input_features"]  # (1, 80, 100): the clip then silence, to the encoder's full length
    own = WhisperLogMel(80)(clip)[None]
    frames = own.shape[1]
    assert frames == len(clip) // 160 < padded.shape[2]
    assert torch.allclose(own[0, :-1], padded[0, :, : frames - 1].T, atol=1e-5)
    with torch.no_grad():
        states, _ = model.encode(padded.transpose(1, 2))
        assert torch.allclose(states[-1], inner(source)(padded).last_hidden_state, atol=1e-5)
        full, trimmed = model.embed(padded.transpose(1, 2)), model.embed(own)
    assert (full - trimmed).abs().max() > 1e-3  # not Whisper's own 30 s outputs: documented in whisper.py


@pytest.mark.parametrize("kind", ["wav2vec2", "whisper", "ast"])
def test_each_learns_a_fixed_batch(kind):
    torch.manual_seed(0)
    w2v2 = {
        **W2V2_TINY,
        "model_type": "wav2vec2",
        "feat_extract_norm": "layer",
        "mask_time_prob": 0.0,
        "layerdrop": 0.0,
    }
    config = {"wav2vec2": w2v2,
              "whisper": WHISPER_TINY, "ast": AST_TINY}[kind]  # fmt: skip
    x = {"wav2vec2": torch.randn(8, 4000), "whisper": torch.randn(8, 60, 80), "ast": torch.randn(8, 100, 128)}[kind]
    model = MODELS.get(kind, W2V2FFNN)(n_outputs=3, config=config, layer="weighted", freeze="none", hidden=[32])
    targets = torch.arange(8) % 3
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_freezing_checkpointing_layers_and_masking(sources):
    directory, source = sources["hubert"]
    config = {"mask_time_prob": 0.5, "mask_time_length": 2, "layerdrop": 0.0}
    frozen = W2V2FFNN(pretrained=str(directory), freeze="all", config=config).train()
    assert not any(p.requires_grad for p in frozen.network.parameters()) and not frozen.network.training
    cnn = W2V2FFNN(pretrained=str(directory), freeze="cnn", layer="weighted", pooling="attention")
    trainable = {name for name, p in cnn.named_parameters() if p.requires_grad}
    assert not any(n.startswith("network.feature_extractor.") for n in trainable)
    assert any(n.startswith("network.encoder.") for n in trainable)
    parts = {part: {n.split(".")[0] for n, _ in params} for part, params in cnn.parts().items()}
    assert parts == {"backbone": {"network"}, "head": {"mix", "pool", "ffnn"}}
    # every layer's state is transformers' own: layer k picks hidden state k, the last is the final output
    x = torch.randn(2, 6000)
    with torch.no_grad():
        hf = inner(source)(x, output_hidden_states=True)
        for k in range(3):
            model = W2V2FFNN(pretrained=str(directory), layer=k, hidden=[]).eval()
            expected = hf.last_hidden_state if k == 2 else hf.hidden_states[k]
            assert torch.allclose(model.embed(x), expected.mean(dim=1), atol=1e-5), k
    # gradient checkpointing recomputes, and gives the gradients of a plain run
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = W2V2FFNN(pretrained=str(directory), freeze="none", gradient_checkpointing=checkpointing, config=config)
        assert model.network.is_activation_checkpointing == checkpointing
        torch.manual_seed(1)
        model(x).sum().backward()
        grads.append(model.network.encoder.layers[0].feed_forward.output_dense.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    # SpecAugment masking in training follows torch's generator and leaves numpy's alone
    model = W2V2FFNN(pretrained=str(directory), freeze="none", config=config).train()
    state = np.random.get_state()[1].copy()
    outputs = []
    for _ in range(2):
        torch.manual_seed(5)
        outputs.append(model.embed(x).detach())
    assert torch.equal(outputs[0], outputs[1]) and np.array_equal(np.random.get_state()[1], state)
    assert not torch.allclose(outputs[0], model.eval().embed(x).detach())


# ---------------------------------------------------------------- trained, bundled, served


FAMILY_SOURCE = {"w2v2": "wav2vec2", "whisper": "whisper", "ast": "ast"}
FAMILY_ARGS = {
    "w2v2": {"layer": "weighted", "freeze": "cnn", "hidden": [32]},
    "whisper": {"pooling": "attention", "hidden": [32]},
    "ast": {"pooling": "mean", "hidden": [32]},
}


def family_config(name: str, root, directory) -> dict:
    raw = {
        "experiment": f"hf-{name}",
        "dataset": {
            "preset": "ToyClassification",
            "root": str(root / "raw"),
            "args": {"train": 32, "dev": 8, "test": 8},
        },
        "features": {"sample_rate": 16000, "offline": FEATURES[name], "online": [], "root": str(root / "features")},
        "model": {"target": target(FAMILY_SOURCE[name]), "args": {"pretrained": str(directory), **FAMILY_ARGS[name]}},
        "optimizer": {"preset": "AdamW", "args": {"lr": 0.003}},
        # one epoch: 32 clips in 4 steps of 8, saved after each
        "training": {"steps": 4, "batch_size": 8, "save_every": 1, "eval_every": 4, "progress": False},
    }
    return raw


@pytest.fixture(scope="module", params=list(FAMILY_SOURCE))
def family_run(request, sources, tmp_path_factory):
    """(family, raw config, run dir) of a one-epoch toy run (4 steps of 8 clips) from a saved source."""
    root = tmp_path_factory.mktemp(request.param)
    raw = family_config(request.param, root, sources[FAMILY_SOURCE[request.param]][0])
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config)
    run_dir, summary = stages.train(config, root / "run")
    assert 0 <= summary["dev"]["accuracy"] <= 1
    return request.param, raw, run_dir


@pytest.mark.slow  # a server per family, each importing transformers: about 20 s each on two quiet cores
def test_served_answers_are_in_process_predictions(family_run, tmp_path):
    name, raw, run_dir = family_run
    manifest = json.loads((run_dir / "bundle/bundle.json").read_text())
    assert "pretrained" not in manifest["model"]["args"] and isinstance(manifest["model"]["args"]["config"], dict)
    assert manifest["model"]["pretrained"]["name"] == raw["model"]["args"]["pretrained"]  # the source, by name
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "tympan.cli", "serve", str(run_dir / "bundle"), "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/hf-{name}"
        predictor = bundle.load(run_dir / "bundle")  # while the server starts
        files = sorted((run_dir.parent / "raw/toy_classification/dev").glob("*.wav"))[:3]
        expected = [predictor.predict(*audio.load(f)) for f in files]
        for _ in range(600):
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        body = {"instances": [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files]}
        answers = httpx.post(f"{url}:predict", json=body, timeout=60).json()["predictions"]
        for answer, prediction in zip(answers, expected, strict=True):
            assert answer["label"] == prediction.outputs["label"]
            probabilities = [answer["probabilities"][label] for label in predictor.task.labels]
            np.testing.assert_allclose(probabilities, prediction.scores, atol=1e-5)
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.slow  # rides on the family runs
def test_a_bundle_manifest_with_a_non_finite_number_in_the_network_config_is_refused(family_run, tmp_path):
    _, _, run_dir = family_run
    copy = shutil.copytree(run_dir / "bundle", tmp_path / "bundle")
    text = (copy / "bundle.json").read_text()
    manifest = json.loads(text)
    key = next(k for k, v in manifest["model"]["args"]["config"].items() if isinstance(v, float))
    manifest["model"]["args"]["config"][key] = float("nan")
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"bundle.json: not valid JSON \(NaN is not a number a bundle may hold"):
        bundle.load(copy)


@pytest.mark.slow  # two training processes, each importing transformers
@pytest.mark.parametrize("family_run", ["w2v2"], indirect=True)
def test_w2v2_killed_mid_run_resumes_to_the_same_numbers(family_run, tmp_path):
    _, raw, run_dir = family_run
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "--run-dir", str(killed)]
    kill_once_last_exists(command, tmp_path, killed)
    assert not (killed / "summary.json").exists()
    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("metrics.csv", "summary.json"):
        assert (killed / name).read_text() == (run_dir / name).read_text(), name
