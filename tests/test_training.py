"""Training on real FSDD features: run directory contents, determinism, batching."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from tympan import augmentations, stages
from tympan import config as configuration
from tympan.augmentations import SpecAugment, SpeedPerturb
from tympan.data import BucketBatchSampler
from tympan.errors import ConfigError, DataError
from tympan.store import open_split, read_meta, store_dir, stored_spec
from tympan.training import pick_device


def _config(raw, **training):
    return configuration.parse({**raw, "training": {**raw["training"], **training}})


def test_feature_store_is_packed_per_split(tiny_workspace):
    root, raw = tiny_workspace
    config = configuration.parse(raw)
    store = store_dir(config, "fsdd")
    meta = read_meta(store)
    assert meta["clips"] == {"train": 1000, "dev": 500, "test": 500}
    assert meta["targets"] == ["label"] and stored_spec(meta).frame_rate == 100.0
    assert sorted(p.name for p in (store / "train").iterdir()) == ["features.npy", "index.csv", "offsets.npy"]
    dev = open_split(store, "dev")
    assert isinstance(dev.features, np.memmap) and dev.features.shape[1] == 64
    assert {row["speaker"] for row in dev.rows} == {"yweweler"}
    # a clip's frames follow from its duration: 8 kHz file, hop of 10 ms, centred frames
    import soundfile as sf

    duration = sf.info(root / "data/raw/fsdd" / dev.rows[0]["path"]).duration
    assert dev.lengths()[0] == int(duration * 16000) // 160 + 1


def test_run_directory_and_identical_metrics_for_the_same_seed(tiny_workspace, tmp_path):
    root, raw = tiny_workspace
    config = _config(raw)
    first, summary = stages.train(config, tmp_path / "a")
    second, _ = stages.train(config, tmp_path / "b")
    for name in (
        "config.yaml",
        "metrics.csv",
        "summary.json",
        "best/model.safetensors",
        "last/training_state.pt",
        "plots/training_curves.png",
        "plots/confusion_dev.png",
        "plots/confusion_test.png",
    ):
        assert (first / name).is_file(), name
    assert (first / "metrics.csv").read_bytes() == (second / "metrics.csv").read_bytes()
    assert json.loads((first / "summary.json").read_text()) == summary
    assert set(summary) == {"task", "run", "dev", "test"} and 0 <= summary["dev"]["accuracy"] <= 1
    assert summary["task"]["tracking_metric"] == "accuracy" and summary["task"]["direction"] == "max"
    with open(first / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # the reported dev accuracy is that of the best epoch
    assert summary["dev"]["accuracy"] == pytest.approx(max(float(r["dev_accuracy"]) for r in rows))
    other, _ = stages.train(_config({**raw, "seed": 2}), tmp_path / "c")
    assert (other / "metrics.csv").read_bytes() != (first / "metrics.csv").read_bytes()


def test_empty_test_split_still_completes(tiny_workspace, tmp_path):
    _, raw = tiny_workspace
    args = {**raw["dataset"]["args"], "test_speakers": ["theo"]}
    dataset = {**raw["dataset"], "args": args, "root": str(tmp_path / "raw")}
    raw = {**raw, "dataset": dataset, "training": {**raw["training"], "epochs": 1}}
    raw["features"] = {**raw["features"], "root": str(tmp_path / "features")}
    config = configuration.parse(raw)
    stages.fetch(config)  # theo is not in the local copy
    stages.preprocess(config)
    _, summary = stages.train(config, tmp_path / "run")
    assert summary["test"] == {} and summary["dev"]["accuracy"] >= 0


def test_bucketing_covers_every_clip_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(15, 130, size=1000)
    for bucketing in (True, False):
        sampler = BucketBatchSampler(lengths, 32, seed=1, bucketing=bucketing)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(1000))
        padded = sum(len(b) * lengths[b].max() for b in batches) / lengths.sum()
        if bucketing:
            assert padded < 1.05
        else:
            assert padded > 1.5
    sampler.epoch = 2
    assert list(sampler) != batches  # a new order every epoch
    assert list(BucketBatchSampler(lengths, 32, seed=1)) == list(BucketBatchSampler(lengths, 32, seed=1))


def test_speed_perturbation_squeezes_time_and_raises_pitch():
    features = torch.zeros(100, 64)
    features[:, 20] = 1.0  # a steady tone in Mel bin 20
    faster = SpeedPerturb(min_rate=1.25, max_rate=1.25)(features, torch.Generator().manual_seed(0))
    assert faster.shape == (80, 64)
    assert int(faster.mean(dim=0).argmax()) > 20
    same = SpeedPerturb(min_rate=1.0, max_rate=1.0)(features, torch.Generator().manual_seed(0))
    assert torch.allclose(same, features)


def test_augmentations_share_the_mel_scale_of_the_features():
    cfg = configuration.parse(
        {
            "dataset": "FSDD",
            "features": {
                "offline": [{"target": "tympan.transforms.logmel:PannLogMel", "args": {"n_mels": 40, "fmax": 7000}}]
            },
            "model": "SmallCNN",
            "optimizer": "Adam",
            "augmentation": [{"target": "tympan.augmentations:SpeedPerturb", "args": {"fmin": 20}}],
        }
    )
    speed = augmentations.build(cfg.augmentation[0], cfg.features.shared_args())
    assert len(speed._centers) == 40 and speed._centers.max() < 7000
    assert speed._centers.min() < SpeedPerturb(fmin=50)._centers.min()  # its own fmin wins


def test_spec_augment_masks_with_the_clip_mean_and_is_seeded():
    features = torch.randn(50, 64)
    augment = SpecAugment(time_masks=1, time_width=10, freq_masks=1, freq_width=10)
    a = augment(features, torch.Generator().manual_seed(3))
    b = augment(features, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, features)
    assert torch.isclose(a[a != features], features.mean()).all()


def test_eval_every_early_stopping_and_clipping(tiny_workspace, tmp_path):
    _, raw = tiny_workspace
    # a linear model (no batch-norm statistics) at learning rate 0 never changes, so its dev
    # accuracy never improves after the first evaluation: patience 2 stops after the third
    source = tmp_path / "frozen.py"
    source.write_text(
        "import torch\n"
        "from tympan.models import AudioModel\n"
        "class Linear(AudioModel):\n"
        "    def __init__(self, n_mels, n_outputs):\n"
        "        super().__init__()\n"
        "        self.out = torch.nn.Linear(n_mels, n_outputs)\n"
        "    def embed(self, x, lengths=None):\n"
        "        return x.mean(dim=1)\n"
        "    def head(self, e):\n"
        "        return self.out(e)\n"
    )
    model = {"target": f"{source}:Linear"}
    optimizer = {**raw["optimizer"], "args": {"lr": 0.0}}
    training = {**raw["training"], "epochs": 9, "eval_every": 2, "patience": 2, "grad_clip": 1.0}
    config = configuration.parse({**raw, "model": model, "optimizer": optimizer, "training": training})
    run_dir, summary = stages.train(config, tmp_path / "run")
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [r["dev_accuracy"] != "" for r in rows] == [False, True, False, True, False, True]
    assert summary["run"]["best_epoch"] == 2 and summary["run"]["epochs"] == 6
    machine = summary["run"]["machine"]  # what a byte-identical rerun needs besides config and data
    assert machine["cpu"] and machine["threads"] == torch.get_num_threads() and machine["device"] == "cpu"


@pytest.mark.parametrize(
    ("scheduler", "peak"), [("OneCycle", 0.01), ({"preset": "OneCycle", "args": {"max_lr": 0.02}}, 0.02)]
)
def test_one_cycle_peaks_at_the_optimizer_lr_unless_told_otherwise(tiny_workspace, tmp_path, scheduler, peak):
    from tympan.training import Trainer

    _, raw = tiny_workspace
    config = configuration.parse(
        {**raw, "scheduler": scheduler, "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}}}
    )
    trainer = Trainer(config, store_dir(config, "fsdd"), tmp_path / "run")
    assert trainer.optimizer.param_groups[0]["max_lr"] == peak
    assert trainer.scheduler.total_steps == config.training.epochs * len(trainer.sampler)


def test_cuda_on_a_machine_without_it_is_one_clear_error(tiny_workspace, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, raw = tiny_workspace
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "training.device=cuda"]
    result = subprocess.run([*command, "--run-dir", str(tmp_path / "run")], cwd=root, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("tympan: error:")]
    assert len(errors) == 1 and "no CUDA device is available; set training.device: auto or cpu" in errors[0]
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="'gpu' is not a device"):
        pick_device("gpu")


@pytest.mark.parametrize(
    "content",
    ["title: my holiday notes\n", "key: [unclosed\n", "other-seed"],
    ids=["other-yaml", "not-yaml", "another-run"],
)
def test_a_run_dir_holding_another_config_yaml_is_refused_untouched(tiny_workspace, tmp_path, content):
    _, raw = tiny_workspace
    config = _config(raw)
    if content == "other-seed":
        content = _config({**raw, "seed": 7}).to_yaml()
    run_dir = tmp_path / "somewhere"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(content)
    with pytest.raises(DataError, match="not the config of a tympan run|holds a run of another config"):
        stages.train(config, run_dir)
    assert [p.name for p in run_dir.iterdir()] == ["config.yaml"]
    assert (run_dir / "config.yaml").read_text() == content


@pytest.mark.parametrize("bucketing", [True, False])
def test_no_training_batch_holds_a_single_clip(bucketing):
    """Batch norm cannot train on one clip: a last batch of one joins the batch before it."""
    for n in (33, 65, 97):
        sampler = BucketBatchSampler(np.arange(n), 32, seed=1, bucketing=bucketing)
        batches = sampler.batches()
        assert min(len(b) for b in batches) > 1 and len(batches) == len(sampler) == n // 32
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))
