"""Speaker and learnable-front-end families: ECAPA-TDNN (SpeechBrain's network, its checkpoint
directory read as data), LEAF and its PCEN-only variant, and resemblyzer's pretrained speaker
encoder as a frozen backbone. Each trains an epoch on real FSDD, learns a fixed batch, is bundled
and served with the answers of in-process prediction, and gives a clip the same output alone as in
a padded batch."""

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

from tests.conftest import free_port
from tests.test_sequence_models import alone_and_batched, digits, pad  # noqa: F401 (digits: a fixture)
from tests.test_weights import Payload
from tympan import audio, bundle, stages
from tympan import config as configuration
from tympan.errors import ConfigError, DataError
from tympan.models import ECAPA, LEAF, Resemblyzer, sizes
from tympan.models.leaf import PCEN
from tympan.models.resemblyzer_encoder import wheel_weights
from tympan.transforms import KaldiFbank

httpx = pytest.importorskip("httpx")

TINY_ECAPA = {
    "channels": [16, 16, 16, 16, 48], "attention_channels": 8, "res2net_scale": 4, "se_channels": 8,
    "lin_neurons": 16, "hidden": [16],
}  # fmt: skip
TINY_LEAF = {"filters": 8, "channels": [8, 16]}
FBANK24 = {"preset": "Fbank16k", "offline": [{"preset": "KaldiFbank", "args": {"num_mel_bins": 24}}]}
FAMILIES = {
    "ecapa": {"features": FBANK24, "model": {"preset": "ECAPA", "args": TINY_ECAPA}},
    "leaf": {"features": {"preset": "Waveform16k"}, "model": {"preset": "LEAF", "args": TINY_LEAF}},
    "pcen": {"features": {"preset": "Waveform16k"}, "model": {"preset": "PCEN", "args": TINY_LEAF}},
    "resemblyzer": {
        "features": {"preset": "Waveform16k"},
        "model": {"preset": "Resemblyzer", "args": {"hidden": [32]}},
    },
}
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "yweweler")


def recording(fsdd_mirror, digit: int, speaker: str, take: int) -> torch.Tensor:
    return torch.from_numpy(audio.load(fsdd_mirror / f"fsdd/recordings/{digit}_{speaker}_{take}.wav", 16000)[0])


def config_for(family: str, root, fsdd_mirror) -> dict:
    """One epoch on FSDD's first take: george and jackson train (20 clips), yweweler dev, lucas test."""
    subset = root / "fsdd/recordings"
    if not subset.is_dir():
        subset.mkdir(parents=True)
        for clip in (fsdd_mirror / "fsdd/recordings").glob("*.wav"):
            if clip.stem.endswith("_0"):
                (subset / clip.name).symlink_to(clip)
    split = {"train_speakers": ["george", "jackson"], "dev_speakers": ["yweweler"], "test_speakers": ["lucas"]}
    raw = {
        "experiment": f"speaker-{family}",
        "seed": 1,
        "scheduler": None,
        "task": "classification",
        "dataset": {"preset": "FSDD", "root": str(root / "raw"), "args": {"source": str(root / "fsdd"), **split}},
        "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}},
        "training": {"epochs": 1, "batch_size": 16, "progress": False},
        **FAMILIES[family],
    }
    raw["features"] = {**raw["features"], "root": str(root / "features")}
    return raw


@pytest.fixture(scope="module")
def runs(fsdd_mirror, tmp_path_factory) -> dict:
    """family -> the run directory of one epoch of it (data and features shared)."""
    root = tmp_path_factory.mktemp("speaker-families")
    found = {}
    for family in FAMILIES:
        config = configuration.parse(config_for(family, root, fsdd_mirror))
        stages.fetch(config)
        stages.preprocess(config)
        found[family], _ = stages.train(config, root / "runs" / family)
    return found


# ---------------------------------------------------------------- trained, bundled, served


def test_every_family_trains_an_epoch_and_its_served_bundle_answers_as_in_process(runs, tmp_path):
    for family, run_dir in runs.items():
        rows = (run_dir / "metrics.csv").read_text().splitlines()
        assert len(rows) == 2, f"{family}: one epoch, one row"
    servers = {}
    try:
        for family, run_dir in runs.items():  # started together: their start-up is mostly imports
            port, log = free_port(), tmp_path / f"{family}.log"
            command = [sys.executable, "-m", "tympan.cli", "serve", str(run_dir / "bundle"), "--port", str(port)]
            with open(log, "wb") as out:
                servers[family] = (subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT), port, log)
        files = sorted((next(iter(runs.values())).parent.parent / "raw/fsdd/recordings").glob("*_yweweler_*.wav"))[:4]
        body = {"instances": [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files]}
        for family, (process, port, log) in servers.items():
            url = f"http://127.0.0.1:{port}/v1/models/speaker-{family}"
            wait_for_model(url, process, log)
            answers = httpx.post(f"{url}:predict", json=body, timeout=60).json()["predictions"]
            predictor = bundle.load(runs[family] / "bundle")
            for file, answer in zip(files, answers, strict=True):
                expected = predictor.predict(*audio.load(file))
                assert answer["label"] == expected.outputs["label"], family
                probabilities = [answer["probabilities"][label] for label in predictor.task.labels]
                np.testing.assert_allclose(probabilities, expected.scores, atol=1e-5, err_msg=family)
    finally:
        for process, _, _ in servers.values():
            process.terminate()
        for process, _, _ in servers.values():
            process.wait(30)


def wait_for_model(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} never answered")


def test_the_resemblyzer_bundle_carries_the_encoder_and_names_its_source(runs):
    """The bundle rebuilds the model without `pretrained` (a fresh, random encoder), so equal weights
    can only have come from the bundle's own file; the manifest names the wheel and its sha256."""
    predictor = bundle.load(runs["resemblyzer"] / "bundle")
    assert "pretrained" not in predictor.manifest["model"]["args"]
    record = predictor.manifest["model"]["pretrained"]
    assert record["name"] == "resemblyzer==0.1.4" and len(record["sha256"]) == 64
    wheel = torch.load(wheel_weights(), weights_only=True, map_location="cpu")["model_state"]
    encoder = predictor.model.encoder.state_dict()
    assert set(encoder) == set(wheel) - {"similarity_weight", "similarity_bias"}
    assert all(torch.equal(encoder[k], wheel[k]) for k in encoder)
    assert not torch.equal(Resemblyzer().encoder.lstm.weight_hh_l0, wheel["lstm.weight_hh_l0"])


def test_a_clip_alone_and_in_a_padded_batch_gives_the_same_output(runs, digits):  # noqa: F811
    """Trained models (batch norm statistics of real data); five FSDD clips and one shorter than the
    model takes; padding that is not zero. Without the lengths, the padding changes the answers."""
    for family, run_dir in runs.items():
        predictor = bundle.load(run_dir / "bundle")
        model = predictor.model.eval()
        inputs = [torch.as_tensor(predictor.features(clip.numpy(), 16000)) for clip in digits]
        inputs.append(inputs[0][: max(1, model.min_frames // 2)])
        alone, batched = alone_and_batched(model, inputs, pad_value=0.7)
        assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5), family
        with torch.no_grad():
            longest = max(len(x) for x in inputs) + 997
            unmasked = model.embed(torch.cat([pad(x[None], longest, 0.7) for x in inputs]))
        assert (unmasked - alone).abs().max() > 1e-3, family


def test_pcen_s_smoother_never_looks_ahead():
    pcen = PCEN(4)
    energies = torch.rand(2, 4, 50)
    followed = torch.cat([energies, 100 * torch.rand(2, 4, 30)], dim=2)
    with torch.no_grad():
        assert torch.equal(pcen(energies), pcen(followed)[..., :50])
        earlier = energies.clone()
        earlier[..., 10] += 5.0  # what came before does reach later frames
        assert (pcen(earlier) - pcen(energies))[..., 20:].abs().min() > 0


# ---------------------------------------------------------------- a fixed batch learnt


@pytest.mark.parametrize("family", ["ecapa", "leaf", "pcen", "resemblyzer"])
def test_each_learns_a_fixed_batch_of_real_clips(family, fsdd_mirror):
    clips = [recording(fsdd_mirror, d, s, 0) for d in (1, 7) for s in SPEAKERS[:4]]  # 8 clips, 4 voices
    targets = torch.arange(8) % 4
    torch.manual_seed(0)
    if family == "ecapa":
        fbank = KaldiFbank(num_mel_bins=24, sample_rate=16000)
        inputs = [fbank(c) for c in clips]
        model = ECAPA(n_mels=24, n_outputs=4, **TINY_ECAPA)
    else:
        inputs = clips
        model = Resemblyzer(n_outputs=4, pretrained="resemblyzer") if family == "resemblyzer" else None
        model = model or LEAF(n_outputs=4, filterbank="gabor" if family == "leaf" else "mel", **TINY_LEAF)
    lengths = torch.tensor([len(x) for x in inputs])
    x = torch.stack([pad(i[None], int(lengths.max()), 0.0)[0] for i in inputs])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x, lengths), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------- ECAPA: a SpeechBrain checkpoint directory


def speechbrain_directory(folder, marker) -> dict:
    """A SpeechBrain model directory as its recipes save one: embedding_model.ckpt (a state dict of
    SpeechBrain's own ECAPA_TDNN) beside a hyperparams.yaml whose `!new:` tag would run a command."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    torch.manual_seed(7)
    network = ECAPA_TDNN(24, **{k: v for k, v in TINY_ECAPA.items() if k != "hidden"})
    folder.mkdir()
    torch.save(network.state_dict(), folder / "embedding_model.ckpt")
    (folder / "hyperparams.yaml").write_text(
        f"n_mels: 24\nembedding_model: !new:subprocess.Popen\n  args: [touch, {marker}]\n"
    )
    return network.state_dict()


def test_ecapa_loads_a_speechbrain_directory_as_data_through_the_config(tmp_path, monkeypatch):
    marker = tmp_path / "yaml-ran"
    state = speechbrain_directory(tmp_path / "spkrec", marker)
    model = {"preset": "ECAPA", "args": {**TINY_ECAPA, "pretrained": str(tmp_path / "spkrec")}}
    config = configuration.parse(
        {"dataset": {"preset": "FSDD", "root": str(tmp_path)}, "features": FBANK24, "model": model}
    )
    output = config.features.pipeline().output

    def built() -> ECAPA:
        return config.model.build_checked("model", **sizes(output, 10, ECAPA))

    model = built()
    own = model.ecapa.state_dict()
    assert set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in state)
    assert model.provenance.sha256 and not marker.exists()

    # the yaml is what the test says: an object-constructing tag that SpeechBrain's loader
    # (HyperPyYAML) would call (that loader does not run beside ruamel.yaml 0.19, which DVC needs)
    node = yaml.compose((tmp_path / "spkrec/hyperparams.yaml").read_text())
    tags = {value.tag for _, value in node.value}
    assert "!new:subprocess.Popen" in tags and str(marker) in (tmp_path / "spkrec/hyperparams.yaml").read_text()

    # a hub id reads the same file, here from the weights mirror
    mirror = tmp_path / "mirror/huggingface/speechbrain/spkrec-tiny"
    mirror.mkdir(parents=True)
    (mirror / "embedding_model.ckpt").write_bytes((tmp_path / "spkrec/embedding_model.ckpt").read_bytes())
    monkeypatch.setenv("TYMPAN_WEIGHTS_MIRROR", str(tmp_path / "mirror"))
    from_hub = ECAPA(n_mels=24, pretrained="speechbrain/spkrec-tiny", **TINY_ECAPA)
    assert torch.equal(from_hub.ecapa.fc.conv.weight, state["fc.conv.weight"])

    # a key missing and one unknown: an error naming both
    broken = dict(state)
    broken["asp.extra.weight"] = broken.pop("asp_bn.norm.weight")
    torch.save(broken, tmp_path / "spkrec/embedding_model.ckpt")
    with pytest.raises(DataError) as err:
        built()
    assert "asp_bn.norm.weight" in str(err.value) and "asp.extra.weight" in str(err.value)
    assert "hyperparams.yaml" in str(err.value)

    # a checkpoint whose unpickling would run code is refused, and runs none
    payload = tmp_path / "pickle-ran"
    torch.save({"fc.conv.weight": Payload(payload)}, tmp_path / "spkrec/embedding_model.ckpt")
    with pytest.raises(DataError) as err:
        built()
    assert "would run code" in str(err.value) and not payload.exists()


# ---------------------------------------------------------------- resemblyzer: its own encoder, in a batch


@pytest.mark.filterwarnings("ignore::DeprecationWarning:resemblyzer")  # its scipy.ndimage.morphology import
def test_resemblyzer_embeddings_are_its_own_and_tell_fsdd_speakers_apart(fsdd_mirror):
    from resemblyzer import VoiceEncoder, wav_to_mel_spectrogram
    from resemblyzer.audio import normalize_volume

    model = Resemblyzer(n_outputs=5, pretrained="resemblyzer").eval()
    clips = {(s, d, t): recording(fsdd_mirror, d, s, t) for s in SPEAKERS for d in range(10) for t in (0, 1)}
    keys = list(clips)
    lengths = torch.tensor([len(clips[k]) for k in keys])
    batch = torch.stack([F.pad(clips[k], (0, int(lengths.max()) - len(clips[k]))) for k in keys])
    with torch.no_grad():
        embeddings = dict(zip(keys, model.embed(batch, lengths), strict=True))

    # the same numbers as resemblyzer's own encoder on its own (librosa) Mels of a whole clip
    reference = VoiceEncoder("cpu", verbose=False)
    for key in keys[:3]:
        wav = normalize_volume(clips[key].numpy(), -30, increase_only=True)
        with torch.no_grad():
            theirs = reference(torch.from_numpy(wav_to_mel_spectrogram(wav))[None])[0]
        assert torch.allclose(embeddings[key], theirs, atol=1e-5)

    # nearest speaker centroid of the first takes, for the second takes: chance is 1 in 5
    centroids = F.normalize(torch.stack([sum(embeddings[s, d, 0] for d in range(10)) for s in SPEAKERS]), dim=1)
    second = [(s, d) for s in SPEAKERS for d in range(10)]
    guessed = [SPEAKERS[int((centroids @ embeddings[s, d, 1]).argmax())] for s, d in second]
    accuracy = np.mean([g == s for g, (s, _) in zip(guessed, second, strict=True)])
    assert accuracy >= 0.9, accuracy


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ECAPA(kernel_sizes=[5, 3, 3]), "kernel_sizes must have one entry per layer of channels (5)"),
        (lambda: ECAPA(channels=[64, 60, 64, 64, 192]), "res2net_scale=8 must divide the SE-Res2Net blocks' channels"),
        (lambda: ECAPA(pretrained=""), "pretrained must be"),
        (lambda: LEAF(filterbank="stft"), "filterbank must be one of gabor, mel, got 'stft'"),
        (lambda: LEAF(filters=4, channels=[8, 8, 8, 8]), "filters=4 is fewer than the 2^3 the CNN's 3 poolings halve"),
        (lambda: LEAF(fmin=9000.0), "fmin=9000.0 must be below fmax and half the sample rate"),
        (lambda: Resemblyzer(sample_rate=8000), "sample_rate must be 16000, got 8000"),
        (lambda: Resemblyzer(pretrained="nowhere.pt"), "pretrained: nowhere.pt: no such file"),
    ],
)
def test_constructors_refuse_bad_arguments_by_name(build, message):
    with pytest.raises((ValueError, DataError)) as err:
        build()
    assert message in str(err.value)


def test_resemblyzer_on_8_khz_features_is_refused_at_config_load(tmp_path):
    raw = {"dataset": {"preset": "FSDD", "root": str(tmp_path)}, "model": "Resemblyzer"}
    raw["features"] = {"preset": "Waveform16k", "sample_rate": 8000}
    with pytest.raises((ConfigError, ValueError)) as err:
        configuration.parse(raw)
    assert "Resemblyzer takes 16 kHz audio" in str(err.value)
