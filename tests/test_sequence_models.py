"""The recurrent families: SeqFFNN on frames and CRNN (emo18, zhao19) on the raw waveform. A
clip's output does not depend on the padding of its batch; each learns a fixed batch; each trains
on the toy data, and its bundle is served with the answers of in-process prediction; a SeqFFNN
run killed mid-epoch resumes to the numbers of one that never stopped."""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.conftest import free_port, kill_once_last_exists
from tests.test_models import trained_like
from tympan import audio, bundle, stages
from tympan import config as configuration
from tympan.models import CRNN, SeqFFNN
from tympan.transforms import PannLogMel

httpx = pytest.importorskip("httpx")

FAMILIES = {
    "seqffnn": {
        "features": {"preset": "PannLogMel16k", "online": ["Normalize"]},
        "model": {"preset": "SeqFFNN", "args": {"hidden_size": 32, "layers": 1, "hidden": [32]}},
    },
    "crnn": {
        "features": {"preset": "Waveform16k", "online": ["Normalize"]},
        "model": {"preset": "CRNNZhao19", "args": {"hidden_size": 32, "layers": 1}},
    },
}


@pytest.fixture(scope="module")
def digits(fsdd_mirror) -> list[torch.Tensor]:
    """Five real recordings of different lengths, resampled to 16 kHz."""
    paths = sorted((fsdd_mirror / "fsdd/recordings").glob("*_jackson_2.wav"))[:5]
    clips = [torch.from_numpy(audio.load(p, 16000)[0]) for p in paths]
    assert len({len(c) for c in clips}) == 5
    return clips


def alone_and_batched(model, clips: list[torch.Tensor], pad_value: float = 0.0):
    """Each clip's embedding alone (padded to `min_frames` only) and in one padded batch."""
    minimum = model.min_frames
    with torch.no_grad():
        alone = torch.cat([model.embed(pad(c[None], max(len(c), minimum), pad_value)) for c in clips])
        longest = max(len(c) for c in clips) + 997
        batch = torch.cat([pad(c[None], longest, pad_value) for c in clips])
        batched = model.embed(batch, torch.tensor([len(c) for c in clips]))
    return alone, batched


def pad(x: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """(1, time[, bins]) padded at the end of time to `length`."""
    padding = (0, 0, 0, length - x.shape[1]) if x.ndim == 3 else (0, length - x.shape[1])
    return F.pad(x, padding, value=value)


@pytest.mark.parametrize("variant", ["emo18", "zhao19"])
def test_crnn_output_does_not_depend_on_the_batch_padding(variant, digits):
    model = trained_like(CRNN(n_outputs=10, variant=variant, hidden_size=32))
    short = digits[0][: model.min_frames // 2]  # shorter than the model takes: padded to min_frames alone too
    alone, batched = alone_and_batched(model, [*digits, short])
    assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
@pytest.mark.parametrize("cell, bidirectional", [("lstm", True), ("gru", False)])
def test_seqffnn_output_does_not_depend_on_the_batch_padding(pooling, cell, bidirectional, digits):
    frames = [PannLogMel(sample_rate=16000)(clip) for clip in digits]
    model = SeqFFNN(n_bins=64, n_outputs=10, cell=cell, bidirectional=bidirectional, pooling=pooling, hidden_size=24)
    alone, batched = alone_and_batched(model.eval(), frames, pad_value=-5.0)
    assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)
    # the padding is what the lengths keep out: without them it changes the answer
    with torch.no_grad():
        unmasked = model.embed(torch.cat([pad(f[None], 400, -5.0) for f in frames]))
    assert (unmasked - alone).abs().max() > 1e-3


def test_crnn_needs_exactly_min_frames_samples():
    for variant, shortest in (("emo18", 731), ("zhao19", 256)):
        model = CRNN(n_outputs=3, variant=variant, hidden_size=8).eval()
        assert model.min_frames == shortest
        assert int(model.frames(torch.tensor(shortest))) == 1 and int(model.frames(torch.tensor(shortest - 1))) == 0
        with torch.no_grad():
            assert model(torch.randn(2, shortest)).shape == (2, 3)


@pytest.mark.parametrize(
    "model, x",
    [
        (SeqFFNN(n_bins=16, n_outputs=3, hidden_size=16, layers=1), torch.randn(8, 30, 16)),
        (CRNN(n_outputs=3, variant="zhao19", hidden_size=16, layers=1), torch.randn(8, 2000)),
    ],
    ids=["seqffnn", "crnn"],
)
def test_each_learns_a_fixed_batch(model, x):
    torch.manual_seed(0)
    targets = torch.arange(8) % 3
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: SeqFFNN(cell="rnn"), "cell must be one of lstm, gru, got 'rnn'"),
        (lambda: SeqFFNN(pooling="max"), "pooling must be one of last, mean, attention, got 'max'"),
        (lambda: SeqFFNN(bidirectional=1), "bidirectional must be true or false, got 1"),
        (lambda: SeqFFNN(hidden_size=0), "hidden_size must be an integer in (0, 8192], got 0"),
        (lambda: SeqFFNN(hidden_size=100_000), "hidden_size must be an integer in (0, 8192], got 100000"),
        (lambda: SeqFFNN(head_dropout=1), "head_dropout must be a number in [0, 1), got 1"),
        (lambda: SeqFFNN(hidden=[0]), "hidden must be a list of positive integers"),
        (lambda: CRNN(variant="emo16"), "variant must be one of emo18, zhao19, got 'emo16'"),
        (lambda: CRNN(layers=0), "layers must be an integer in (0, 64], got 0"),
    ],
)
def test_constructors_refuse_bad_arguments_by_name(build, message):
    with pytest.raises(ValueError) as err:
        build()
    assert message in str(err.value)


# ---------------------------------------------------------------- trained, bundled, served


def family_config(family: str, root) -> dict:
    raw = {
        "experiment": f"family-{family}",
        "dataset": {"preset": "ToyClassification", "root": str(root / "raw")},
        "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}},
        "training": {"steps": 12, "batch_size": 16, "eval_every": 6, "save_every": 2, "progress": False},
        **FAMILIES[family],
    }
    raw["features"] = {**raw["features"], "root": str(root / "features")}
    return raw


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_run(request, tmp_path_factory):
    """(family, raw config, run dir) of a short toy run."""
    root = tmp_path_factory.mktemp(request.param)
    raw = family_config(request.param, root)
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config)
    run_dir, summary = stages.train(config, root / "run")
    assert summary["dev"]["accuracy"] > 0
    return request.param, raw, run_dir


def test_served_answers_are_in_process_predictions(family_run, tmp_path):
    family, _, run_dir = family_run
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "tympan.cli", "serve", str(run_dir / "bundle"), "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/family-{family}"
        for _ in range(300):
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        predictor = bundle.load(run_dir / "bundle")
        files = sorted((run_dir.parent / "raw/toy_classification/dev").glob("*.wav"))[:4]
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


@pytest.mark.parametrize("family_run", ["seqffnn"], indirect=True)  # CRNN shares its recurrent part
def test_seqffnn_killed_mid_run_resumes_to_the_same_numbers(family_run, tmp_path):
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


def test_a_real_recording_through_the_bundle_matches_its_padded_batch(family_run, digits):
    """The bundle predicts a clip alone as it does inside a batch of longer ones."""
    _, _, run_dir = family_run
    predictor = bundle.load(run_dir / "bundle")
    features = [predictor.features(clip.numpy(), 16000) for clip in digits]
    together = predictor.predict_features(features)  # equal shapes only batch together: force one batch
    x, lengths = predictor.pipeline.pad(features, predictor.min_frames)
    with torch.no_grad():
        batched = predictor.task.scores(predictor.model(x, lengths)).numpy()
    for alone, row in zip(together, batched, strict=True):
        np.testing.assert_allclose(alone.scores, row, atol=1e-5)
