"""Hugging Face feature extractors as a transform: tiny wav2vec2, Whisper and AST extractors saved
to temporary directories (the hub is offline here), run on real FSDD audio, and a tiny AST run
whose bundle predicts without the extractor's directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from tympan import audio, bundle, stages
from tympan import config as configuration
from tympan.errors import ConfigError, DataError
from tympan.store import config_digest, open_split, store_dir
from tympan.targets import resolve_target
from tympan.transforms.huggingface import HuggingFaceExtractor
from tympan.transforms.pipeline import Pipeline
from tympan.transforms.spec import ShapeError, Spec, waveform

RATE = 16000
TARGET = "tympan.transforms.huggingface:HuggingFaceExtractor"
DIGITS = "fsdd-digits"  # the table dataset of the end-to-end run
WAVE = waveform(RATE)
SPECS = {
    "wav2vec2": WAVE,
    "whisper": Spec("frames", RATE, frame_rate=100.0, size=80, length=100),
    "ast": Spec("frames", RATE, frame_rate=100.0, size=128, length=100),
}


def save_extractor(kind: str, directory) -> str:
    """A tiny extractor of `kind` saved with save_pretrained into `directory`; returns its path."""
    import transformers

    extractor = {
        "wav2vec2": lambda: transformers.Wav2Vec2FeatureExtractor(do_normalize=True),
        "whisper": lambda: transformers.WhisperFeatureExtractor(
            feature_size=80, hop_length=160, chunk_length=1, n_fft=400
        ),
        "ast": lambda: transformers.ASTFeatureExtractor(num_mel_bins=128, max_length=100),
    }[kind]()
    extractor.save_pretrained(directory)
    return str(directory)


def own_output(kind: str, directory: str, x: torch.Tensor) -> np.ndarray:
    """What the extractor, loaded by transformers itself, gives for clip `x`, time first."""
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(directory)
    values = extractor(x.numpy(), sampling_rate=RATE, return_tensors="np")[extractor.model_input_names[0]][0]
    return values.T if kind == "whisper" else values  # Whisper's are (mels, frames)


@pytest.fixture(scope="module")
def directories(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("extractors")
    return {kind: save_extractor(kind, root / kind) for kind in SPECS}


@pytest.fixture(scope="module")
def clips(fsdd_mirror) -> dict[str, torch.Tensor]:
    """A real FSDD clip at 16 kHz (under 1 s: Whisper and AST pad it), and three in a row (over
    1 s: they cut it)."""
    paths = sorted((fsdd_mirror / "fsdd" / "recordings").glob("*_george_*.wav"))[:3]
    waves = [torch.from_numpy(audio.load(p, RATE)[0]) for p in paths]
    assert len(waves[0]) < RATE < sum(map(len, waves))
    return {"short": waves[0], "long": torch.cat(waves)}


def config_with(offline: list, sample_rate: int = RATE) -> dict:
    """The tiny experiment with these offline transforms and nothing online or augmented."""
    return {**TINY, "features": {"sample_rate": sample_rate, "offline": offline, "online": []}, "augmentation": []}


@pytest.mark.parametrize("length", ["short", "long"])
@pytest.mark.parametrize("kind", list(SPECS))
def test_output_is_the_extractors_own_time_first(directories, clips, kind, length):
    transform = HuggingFaceExtractor(directories[kind])
    spec = transform.output(WAVE)
    assert spec == SPECS[kind]
    x = clips[length]
    y = transform(x)
    assert y.dtype == torch.float32
    assert y.shape == ((len(x),) if kind == "wav2vec2" else (spec.length, spec.size))
    np.testing.assert_array_equal(y.numpy(), own_output(kind, directories[kind], x))


def test_wav2vec2_normalises_only_when_its_extractor_says_so(clips):
    x = clips["long"]
    on = HuggingFaceExtractor({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True})(x)
    assert abs(float(on.mean())) < 1e-5 and float(on.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    off = HuggingFaceExtractor({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": False})(x)
    assert torch.equal(off, x)


@pytest.mark.parametrize("kind", list(SPECS))
def test_recorded_args_rebuild_it_without_its_directory(tmp_path, clips, kind):
    directory = save_extractor(kind, tmp_path / kind)
    transform = HuggingFaceExtractor(directory)
    recorded = json.loads(json.dumps(transform.recorded_args({"extractor": directory})))  # what bundle.json holds
    assert recorded["extractor"]["feature_extractor_type"] == type(transform.extractor).__name__
    assert directory not in json.dumps(recorded)
    shutil.rmtree(directory)
    rebuilt = HuggingFaceExtractor(**recorded)
    assert rebuilt.output(WAVE) == transform.output(WAVE)
    assert torch.equal(rebuilt(clips["short"]), transform(clips["short"]))


def test_the_store_key_follows_the_extractors_content_not_its_path(tmp_path):
    """An edited preprocessor_config.json in the same directory makes another store (the old one
    holds the old settings' features); the same content elsewhere finds the same store."""
    directory = save_extractor("ast", tmp_path / "ast")
    raw = config_with([{"target": TARGET, "args": {"extractor": directory}}])
    before = config_digest(configuration.parse(raw))
    file = Path(directory) / "preprocessor_config.json"
    settings = json.loads(file.read_text())
    assert settings["do_normalize"] is True
    file.write_text(json.dumps({**settings, "do_normalize": False}))
    edited = config_digest(configuration.parse(raw))
    assert edited != before
    shutil.copytree(directory, tmp_path / "elsewhere")
    moved = config_with([{"target": TARGET, "args": {"extractor": str(tmp_path / "elsewhere")}}])
    assert config_digest(configuration.parse(moved)) == edited


@pytest.mark.parametrize("kind", list(SPECS))
def test_a_rate_other_than_the_extractors_is_a_shape_error_at_config_load_until_resampled(directories, kind):
    offline = [{"target": TARGET, "args": {"extractor": directories[kind]}}]
    with pytest.raises(ConfigError, match=r"features.offline.0: \w+FeatureExtractor takes audio at 16000 Hz .*8000 Hz"):
        configuration.parse(config_with(offline, sample_rate=8000))
    with pytest.raises(ShapeError, match="16000 Hz.* but its input is waveform at 8000 Hz"):
        HuggingFaceExtractor(directories[kind]).output(waveform(8000))
    resampled = [{"target": "tympan.transforms.resample:Resample", "args": {"rate": RATE}}, *offline]
    assert Pipeline(8000, resampled, [], resolve_target).stored == SPECS[kind]


def test_only_the_supported_classes_are_built(tmp_path):
    supported = "supported: Wav2Vec2FeatureExtractor, WhisperFeatureExtractor, ASTFeatureExtractor"
    for named in ["ClapFeatureExtractor", "AutoFeatureExtractor", "os:system", None]:
        data = {"feature_extractor_type": named} if named else {"sampling_rate": RATE}
        with pytest.raises(ValueError, match=f"feature_extractor_type {named!r} is not supported; {supported}"):
            HuggingFaceExtractor(data)
    # ... whether the mapping is inline (refused at config load) or in a directory's config file
    offline = [{"target": TARGET, "args": {"extractor": {"feature_extractor_type": "ClapFeatureExtractor"}}}]
    with pytest.raises(
        ConfigError, match="features.offline.0.*feature_extractor_type 'ClapFeatureExtractor' is not supported"
    ):
        configuration.parse(config_with(offline))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_extractor_type": "ClapFeatureExtractor"}))
    with pytest.raises(ValueError, match=f"'ClapFeatureExtractor' is not supported; {supported}"):
        HuggingFaceExtractor(str(tmp_path))


def test_a_missing_directory_or_an_unreachable_hub_name_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=f"no such directory: {tmp_path / 'absent'}$"):
        HuggingFaceExtractor(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=f"{tmp_path}: holds no readable preprocessor_config.json"):
        HuggingFaceExtractor(str(tmp_path))
    hub = (
        r"'facebook/wav2vec2-base' is not a local directory, and the Hugging Face hub cannot give it "
        r"\(HF_HUB_OFFLINE is set\); give a local directory holding the extractor's preprocessor_config.json"
    )
    with pytest.raises(ValueError, match=hub):
        HuggingFaceExtractor("facebook/wav2vec2-base")
    offline = [{"target": TARGET, "args": {"extractor": "facebook/wav2vec2-base"}}]
    with pytest.raises(ConfigError, match=f"features.offline.0: {TARGET}: {hub}") as error:
        configuration.parse(config_with(offline))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="extractor must be a string or a mapping, got 3"):
        configuration.parse(config_with([{"target": TARGET, "args": {"extractor": 3}}]))
    with pytest.raises(ConfigError, match="extractor must be a local directory, a hub name or an extractor's config"):
        configuration.parse(config_with([{"target": TARGET, "args": {"extractor": " "}}]))


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"feature_extractor_type": "ASTFeatureExtractor", "num_mels": 64},
            "ASTFeatureExtractor has no setting num_mels",
        ),
        ({"feature_extractor_type": "ASTFeatureExtractor", "max_length": 0}, "max_length must be a positive integer"),
        ({"feature_extractor_type": "WhisperFeatureExtractor", "dither": 1e-4}, "dither must be 0, got 0.0001"),
    ],
)
def test_settings_that_would_break_the_contract_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        HuggingFaceExtractor(settings)


def test_ast_says_when_a_clip_is_shorter_than_its_window(directories, clips):
    with pytest.raises(ValueError, match="ASTFeatureExtractor needs at least 25 ms of audio, got 399 samples"):
        HuggingFaceExtractor(directories["ast"])(clips["short"][:399])


# ---- a tiny run with AST features, whose bundle needs neither the directory nor the hub -------------


@pytest.fixture(scope="module")
def ast_run(fsdd_mirror, tmp_path_factory):
    """(config, run dir, summary, store) of a short run on stored AST features of 90 FSDD recordings (a
    table dataset: six takes of each digit by one voice to train on, three by another for dev);
    the extractor's directory is deleted once the run is trained."""
    root = tmp_path_factory.mktemp("hf-ast")
    recordings = fsdd_mirror / "fsdd" / "recordings"
    voices = {"george": ("train", 6), "yweweler": ("dev", 3)}
    rows = [(f"{d}_{voice}_{take}.wav", split, d) for voice, (split, takes) in voices.items()
            for d in range(10) for take in range(takes)]  # fmt: skip
    (root / "index.csv").write_text("file,split,label\n" + "".join(f"{f},{s},{d}\n" for f, s, d in rows))
    directory = save_extractor("ast", root / "ast")
    raw = {
        **config_with([{"target": TARGET, "args": {"extractor": directory}}]),
        "experiment": "hf-ast",
        "dataset": {
            "target": "tympan.datasets.table:Table",
            "root": str(root / "raw"),
            "args": {"root": str(recordings), "index": str(root / "index.csv"), "name": DIGITS},
        },
        "model": {"preset": "SmallCNN", "args": {"channels": [4, 8]}},
        "training": {"steps": 8, "batch_size": 16, "progress": False},
    }
    raw["features"]["root"] = str(root / "features")
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config, progress=False)
    run_dir, summary = stages.train(config, root / "run")
    store = store_dir(config, DIGITS)  # keyed by the extractor's content, read while it is there
    shutil.rmtree(directory)
    return config, run_dir, summary, store


def test_the_bundle_predicts_what_the_run_measured_without_the_extractors_directory(ast_run):
    config, run_dir, summary, store = ast_run
    directory = config.features.offline[0].args["extractor"]
    features = json.loads((run_dir / "bundle" / bundle.MANIFEST).read_text())["features"]  # what loading reads
    assert directory not in json.dumps(features)
    recorded = features["offline"][0]["args"]["extractor"]
    assert recorded["feature_extractor_type"] == "ASTFeatureExtractor" and recorded["max_length"] == 100
    predictor = bundle.load(run_dir / "bundle")
    assert predictor.pipeline.output == SPECS["ast"]
    dev = open_split(store, "dev")
    assert len(dev) == 30 and dev.clip(0).shape == (100, 128)
    correct = 0
    for i, row in enumerate(dev.rows):
        samples, rate = audio.load(Path(config.dataset.root) / DIGITS / row["path"])  # 8 kHz, as given
        stored = torch.from_numpy(np.array(dev.clip(i)))
        np.testing.assert_allclose(predictor.features(samples, rate).numpy(), stored.numpy(), atol=1e-5)
        prediction = predictor.predict(samples, rate)
        np.testing.assert_allclose(prediction.scores, predictor.predict_features([stored])[0].scores, atol=1e-6)
        correct += prediction.outputs["label"] == row["label"]
    assert correct / len(dev) == pytest.approx(summary["dev"]["accuracy"], abs=1e-9)


def test_a_bundle_naming_another_extractor_class_is_refused(ast_run, tmp_path):
    _, run_dir, _, _ = ast_run
    copy = tmp_path / "bundle"
    shutil.copytree(run_dir / "bundle", copy)
    manifest = json.loads((copy / bundle.MANIFEST).read_text())
    manifest["features"]["offline"][0]["args"]["extractor"]["feature_extractor_type"] = "ClapFeatureExtractor"
    (copy / bundle.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="feature_extractor_type 'ClapFeatureExtractor' is not supported"):
        bundle.load(copy)
