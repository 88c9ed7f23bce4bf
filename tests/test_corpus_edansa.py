"""EDANSA-2019 from a miniature replica of its release: `EDANSA-2019/labels.csv` (the real header)
and 48 kHz clips at `EDANSA-2019/data/<region>/<site>/<file>.wav`, extracted, zipped in a mirror,
or served over HTTP."""

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.components import check
from tympan.datasets.edansa import ALL_LABELS, EDANSA2019
from tympan.errors import DataError
from tympan.tasks.multilabel import MultiLabel

RATE = 48_000
# labels.csv's header as published (github.com/speechLabBcCuny/EDANSA-2019, assets/labels.csv)
HEADER = (
    "batch,set,region,Site ID,Date,Start Time,End Time,Length,Clip Path,Anth,Bio,Geo,Sil,Auto,Airc,Mach,Flare,"
    "Bird,Mam,Bug,Wind,Rain,Water,Truck,Car,Prop,Helo,Jet,Corv,SongB,DGS,Grous,Crane,Loon,SeaB,Owl,Hum,Rapt,"
    "Woop,ShorB,Woof,Bear,Mous,Deer,Weas,Meow,Hare,Shrew,Mosq,Fly"
)
# (set, region, site, clip file, the tags that are 1)
CLIPS = [
    ("train", "anwr", "41", "S4A10291_20190601_030000_0m_0s__0m_30s_splt-0.wav", {"Bio", "Bird", "SongB"}),
    ("train", "anwr", "41", "S4A10291_20190601_030000_0m_0s__0m_30s_splt-1.wav", {"Geo", "Wind"}),
    ("train", "prudhoe", "21", "S4A10300_20190612_150000_2m_10s__3m_30s_splt-0.wav", {"Anth", "Airc", "Jet"}),
    ("valid", "prudhoe", "12", "S4A10268_20190520_070000_0m_0s__0m_30s_splt-0.wav", {"Bio", "Bird", "Wind"}),
    ("valid", "prudhoe", "12", "prudhoe_12_S4A10268_20190520_070000_exact_2019-05-20_07-00-57_0m_0s__0m_10s.wav",
     {"Sil"}),
    ("test", "prudhoe", "15", "S4A10274_20190702_090000_5m_0s__6m_0s_splt-3.wav", {"Bio", "Bug", "Mosq"}),
]  # fmt: skip


def labels_csv(clips=CLIPS) -> str:
    lines = [HEADER]
    for batch, (split, region, site, name, tags) in enumerate(clips, start=1):
        flags = ",".join("1" if tag in tags else "0" for tag in HEADER.split(",")[9:])
        times = f"06/0{batch}/2019,07:00:{batch}0.000000,07:00:{batch + 1}0.000000,00:00:10.000000"
        lines.append(f"{batch},{split},{region},{site},{times},{region}/{site}/{name},{flags}")
    return "\n".join(lines) + "\n"


def make_release(folder: Path, clips=CLIPS) -> Path:
    """The extracted archive: `folder/EDANSA-2019/{labels.csv,data/...}`; returns `folder`."""
    top = folder / "EDANSA-2019"
    rng = np.random.default_rng(0)
    for _, region, site, name, _ in clips:
        clip = top / "data" / region / site / name
        clip.parent.mkdir(parents=True, exist_ok=True)
        sf.write(clip, 0.1 * rng.standard_normal(RATE // 10), RATE, subtype="PCM_16")
    (top / "labels.csv").write_text(labels_csv(clips))
    return folder


def zipped(release: Path) -> bytes:
    """EDANSA-2019.zip of an extracted release, with a macOS resource fork as such zips often carry."""
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for file in sorted((release / "EDANSA-2019").rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(release).as_posix())
        archive.writestr("__MACOSX/EDANSA-2019/._labels.csv", b"junk")
        archive.writestr("EDANSA-2019/notes.txt", b"not needed")
    return data.getvalue()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def check_index(dataset: EDANSA2019, root: Path) -> list[dict]:
    index = dataset.index(root)
    rows = sorted(index.rows, key=lambda row: row["path"])
    assert len(rows) == len(CLIPS)
    assert all(index.path_of(row).is_file() for row in rows)
    return rows


def test_extracted_release_gives_the_published_split_coarse_tags_and_site_metadata(tmp_path):
    source = make_release(tmp_path / "src")
    dataset = EDANSA2019(source=str(source))  # the folder the archive was extracted in
    root = tmp_path / "data"
    dataset.fetch(root)
    rows = check_index(dataset, root)
    assert dataset.targets == ["Anth", "Bio", "Geo", "Sil"] and dataset.default_task == "multilabel"
    assert {split: sum(r["split"] == split for r in rows) for split in ("train", "dev", "test")} == {
        "train": 3, "dev": 2, "test": 1,
    }  # fmt: skip
    by_name = {Path(r["path"]).name: r for r in rows}
    jet = by_name[CLIPS[2][3]]
    assert jet["path"] == f"data/prudhoe/21/{CLIPS[2][3]}"
    assert (jet["Anth"], jet["Bio"], jet["Geo"], jet["Sil"]) == ("1", "0", "0", "0")
    assert (jet["region"], jet["site"], jet["batch"]) == ("prudhoe", "21", "3")
    assert (jet["date"], jet["start_time"], jet["length"]) == ("06/03/2019", "07:00:30.000000", "00:00:10.000000")
    assert "Jet" not in jet  # only the label set's tags are target columns
    # the split is by site: no site in two splits
    sites = {(r["region"], r["site"]): r["split"] for r in rows}
    assert len(sites) == 4 and all(sites[(r["region"], r["site"])] == r["split"] for r in rows)
    assert sf.info(root / "edansa2019" / jet["path"]).samplerate == RATE
    assert MultiLabel(targets=dataset.targets).encode(rows, "all").shape == (6, 4)


def test_label_sets(tmp_path):
    source = make_release(tmp_path / "src") / "EDANSA-2019"  # the top folder itself also serves
    root = tmp_path / "data"
    baseline = EDANSA2019(source=str(source), labels="baseline")
    baseline.fetch(root)
    assert baseline.targets == ["Bio", "Bird", "SongB", "DGS", "Anth", "Bug", "Grous", "Airc", "Sil"]
    bird = next(r for r in check_index(baseline, root) if r["path"].endswith(CLIPS[0][3]))
    assert [bird[t] for t in baseline.targets] == ["1", "1", "1", "0", "0", "0", "0", "0", "0"]
    every = EDANSA2019(source=str(source), labels="all")
    every.fetch(root)  # the same copy, another index
    assert every.targets == HEADER.split(",")[9:] == list(ALL_LABELS)
    mosquito = next(r for r in check_index(every, root) if r["split"] == "test")
    assert {t for t in every.targets if mosquito[t] == "1"} == {"Bio", "Bug", "Mosq"}
    chosen = EDANSA2019(source=str(source), labels=["Wind", "Sil"])
    chosen.fetch(root)
    assert [(r["Wind"], r["Sil"]) for r in check_index(chosen, root) if r["split"] == "dev"].count(("0", "1")) == 1
    for bad in ("fine", ["Wind", "Snow"], [], ["Wind", "Wind"]):
        with pytest.raises(ValueError, match="labels"):
            check(EDANSA2019, {"labels": bad})


def test_archive_in_the_mirror_is_verified_and_extracted_without_the_rest(tmp_path, monkeypatch):
    data = zipped(make_release(tmp_path / "src"))
    mirror = tmp_path / "mirror"
    (mirror / "edansa2019").mkdir(parents=True)
    (mirror / "edansa2019" / "EDANSA-2019.zip").write_bytes(data)
    monkeypatch.setenv("TYMPAN_DATA_MIRROR", str(mirror))
    with pytest.raises(DataError, match="md5"):
        EDANSA2019(checksum="md5:" + "0" * 32).fetch(tmp_path / "bad")
    dataset = EDANSA2019(checksum=md5(data))
    copy = dataset.fetch(tmp_path / "data")
    check_index(dataset, tmp_path / "data")
    kept = {p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and ".tympan" not in p.parts}
    assert kept == {"labels.csv"} | {f"data/{region}/{site}/{name}" for _, region, site, name, _ in CLIPS}


def test_download_from_the_archive_url(tmp_path, serve):
    data = zipped(make_release(tmp_path / "src"))
    server, base = serve({"EDANSA-2019.zip": data})
    dataset = EDANSA2019(url=f"{base}/EDANSA-2019.zip", checksum=md5(data))
    dataset.fetch(tmp_path / "data")
    check_index(dataset, tmp_path / "data")
    assert [name for name, _ in server.requests] == ["EDANSA-2019.zip"]
    assert not (tmp_path / "data" / "edansa2019" / ".archives").exists()


def test_bad_releases_name_the_file(tmp_path):
    release = make_release(tmp_path / "src") / "EDANSA-2019"
    labels = release / "labels.csv"
    text = labels.read_text()

    def fetch(name: str):
        EDANSA2019(source=str(release)).fetch(tmp_path / name)

    labels.write_text(text.replace(",valid,", ",validation,", 1))
    with pytest.raises(DataError, match=r"labels\.csv, line 5: set 'validation'"):
        fetch("a")
    labels.write_text(text.replace("Site ID,", "Site,", 1))
    with pytest.raises(DataError, match=r"labels\.csv: missing column\(s\) \['Site ID'\]"):
        fetch("b")
    lines = text.splitlines()
    labels.write_text("\n".join([*lines[:2], lines[2].replace(",0,", ",x,", 1), *lines[3:]]) + "\n")
    with pytest.raises(DataError, match=r"labels\.csv, line 3: .* is 'x', not 0 or 1"):
        fetch("c")
    labels.write_text(text)
    (release / "data" / "prudhoe" / "15" / CLIPS[5][3]).unlink()
    with pytest.raises(DataError, match=r"1 clip\(s\) listed in labels\.csv are missing"):
        fetch("d")
    labels.unlink()
    with pytest.raises(DataError, match=r"no labels\.csv and no archive EDANSA-2019\.zip"):
        fetch("e")
    assert not (tmp_path / "a" / "edansa2019").exists()
