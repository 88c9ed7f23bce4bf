"""The data report of a fetch, and the duration, sample_rate and channels columns of every index row:
on the real FSDD copy (the tiny workspace), on a table of clips with unreadable files and a
regression target, and on a multi-label toy set."""

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import yaml

from tympan import config as configuration
from tympan import stages
from tympan.cli import main
from tympan.datasets import copies
from tympan.datasets import report as datareport
from tympan.datasets.fsdd import FSDD
from tympan.datasets.index import SPLITS
from tympan.datasets.table import Table
from tympan.datasets.toy import ToyMultiLabel
from tympan.errors import DataError

AUDIO = list(datareport.AUDIO_COLUMNS)


def parts(report: dict) -> dict:
    return {**report["splits"], "total": report["total"]}


def test_fsdd_report_matches_its_index_and_the_files(tiny_workspace, tmp_path, capsys):
    root, raw = tiny_workspace
    config = configuration.parse(raw)
    index = stages.index_of(config)
    assert index.columns[-3:] == AUDIO
    for row in index.rows[::97]:  # the header's own values, a sample of rows
        info = sf.info(index.path_of(row))
        assert (row["sample_rate"], row["channels"]) == (str(info.samplerate), str(info.channels))
        assert float(row["duration"]) == pytest.approx(info.frames / info.samplerate, abs=1e-6)

    report = stages.data_report(config)
    data, text = stages.dataset_of(config).report_files(config.dataset.root)
    assert data.parent == index.file.parent and data.name == index.file.stem.replace("index-", "report-") + ".json"
    assert json.loads(data.read_text()) == report and text.read_text() == datareport.markdown(report)
    assert report["dataset"] == "fsdd" and report["task"] == "classification" and report["targets"] == ["label"]
    for split, part in parts(report).items():
        rows = index.rows if split == "total" else index.split(split)
        assert part["files"] == len(rows) and part["unreadable"] == 0 and part["sample_rates"] == {"8000": len(rows)}
        assert part["channels"] == {"1": len(rows)}
        assert part["duration_s"] == pytest.approx(sum(float(r["duration"]) for r in rows), abs=1e-3)
        assert part["classes"] == {"label": {str(d): sum(r["label"] == str(d) for r in rows) for d in range(10)}}
    assert [report["splits"][s]["files"] for s in SPLITS] == [1000, 500, 500]

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    stamp = data.stat().st_mtime_ns
    assert main(["fetch", str(tmp_path / "tiny.yaml")]) == 0  # fetched already: the report is printed again
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"fsdd: data report ({index.file.relative_to(index.root)})"
    assert out[1].split() == ["split", "files", "duration", "sample", "rates", "channels", "unreadable"]
    assert out[2].split()[:2] == ["train", "1000"] and "8000 Hz" in out[2] and out[5].startswith("total  2000")
    assert "files per class:" in out and out[-1] == f"dataset: {root / 'data/raw/fsdd'}"
    assert data.stat().st_mtime_ns == stamp  # the same index makes the same report: not rewritten


def write_clip(path, seconds, rate, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.1 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate)


@pytest.fixture
def table(tmp_path):
    """Clips below `clips/` (16 kHz mono, 44.1 kHz stereo, one not audio, one empty) listed by a CSV
    with a regression target `score`: (root, CSV rows)."""
    root = tmp_path / "clips"
    rows = []
    clips = [("a.wav", 0.2, 16000, 1), ("b.wav", 0.1, 16000, 1), ("c.wav", 0.3, 44100, 2), ("d.flac", 0.25, 16000, 1)]
    for number, (name, seconds, rate, channels) in enumerate(clips):
        write_clip(root / "audio" / name, seconds, rate, channels)
        rows.append({"file": f"audio/{name}", "split": ["train", "train", "dev", "test"][number], "score": ""})
    (root / "audio" / "noise.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt not really audio")
    (root / "audio" / "empty.wav").write_bytes(b"")
    rows += [{"file": "audio/noise.wav", "split": "train"}, {"file": "audio/empty.wav", "split": "dev"}]
    for row, score in zip(rows, ["1.5", "-2", "4", "10", "7", "0.25"], strict=True):
        row["score"] = score
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "split", "score"])
        writer.writeheader()
        writer.writerows(rows)
    return root, rows


def regression_table(root):
    return Table(root, targets=["score"], default_task="regression", name="scores")


def test_an_unreadable_file_fails_the_fetch_naming_it(table, tmp_path):
    root, _ = table
    with pytest.raises(DataError) as info:
        regression_table(root).fetch(tmp_path / "data")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'data/.scores.partial/audio/noise.wav'}: cannot read the audio header (")
    assert message.endswith("(and 1 more); set dataset.on_unreadable: skip to leave it out")
    assert not (tmp_path / "data/scores").exists() and not (tmp_path / "data/.scores.partial").exists()


def test_table_report_counts_unreadable_files_and_target_ranges(table, tmp_path, monkeypatch):
    root, rows = table

    def never(*args, **kwargs):
        raise AssertionError("fetching reads headers, never samples")

    monkeypatch.setattr(sf, "read", never)
    monkeypatch.setattr(sf.SoundFile, "read", never)
    dataset = regression_table(root)
    copy = dataset.fetch(tmp_path / "data", on_unreadable="skip")
    index = dataset.index(tmp_path / "data")
    by_file = {row["path"]: row for row in index}
    assert index.columns == ["path", "split", "score", *AUDIO]
    assert [by_file[f"audio/{n}"][c] for n in ("a.wav", "c.wav", "d.flac") for c in AUDIO] == [
        "0.2", "16000", "1", "0.3", "44100", "2", "0.25", "16000", "1",
    ]  # fmt: skip
    assert [by_file[f"audio/{n}"][c] for n in ("noise.wav", "empty.wav") for c in AUDIO] == [""] * 6

    report = dataset.report(tmp_path / "data")
    assert report["task"] == "regression" and report["targets"] == ["score"]
    train, dev, test, total = (parts(report)[s] for s in (*SPLITS, "total"))
    assert (train["files"], dev["files"], test["files"], total["files"]) == (3, 2, 1, 6)
    assert train["duration_s"] == pytest.approx(0.3) and total["duration_s"] == pytest.approx(0.85)
    assert (train["shortest_s"], train["longest_s"]) == (0.1, 0.2)
    assert total["sample_rates"] == {"16000": 3, "44100": 1} and total["channels"] == {"1": 3, "2": 1}
    assert dev["unreadable"] == 1 and dev["unreadable_examples"] == [
        {"path": "audio/empty.wav", "reason": "empty file (0 bytes)"}
    ]
    assert train["unreadable"] == 1 and train["unreadable_examples"][0]["path"] == "audio/noise.wav"
    assert train["unreadable_examples"][0]["reason"].startswith("cannot read the audio header (")
    assert total["unreadable"] == 2 and test["unreadable"] == 0
    assert train["targets"] == {"score": {"min": -2.0, "mean": pytest.approx(6.5 / 3), "max": 7.0, "not_numbers": 0}}
    assert total["targets"]["score"] == {"min": -2.0, "mean": pytest.approx(20.75 / 6), "max": 10.0, "not_numbers": 0}

    text = datareport.text(report).splitlines()
    assert "target ranges:" in text and "unreadable files, left out by preprocessing (2):" in text
    assert text[5].startswith("total  6 ") and text[5].endswith("  16000 Hz (3), 44100 Hz (1)  1 (3), 2 (1)  2")
    ranges = [line.split() for line in text if line.startswith("  score ")]
    assert ranges[0] == ["score", "train", "-2", "2.16667", "7", "0"] and len(ranges) == 4
    markdown = (copy / copies.META / f"{index.file.stem.replace('index-', 'report-')}.md").read_text()
    assert "| score | total | -2 | 3.45833 | 10 | 0 |" in markdown and "## Unreadable files" in markdown
    assert "| dev | audio/empty.wav | empty file (0 bytes) |" in markdown


def test_a_file_spoilt_after_the_fetch_is_counted_when_fetched_again(table, tmp_path):
    root, _ = table
    (root / "audio/noise.wav").unlink()
    (root / "audio/empty.wav").unlink()
    with open(root / "index.csv") as f:
        lines = [line for line in f if "noise.wav" not in line and "empty.wav" not in line]
    (root / "index.csv").write_text("".join(lines))
    dataset = regression_table(root)
    copy = dataset.fetch(tmp_path / "data")
    assert dataset.report(tmp_path / "data")["total"]["unreadable"] == 0
    data, text = dataset.report_files(tmp_path / "data")
    data.unlink()
    text.unlink()
    assert dataset.report(tmp_path / "data") is None  # an index without its report (an older tympan's)
    dataset.fetch(tmp_path / "data")
    assert dataset.report(tmp_path / "data")["total"]["files"] == 4  # made again, though the index is the same

    (copy / "audio/b.wav").write_bytes(b"not audio any more")
    (root / "audio/b.wav").write_bytes(b"not audio any more")  # the same size as its source: no new copy
    with pytest.raises(DataError, match="audio/b.wav: cannot read the audio header"):
        dataset.fetch(tmp_path / "data")
    dataset.fetch(tmp_path / "data", on_unreadable="skip")
    report = dataset.report(tmp_path / "data")
    assert report["splits"]["train"]["unreadable"] == 1 and report["splits"]["train"]["files"] == 2
    assert dataset.index(tmp_path / "data").rows[1]["duration"] == ""


def test_a_listing_with_a_measured_column_is_refused(table, tmp_path):
    root, rows = table
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "split", "score", "duration"])
        writer.writeheader()
        writer.writerows({**row, "duration": "1"} for row in rows[:4])
    with pytest.raises(DataError, match=r"index.csv: its index has a column 'duration', which fetching fills in"):
        regression_table(root).fetch(tmp_path / "data")


def test_multilabel_report_counts_files_per_class(tmp_path):
    dataset = ToyMultiLabel(seed=3, train=8, dev=4, test=4)
    dataset.fetch(tmp_path)
    index, report = dataset.index(tmp_path), dataset.report(tmp_path)
    assert report["task"] == "multilabel" and report["targets"] == dataset.targets
    for split, part in parts(report).items():
        rows = index.rows if split == "total" else index.split(split)
        assert part["classes"] == {c: sum(r[c] == "1" for r in rows) for c in dataset.targets}
        assert part["sample_rates"] == {"16000": len(rows)}
    text = datareport.text(report)
    assert "files per class (multi-label):" in text and text.splitlines()[-1].split()[0] == dataset.targets[-1]


def test_many_classes_print_as_one_line_a_split():
    tally = datareport.Tally("words", "classification", ["word"])
    for number in range(60):  # even numbers (even words) in train, odd ones in dev, none in test
        row = {"path": f"{number}.wav", "split": SPLITS[number % 2], "word": f"w{number % 20:02d}"}
        tally.add({**row, "duration": "1", "sample_rate": "16000", "channels": "1"})
    tally.add({"path": "x.wav", "split": "train", "word": "w00", **dict.fromkeys(AUDIO, "")}, "x")
    report = tally.result(".tympan/index-abc.csv", {})
    text = datareport.text(report).splitlines()
    assert "  train: 10 of 20 classes have files; fewest 0 (w01), most 4 (w00)" in text
    assert "  test: no files" in text
    assert "  total: 20 of 20 classes have files; fewest 3 (w01), most 4 (w00)" in text
    assert "  train: x.wav: x" in text and text[2].split()[:2] == ["train", "31"]
    assert datareport.markdown(report).count("\n| w") == 20  # Markdown: every class


def test_other_blocks_reports_survive_a_fetch_again(fsdd_mirror, tmp_path):
    source = tmp_path / "source" / "recordings"
    source.mkdir(parents=True)
    for digit in range(10):
        for speaker in ("george", "jackson"):
            name = f"{digit}_{speaker}_0.wav"
            shutil.copyfile(fsdd_mirror / "fsdd" / "recordings" / name, source / name)
    one = FSDD(source=str(source.parent), train_speakers=["george"], dev_speakers=["jackson"], test_speakers=[])
    two = FSDD(source=str(source.parent), train_speakers=["jackson"], dev_speakers=["george"], test_speakers=[])
    copy = one.fetch(tmp_path / "raw")
    two.fetch(tmp_path / "raw")
    (copy / "recordings/3_george_0.wav").write_bytes(b"")  # a damaged copy: fetched again whole
    one.fetch(tmp_path / "raw")
    assert (copy / "recordings/3_george_0.wav").stat().st_size > 0
    assert all(f.is_file() for block in (one, two) for f in block.report_files(tmp_path / "raw"))
    assert two.report(tmp_path / "raw")["splits"]["train"]["classes"]["label"]["3"] == 1
