"""AudioSet from a miniature replica of a downloaded copy: clips named as common downloaders write
them (PANN's `Y<YTID>.wav` in per-subset folders, `<YTID>_<start>_<end>.flac`, ...) and the
official segment lists (three "#" lines, then `YTID, start, end, "mid,mid"`) in `metadata/`."""

import hashlib
import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.datasets.audioset import META_COLUMNS, AudioSet, clip_ids, held_out
from tympan.datasets.audioset_classes import CLASSES
from tympan.errors import DataError
from tympan.tasks.multilabel import MultiLabel

RATE = 32_000  # PANN's downloader writes 32 kHz mono WAV
SPEECH, MALE, MUSIC, DOG, BARK, CAR = "/m/09x0r", "/m/05zppz", "/m/04rlf", "/m/0bt9lr", "/m/05tny_", "/m/0k4j"
# (YTID, labels); a YTID may start with "-" or contain "_"
BALANCED = [
    ("--PJHxphWEs", [SPEECH, MUSIC]),
    ("-0RWZT-miFs", [CAR]),
    ("0a_Xz9kLm2Q", [DOG, BARK]),
    ("1bcdEFGhijk", [MALE]),
    ("2Yx_-kk9LmN", [MUSIC]),
    ("3ZZtop00001", [SPEECH]),
]
BALANCED_GONE = [("4gone00000A", [SPEECH]), ("5gone00000B", [MUSIC])]  # listed, no clip
EVAL = [("Yeval0000_1", [DOG]), ("e2val000002", [SPEECH, CAR])]  # a YTID starting with Y
EVAL_GONE = [("e3gone00003", [BARK])]
UNBALANCED = [("u1nbal00001", [BARK]), ("u2nbal00002", [MUSIC, SPEECH])]


def segment_list(segments, start=30) -> str:
    lines = [
        "# Segments csv created Sun Mar  5 10:54:25 2017",
        f"# num_ytids={len(segments)}, num_segs={len(segments)}, num_unique_labels=527, num_positive_labels=9",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    lines += [f'{ytid}, {start:.3f}, {start + 10:.3f}, "{",".join(mids)}"' for ytid, mids in segments]
    return "\n".join(lines) + "\n"


def class_list() -> str:
    """class_labels_indices.csv in Google's own format: every name quoted, "\\n" line ends."""
    return "index,mid,display_name\n" + "".join(f'{i},{mid},"{name}"\n' for i, (mid, name) in enumerate(CLASSES))


def write_clip(file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    noise = 0.1 * np.random.default_rng(len(file.name)).standard_normal(RATE // 10)
    sf.write(file, noise, RATE, subtype="PCM_16", format="FLAC" if file.suffix == ".flac" else "WAV")


def make_copy(folder: Path, metadata: bool = True) -> Path:
    """PANN's layout: audios/<subset>/Y<YTID>.wav (unbalanced in part folders), metadata/*.csv; the
    eval clips as another downloader names them."""
    for ytid, _ in BALANCED:
        write_clip(folder / "audios" / "balanced_train_segments" / f"Y{ytid}.wav")
    for ytid, _ in UNBALANCED:
        write_clip(
            folder / "audios" / "unbalanced_train_segments" / "unbalanced_train_segments_part00" / f"Y{ytid}.wav"
        )
    write_clip(folder / "audios" / "eval_segments" / f"{EVAL[0][0]}_30.000_40.000.flac")
    write_clip(folder / "audios" / "eval_segments" / f"{EVAL[1][0]}_30000.wav")
    (folder / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("not a clip")
    if metadata:
        meta = folder / "metadata"
        meta.mkdir()
        (meta / "balanced_train_segments.csv").write_text(segment_list(BALANCED[:3] + BALANCED_GONE + BALANCED[3:]))
        (meta / "eval_segments.csv").write_text(segment_list(EVAL + EVAL_GONE))
        (meta / "unbalanced_train_segments.csv").write_text(segment_list(UNBALANCED))
        (meta / "class_labels_indices.csv").write_text(class_list())
    return folder


def dev(ytid: str, fraction: float) -> bool:
    """The documented rule, written again: the first 8 bytes of SHA-256(YTID), big-endian, over 2**64."""
    return int.from_bytes(hashlib.sha256(ytid.encode()).digest()[:8], "big") / 2**64 < fraction


def rows_by_ytid(dataset: AudioSet, root: Path) -> dict[str, dict]:
    index = dataset.index(root)
    assert all(index.path_of(row).is_file() for row in index)
    return {row["ytid"]: row for row in index}


def test_balanced_train_hashed_dev_eval_test_and_one_warning_for_the_missing(tmp_path, caplog):
    source = make_copy(tmp_path / "clips")
    dataset = AudioSet(source=str(source), dev_fraction=0.5)
    with caplog.at_level(logging.WARNING):
        dataset.fetch(tmp_path / "data")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["audioset: segments without a clip in the copy, left out: balanced_train 2 of 8, eval 1 of 3"]
    rows = rows_by_ytid(dataset, tmp_path / "data")
    assert set(rows) == {y for y, _ in BALANCED + EVAL}  # no unbalanced clip: train is the balanced subset
    for ytid, _ in BALANCED:
        assert rows[ytid]["split"] == ("dev" if dev(ytid, 0.5) else "train")
        assert rows[ytid]["subset"] == "balanced_train"
    assert {rows[y]["split"] for y, _ in BALANCED} == {"train", "dev"}
    assert {rows[y]["split"] for y, _ in EVAL} == {"test"} and {rows[y]["subset"] for y, _ in EVAL} == {"eval"}
    assert rows["--PJHxphWEs"]["path"] == "audios/balanced_train_segments/Y--PJHxphWEs.wav"
    assert rows["Yeval0000_1"]["path"] == "audios/eval_segments/Yeval0000_1_30.000_40.000.flac"
    first = rows["--PJHxphWEs"]
    assert (first["start_seconds"], first["end_seconds"], first["mids"]) == ("30.000", "40.000", f"{SPEECH};{MUSIC}")
    assert len(dataset.targets) == 527 and dataset.targets[:3] == ["speech", "male_speech_man_speaking",
                                                                   "female_speech_woman_speaking"]  # fmt: skip
    assert len(set(dataset.targets)) == 527 and not set(dataset.targets) & set(META_COLUMNS)
    assert "bee_wasp_etc" in dataset.targets and "dental_drill_dentist_s_drill" in dataset.targets
    assert {t for t in dataset.targets if first[t] == "1"} == {"speech", "music"}
    assert {t for t in dataset.targets if rows["1bcdEFGhijk"][t] == "1"} == {"male_speech_man_speaking"}
    targets = MultiLabel(targets=dataset.targets).encode(list(rows.values()), "all")
    assert targets.shape == (8, 527) and targets.sum() == 11
    # the same settings give the same split, the split is the YTID's own: with fewer clips, no row moves
    assert all(held_out(y, 0.5) == dev(y, 0.5) for y, _ in BALANCED + UNBALANCED)


def test_both_train_subsets_and_mid_columns(tmp_path):
    dataset = AudioSet(source=str(make_copy(tmp_path / "clips")), train="both", class_columns="mid")
    dataset.fetch(tmp_path / "data")
    rows = rows_by_ytid(dataset, tmp_path / "data")
    assert set(rows) == {y for y, _ in BALANCED + UNBALANCED + EVAL}
    unbalanced = rows["u2nbal00002"]
    assert unbalanced["subset"] == "unbalanced_train" and unbalanced["split"] in ("train", "dev")
    assert unbalanced["path"].endswith("unbalanced_train_segments_part00/Yu2nbal00002.wav")
    assert dataset.targets == [mid for mid, _ in CLASSES] and dataset.target_column == SPEECH
    assert {t for t in dataset.targets if unbalanced[t] == "1"} == {SPEECH, MUSIC}


def test_ancestors_from_the_ontology(tmp_path):
    source = make_copy(tmp_path / "clips")
    human, animal = "/m/0dgw9r", "/m/0jbk"  # "Human sounds" is no class; "Animal" is one
    nodes = [
        {"id": human, "name": "Human sounds", "child_ids": [SPEECH]},
        {"id": SPEECH, "name": "Speech", "child_ids": [MALE]},
        {"id": MALE, "name": "Male speech, man speaking", "child_ids": []},
        {"id": animal, "name": "Animal", "child_ids": ["/m/068hy"]},
        {"id": "/m/068hy", "name": "Domestic animals, pets", "child_ids": [DOG]},
        {"id": DOG, "name": "Dog", "child_ids": [BARK]},
        {"id": BARK, "name": "Bark", "child_ids": []},
    ]
    (source / "metadata" / "ontology.json").write_text(json.dumps(nodes))
    dataset = AudioSet(source=str(source), ancestors=True)
    dataset.fetch(tmp_path / "data")
    rows = rows_by_ytid(dataset, tmp_path / "data")
    assert {t for t in dataset.targets if rows["1bcdEFGhijk"][t] == "1"} == {"male_speech_man_speaking", "speech"}
    assert {t for t in dataset.targets if rows["0a_Xz9kLm2Q"][t] == "1"} == {
        "dog", "bark", "domestic_animals_pets", "animal",
    }  # fmt: skip
    assert rows["1bcdEFGhijk"]["mids"] == MALE  # the labels as listed
    plain = AudioSet(source=str(source))
    plain.fetch(tmp_path / "data")
    assert rows_by_ytid(plain, tmp_path / "data")["1bcdEFGhijk"]["speech"] == "0"


@pytest.mark.parametrize(
    ("stem", "ytids"),
    [
        ("Y-0RWZT-miFs", ["-0RWZT-miFs"]),  # PANN
        ("-0RWZT-miFs", ["-0RWZT-miFs"]),
        ("-0RWZT-miFs_420.000_430.000", ["-0RWZT-miFs"]),
        ("-0RWZT-miFs_420000", ["-0RWZT-miFs"]),  # start in milliseconds
        ("Yeval0000_1", ["Yeval0000_1"]),  # a YTID that starts with Y, named as it is
        ("YYeval0000_1", ["Yeval0000_1"]),  # ... and with PANN's Y
        ("-0RWZT-miFs_clip", []),
        ("short", []),
        ("-0RWZT-miF$", []),
    ],
)
def test_clip_names(stem, ytids):
    assert clip_ids(stem) == ytids


def test_the_class_list_is_googles_file_byte_for_byte():
    data = class_list().encode()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert blob == "3a2767e81114adecde59992cf6607f31c1862f4c"  # PANN's metadata/class_labels_indices.csv


def test_segment_lists_missing_from_the_source_are_downloaded(tmp_path, serve):
    source = make_copy(tmp_path / "clips", metadata=False)
    files = {
        "balanced_train_segments.csv": segment_list(BALANCED).encode(),
        "eval_segments.csv": segment_list(EVAL).encode(),
    }
    server, base = serve(files)
    dataset = AudioSet(source=str(source), csv_url=f"{base}/")
    copy = dataset.fetch(tmp_path / "data")
    assert set(rows_by_ytid(dataset, tmp_path / "data")) == {y for y, _ in BALANCED + EVAL}
    assert sorted(name for name, _ in server.requests) == sorted(files)
    assert (copy / "eval_segments.csv").read_bytes() == files["eval_segments.csv"]


def test_the_mirror_holds_the_clips_and_without_either_no_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("TYMPAN_DATA_MIRROR", raising=False)
    with pytest.raises(DataError, match="the clips are not distributed.*dataset.args.source"):
        AudioSet().fetch(tmp_path / "none")
    make_copy(tmp_path / "mirror" / "audioset")
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(tmp_path / "mirror"))
    dataset = AudioSet()
    copy = dataset.fetch(tmp_path / "data")
    assert len(rows_by_ytid(dataset, tmp_path / "data")) == 8
    assert not (copy / "notes.txt").exists()


def test_bad_inputs_name_the_file(tmp_path, serve):
    source = make_copy(tmp_path / "clips")
    balanced = source / "metadata" / "balanced_train_segments.csv"
    text = balanced.read_text()

    def fetch(name: str, **args):
        AudioSet(source=str(source), **args).fetch(tmp_path / name)

    balanced.write_text(text.replace(", 30.000, 40.000,", ", 30.000,", 1))
    with pytest.raises(DataError, match=r"balanced_train_segments\.csv, line 4: not `YTID, start_seconds"):
        fetch("a")
    balanced.write_text(text.replace(CAR, "/m/nonsense", 1))
    with pytest.raises(DataError, match=r"balanced_train_segments\.csv, line 5: '/m/nonsense' is not one of"):
        fetch("b")
    balanced.write_text(text.replace(f'"{CAR}"', CAR, 1))
    with pytest.raises(DataError, match=r"balanced_train_segments\.csv, line 5: the labels .* are not a quoted list"):
        fetch("c")
    balanced.write_text(text + segment_list(EVAL[:1]).split("\n", 3)[3])  # an eval segment in the train list
    with pytest.raises(DataError, match=r"eval_segments\.csv, line 4: Yeval0000_1 is also in balanced_train"):
        fetch("d")
    balanced.write_text(text)
    classes = source / "metadata" / "class_labels_indices.csv"
    classes.write_text(class_list().replace('"Speech"', '"Talk"'))
    with pytest.raises(DataError, match=r"class_labels_indices\.csv: not AudioSet v1's 527 classes .*row 2"):
        fetch("e")
    classes.unlink()
    (source / "metadata" / "unbalanced_train_segments.csv").unlink()
    server, base = serve({})
    with pytest.raises(DataError, match=r"unbalanced_train_segments\.csv: download failed"):
        fetch("f", train="unbalanced", csv_url=base)
    with pytest.raises(DataError, match=r"ontology\.json: download failed"):
        fetch("g", ancestors=True, ontology_url=f"{base}/ontology.json")
    empty = tmp_path / "empty"
    (empty / "metadata").mkdir(parents=True)
    for name in ("balanced_train_segments.csv", "eval_segments.csv"):
        (empty / "metadata" / name).write_text(segment_list(BALANCED))
    with pytest.raises(DataError, match="no AudioSet clips"):
        AudioSet(source=str(empty)).fetch(tmp_path / "h")


def test_the_segment_list_is_streamed(tmp_path):
    """30,000 listed segments, 2 clips: prepare's memory follows the clips, not the list (reading the
    list whole would take 2.8 MiB)."""
    copy = make_copy(tmp_path / "copy")
    listed = [(f"x{i:010d}", [MUSIC]) for i in range(30_000)]
    (copy / "metadata" / "unbalanced_train_segments.csv").write_text(
        segment_list(listed[:15_000] + UNBALANCED + listed[15_000:])
    )
    dataset = AudioSet(train="unbalanced")
    tracemalloc.start()
    try:
        rows = dataset.prepare(copy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert {row["ytid"] for row in rows if row["subset"] == "unbalanced_train"} == {y for y, _ in UNBALANCED}
    assert peak < 1 << 20, f"prepare held {peak / 2**20:.1f} MiB for a 1.2 MB segment list"
