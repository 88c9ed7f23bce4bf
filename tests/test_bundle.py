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
from tympan.store import open_split, store_dir


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


def test_sliding_windows_start_every_hop_and_one_more_ends_at_the_end(tiny_workspace, tiny_run):
    """The documented rule: windows start at 0, hop, 2 hop ...; where the last of them stops
    short of the end, one more window ends exactly at the end (0.44 s, 0.4/0.2: 0-0.4, 0.04-0.44)."""
    predictor = bundle.load(tiny_run[0] / "bundle")
    clip = sorted((tiny_workspace[0] / "data/raw/fsdd/recordings").glob("*_yweweler_*.wav"))[0]
    samples = np.resize(audio.load(clip, 16000)[0], 6880)  # 44 frames at 100 frames/s: 0.44 s of features
    spans, _, _ = predictor.predict_windows(samples, 16000, window=0.4, hop=0.2)
    assert spans == [(0.0, 0.4), (0.04, 0.44)]
    spans, _, _ = predictor.predict_windows(np.resize(samples, 9440), 16000, window=0.4, hop=0.2)  # 60 frames
    assert spans == [(0.0, 0.4), (0.2, 0.6)]


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


def _edit_manifest(change, literal=None):
    """A damage that edits bundle.json; with `literal`, the value "@" is then written as that JSON text."""

    def damage(copy):
        manifest = json.loads((copy / bundle.MANIFEST).read_text())
        change(manifest)
        text = json.dumps(manifest)
        (copy / bundle.MANIFEST).write_text(text.replace('"@"', literal) if literal else text)

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
    "no task": (_edit_manifest(lambda m: m.pop("task")), "'task': Field required"),
    "no model target": (_edit_manifest(lambda m: m["model"].pop("target")), "'model.target': Field required"),
    "offline not a list": (
        _edit_manifest(lambda m: m["features"].update(offline={"a": 1})),
        "'features.offline': Input should be a valid list",
    ),
    "transform args not a mapping": (
        _edit_manifest(lambda m: m["features"]["online"][0].update(args=[1, 2])),
        "'features.online.0.args': Input should be a valid dictionary",
    ),
    "an unknown key": (_edit_manifest(lambda m: m["input"].update(hop=1)), "'input.hop': Extra inputs are not"),
    "min_frames huge": (
        _edit_manifest(lambda m: m["input"].update(min_frames=10**12)),
        "'input.min_frames': Input should be less than or equal to 100000",
    ),
    "min_frames negative": (
        _edit_manifest(lambda m: m["input"].update(min_frames=-5)),
        "'input.min_frames': Input should be greater than or equal to 1",
    ),
    "min_frames not the model's": (
        _edit_manifest(lambda m: m["input"].update(min_frames=3)),
        "'input.min_frames' is 3, but tympan.models.cnn:SmallCNN needs 4",
    ),
    "a rate the pipeline does not give": (
        _edit_manifest(lambda m: m["input"].update(sample_rate=8000)),
        "'input.sample_rate' is 8000, but the feature pipeline gives 16000",
    ),
    "a served name that is no URL segment": (
        _edit_manifest(lambda m: m.update(experiment="a/b")),
        "'experiment': String should match pattern",
    ),
    "NaN": (_edit_manifest(lambda m: m["model"]["args"].update(dropout="@"), "NaN"), "NaN is not a number"),
    "a float past the range": (
        _edit_manifest(lambda m: m["metrics"].update(huge="@"), "1e400"),
        "1e400 is out of range",
    ),
    "nested 200,000 deep": (
        lambda c: (c / bundle.MANIFEST).write_text("[" * 200_000 + "]" * 200_000),
        "nested too deeply to be a bundle manifest",
    ),
    "a recorded pipeline other than the features": (
        _edit_manifest(lambda m: m["pipeline"]["transforms"][0]["args"].update(n_mels=128)),
        "'pipeline.transforms' is not what its 'features' build",
    ),
    "outputs other than the task's": (
        _edit_manifest(lambda m: m["outputs"][0].update(name="score")),
        "'outputs' are not the outputs of its task and state",
    ),
    "a pretrained file named": (
        _edit_manifest(lambda m: m["model"]["args"].update(pretrained="/etc/passwd")),
        "'model.args.pretrained': a bundle's weights are its own",
    ),
    "sizes other than the features give": (
        _edit_manifest(lambda m: m["model"]["args"].update(n_mels=32)),
        "'model.args.n_mels' is 32, but the features and the task give 64",
    ),
    "a model far larger than its weights": (  # built on the meta device: nothing is allocated
        _edit_manifest(lambda m: m["model"]["args"].update(channels=[100_000, 100_000, 100_000])),
        "the weights do not fit tympan.models.cnn:SmallCNN",
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


@pytest.mark.parametrize("key, value", [("center", 1e308), ("scale", 1e31), ("scale", 0.0)])
def test_a_regression_bundle_whose_scaling_overflows_is_refused(key, value, toy_regression_run, tmp_path):
    """Predictions leave the model as float32: a tampered center or scale that makes them infinite
    (served as null) is refused at load, naming the state key."""
    copy = tmp_path / "bundle"
    shutil.copytree(toy_regression_run[0] / "bundle", copy)
    _edit_manifest(lambda m: m["task"]["state"][key].__setitem__(0, value))(copy)
    with pytest.raises(DataError, match=rf"task.state: task state '{key}' must be a list of 2 finite numbers in"):
        bundle.load(copy)
