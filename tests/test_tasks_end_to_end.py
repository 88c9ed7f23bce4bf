"""Every task (classification, multi-label, regression) through every front-end, end to end.

Each task trains once on its toy dataset (session fixtures, through `stages`); the tests then
check what each consumer of a run sees: summary.json's task block, the reloaded bundle, the rows
of `tympan inference`, `tympan serve` over V1 and V2 (tritonclient), answers that do not depend on
what else shares a micro-batch, a SIGKILLed run that resumes, bad targets in a user's table, and
the experiments under experiments/ run by the real `dvc repro`.
"""

from __future__ import annotations

import base64
import csv
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import free_port, kill_once_last_exists
from tympan import audio, bundle, cli, stages
from tympan import config as configuration

httpx = pytest.importorskip("httpx")
triton = pytest.importorskip("tritonclient.http")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TASKS = ("classification", "multilabel", "regression")
DATASETS = {"classification": "ToyClassification", "multilabel": "ToyMultiLabel", "regression": "ToyRegression"}
# what each task's rows, V1 answers and V2 outputs hold (toy classes: tone, chirp, noise)
COLUMNS = {
    "classification": ["label", "prob_chirp", "prob_noise", "prob_tone"],  # labels sorted, as fitted
    "multilabel": ["labels", "prob_tone", "prob_chirp", "prob_noise"],  # classes in target-column order
    "regression": ["frequency_hz", "duration_ms"],
}
OUTPUTS = {
    "classification": [("label", "BYTES"), ("probabilities", "FP32")],
    "multilabel": [("labels", "BYTES"), ("probabilities", "FP32")],
    "regression": [("frequency_hz", "FP32"), ("duration_ms", "FP32")],
}
TRACKING = {"classification": ("accuracy", "max"), "multilabel": ("mAP", "max"), "regression": ("mae", "min")}
STEPS_PER_EPOCH = 4  # 60 toy train clips, batches of 16
# 15 epochs of 4 steps, saved every 5 steps: most saved states are mid-epoch (the resume test kills these)
TRAINING = {"steps": 60, "eval_every": 4, "save_every": 5, "batch_size": 16, "progress": False}


def toy_config(task: str, root: Path) -> dict:
    """The task's toy experiment under `root`; no `task:` block, so the dataset's default task."""
    raw = {
        "experiment": f"toy-{task}",
        "seed": 1,
        "dataset": {"preset": DATASETS[task], "root": str(root / "data/raw")},
        "features": {
            "preset": "PannLogMel16k",
            "root": str(root / "data/features"),
            "online": [{"target": "tympan.transforms.normalize:Normalize", "args": {"mode": "instance"}}],
        },
        "model": {"preset": "SmallCNN", "args": {"channels": [8, 16, 16]}},
        "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}},
        "scheduler": "OneCycle",
        "training": TRAINING,
    }
    if task == "multilabel":  # a seeded batch augmentation, which must resume exactly too
        raw["augmentation"] = [{"target": "tympan.augmentations:MixUp"}]
    return raw


@dataclass
class Toy:
    """One task's finished toy run, its bundle loaded, and dev clips to send."""

    task: str
    root: Path
    raw: dict
    run_dir: Path
    summary: dict
    predictor: bundle.Predictor

    @property
    def dataset_dir(self) -> Path:
        return self.root / "data/raw" / f"toy_{self.task}"

    @property
    def bundle_dir(self) -> Path:
        return self.run_dir / "bundle"

    @functools.cached_property
    def clear_clips(self) -> list[tuple[bytes, np.ndarray, int, bundle.Prediction]]:
        """Dev clips whose outputs are clear of a decision boundary (so float noise cannot flip a
        label): `(wav bytes, samples, rate, in-process prediction)` each."""
        out = []
        for path in sorted((self.dataset_dir / "dev").glob("*.wav")):
            samples, rate = audio.load(path)
            expected = self.predictor.predict(samples, rate)
            if margin(self.predictor.task, expected.scores) > 1e-3:
                out.append((path.read_bytes(), samples, rate, expected))
        return out

    def clips(self, count: int = 8) -> list[tuple[bytes, np.ndarray, int, bundle.Prediction]]:
        assert len(self.clear_clips) >= count
        return self.clear_clips[:count]


def margin(task, scores: np.ndarray) -> float:
    """How far a clip's scores are from changing its one-value outputs (label, label set)."""
    if task.name == "classification":
        top = np.sort(scores)
        return float(top[-1] - top[-2])
    if task.name == "multilabel":
        return float(np.min(np.abs(scores - np.array(task.thresholds))))
    return np.inf


@pytest.fixture(scope="session")
def toys(tmp_path_factory):
    """`toys(task)`: the task's toy run (fetch, preprocess and train in-process, once per session)."""
    made: dict[str, Toy] = {}

    def get(task: str) -> Toy:
        if task not in made:
            root = tmp_path_factory.mktemp(f"toy-{task}")
            raw = toy_config(task, root)
            config = configuration.parse(raw)
            stages.fetch(config)
            stages.preprocess(config)
            run_dir, summary = stages.train(config, root / "run")
            made[task] = Toy(task, root, raw, run_dir, summary, bundle.load(run_dir / "bundle"))
        return made[task]

    return get


def ranking(summary: dict) -> dict:
    """What summary.json's task block says about ranking runs."""
    return {key: summary["task"][key] for key in ("name", "tracking_metric", "direction")}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def unit(task) -> np.ndarray | float:
    """What 1e-5 is measured in: probabilities, or a regression model's (scaled) output units."""
    return np.array(task.scale) if task.name == "regression" else 1.0


def assert_same(task, scores, singles: dict, expected: bundle.Prediction) -> None:
    """An answer (its scores, and its one-value outputs by name) equals the in-process prediction."""
    np.testing.assert_allclose(np.asarray(scores) / unit(task), expected.scores / unit(task), atol=1e-5, rtol=0)
    assert singles == {name: str(value) for name, value in expected.outputs.items() if isinstance(value, str)}


# ---------------------------------------------------------------- training, bundle and inference


@pytest.mark.parametrize("task", TASKS)
def test_summary_names_the_tracking_metric_and_its_direction(toys, task):
    """The dataset's default task is trained; its metric and direction pick the best state and are
    written into summary.json (regression: dev MAE, the lowest wins)."""
    toy = toys(task)
    metric, direction = TRACKING[task]
    assert ranking(toy.summary) == {"name": task, "tracking_metric": metric, "direction": direction}
    rows = read_rows(toy.run_dir / "metrics.csv")
    values = [float(row[f"dev_{metric}"]) for row in rows]
    best = values.index(max(values) if direction == "max" else min(values))
    assert int(rows[best]["step"]) == toy.summary["run"]["best_step"]
    assert toy.summary["dev"][metric] == pytest.approx(values[best], rel=1e-6)
    assert toy.predictor.task.name == task


@pytest.mark.parametrize("task", TASKS)
def test_inference_rows_carry_the_task_columns_and_the_bundle_values(toys, task, tmp_path, capsys):
    toy = toys(task)
    output = tmp_path / "predictions.csv"
    dev = toy.dataset_dir / "dev"
    assert cli.main(["inference", str(toy.bundle_dir), str(dev), "--output", str(output)]) == 0, capsys.readouterr()
    rows = read_rows(output)
    assert list(rows[0]) == ["file", *COLUMNS[task]]
    assert len(rows) == len(list(dev.glob("*.wav")))
    reloaded = bundle.load(toy.bundle_dir)
    for row in rows:
        expected = reloaded.as_row(reloaded.predict(*audio.load(row["file"])))
        assert list(expected) == COLUMNS[task]
        for column, value in expected.items():
            if isinstance(value, str):
                assert row[column] == value, (row["file"], column)
            else:
                assert float(row[column]) == pytest.approx(value, rel=1e-6, abs=1e-7), (row["file"], column)


def test_regression_trains_scaled_and_predicts_in_original_units(toys):
    """Toy targets are in the hundreds: training sees them scaled (O(1) targets and loss), the
    bundle answers in Hz and ms again, close to the dev truth, and `tympan inference` agrees."""
    toy = toys("regression")
    targets = COLUMNS["regression"]
    index = stages.index_of(configuration.parse(toy.raw))
    train, dev = index.split("train"), index.split("dev")

    def truth(rows):
        return np.array([[float(row[t]) for t in targets] for row in rows])

    task = toy.predictor.task
    np.testing.assert_allclose(task.center, truth(train).mean(axis=0))
    np.testing.assert_allclose(task.scale, truth(train).std(axis=0))
    assert (np.array(task.center) > 300).all() and (np.array(task.scale) > 100).all()  # really in the hundreds
    encoded = task.encode(train)
    np.testing.assert_allclose(encoded.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(encoded.std(axis=0), 1, atol=1e-5)
    history = read_rows(toy.run_dir / "metrics.csv")
    assert all(float(row["train_loss"]) < 5 for row in history)  # an MSE on scaled values
    assert float(history[0]["dev_mse"]) > 1000  # the same errors in Hz² and ms²

    predicted = np.array([toy.predictor.predict(*audio.load(toy.dataset_dir / row["path"])).scores for row in dev])
    true = truth(dev)
    assert ((predicted.mean(axis=0) > 200) & (predicted.mean(axis=0) < 800)).all(), predicted.mean(axis=0)
    mae = np.abs(predicted - true).mean(axis=0)
    assert (mae < 0.5 * true.std(axis=0)).all(), (mae, true.std(axis=0))
    assert mae.mean() == pytest.approx(toy.summary["dev"]["mae"], rel=1e-4)  # the bundle is the trained model


# ---------------------------------------------------------------- serving


@pytest.fixture(scope="session")
def servers(toys, tmp_path_factory):
    """`tympan serve` of each task's bundle (started together, named after the task): {task: URL}."""
    runs = {task: toys(task) for task in TASKS}
    logs = tmp_path_factory.mktemp("serve")
    processes, urls = {}, {}
    try:
        for task, toy in runs.items():
            port = free_port()
            command = [sys.executable, "-m", "tympan.cli", "serve", str(toy.bundle_dir), "--port", str(port)]
            with open(logs / f"{task}.log", "wb") as out:
                processes[task] = subprocess.Popen([*command, "--name", task], stdout=out, stderr=subprocess.STDOUT)
            urls[task] = f"http://127.0.0.1:{port}"
        for task in TASKS:
            wait_ready(urls[task], task, processes[task], logs / f"{task}.log")
        yield urls
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(url: str, name: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/v2/models/{name}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{name} server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1_answer(toy: Toy, prediction: dict) -> tuple[np.ndarray, dict]:
    """A V1 prediction as (scores, one-value outputs): probabilities by class, or the values by target."""
    scores, singles = [], {}
    for spec in toy.predictor.outputs():
        value = prediction[spec.name]
        if spec.columns is not None:
            assert list(value) == list(spec.columns)
            scores += [value[c] for c in spec.columns]
        elif spec.datatype == "FP32":
            scores.append(value)
        else:
            singles[spec.name] = value
    return np.array(scores), singles


def v2_answer(toy: Toy, outputs: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, dict]:
    """Clip `i` of V2 outputs (as numpy, by name) as (scores, one-value outputs)."""
    scores, singles = [], {}
    for spec in toy.predictor.outputs():
        value = outputs[spec.name][i]
        if spec.datatype == "FP32":
            scores += list(np.atleast_1d(value))
        else:
            singles[spec.name] = value.decode() if isinstance(value, bytes) else value
    return np.array(scores), singles


@pytest.mark.parametrize("task", TASKS)
def test_v1_answers_carry_the_task_outputs(toys, servers, task):
    toy, url = toys(task), servers[task]
    clips = toy.clips()
    instances = [{"b64": b64(wav)} for wav, *_ in clips[:4]]
    instances += [{"samples": samples.tolist(), "sample_rate": rate} for _, samples, rate, _ in clips[4:]]
    response = httpx.post(f"{url}/v1/models/{task}:predict", json={"instances": instances}, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(clips)
    for prediction, (*_, expected) in zip(predictions, clips, strict=True):
        assert list(prediction) == [name for name, _ in OUTPUTS[task]]
        assert_same(toy.predictor.task, *v1_answer(toy, prediction), expected)


def infer(url: str, task: str, tensor, **parameters):
    """A V2 request with tritonclient: (outputs as numpy by name, the response's output descriptions)."""
    client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)
    result = client.infer(task, [tensor], parameters=parameters or None)
    described = {o["name"]: o for o in result.get_response()["outputs"]}
    return {name: result.as_numpy(name) for name in described}, described


def check_v2(toy: Toy, outputs: dict, described: dict, n: int, expected: list[bundle.Prediction]) -> None:
    """The task's outputs, no others, with their datatypes and shapes; each clip as in-process."""
    assert [(name, o["datatype"]) for name, o in described.items()] == OUTPUTS[toy.task]
    for spec in toy.predictor.outputs():
        assert described[spec.name]["shape"] == ([n] if spec.columns is None else [n, len(spec.columns)])
    for i, prediction in enumerate(expected):
        assert_same(toy.predictor.task, *v2_answer(toy, outputs, i), prediction)


@pytest.mark.parametrize("task", TASKS)
def test_v2_binary_audio_files(toys, servers, task):
    toy = toys(task)
    clips = toy.clips()
    tensor = triton.InferInput("audio", [len(clips)], "BYTES")
    tensor.set_data_from_numpy(np.array([wav for wav, *_ in clips], dtype=object), binary_data=True)
    outputs, described = infer(servers[task], task, tensor)
    check_v2(toy, outputs, described, len(clips), [expected for *_, expected in clips])


@pytest.mark.parametrize("task", TASKS)
def test_v2_fp32_samples(toys, servers, task):
    toy = toys(task)
    clips = toy.clips()[:3]
    length = min(len(samples) for _, samples, _, _ in clips)
    batch = np.stack([samples[:length] for _, samples, _, _ in clips]).astype(np.float32)
    rate = clips[0][2]
    tensor = triton.InferInput("samples", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    outputs, described = infer(servers[task], task, tensor, sample_rate=rate)
    check_v2(toy, outputs, described, len(batch), [toy.predictor.predict(row, rate) for row in batch])


@pytest.mark.parametrize("task", TASKS)
def test_v2_metadata_lists_the_task_outputs(toys, servers, task):
    toy = toys(task)
    meta = triton.InferenceServerClient(servers[task].removeprefix("http://")).get_model_metadata(task)
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert [(name, o["datatype"]) for name, o in outputs.items()] == [*OUTPUTS[task], ("embedding", "FP32")]
    assert meta["parameters"]["task"] == task
    assert json.loads(meta["parameters"]["targets"]) == toy.predictor.task.targets
    if task == "regression":
        assert list(outputs)[:2] == toy.predictor.task.targets == COLUMNS["regression"]
        assert all(o["shape"] == [-1] for o in list(outputs.values())[:2])
    else:
        classes = [c.removeprefix("prob_") for c in COLUMNS[task][1:]]
        assert json.loads(outputs["probabilities"]["parameters"]["labels"]) == classes
        assert outputs["probabilities"]["shape"] == [-1, 3]


@pytest.mark.parametrize("task", TASKS)
def test_v2_one_requested_output(toys, servers, task):
    """A V2 request may ask for any one of the task's outputs by name, and gets only that."""
    toy = toys(task)
    wav, *_, expected = toy.clips(1)[0]
    name, datatype = OUTPUTS[task][0]
    body = {
        "inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": [b64(wav)]}],
        "outputs": [{"name": name}],
    }
    response = httpx.post(f"{servers[task]}/v2/models/{task}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (name, datatype, [1])
    value = expected.outputs[name]
    if datatype == "BYTES":
        assert output["data"] == [str(value)]
    else:
        assert output["data"][0] == pytest.approx(float(value), rel=1e-6)

    body["outputs"] = [{"name": "nope"}]
    refused = httpx.post(f"{servers[task]}/v2/models/{task}/infer", json=body, timeout=60)
    assert refused.status_code == 400 and str([*(n for n, _ in OUTPUTS[task]), "embedding"]) in refused.json()["error"]


def trimmed(samples: np.ndarray, seconds: float, rate: int) -> np.ndarray:
    return samples[: int(seconds * rate)]


@pytest.mark.parametrize("task", TASKS)
def test_an_answer_does_not_depend_on_its_micro_batch(toys, servers, task):
    """A clip sent alone, then among 8 concurrent requests of clips of other lengths (and 2 of its
    own length, batched with it): its answer stays the same to 1e-5, and equals in-process."""
    toy, url = toys(task), f"{servers[task]}/v1/models/{task}:predict"
    clips = toy.clips(8)
    _, clip, rate, expected = min(clips, key=lambda c: len(c[1]))  # the shortest: the others can take its length
    sources = [samples for _, samples, _, _ in clips]
    others = [s[: int((0.2 + 0.035 * i) * rate)] for i, s in enumerate(sources)]  # 0.2-0.45 s; toy clips are >= 0.5
    same = [s[: len(clip)] for s in sources if s is not clip][:2]  # its own length: these may share its batch
    assert len({len(o) for o in others} - {len(clip)}) == 8

    def ask(x: np.ndarray) -> dict:
        body = {"instances": [{"samples": x.tolist(), "sample_rate": rate}]}
        response = httpx.post(url, json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    alone = v1_answer(toy, ask(clip))
    assert_same(toy.predictor.task, *alone, expected)
    with ThreadPoolExecutor(len(others) + len(same) + 1) as pool:
        for _ in range(3):
            answers = list(pool.map(ask, [*others[:4], clip, *others[4:], *same]))
            together = v1_answer(toy, answers[4])
            np.testing.assert_allclose(together[0] / unit(toy.predictor.task), alone[0] / unit(toy.predictor.task),
                                       atol=1e-5, rtol=0)  # fmt: skip
            assert together[1] == alone[1]


# ---------------------------------------------------------------- resume after SIGKILL


@pytest.mark.parametrize("task", ["multilabel", "regression"])  # classification: tests/test_resume.py
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(toys, task, tmp_path):
    """The toy run trained again by `tympan train`, killed right after its first mid-epoch save and
    run again, ends with the session run's metrics.csv and summary.json (multi-label: with MixUp)."""
    toy = toys(task)
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(toy.raw))
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "--run-dir", str(run_dir)]

    kill_once_last_exists(command, tmp_path, run_dir)
    assert not (run_dir / "summary.json").exists()
    saved = torch.load(run_dir / "last/training_state.pt", weights_only=True)
    assert saved["step"] % STEPS_PER_EPOCH != 0 and saved["step"] < TRAINING["steps"]  # a mid-epoch state

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after step {saved['step']}" in resumed.stderr
    for name in ("metrics.csv", "summary.json"):
        assert (run_dir / name).read_text() == (toy.run_dir / name).read_text(), name


# ---------------------------------------------------------------- bad targets in a user's table

# (task, split of the bad row, what the row holds, what the error must say besides the file)
BAD_TABLES = {
    "regression train": ("regression", "train", {"pitch": "abc"}, "column 'pitch' holds 'abc', not a number"),
    "regression dev": ("regression", "dev", {"pitch": "n/a"}, "column 'pitch' holds 'n/a', not a number"),
    "multilabel train": ("multilabel", "train", {"a": "0", "b": "0"}, "no label set; one of the columns a, b"),
    "multilabel dev": ("multilabel", "dev", {"a": "0", "b": "0"}, "no label set; one of the columns a, b"),
}


def write_table(root: Path, mirror: Path, split: str, bad: dict) -> str:
    """A table over 12 FSDD recordings (8 train, 4 dev) with targets pitch, a and b; the second row
    of `split` holds `bad`. Returns that row's file name."""
    recordings = sorted((mirror / "fsdd/recordings").glob("*_george_*.wav"))[:12]
    rows = []
    for i, path in enumerate(recordings):
        rows.append({"file": path.name, "split": "train" if i < 8 else "dev", "pitch": str(100 + 10 * i),
                     "a": str(i % 2), "b": str(1 - i % 2)})  # fmt: skip
    row = rows[1 if split == "train" else 9]
    row.update(bad)
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return row["file"]


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_table_targets_stop_training_with_one_line(fsdd_mirror, tmp_path, capsys, case):
    """Fetch and preprocess accept the table; `tympan train` stops before it starts, with one line that
    names the split, the row (its file) and the column, and leaves no run directory behind."""
    task, split, bad, needle = BAD_TABLES[case]
    file = write_table(tmp_path, fsdd_mirror, split, bad)
    raw = {
        "experiment": "bad-table",
        "dataset": {"preset": "Table", "root": str(tmp_path / "data/raw"),
                    "args": {"root": str(fsdd_mirror / "fsdd/recordings"), "index": str(tmp_path / "index.csv"),
                             "targets": ["pitch"] if task == "regression" else ["a", "b"], "default_task": task}},
        "features": {"preset": "PannLogMel16k", "root": str(tmp_path / "data/features")},
        "model": {"preset": "SmallCNN", "args": {"channels": [4, 8]}},
        "optimizer": {"preset": "AdamW"},
        "training": {"epochs": 2, "batch_size": 4, "progress": False},
    }  # fmt: skip
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config)
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    capsys.readouterr()

    assert cli.main(["train", str(config_file), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("tympan")]
    assert line.startswith("tympan: error: ") and "Traceback" not in err
    assert needle in line and f"({file})" in line and split in line, line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the experiments under dvc


def dvc(*args, cwd, env):
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow  # three `tympan` processes under dvc: about a minute on two busy cores
@pytest.mark.parametrize("experiment", ["regression", "multilabel"])
def test_dvc_repro_of_a_task_experiment(tmp_path, experiment):
    """experiments/<task>: `dvc repro` there fetches (generates), preprocesses and trains the toy task
    into its own folder; the metric DVC shows is the task's; a second repro has nothing to do."""
    shutil.copytree(REPO / "tympan", tmp_path / "tympan", ignore=shutil.ignore_patterns("__pycache__"))
    folder = tmp_path / "experiments" / experiment
    shutil.copytree(REPO / "experiments" / experiment, folder, ignore=shutil.ignore_patterns("data", "runs"))
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["training"] = {**params["training"], "epochs": 2}
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q", cwd=tmp_path, env=env)

    first = dvc("repro", cwd=folder, env=env)
    ran = [line.split("'")[1] for line in first.splitlines() if line.startswith("Running stage")]
    assert ran == ["fetch", "preprocess", "train"]
    summary = json.loads((folder / f"runs/{experiment}/summary.json").read_text())
    metric, direction = TRACKING[experiment]
    assert ranking(summary) == {"name": experiment, "tracking_metric": metric, "direction": direction}
    assert (folder / f"runs/{experiment}/bundle/bundle.json").is_file()
    shown = json.loads(dvc("metrics", "show", "--json", cwd=folder, env=env))
    assert metric in json.dumps(shown)
    assert "Running stage" not in dvc("repro", cwd=folder, env=env)
