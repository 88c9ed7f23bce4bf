"""Speaker identification on FSDD: the FSDDSpeakers split by take number beside FSDD's speaker split
(one shared copy of the audio), and the statistics pooling that feeds an FFNN from log-Mels."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from tympan import config as configuration
from tympan.datasets import FSDD, FSDDSpeakers
from tympan.errors import ConfigError
from tympan.transforms import Statistics
from tympan.transforms.spec import ShapeError, Spec


def test_speakers_are_split_by_take_and_share_fsdd_s_audio(tmp_path, fsdd_mirror, monkeypatch):
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(fsdd_mirror))
    folder = FSDDSpeakers().fetch(tmp_path)
    assert FSDD().fetch(tmp_path) == folder  # the same copy, indexed once per block
    index, digits = FSDDSpeakers().index(tmp_path), FSDD().index(tmp_path)
    splits = {s: index.split(s) for s in ("train", "dev", "test")}
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 2000, "dev": 250, "test": 250}
    speakers = {"george", "jackson", "lucas", "nicolas", "yweweler"}
    for split, rows in splits.items():
        assert Counter(r["speaker"] for r in rows) == dict.fromkeys(speakers, len(rows) // 5), split
    assert {int(r["path"].rsplit("_", 1)[1][:-4]) for r in splits["dev"]} == set(range(5))
    assert {int(r["path"].rsplit("_", 1)[1][:-4]) for r in splits["test"]} == set(range(5, 10))
    assert index.labels("speaker") == sorted(speakers) and len(digits.split("dev")) == 500
    few = FSDDSpeakers(train_takes=[10, 12])
    few.fetch(tmp_path)
    rows = few.index(tmp_path).split("train")
    assert len(rows) == 100 and {int(r["path"].rsplit("_", 1)[1][:-4]) for r in rows} == {10, 11}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"dev_takes": [0, 5], "test_takes": [4, 10]}, "dev_takes [0, 5] and test_takes [4, 10] overlap"),
        ({"dev_takes": [5, 5]}, "dev_takes=[5, 5] holds no take"),
        ({"test_takes": [1]}, "test_takes must be [first take, last take + 1], got [1]"),
        ({"dev_takes": [-1, 3]}, "dev_takes must be [first take, last take + 1], got [-1, 3]"),
        ({"train_takes": [3, 12]}, "dev_takes [0, 5] and train_takes [3, 12] overlap"),
    ],
)
def test_bad_take_ranges_fail_at_config_load(args, message):
    raw = {"dataset": {"preset": "FSDDSpeakers", "args": args}}
    with pytest.raises(ConfigError) as err:
        configuration.parse(raw, "speakers.yaml")
    assert str(err.value).startswith("speakers.yaml: dataset.args: ") and message in str(err.value)


def test_statistics_pool_frames_to_a_vector_in_the_order_asked():
    x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    assert torch.equal(Statistics(stats=["max", "mean"])(x), torch.tensor([3.0, 30.0, 2.0, 20.0]))
    assert torch.equal(Statistics()(x[:1]), torch.tensor([1.0, 10.0, 0.0, 0.0]))  # one frame: std 0
    spec = Statistics(stats=["mean", "std", "min"]).output(Spec("frames", 16000, frame_rate=100.0, size=64))
    assert (spec.kind, spec.size) == ("vector", 192)
    with pytest.raises(ShapeError, match="Statistics takes frames, but its input is"):
        Statistics().output(Spec("vector", 16000, size=8))
    with pytest.raises(ValueError, match="at least one frame"):
        Statistics()(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="stats must name each of mean, std, min, max at most once"):
        Statistics(stats=["std", "std"])
