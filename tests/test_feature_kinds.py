"""Features of every kind through training, the bundle and the server: openSMILE functionals
(a vector, normalised with train statistics) into an FFNN, and the stored waveform (with a
waveform augmentation) into a raw-waveform CNN, each on the toy classification data."""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import free_port
from tympan import audio, bundle, stages
from tympan import config as configuration
from tympan.errors import ConfigError
from tympan.store import open_split, read_meta, store_dir, stored_spec

httpx = pytest.importorskip("httpx")

KINDS = {
    "vector": {
        "features": {"preset": "EGeMAPS"},
        "model": {"preset": "FFNN", "args": {"hidden": [32]}},
    },
    "waveform": {
        "features": {"preset": "Waveform16k", "online": ["Normalize"]},
        "model": {"preset": "WaveformCNN", "args": {"channels": [8, 8, 16]}},
        "augmentation": [{"target": "tympan.augmentations:WaveformSpeed"}],
    },
}


def kind_config(kind: str, root) -> dict:
    raw = {
        "experiment": f"kind-{kind}",
        "dataset": {"preset": "ToyClassification", "root": str(root / "raw")},
        "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}},
        "training": {"steps": 12, "batch_size": 16, "progress": False},
        **KINDS[kind],
    }
    raw["features"] = {**raw["features"], "root": str(root / "features")}
    return raw


@pytest.fixture(scope="module", params=list(KINDS))
def run(request, tmp_path_factory):
    """(kind, config, run dir, summary) of a short toy run with features of that kind."""
    root = tmp_path_factory.mktemp(f"kind-{request.param}")
    config = configuration.parse(kind_config(request.param, root))
    stages.fetch(config)
    stages.preprocess(config)
    run_dir, summary = stages.train(config, root / "run")
    return request.param, config, run_dir, summary


def test_the_store_holds_the_declared_kind_and_the_bundle_replays_the_pipeline(run):
    kind, config, run_dir, summary = run
    store = store_dir(config, "toy_classification")
    stored = stored_spec(read_meta(store))
    assert stored.kind == kind and stored.sample_rate == 16000
    dev = open_split(store, "dev")
    predictor = bundle.load(run_dir / "bundle")
    assert predictor.manifest["input"]["kind"] == kind
    if kind == "vector":
        assert dev.features.shape == (len(dev), 88) and dev.clip(0).shape == (88,)
        # normalised with train statistics, saved beside the weights and restored
        statistics = load_file(run_dir / "bundle" / bundle.PIPELINE_WEIGHTS)
        assert statistics["0.mean"].shape == (88,) and torch.equal(
            predictor.pipeline.online[0].mean, statistics["0.mean"]
        )
    samples, rate = audio.load(store.parent.parent / "raw/toy_classification" / dev.rows[0]["path"])
    expected = predictor.pipeline.apply(torch.from_numpy(np.array(dev.clip(0))))
    assert torch.allclose(predictor.features(samples, rate), expected, atol=1e-4)
    # the bundle's dev accuracy is the run's
    correct = 0
    for row in dev.rows:
        samples, rate = audio.load(store.parent.parent / "raw/toy_classification" / row["path"])
        correct += predictor.predict(samples, rate).outputs["label"] == row["label"]
    assert correct / len(dev) == pytest.approx(summary["dev"]["accuracy"], abs=1e-9)


def test_served_like_any_other_bundle(run, tmp_path):
    kind, config, run_dir, _ = run
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "tympan.cli", "serve", str(run_dir / "bundle"), "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/kind-{kind}"
        for _ in range(300):
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        predictor = bundle.load(run_dir / "bundle")
        files = sorted((run_dir.parent / "raw/toy_classification/dev").glob("*.wav"))[:3]
        body = {"instances": [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files]}
        answers = httpx.post(f"{url}:predict", json=body, timeout=60).json()["predictions"]
        for file, answer in zip(files, answers, strict=True):
            expected = predictor.predict(*audio.load(file))
            assert answer["label"] == expected.outputs["label"]
            probabilities = [answer["probabilities"][label] for label in predictor.task.labels]
            np.testing.assert_allclose(probabilities, expected.scores, atol=1e-5)
    finally:
        process.terminate()
        process.wait(30)


def test_a_model_that_does_not_take_the_features_kind_fails_at_load(tmp_path):
    raw = {**kind_config("vector", tmp_path), "model": "SmallCNN"}
    with pytest.raises(ConfigError, match="SmallCNN accepts frames, but the features give vector of 88"):
        configuration.parse(raw)


def test_a_waveform_augmentation_needs_the_waveform_stored(tmp_path):
    raw = {**kind_config("vector", tmp_path), "augmentation": [{"target": "tympan.augmentations:WaveformSpeed"}]}
    with pytest.raises(ConfigError, match="acts on the waveform, but features.offline stores vector of 88"):
        configuration.parse(raw)


def test_damaged_statistics_are_one_clear_error(run, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from tympan.errors import DataError

    kind, _, run_dir, _ = run
    if kind != "vector":
        pytest.skip("only the vector pipeline has fitted statistics")
    copy = tmp_path / "bundle"
    shutil.copytree(run_dir / "bundle", copy)
    path = copy / bundle.PIPELINE_WEIGHTS
    statistics = load_file(path)
    save_file({**statistics, "0.mean": torch.zeros(10)}, path)
    with pytest.raises(DataError, match="statistics do not fit the pipeline .*fitted on 10 features"):
        bundle.load(copy)
    save_file({"0.mean": statistics["0.mean"]}, path)
    with pytest.raises(DataError, match=r"missing \['0.std'\]"):
        bundle.load(copy)
    path.unlink()
    with pytest.raises(DataError, match="missing .the bundle's fitted feature statistics"):
        bundle.load(copy)
