"""The feature store, found by its config digest alone: where a config's store is, a store rebuilt
in place when the fetched index changes (and reused while it does not), training from the store
alone (no raw audio, no index), and a store of another config refused, naming both digests."""

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import TINY
from tympan import config as configuration
from tympan import stages
from tympan.errors import DataError
from tympan.store import config_digest, index_digest, open_split, read_meta, staging, store_dir, store_in

SPEAKERS = {"george": "train", "yweweler": "dev", "jackson": "test"}
N_MELS_32 = [{"target": "tympan.transforms.logmel:PannLogMel", "args": {"n_mels": 32}}]


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def clips(fsdd_mirror, tmp_path):
    """12 FSDD recordings as a table dataset: `<tmp>/clips/<speaker>/<file>` and its index.csv rows."""
    root, rows = tmp_path / "clips", []
    for speaker, split in SPEAKERS.items():
        (root / speaker).mkdir(parents=True)
        for digit in ("0", "1"):
            for take in (0, 1):
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copyfile(fsdd_mirror / "fsdd/recordings" / name, root / speaker / name)
                rows.append({"file": f"{speaker}/{name}", "split": split, "label": digit})
    _write_rows(root / "index.csv", rows)
    return root, rows


def _config(clips_root: Path, data: Path, offline: list | None = None, **features):
    dataset = {"preset": "Table", "args": {"root": str(clips_root)}, "root": str(data / "raw")}
    raw = {**TINY, "dataset": dataset, "augmentation": [], "training": {**TINY["training"], "epochs": 1}}
    raw["features"] = {**TINY["features"], "root": str(data / "features"), **features}
    if offline is not None:
        raw["features"]["offline"] = offline
    return configuration.parse(raw)


def test_the_store_is_where_the_config_says_whatever_the_index(tmp_path):
    raw = {**TINY, "features": {**TINY["features"], "root": str(tmp_path / "features")}}
    config = configuration.parse(raw)
    assert store_dir(config, "fsdd") == tmp_path / "features" / f"fsdd-{config_digest(config)[:10]}"
    named = configuration.parse({**raw, "features": {**raw["features"], "store": str(tmp_path / "mine")}})
    assert store_dir(named, "fsdd") == tmp_path / "mine"
    # where the store lies is not what it holds, nor what a run is
    assert config_digest(named) == config_digest(config) and named.run_id() == config.run_id()
    online = configuration.parse({**raw, "features": {**raw["features"], "online": []}})
    assert config_digest(online) == config_digest(config)
    offline = configuration.parse({**raw, "features": {**raw["features"], "offline": N_MELS_32}})
    assert config_digest(offline) != config_digest(config)
    with pytest.raises(Exception, match="features.store"):
        configuration.parse({**raw, "features": {**raw["features"], "store": ""}})


def test_a_changed_index_rebuilds_the_store_in_place_and_an_unchanged_one_is_reused(clips, tmp_path, caplog):
    root, rows = clips
    config = _config(root, tmp_path, store=str(tmp_path / "features/mine"))
    stages.fetch(config)
    store = stages.preprocess(config, workers=1)
    assert store == tmp_path / "features/mine"
    first = read_meta(store)
    assert first["config_digest"] == config_digest(config)
    assert first["index_digest"] == index_digest(stages.index_of(config))
    with caplog.at_level(logging.INFO, logger="tympan"):
        assert stages.preprocess(config, workers=1) == store
    assert "already extracted" in caplog.text

    before = open_split(store, "dev")  # a reader of the store that is about to be replaced
    rows[0]["split"] = "dev"  # george/0_george_0.wav moves from train to dev
    _write_rows(root / "index.csv", rows)
    stages.fetch(config)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tympan"):
        assert stages.preprocess(config, workers=1) == store
    assert f"rebuilding {store}: the fetched index is not the one it was built from" in caplog.text
    assert (len(open_split(store, "train")), len(open_split(store, "dev"))) == (3, 5)
    assert read_meta(store)["index_digest"] == index_digest(stages.index_of(config)) != first["index_digest"]
    assert len(before) == 4 and np.isfinite(before.features).all()  # what it mapped is still there
    assert sorted(p.name for p in store.parent.iterdir()) == ["mine"]  # neither a staging dir nor the old store


def test_training_reads_the_store_alone(clips, tmp_path):
    """A clone that pulled only the features, or a pipeline's training step: no raw copy, no source, no index."""
    root, _ = clips
    config = _config(root, tmp_path)
    stages.fetch(config)
    store = stages.preprocess(config, workers=1)
    shutil.rmtree(tmp_path / "raw")
    shutil.rmtree(root)
    run_dir, summary = stages.train(config, tmp_path / "run")
    assert (run_dir / "summary.json").is_file() and "accuracy" in summary["dev"]
    assert store_in(tmp_path / "features", config, stages.dataset_of(config).name) == store
    _, again = stages.train(config, tmp_path / "again", tmp_path / "features")  # the folder of stores
    assert again["dev"] == summary["dev"]


def test_a_store_of_another_config_is_refused_naming_both_digests(clips, tmp_path, caplog):
    root, _ = clips
    where = tmp_path / "features/shared"
    config, other = _config(root, tmp_path, store=str(where)), _config(root, tmp_path, N_MELS_32, store=str(where))
    stages.fetch(config)
    stages.preprocess(config, workers=1)
    ours, theirs = config_digest(other)[:10], config_digest(config)[:10]
    with pytest.raises(DataError) as info:
        stages.train(other, tmp_path / "run")
    message = str(info.value)
    assert message.startswith(f"{where}: a feature store of another config (config digest {theirs})")
    assert f"(config digest {ours})" in message and "run `tympan preprocess` with this config" in message

    with caplog.at_level(logging.INFO, logger="tympan"):
        assert stages.preprocess(other, workers=1) == where  # the path the config names: its store now
    assert f"rebuilding {where}: it holds another config's features (config digest {theirs}" in caplog.text
    assert read_meta(where, other)["config_digest"] == config_digest(other)
    assert open_split(where, "train").features.shape[1:] == (32,)


def test_preprocess_never_replaces_a_folder_that_is_not_a_store(clips, tmp_path):
    root, _ = clips
    mine = tmp_path / "features/mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    config = _config(root, tmp_path, store=str(mine))
    stages.fetch(config)
    with pytest.raises(DataError, match=r"not a feature store \(no meta.json\), so `tympan preprocess` does not"):
        stages.preprocess(config, workers=1)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("exchange", [True, False])
def test_a_finished_build_replaces_the_store_it_rebuilds(tmp_path, monkeypatch, exchange):
    """In one step (renameat2's exchange), or, where the file system cannot, in two."""
    out, staged = tmp_path / "store", tmp_path / ".fsdd-features.partial"
    for folder, text in ((out, "old"), (staged, "new")):
        folder.mkdir()
        (folder / "meta.json").write_text(text)
    if not exchange:
        monkeypatch.setattr(staging, "_exchange", lambda a, b: False)
    staging._into_place(staged, out)
    assert (out / "meta.json").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["store"]


def test_a_pipeline_keeps_its_stores_in_its_features_artifact(tmp_path):
    """A config's `features.store` names a path on the machine that wrote it; a pipeline's steps
    put the store in their artifact folder, under its digest name, and train finds it there."""
    text = yaml.safe_dump({**TINY, "features": {**TINY["features"], "store": "data/features/default"}})
    planned = stages.plan(text)
    data = stages.data_config(planned["features"], tmp_path / "raw", tmp_path / "artifact")
    run = stages.run_config(planned["runs"][0], tmp_path / "artifact")
    assert data.features.store is None and run.features.store is None
    assert store_dir(data, "fsdd") == store_dir(run, "fsdd") == store_in(tmp_path / "artifact", run, "fsdd")
