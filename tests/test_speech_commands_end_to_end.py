"""Speech Commands end to end through the command line (issue 19).

A copy of the corpus is generated here (tests/speech_commands_replica.py): the words zero..nine are
real speech, FSDD's spoken digits at 16 kHz, with the official lists by speaker (three speakers
train, an unseen one each for dev and test); the other 25 words are a synthetic clip each. It is
the data mirror's `speech_commands/` for experiments/speech-commands, which runs in a copy of its
folder as a user runs it: `dvc repro` runs its stages, `tympan fetch`, `tympan preprocess` and
`tympan train` (a tiny CNN, two epochs, dev accuracy well above chance); the same three commands
typed by hand then find their work done and change nothing DVC tracks; `tympan inference` labels
dev clips, and `tympan serve` on 127.0.0.1 answers V1 and V2 requests exactly as inference did.
The pipeline trains once (about 30 s of the test's minute): a second training, by hand beside
DVC's, would only show what the resume tests show already, that a run is deterministic.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.speech_commands_replica import DIGITS, FSDD_SPLITS, from_fsdd, speaker_id
from tympan.datasets.speech_commands import WORDS, SpeechCommands

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENT = "speech-commands"  # the experiment's name: the served model's name
SAMPLE = 2  # dev clips of each digit that inference and the server are asked about


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def tympan(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run([str(BIN / "tympan"), *args], cwd, env)


@pytest.fixture(scope="module")
def workspace(fsdd_mirror, tmp_path_factory):
    """A repository-like folder: tympan/ and experiments/speech-commands/ copied (without the
    committed lock, data and runs), a data mirror holding the replica; `(folder, mirror, env)`."""
    root = tmp_path_factory.mktemp("speech-commands-e2e")
    mirror = root / "mirror"
    from_fsdd(fsdd_mirror / "fsdd" / "recordings", mirror / "speech_commands")
    shutil.copytree(REPO / "tympan", root / "tympan", ignore=shutil.ignore_patterns("__pycache__"))
    folder = root / "experiments" / EXPERIMENT
    ignored = shutil.ignore_patterns("data", "runs", "dvc.lock")
    shutil.copytree(REPO / "experiments" / EXPERIMENT, folder, ignore=ignored)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TYMPAN_DATA_MIRROR": str(mirror)}
    env |= {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    # one thread a process unless told otherwise: two on shared cores spin against each other (as
    # under `make test`'s workers, see conftest.py), which made training here eight times slower
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or "1"
    return folder, mirror, env


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run([str(BIN / "dvc"), *args], cwd, env, timeout=600)


@pytest.fixture(scope="module")
def reproduced(workspace):
    """`dvc repro` in the experiment's folder (a git and DVC repository at the copy's root):
    `(run dir, dvc's output)`."""
    folder, _, env = workspace
    root = folder.parents[1]
    run(["git", "init", "-q"], root, env)
    dvc("init", "-q", cwd=root, env=env)
    return folder / "runs" / EXPERIMENT, dvc("repro", cwd=folder, env=env)


def test_dvc_repro_runs_fetch_preprocess_and_train_through_tympan(workspace, reproduced):
    folder, _, env = workspace
    run_dir, said = reproduced
    ran = [line.split("'")[1] for line in said.splitlines() if line.startswith("Running stage")]
    assert ran == ["fetch", "preprocess", "train"], said
    for command in ("tympan fetch params.yaml", "tympan preprocess params.yaml",
                    f"tympan train params.yaml --run-dir runs/{EXPERIMENT}"):  # fmt: skip
        assert f"> {command}" in said
    assert "dataset: data/raw/speech_commands" in said and f"run: runs/{EXPERIMENT}" in said
    assert "features: data/features/speech-commands" in said.splitlines(), said  # params.yaml names the store
    assert (folder / "dvc.lock").is_file() and (run_dir / "bundle" / "bundle.json").is_file()
    assert "accuracy" in dvc("metrics", "show", "--json", cwd=folder, env=env)


def test_fetch_indexed_the_official_lists(workspace, reproduced):
    folder, _, _ = workspace
    index = SpeechCommands().index(folder / "data" / "raw")
    others = len(WORDS) - len(DIGITS)
    assert {s: len(index.split(s)) for s in ("train", "dev", "test")} == {"train": 3 * 500 + others, "dev": 100,
                                                                          "test": 50}  # fmt: skip
    splits = ("train", "dev", "test")
    speakers = {s: {row["speaker"] for row in index.split(s) if row["label"] in DIGITS} for s in splits}
    assert speakers == {s: {speaker_id(name) for name in names} for s, names in FSDD_SPLITS.items()}
    assert sorted(index.labels("label")) == sorted(WORDS)
    assert {row["label"] for row in index.split("dev")} == set(DIGITS)
    assert {(row["duration"], row["sample_rate"], row["channels"]) for row in index} == {("1", "16000", "1")}


def test_train_learnt_the_words_of_an_unseen_speaker(reproduced):
    run_dir, said = reproduced
    summary = json.loads((run_dir / "summary.json").read_text())
    accuracy = summary["dev"]["accuracy"]
    assert f"dev: accuracy {accuracy:.4f}" in said
    # 100 dev clips of ten words: chance is 0.1 (and 1/35 over the model's classes)
    assert accuracy >= 0.3, summary["dev"]
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 2  # header and two epochs


def test_the_same_steps_by_hand_find_them_done_and_leave_dvc_nothing_to_do(workspace, reproduced):
    """The commands params.yaml gives for running the experiment without DVC agree with DVC's run."""
    folder, _, env = workspace
    _, said = reproduced
    assert "dataset: data/raw/speech_commands" in tympan("fetch", "params.yaml", cwd=folder, env=env)
    features = tympan("preprocess", "params.yaml", cwd=folder, env=env).strip().splitlines()[-1]
    assert features.startswith("features: ") and f"\n{features}\n" in said
    trained = tympan("train", "params.yaml", "--run-dir", f"runs/{EXPERIMENT}", cwd=folder, env=env)
    headline = next(line for line in said.splitlines() if line.startswith("dev: accuracy"))
    assert headline in trained.splitlines()
    assert "Running stage" not in dvc("repro", cwd=folder, env=env)


@pytest.fixture(scope="module")
def predicted(workspace, reproduced):
    """`tympan inference` of SAMPLE dev clips of each digit (from the mirror) into a JSON table:
    `(clips, rows)`."""
    folder, mirror, env = workspace
    run_dir, _ = reproduced
    listed = (mirror / "speech_commands" / "validation_list.txt").read_text().split()
    clips = [
        mirror / "speech_commands" / p
        for word in DIGITS
        for p in [p for p in listed if p.startswith(f"{word}/")][:SAMPLE]
    ]
    output = folder / "predictions.json"
    said = tympan("inference", str(run_dir / "bundle"), *map(str, clips), "--output", str(output), cwd=folder, env=env)
    assert f"wrote {output}" in said
    table = json.loads(output.read_text())
    assert table["failed"] == []
    return clips, table["predictions"]


def test_inference_labels_each_clip_with_every_words_probability(predicted):
    clips, rows = predicted
    assert [row["file"] for row in rows] == [str(clip) for clip in clips]
    for row in rows:
        assert set(row) == {"file", "label", *(f"prob_{word}" for word in WORDS)}
        assert row[f"prob_{row['label']}"] == max(row[f"prob_{word}"] for word in WORDS)
        assert sum(row[f"prob_{word}"] for word in WORDS) == pytest.approx(1, abs=1e-4)
    right = sum(row["label"] == Path(row["file"]).parent.name for row in rows)
    assert right >= 0.2 * len(rows), [(Path(r["file"]).parent.name, r["label"]) for r in rows]


@pytest.fixture(scope="module")
def server(workspace, reproduced):
    """A real `tympan serve` of the run's bundle on 127.0.0.1: its base URL (skips without KServe)."""
    pytest.importorskip("kserve")
    httpx = pytest.importorskip("httpx")
    folder, _, env = workspace
    run_dir, _ = reproduced
    port = free_port()
    log = folder / "serve.log"
    command = [str(BIN / "tympan"), "serve", str(run_dir / "bundle"), "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"tympan serve exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/v2/models/{EXPERIMENT}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"tympan serve not ready in 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_the_server_answers_as_inference_did_over_v1_and_v2(server, predicted):
    import httpx

    clips, rows = predicted
    v1 = httpx.post(f"{server}/v1/models/{EXPERIMENT}:predict", json={"instances": [{"b64": b64(c)} for c in clips]},
                    timeout=60)  # fmt: skip
    assert v1.status_code == 200, v1.text
    body = {"inputs": [{"name": "audio", "shape": [len(clips)], "datatype": "BYTES", "data": [b64(c) for c in clips]}]}
    v2 = httpx.post(f"{server}/v2/models/{EXPERIMENT}/infer", json=body, timeout=60)
    assert v2.status_code == 200, v2.text
    outputs = {output["name"]: output for output in v2.json()["outputs"]}
    assert outputs["probabilities"]["shape"] == [len(clips), len(WORDS)]
    classes = sorted(WORDS)  # the probabilities' order: the labels as fitted, sorted
    for i, (answer, row) in enumerate(zip(v1.json()["predictions"], rows, strict=True)):
        assert answer["label"] == row["label"] == outputs["label"]["data"][i]
        assert set(answer["probabilities"]) == set(WORDS)
        for word in WORDS:
            assert answer["probabilities"][word] == pytest.approx(row[f"prob_{word}"], abs=1e-5)
        served = outputs["probabilities"]["data"][i * len(WORDS) : (i + 1) * len(WORDS)]
        assert served == pytest.approx([row[f"prob_{word}"] for word in classes], abs=1e-5)
