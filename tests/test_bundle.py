"""The model bundle and inference: raw audio in, the training-time results out."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from tympan import audio, bundle, inference
from tympan.errors import DataError
from tympan.feature_store import open_split, store_dir


def test_bundle_reproduces_the_dev_accuracy_of_training(tiny_workspace, tiny_run):
    from tympan import config as configuration
    from tympan import stages

    _, raw = tiny_workspace
    run_dir, summary = tiny_run
    predictor = bundle.load(run_dir / "bundle")
    assert predictor.task.labels == [str(d) for d in range(10)] and predictor.sample_rate == 16000
    index = stages.index_of(configuration.parse(raw))
    dev = index.split("dev")
    correct = 0
    for row in dev:
        samples, rate = audio.load(index.path_of(row))  # 8 kHz: the bundle resamples
        correct += predictor.predict(samples, rate).outputs["label"] == row["label"]
    assert correct / len(dev) == pytest.approx(summary["dev"]["accuracy"], abs=1e-9)


def test_features_match_the_feature_store(tiny_workspace, tiny_run):
    import torch

    from tympan import config as configuration

    root, raw = tiny_workspace
    predictor = bundle.load(tiny_run[0] / "bundle")
    split = open_split(store_dir(configuration.parse(raw), "fsdd"), "dev")
    samples, rate = audio.load(root / "data/raw/fsdd" / split.rows[0]["path"])
    stored = torch.from_numpy(np.array(split.clip(0)))
    std, mean = torch.std_mean(stored)  # the tiny experiment's online per-clip normalisation
    assert torch.allclose(predictor.features(samples, rate), (stored - mean) / (std + 1e-5), atol=1e-4)


def test_predictions_do_not_depend_on_batching(tiny_workspace, tiny_run):
    root, _ = tiny_workspace
    predictor = bundle.load(tiny_run[0] / "bundle")
    files = sorted((root / "data/raw/fsdd/recordings").glob("*_yweweler_*.wav"))[:6]
    clips = [predictor.features(*audio.load(f)) for f in files]
    clips.append(clips[0].clone())  # two of the same length run as one batch
    together = predictor.predict_features(clips, embeddings=True)
    for clip, result in zip(clips, together, strict=True):
        alone = predictor.predict_features([clip], embeddings=True)[0]
        np.testing.assert_allclose(alone.scores, result.scores, atol=1e-5)
        assert alone.embedding.shape == result.embedding.shape == (16,)
    assert abs(together[0].scores.sum() - 1) < 1e-5


def test_sliding_windows_cover_a_long_recording(tiny_workspace, tiny_run):
    root, _ = tiny_workspace
    predictor = bundle.load(tiny_run[0] / "bundle")
    files = sorted((root / "data/raw/fsdd/recordings").glob("*_yweweler_*.wav"))[:8]
    long = np.concatenate([audio.load(f, 16000)[0] for f in files])
    spans, windows, mean = predictor.predict_windows(long, 16000, window=0.5, hop=0.25)
    assert spans[0][0] == 0 and spans[-1][1] == pytest.approx(len(long) / 16000, abs=0.011)
    assert all(b[0] - a[0] == pytest.approx(0.25) for a, b in zip(spans[:-2], spans[1:-1], strict=True))
    np.testing.assert_allclose(mean.scores, np.mean([w.scores for w in windows], axis=0), rtol=1e-6)
    assert mean.outputs["label"] == predictor.task.labels[int(mean.scores.argmax())]


def test_not_a_bundle(tmp_path):
    with pytest.raises(DataError, match="not a tympan bundle"):
        bundle.load(tmp_path)


def test_inference_over_a_folder_with_a_bad_file(tiny_workspace, tiny_run, tmp_path):
    root, _ = tiny_workspace
    predictor = bundle.load(tiny_run[0] / "bundle")
    folder = tmp_path / "audio"
    folder.mkdir()
    for f in sorted((root / "data/raw/fsdd/recordings").glob("*_yweweler_1*.wav"))[:3]:
        samples, rate = sf.read(f)
        sf.write(folder / f"{f.stem}.flac", samples, rate)
    (folder / "broken.wav").write_bytes(b"not audio at all")
    sf.write(folder / "click.wav", np.zeros(40, np.float32), 8000)  # 5 ms: shorter than one STFT window
    results = inference.run(predictor, [folder], embeddings=True, progress=False)
    assert len(results.rows) == 3
    assert [(Path(f).name, "too short" in reason) for f, reason in results.failed] == [
        ("broken.wav", False),
        ("click.wav", True),
    ]
    written = inference.write(results, tmp_path / "out.csv")
    header = (tmp_path / "out.csv").read_text().splitlines()[0].split(",")
    assert header == ["file", "label", *[f"prob_{d}" for d in range(10)]]
    assert np.load(written[1]).shape == (3, 16)
    windows = inference.run(predictor, [folder], window=0.3, hop=0.1, progress=False)
    assert {row["window"] for row in windows.rows} >= {"0", "1", "mean"}
    assert sum(row["window"] == "mean" for row in windows.rows) == 3


def _edit_weights(change):
    def damage(copy):
        weights = load_file(copy / bundle.WEIGHTS)
        change(weights)
        save_file(weights, copy / bundle.WEIGHTS)

    return damage


def _edit_manifest(change):
    def damage(copy):
        manifest = json.loads((copy / bundle.MANIFEST).read_text())
        change(manifest)
        (copy / bundle.MANIFEST).write_text(json.dumps(manifest))

    return damage


DAMAGES = {
    "weights not safetensors": (
        lambda c: (c / bundle.WEIGHTS).write_bytes(b"\x80\x04not safetensors"),
        "not a readable safetensors file",
    ),
    "weights missing": (lambda c: (c / bundle.WEIGHTS).unlink(), "missing (the bundle's weights)"),
    "missing key": (
        _edit_weights(lambda w: w.pop("out.bias")),
        "do not fit tympan.models.cnn:SmallCNN: missing key(s) out.bias",
    ),
    "unexpected key": (_edit_weights(lambda w: w.update(extra=torch.zeros(2))), "unexpected key(s) extra"),
    "wrong shape": (
        _edit_weights(lambda w: w.update({"out.weight": torch.zeros(10, 8)})),
        "out.weight has shape (10, 8), the model needs (10, 16)",
    ),
    "manifest not JSON": (lambda c: (c / bundle.MANIFEST).write_text("{not json"), "bundle.json: not valid JSON"),
    "manifest a list": (lambda c: (c / bundle.MANIFEST).write_text("[]"), "must hold a JSON object"),
    "no task": (_edit_manifest(lambda m: m.pop("task")), "missing key 'task'"),
    "no model target": (_edit_manifest(lambda m: m["model"].pop("target")), "missing key 'model.target'"),
    "offline not a list": (
        _edit_manifest(lambda m: m["features"].update(offline={"a": 1})),
        "'features.offline' has the wrong type (dict)",
    ),
    "transform args not a mapping": (
        _edit_manifest(lambda m: m["features"]["online"][0].update(args=[1, 2])),
        "'features.online.0' must be an object with a 'target' and 'args'",
    ),
    "labels not strings": (
        _edit_manifest(lambda m: m["task"]["state"].update(labels=[1, 2])),
        "task.state: ",
    ),
    "unknown normalisation": (
        _edit_manifest(lambda m: m["features"]["online"][0]["args"].update(mode="loud")),
        "the feature pipeline does not build",
    ),
    "mismatched chain": (
        _edit_manifest(lambda m: m["features"]["online"].insert(0, {"target": "tympan.transforms.mfcc:MFCC"})),
        "MFCC takes waveform, but its input is frames",
    ),
    "args the class refuses": (
        _edit_manifest(lambda m: m["model"]["args"].update(nope=1)),
        "cannot build the model tympan.models.cnn:SmallCNN",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_broken_bundle_is_one_clear_error(damage, tiny_run, tiny_workspace, tmp_path, capsys):
    from tympan.cli import main

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_run[0] / "bundle", copy)
    change, needle = DAMAGES[damage]
    change(copy)
    with pytest.raises(DataError) as error:
        bundle.load(copy)
    assert needle in str(error.value) and str(copy) in str(error.value)
    clip = next((tiny_workspace[0] / "data/raw/fsdd/recordings").glob("*.wav"))
    assert main(["inference", str(copy), str(clip)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tympan: error: ") and needle in err[0]


def test_a_bundle_of_the_first_format_still_loads_and_predicts_the_same(tiny_run, tiny_workspace, tmp_path):
    """Bundles written before tasks and the feature pipeline (tympan-bundle/1: labels, one
    extractor, a normalisation name) are read as today's, with the same predictions."""
    import json

    current = json.loads((tiny_run[0] / "bundle/bundle.json").read_text())
    extractor = current["features"]["offline"][0]
    old = {
        "format": "tympan-bundle/1",
        "run_id": current["run_id"],
        "experiment": current["experiment"],
        "task": "classification",
        "labels": current["task"]["state"]["labels"],
        "model": current["model"],
        "features": {"target": extractor["target"], "args": {**extractor["args"], "sample_rate": 16000}},
        "normalize": "utterance",
        "input": {k: v for k, v in current["input"].items() if k != "kind"},
        "metrics": current["metrics"],
        "data": current["data"],
    }
    copy = tmp_path / "old"
    shutil.copytree(tiny_run[0] / "bundle", copy)
    (copy / "bundle.json").write_text(json.dumps(old))
    clip = sorted((tiny_workspace[0] / "data/raw/fsdd/recordings").glob("*_yweweler_*.wav"))[0]
    samples, rate = audio.load(clip)
    then, now = bundle.load(copy).predict(samples, rate), bundle.load(tiny_run[0] / "bundle").predict(samples, rate)
    assert then.outputs["label"] == now.outputs["label"]
    np.testing.assert_allclose(then.scores, now.scores, atol=1e-6)
