"""Your own data (a CSV table, class folders) over real FSDD recordings, and the generated toy datasets."""

import csv
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
import yaml
from torch import nn

from tests.conftest import TINY
from tympan import audio
from tympan.cli import main
from tympan.config import DatasetConfig
from tympan.config.presets import available_presets, load_preset
from tympan.datasets.folder import Folder, shares
from tympan.datasets.index import MAX_CSV_BYTES
from tympan.datasets.table import Table
from tympan.datasets.toy import ToyClassification, ToyMultiLabel, ToyRegression
from tympan.errors import ConfigError, DataError
from tympan.store import open_split

SPEAKERS = {"george": "train", "yweweler": "Dev", "jackson": "test"}  # "Dev": case does not matter
AUDIO = ["duration", "sample_rate", "channels"]  # the columns each fetch measures from the files' headers


def listed(rows: list[dict]) -> list[dict]:
    """Index rows without the measured columns: what the dataset itself listed."""
    return [{k: v for k, v in row.items() if k not in AUDIO} for row in rows]


DIGITS, TAKES = ("0", "1", "2"), (0, 1)


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    """Own data never needs the mirror; the one test that sets it checks it is ignored."""
    monkeypatch.delenv("TYMPAN_DATA_MIRROR", raising=False)


@pytest.fixture
def clips(fsdd_mirror, tmp_path):
    """18 FSDD recordings below `<tmp>/clips/<speaker>/`, and their CSV rows (file, split, label, speaker)."""
    root = tmp_path / "clips"
    rows = []
    for speaker, split in SPEAKERS.items():
        (root / speaker).mkdir(parents=True)
        for digit in DIGITS:
            for take in TAKES:
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copyfile(fsdd_mirror / "fsdd" / "recordings" / name, root / speaker / name)
                rows.append({"file": f"{speaker}/{name}", "split": split, "label": digit, "speaker": speaker})
    return root, rows


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def assert_nothing_left(data: Path, name: str):
    assert not (data / name).exists()
    assert not (data / f".{name}.partial").exists()


def fetched(dataset, data: Path):
    """Fetch `dataset` below `data`, and the index of its block."""
    dataset.fetch(data)
    return dataset.index(data)


# ---------------------------------------------------------------- Table


def test_table_fetch_keeps_paths_targets_and_metadata(clips, tmp_path, fsdd_mirror, monkeypatch):
    root, rows = clips
    write_csv(root / "index.csv", rows)
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(fsdd_mirror))  # a mirror with an fsdd/ folder is ignored
    table = Table(root, targets=["label"], name="fsdd")
    assert table.targets == ["label"] and table.default_task == "classification"

    index = fetched(table, tmp_path / "data")

    assert len(index) == 18  # the CSV's rows, not the mirror's 2,500 recordings
    assert index.columns == ["path", "split", "label", "speaker", *AUDIO]
    first = index.rows[0]
    assert listed([first]) == [{"path": "george/0_george_0.wav", "split": "train", "label": "0", "speaker": "george"}]
    assert (first["sample_rate"], first["channels"]) == ("8000", "1") and float(first["duration"]) > 0
    assert {r["split"] for r in index if r["speaker"] == "yweweler"} == {"dev"}
    assert [len(index.split(s)) for s in ("train", "dev", "test")] == [6, 6, 6]
    assert index.path_of(first).read_bytes() == (root / "george/0_george_0.wav").read_bytes()


def test_table_refetch_follows_the_csv(clips, tmp_path):
    root, rows = clips
    write_csv(root / "index.csv", rows[:12])
    table = Table(root, targets=["label"])
    dataset = table.fetch(tmp_path / "data")

    rows[0]["split"] = "validation"  # an alias of dev; the file is already there: only the index changes
    write_csv(root / "index.csv", rows[:13])  # and one more file: taken on the next fetch
    index = fetched(table, tmp_path / "data")

    assert len(index) == 13 and index.rows[0]["split"] == "dev"
    assert index.path_of(index.rows[12]).is_file()
    assert dataset == tmp_path / "data" / table.name and table.name.startswith("clips-")


def test_table_index_elsewhere_and_several_targets(clips, tmp_path):
    root, rows = clips
    rows = [{**r, "snr_db": str(10 + i), "rate": "1.0"} for i, r in enumerate(rows)]
    csv_file = write_csv(tmp_path / "elsewhere.csv", rows)
    table = Table(root, index=csv_file, targets=["snr_db", "rate"], default_task="regression")
    index = fetched(table, tmp_path / "data")
    assert table.targets == ["snr_db", "rate"] and table.target_column == "snr_db"
    assert index.columns == ["path", "split", "snr_db", "rate", "label", "speaker", *AUDIO]
    assert index.rows[3]["snr_db"] == "13"


def _missing(rows):
    return rows + [{**rows[0], "file": f"gone/{i}.wav"} for i in range(5)]


TABLE_ERRORS = {
    "missing files": (_missing, {}, ["5 audio file(s) not found", "gone/0.wav, gone/1.wav, gone/2.wav (and 2 more)"]),
    "empty dev": (lambda rows: [r for r in rows if r["split"] != "Dev"], {}, ["the dev split has no rows"]),
    "empty train": (lambda rows: [r for r in rows if r["split"] != "train"], {}, ["the train split has no rows"]),
    "unknown target": (lambda rows: rows, {"targets": ["snr", "label"]}, ["unknown target column(s) 'snr'", "file"]),
    "no file column": (lambda rows: rows, {"file_column": "wav"}, ["no file_column 'wav'", "split, label, speaker"]),
    "no split column": (lambda rows: rows, {"split_column": "fold"}, ["no split_column 'fold'"]),
    "bad split": (lambda rows: [{**rows[0], "split": "holdout"}, *rows[1:]], {}, ["line 2", "'holdout'"]),
    "twice": (lambda rows: [*rows, rows[0]], {}, ["line 20", "listed twice (first on line 2)"]),
    "outside root": (lambda rows: [{**rows[0], "file": "../x.wav"}, *rows[1:]], {}, ["line 2", "'../x.wav'"]),
    "no target value": (lambda rows: [*rows[:4], {**rows[4], "label": " "}], {}, ["line 6", "'label'"]),
    "clash": (lambda rows: [{**r, "path": "x"} for r in rows], {}, ["column 'path' is the index's own"]),
}


@pytest.mark.parametrize("case", TABLE_ERRORS)
def test_table_errors_name_the_csv_and_leave_nothing(clips, tmp_path, case):
    root, rows = clips
    change, args, needles = TABLE_ERRORS[case]
    write_csv(root / "index.csv", change(rows))
    table = Table(root, **{"targets": ["label"], **args})
    with pytest.raises(DataError) as err:
        table.fetch(tmp_path / "data")
    message = str(err.value)
    assert "\n" not in message and str(root / "index.csv") in message
    for needle in needles:
        assert needle in message
    assert_nothing_left(tmp_path / "data", table.name)


def test_table_refuses_empty_or_bad_targets_when_built(tmp_path):
    with pytest.raises(ValueError, match=r"target column\(s\) of .*index.csv"):
        Table(tmp_path, targets=[])
    config = DatasetConfig(target="tympan.datasets.table:Table", args={"root": str(tmp_path), "targets": "label"})
    with pytest.raises(ConfigError, match="dataset.args: .*targets must be a list of strings, got 'label'"):
        config.build_checked("dataset")
    with pytest.raises(ValueError, match="different columns"):
        Table(tmp_path, targets=["file"])


def test_table_mixed_sample_rates_load_at_one_rate(fsdd_mirror, tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    source = fsdd_mirror / "fsdd" / "recordings" / "3_george_0.wav"
    samples, rate = sf.read(source, dtype="float32")
    assert rate == 8000
    shutil.copyfile(source, root / "8k.wav")
    sf.write(root / "16k.wav", audio.resample(samples, 8000, 16000), 16000, subtype="FLOAT")
    rows = [{"file": "8k.wav", "split": "train", "label": "3"}, {"file": "16k.wav", "split": "dev", "label": "3"}]
    write_csv(root / "index.csv", rows)
    index = fetched(Table(root), tmp_path / "data")

    low, high = (audio.load(index.path_of(row), 16000) for row in index)
    assert low[1] == high[1] == 16000
    assert len(low[0]) == len(high[0]) == 2 * len(samples)
    assert np.abs(low[0] - high[0]).max() < 1e-6


def test_table_through_the_cli_from_config_alone(clips, tmp_path):
    root, rows = clips
    write_csv(root / "index.csv", rows)
    dataset = {
        "target": "tympan.datasets.table:Table",
        "args": {"root": str(root), "index": str(root / "index.csv"), "targets": ["label"], "name": "digits"},
        "root": str(tmp_path / "data"),
    }
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({**TINY, "dataset": dataset}))
    result = subprocess.run(
        [sys.executable, "-m", "tympan.cli", "fetch", str(config)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert f"dataset: {tmp_path / 'data' / 'digits'}" in result.stdout
    assert len(Table(**dataset["args"]).index(tmp_path / "data")) == 18


def test_table_error_is_one_cli_line(clips, tmp_path, capsys):
    root, rows = clips
    write_csv(root / "index.csv", _missing(rows))
    dataset = {"preset": "Table", "args": {"root": str(root)}, "root": str(tmp_path / "data")}
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({**TINY, "dataset": dataset}))
    assert main(["fetch", str(config)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tympan: error:")]
    assert len(errors) == 1 and "5 audio file(s) not found" in errors[0]


# ---------------------------------------------------------------- Folder


@pytest.fixture
def tree(fsdd_mirror, tmp_path):
    """`<tmp>/digits/<digit>/<speaker>_<take>.wav`: 10 recordings of each of three digits, plus clutter."""
    root = tmp_path / "digits"
    for digit in DIGITS:
        (root / digit).mkdir(parents=True)
        for take in range(10):
            source = fsdd_mirror / "fsdd" / "recordings" / f"{digit}_george_{take}.wav"
            shutil.copyfile(source, root / digit / f"george_{take}.wav")
    (root / "0" / "notes.txt").write_text("not audio\n")
    (root / "1" / ".hidden.wav").write_bytes(b"")
    (root / ".cache").mkdir()
    return root


def test_folder_ratio_split_is_stratified_and_seeded(tree, tmp_path):
    index = fetched(Folder(tree), tmp_path / "data")

    assert index.columns == ["path", "split", "label", *AUDIO] and len(index) == 30
    for digit in DIGITS:
        rows = [r for r in index if r["label"] == digit]
        assert all(r["path"].startswith(f"{digit}/") for r in rows)
        assert [sum(r["split"] == s for r in rows) for s in ("train", "dev", "test")] == [8, 1, 1]
    assert index.path_of(index.rows[0]).read_bytes() == (tree / index.rows[0]["path"]).read_bytes()

    again = Folder(tree).listing()
    other_seed = Folder(tree, seed=1).listing()
    assert again == listed(index.rows) and other_seed != listed(index.rows)
    (tree / "2" / "extra.wav").write_bytes((tree / "2" / "george_0.wav").read_bytes())
    grown = Folder(tree).listing()
    assert [r for r in grown if r["label"] != "2"] == [r for r in listed(index.rows) if r["label"] != "2"]


def test_folder_split_by_csv(tree, tmp_path, caplog):
    rows = [{"file": f"{d}/george_{t}.wav", "split": "train" if t < 3 else "val"} for d in DIGITS for t in range(4)]
    split = write_csv(tmp_path / "split.csv", rows)
    with caplog.at_level(logging.WARNING):
        index = fetched(Folder(tree, split=str(split)), tmp_path / "data")
    assert len(index) == 12 and len(index.split("dev")) == 3 and not index.split("test")
    assert listed(index.rows)[3] == {"path": "0/george_3.wav", "split": "dev", "label": "0"}
    assert "18 audio file(s)" in caplog.text  # the unlisted ones, left out


def test_folder_errors(tree, tmp_path):
    data = tmp_path / "data"
    with pytest.raises(DataError, match="no such folder"):
        Folder(tmp_path / "nowhere").fetch(data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no class folders"):
        Folder(tmp_path / "empty").fetch(data)
    with pytest.raises(DataError, match="the dev split has no rows"):
        Folder(tree, split=str(write_csv(tmp_path / "s.csv", [{"file": "0/george_0.wav", "split": "train"}]))).fetch(
            data
        )
    missing = [{"file": "0/george_0.wav", "split": "train"}, {"file": "1/gone.wav", "split": "dev"}]
    with pytest.raises(DataError, match=r"s2.csv: 1 audio file\(s\) not found .*: 1/gone.wav"):
        Folder(tree, split=str(write_csv(tmp_path / "s2.csv", missing))).fetch(data)
    with pytest.raises(DataError, match="not in a class folder"):
        Folder(tree, split=str(write_csv(tmp_path / "s3.csv", [{"file": "x.wav", "split": "dev"}]))).fetch(data)
    (tree / "3").mkdir()
    (tree / "3" / "readme.txt").write_text("no audio here\n")
    with pytest.raises(DataError, match="3: a class folder without audio files"):
        Folder(tree).fetch(data)
    assert_nothing_left(data, Folder(tree).name)
    with pytest.raises(ValueError, match="adding up to 1"):
        Folder(tree, ratios=[0.8, 0.3, 0.1])
    with pytest.raises(ValueError, match="train and dev a share"):
        Folder(tree, ratios=[1.0, 0.0, 0.0])


def test_shares_give_every_asked_split_one_when_possible():
    assert shares(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert shares(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert shares(2, (0.8, 0.1, 0.1)) == [1, 1, 0]
    assert shares(7, (0.5, 0.5, 0.0)) == [4, 3, 0]
    assert all(sum(shares(n, (0.7, 0.2, 0.1))) == n for n in range(50))


# ---------------------------------------------------------------- copies: whose they are, what they take

SECRET = "root:x:0:0:a line of a file that is not a CSV"


def _table_config(root: Path, data: Path, **args) -> dict:
    dataset = {"preset": "Table", "args": {"root": str(root), **args}, "root": str(data / "raw")}
    return {**TINY, "dataset": dataset, "features": {**TINY["features"], "root": str(data / "features")}}


def test_a_csv_changed_after_fetch_is_refused_by_preprocess(clips, tmp_path):
    from tympan import config as configuration
    from tympan import stages

    root, rows = clips
    csv_file = write_csv(root / "index.csv", rows)
    config = configuration.parse(_table_config(root, tmp_path))
    stages.fetch(config)
    rows[0]["split"] = "dev"  # george/0_george_0.wav moves from train to dev
    write_csv(csv_file, rows)
    with pytest.raises(DataError) as info:
        stages.preprocess(config)
    message = str(info.value)
    assert (
        message.startswith(f"{csv_file}: changed since `tympan fetch`") and "fetch` with this config again" in message
    )
    assert not (tmp_path / "features").exists()
    stages.fetch(config)
    moved = [row for row in stages.index_of(config).split("dev") if row["path"] == "george/0_george_0.wav"]
    assert len(moved) == 1
    store = stages.preprocess(config)
    assert len(open_split(store, "dev").rows) == 7


def test_tables_without_a_name_never_replace_each_other(clips, tmp_path):
    root, rows = clips
    write_csv(root / "index.csv", rows)
    other = tmp_path / "more" / "clips"  # another root whose folder has the same name
    shutil.copytree(root, other)
    write_csv(other / "index.csv", [{**row, "label": "x"} for row in rows])
    first, second = Table(root), Table(other)
    data = tmp_path / "data"
    first_index = fetched(first, data)
    second_index = fetched(second, data)
    assert first.name != second.name and first.name.startswith("clips-") and second.name.startswith("clips-")
    assert first.index(data).rows == first_index.rows and {r["label"] for r in first_index} == set(DIGITS)
    assert {r["label"] for r in second_index} == {"x"}
    assert all(first_index.path_of(row).is_file() for row in first_index)

    before = sorted(p.relative_to(data) for p in (data / first.name).rglob("*"))
    with pytest.raises(DataError) as info:
        Table(other, name=first.name).fetch(data)  # a name that another root's copy has
    message = str(info.value)
    assert f"already a copy of {{'local audio below': '{root}'}}, not of {{'local audio below': '{other}'}}" in message
    assert "set dataset.args.name" in message
    assert sorted(p.relative_to(data) for p in (data / first.name).rglob("*")) == before
    assert first.index(data).rows == first_index.rows


def test_two_csvs_of_one_root_share_its_copy(clips, tmp_path):
    root, rows = clips
    george = write_csv(
        tmp_path / "george.csv", [{**r, "split": "dev"} if r["file"].endswith("_1.wav") else r for r in rows[:6]]
    )
    rest = write_csv(
        tmp_path / "rest.csv", [{**r, "split": "train" if r["speaker"] == "yweweler" else "dev"} for r in rows[6:]]
    )
    data = tmp_path / "data"
    one, two = fetched(Table(root, index=george), data), fetched(Table(root, index=rest), data)
    assert one.root == two.root == data / Table(root).name
    assert len(one) == 6 and len(two) == 12
    assert all(
        index.path_of(row).is_file() for index in (one, two) for row in index
    )  # the second fetch added, never removed
    assert Table(root, index=george).index(data).rows == one.rows


def test_links_out_of_the_root_are_refused_unless_followed(clips, tmp_path):
    root, rows = clips
    outside = tmp_path / "private.wav"
    shutil.copyfile(root / rows[0]["file"], outside)
    outside.chmod(0o640)
    (root / "george" / "link.wav").symlink_to(outside)
    (root / "george" / "inside.wav").symlink_to(root / rows[1]["file"])  # a link within the root is fine
    listed = [*rows, {**rows[0], "file": "george/link.wav"}, {**rows[1], "file": "george/inside.wav"}]
    write_csv(root / "index.csv", listed)
    data = tmp_path / "data"
    with pytest.raises(DataError, match=r"george/link.wav: a link to a file outside .*follow_symlinks: true"):
        Table(root).fetch(data)
    assert not list(data.rglob("*.wav"))

    index = fetched(Table(root, follow_symlinks=True), data)
    copy = index.root / "george" / "link.wav"
    assert not copy.is_symlink() and copy.read_bytes() == outside.read_bytes()
    assert copy.stat().st_mode & 0o777 == 0o640  # the source's permissions, not a world-readable default

    classes = tmp_path / "classes"
    (classes / "a").mkdir(parents=True)
    (classes / "b").mkdir()
    for label in ("a", "b"):
        shutil.copyfile(root / rows[2]["file"], classes / label / "x.wav")
    (classes / "b" / "y.wav").symlink_to(outside)
    with pytest.raises(DataError, match=r"b/y.wav: a link to a file outside"):
        Folder(classes, ratios=[0.5, 0.5, 0.0]).fetch(data)


def test_only_regular_files_are_taken_with_their_permissions(clips, tmp_path):
    root, rows = clips
    os.mkfifo(root / "george" / "fifo.wav")
    (root / "george" / "zero.wav").symlink_to("/dev/zero")
    (root / rows[0]["file"]).chmod(0o640)
    (root / rows[1]["file"]).chmod(0o600)
    data = tmp_path / "data"
    for name in ("fifo.wav", "zero.wav"):
        write_csv(root / "index.csv", [*rows, {**rows[0], "file": f"george/{name}"}])
        with pytest.raises(DataError, match=rf"george/{name}: not a regular file"):
            Table(root, follow_symlinks=True).fetch(data)
    write_csv(root / "index.csv", rows)
    index = fetched(Table(root), data)
    assert [index.path_of(index.rows[i]).stat().st_mode & 0o777 for i in (0, 1)] == [0o640, 0o600]

    classes = tmp_path / "classes"
    for label in ("a", "b"):
        (classes / label).mkdir(parents=True)
        for name in ("x.wav", "y.wav"):
            shutil.copyfile(root / rows[2]["file"], classes / label / name)
    os.mkfifo(classes / "a" / "fifo.wav")  # not a file: not audio of the class
    folder = Folder(classes, ratios=[0.5, 0.5, 0.0])
    assert sorted(row["path"] for row in fetched(folder, data)) == ["a/x.wav", "a/y.wav", "b/x.wav", "b/y.wav"]


def test_a_csv_that_is_not_a_regular_file_is_refused_at_once(clips, tmp_path):
    root, _ = clips
    started = time.monotonic()
    with pytest.raises(DataError, match=r"^/dev/zero: not a regular file \(a character device\)"):
        Table(root, index="/dev/zero").fetch(tmp_path / "data")
    with pytest.raises(DataError, match=r"george: not a regular file \(a directory\)"):
        Table(root, index=root / "george").fetch(tmp_path / "data")
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(DataError, match=r"fifo.csv: not a regular file \(a FIFO\)"):
        Table(root, index=tmp_path / "fifo.csv").fetch(tmp_path / "data")
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(MAX_CSV_BYTES + 1)  # sparse: nothing is written, nothing must be read
    with pytest.raises(DataError, match=r"huge.csv: larger than 256 MiB"):
        Table(root, index=huge).fetch(tmp_path / "data")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "content, problem",
    [
        (f"{SECRET}\ndaemon:x:1:1\n".encode(), "its first line is not a header of comma-separated columns"),
        (b"\xff\xfe" + SECRET.encode(), "not UTF-8 text (byte 0)"),
        (f"{SECRET}\x00\n".encode(), "holds NUL bytes (byte 45): not text"),
    ],
)
def test_errors_about_a_csv_never_show_a_line_of_another_file(clips, tmp_path, content, problem):
    root, _ = clips
    other = tmp_path / "passwd"
    other.write_bytes(content)
    with pytest.raises(DataError) as info:
        Table(root, index=other).fetch(tmp_path / "data")
    message = str(info.value)
    assert message.startswith(str(other)) and problem in message and "root:x" not in message and "\n" not in message
    with pytest.raises(DataError) as info:
        Folder(root, split=str(other)).fetch(tmp_path / "data")
    assert "root:x" not in str(info.value)


def test_file_names_keep_their_leading_and_trailing_spaces(clips, tmp_path):
    root, rows = clips
    for name in (" lead.wav", "trail.wav ", " both .wav"):
        shutil.copyfile(root / rows[0]["file"], root / "george" / name)
    spaced = [{**rows[0], "file": f"george/{name}"} for name in (" lead.wav", "trail.wav ", " both .wav")]
    write_csv(root / "index.csv", [*rows[1:], *spaced])
    index = fetched(Table(root), tmp_path / "data")
    paths = [row["path"] for row in index][-3:]
    assert paths == ["george/ lead.wav", "george/trail.wav ", "george/ both .wav"]
    assert all(index.path_of(row).read_bytes() == (root / rows[0]["file"]).read_bytes() for row in index.rows[-3:])


# ---------------------------------------------------------------- toy datasets

TOYS = {
    ToyClassification: ["label"],
    ToyMultiLabel: ["tone", "chirp", "noise"],
    ToyRegression: ["frequency_hz", "duration_ms"],
}


@pytest.mark.parametrize("toy", TOYS, ids=lambda t: t.__name__)
def test_toy_is_deterministic_indexed_and_decodes(toy, tmp_path):
    small = {"train": 6, "dev": 3, "test": 3}
    first = toy(seed=5, **small).fetch(tmp_path / "a")
    second = toy(seed=5, **small).fetch(tmp_path / "b")
    other = toy(seed=6, **small).fetch(tmp_path / "c")
    index, again = toy(seed=5, **small).index(tmp_path / "a"), toy(seed=5, **small).index(tmp_path / "b")

    assert toy().targets == TOYS[toy] and index.columns == ["path", "split", *TOYS[toy], *AUDIO]
    assert [len(index.split(s)) for s in ("train", "dev", "test")] == [6, 3, 3]
    files = sorted(p.relative_to(first) for p in first.rglob("*.wav"))
    assert len(files) == 12 and files == sorted(p.relative_to(second) for p in second.rglob("*.wav"))
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert index.file.read_bytes() == again.file.read_bytes()
    assert any((first / f).read_bytes() != (other / f).read_bytes() for f in files)
    for row in index:
        samples, rate = audio.load(index.path_of(row), 16000)
        assert sf.info(index.path_of(row)).samplerate == 16000 and 0.5 * rate <= len(samples) <= rate
        assert 0.01 < np.abs(samples).max() <= 1.0


def test_toy_targets_are_what_each_task_needs(tmp_path):
    labels = fetched(ToyClassification(), tmp_path)
    assert {r["label"] for r in labels} == {"tone", "chirp", "noise"} and len(labels.split("train")) == 60
    mixes = fetched(ToyMultiLabel(), tmp_path)
    assert all({r[c] for c in TOYS[ToyMultiLabel]} <= {"0", "1"} for r in mixes)
    assert all(any(r[c] == "1" for c in TOYS[ToyMultiLabel]) for r in mixes)  # never an empty label set
    values = fetched(ToyRegression(), tmp_path)
    for column in TOYS[ToyRegression]:
        numbers = [int(r[column]) for r in values]
        assert 200 <= min(numbers) < 300 and 700 < max(numbers) <= 800
    defaults = {ToyClassification: "classification", ToyMultiLabel: "multilabel", ToyRegression: "regression"}
    assert all(toy.default_task == task for toy, task in defaults.items())


def test_toy_with_other_settings_is_refused_under_the_same_name(tmp_path):
    """Generating again would change the audio under the first block's index: refused; a name of its own works."""
    dataset = ToyRegression(seed=1, train=4, dev=2, test=0).fetch(tmp_path)
    before = (dataset / "train/train_0000.wav").read_bytes()
    with pytest.raises(DataError, match="already a copy of .*'seed': 1.*set dataset.args.name"):
        ToyRegression(seed=2, train=4, dev=2, test=0).fetch(tmp_path)
    assert (dataset / "train/train_0000.wav").read_bytes() == before
    other = ToyRegression(seed=2, train=4, dev=2, test=0, name="toy_regression_2")
    after = fetched(other, tmp_path)
    assert after.root == tmp_path / "toy_regression_2" and listed(after.rows) == other.prepare(after.root)
    assert (after.root / "train/train_0000.wav").read_bytes() != before


@pytest.fixture
def one_thread():
    """Timings that do not depend on how busy the other cores are."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_toys_are_learnable_by_a_small_model_in_seconds(tmp_path, one_thread):
    """Each toy set trains to well above chance in 20 epochs of a tiny CNN on normalised log-Mel."""
    torch.manual_seed(0)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=64, f_min=50, f_max=8000)

    def features(index, split):
        clips = [torch.log(mel(torch.from_numpy(audio.load(index.path_of(r))[0])) + 1e-6).T for r in index.split(split)]
        clips = [(c - c.mean()) / c.std() for c in clips]
        return nn.utils.rnn.pad_sequence(clips, batch_first=True)

    def targets(dataset, index, split):
        values = [[r[c] for c in dataset.targets] for r in index.split(split)]
        if isinstance(dataset, ToyClassification):
            return torch.tensor([["tone", "chirp", "noise"].index(v[0]) for v in values])
        scaled = torch.tensor([[float(x) for x in v] for v in values])
        return (scaled - 500) / 173 if isinstance(dataset, ToyRegression) else scaled

    losses = {
        ToyClassification: nn.CrossEntropyLoss(),
        ToyMultiLabel: nn.BCEWithLogitsLoss(),
        ToyRegression: nn.MSELoss(),
    }
    results = {}
    for toy, loss in losses.items():
        dataset = toy()
        index = fetched(dataset, tmp_path)
        x, y, x_dev, y_dev = (
            features(index, "train"),
            targets(dataset, index, "train"),
            features(index, "dev"),
            targets(dataset, index, "dev"),
        )
        model = _tiny_cnn(3 if toy is not ToyRegression else 2)
        optimizer = torch.optim.AdamW(model.parameters(), 0.01)
        for _ in range(20):
            model.train()
            for batch in torch.randperm(len(x)).split(16):
                optimizer.zero_grad()
                loss(model(x[batch]), y[batch]).backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(x_dev)
        if toy is ToyClassification:
            results[toy] = (out.argmax(1) == y_dev).float().mean().item()
        elif toy is ToyMultiLabel:
            results[toy] = ((out > 0).float() == y_dev).float().mean().item()
        else:
            results[toy] = ((out - y_dev).abs() * 173).mean().item()  # in Hz and ms; chance is about 150
    assert results[ToyClassification] >= 0.9 and results[ToyMultiLabel] >= 0.85 and results[ToyRegression] < 80, results


def _tiny_cnn(n_outputs: int) -> nn.Module:
    """Conv blocks, then a mean over Mel bins and max + mean over frames (as tympan's CNNs pool)."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = []
            for i, o in ((1, 8), (8, 16), (16, 16)):
                blocks += [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
            self.features, self.head = nn.Sequential(*blocks[:-1]), nn.Linear(16, n_outputs)

        def forward(self, x):
            z = self.features(x.unsqueeze(1)).mean(dim=3)
            return self.head(z.max(dim=2).values + z.mean(dim=2))

    return Tiny()


# ---------------------------------------------------------------- presets


def test_every_own_data_preset_builds(tmp_path):
    fsdd = DatasetConfig(**load_preset("datasets", "FSDD")).build_checked("dataset")
    assert fsdd.targets == ["label"] and fsdd.default_task == "classification"  # the base class's defaults
    for name in ["Table", "Folder", "ToyClassification", "ToyMultiLabel", "ToyRegression"]:
        assert name in available_presets("datasets")
        preset = load_preset("datasets", name)
        dataset = DatasetConfig(**preset).build_checked("dataset")
        assert dataset.targets and dataset.default_task in ("classification", "multilabel", "regression")
    table = load_preset("datasets", "Table")
    args = {**table["args"], "root": str(tmp_path), "targets": ["snr_db", "rate"], "default_task": "regression"}
    dataset = DatasetConfig(target=table["target"], args=args).build_checked("dataset")
    assert dataset.targets == ["snr_db", "rate"] and dataset.csv == tmp_path / "index.csv"


@pytest.mark.parametrize("split", ["train", "Dev"])
def test_a_regression_target_past_float32_stops_training_before_it_starts(clips, tmp_path, capsys, split):
    """-1e308 made the scaling (train) or the encoded targets (dev) infinite: training crashed at
    its first evaluation with sklearn's "Input contains NaN" and left running.pid behind."""
    root, rows = clips
    rows = [{**r, "y": str(100 + i)} for i, r in enumerate(rows)]
    bad = next(i for i, r in enumerate(rows) if r["split"] == split)
    rows[bad]["y"] = "-1e308"
    write_csv(root / "index.csv", rows)
    args = {"root": str(root), "index": str(root / "index.csv"), "targets": ["y"], "name": "pitch"}
    dataset = {"target": "tympan.datasets.table:Table", "args": args, "root": str(tmp_path / "data")}
    features = {**TINY["features"], "root": str(tmp_path / "features")}
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({**TINY, "dataset": dataset, "features": features, "task": "regression"}))
    assert main(["fetch", str(config)]) == 0 and main(["preprocess", str(config)]) == 0
    capsys.readouterr()
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir)]) == 1
    errors = capsys.readouterr().err.splitlines()
    where = "train" if split == "train" else "dev split"
    assert len(errors) == 1 and errors[0].startswith(f"tympan: error: {where}, row "), errors
    assert "column 'y' holds '-1e308', beyond ±1e+30" in errors[0]
    assert not (run_dir / "running.pid").exists() and not (run_dir / "summary.json").exists()
