"""The KServe server: a real subprocess on 127.0.0.1 serving the tiny bundle over V1 and V2.

Every answer is checked against in-process `Predictor.predict` on the same audio; bad input
must get a 4xx that says what was wrong, and the server must keep answering.
"""

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import free_port
from tympan import audio, bundle

pytest.importorskip("kserve")
httpx = pytest.importorskip("httpx")
triton = pytest.importorskip("tritonclient.http")

NAME = "tiny"  # the tiny experiment's name: the served model's default name


@pytest.fixture(scope="module")
def bundle_dir(tiny_run):
    return tiny_run[0] / "bundle"


MAX_BODY = 8 * 2**20  # the test server's --max-body-mb 8
MAX_SAMPLES = 10_000_000  # its --max-samples


def start_server(location, log, *options, env=None, cwd=None, name=NAME):
    """`tympan serve LOCATION --port P OPTIONS` writing to `log`, once it is ready: `(base URL, process)`."""
    port = free_port()
    command = [sys.executable, "-m", "tympan.cli", "serve", str(location), "--port", str(port), *options]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log, name)
    except BaseException:
        stop(process, log)
        raise
    return url, process


def stop(process, log):
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.returncode == 0 or process.returncode < 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def served(bundle_dir, tmp_path_factory):
    """A running `tympan serve BUNDLE` (default host, clip limit 64): `(base URL, process, log file)`; the
    process is stopped even when tests fail."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    options = ["--max-duration", "5", "--max-body-mb", "8", "--max-samples", str(MAX_SAMPLES)]
    url, process = start_server(bundle_dir, log, *options)
    try:
        yield url, process, log
    finally:
        stop(process, log)


@pytest.fixture(scope="module")
def server(served):
    """The base URL of the running server."""
    return served[0]


def wait_ready(url, process, log, name=NAME, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/v2/models/{name}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def predictor(bundle_dir):
    return bundle.load(bundle_dir)


@pytest.fixture(scope="module")
def clips(tiny_workspace, predictor):
    """Dev-speaker recordings whose top two classes are clearly apart (no near-ties to flip):
    `(wav bytes, samples, rate, in-process prediction)` each."""
    root, _ = tiny_workspace
    out = []
    for path in sorted((root / "data/raw/fsdd/recordings").glob("*_yweweler_*.wav"))[:16]:
        samples, rate = audio.load(path)
        expected = predictor.predict(samples, rate, embeddings=True)
        top = np.sort(expected.scores)
        if top[-1] - top[-2] > 1e-3:
            out.append((path.read_bytes(), samples, rate, expected))
    assert len(out) >= 8
    return out[:8]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_matches(label, probabilities, expected):
    assert label == expected.outputs["label"]
    np.testing.assert_allclose(probabilities, expected.scores, atol=1e-5)


# ---------------------------------------------------------------- health and metadata


def test_health_and_readiness(server):
    assert httpx.get(f"{server}/").json() == {"status": "alive"}
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server}/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert httpx.get(f"{server}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    assert httpx.get(f"{server}/v1/models").json() == {"models": [NAME]}
    assert httpx.get(f"{server}/v2/models/nope/ready").status_code == 404
    assert httpx.get(f"{server}/v2/models/nope").status_code == 404


def test_model_metadata_describes_tensors_and_classes(server, predictor):
    meta = triton.InferenceServerClient(server.removeprefix("http://")).get_model_metadata(NAME)
    assert meta["name"] == NAME and meta["versions"] == [predictor.manifest["run_id"]]
    assert {(t["name"], t["datatype"]) for t in meta["inputs"]} == {("audio", "BYTES"), ("samples", "FP32")}
    outputs = {t["name"]: t for t in meta["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["probabilities"]["shape"] == [-1, 10]
    assert outputs["embedding"]["shape"] == [-1, 16]
    assert json.loads(outputs["probabilities"]["parameters"]["labels"]) == predictor.task.labels
    assert json.loads(meta["parameters"]["labels"]) == predictor.task.labels
    assert meta["parameters"]["task"] == "classification" and json.loads(meta["parameters"]["targets"]) == ["label"]
    assert meta["parameters"]["sample_rate"] == predictor.sample_rate
    assert meta["parameters"]["max_clips"] == 64 and meta["parameters"]["max_duration"] == 5
    assert meta["parameters"]["max_samples"] == MAX_SAMPLES


def listening_addresses(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} write them) of the sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.rpartition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def test_listens_on_loopback_only_by_default(server):
    assert listening_addresses(int(server.rsplit(":", 1)[1])) == ["0100007F"]  # 127.0.0.1, nothing else


@pytest.mark.parametrize("action", ["unload", "load"])
def test_model_repository_routes_are_refused_and_the_model_keeps_answering(server, clips, action):
    response = httpx.post(f"{server}/v2/repository/models/{NAME}/{action}")
    assert response.status_code == 403, response.text
    assert "repository" in response.json()["error"]
    assert httpx.get(f"{server}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server}/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    response = httpx.post(f"{server}{V1}", json={"instances": [{"b64": b64(clips[0][0])}]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == clips[0][3].outputs["label"]


def test_readiness_and_liveness_follow_the_batcher(predictor):
    """A model whose batcher has stopped cannot answer: not ready, and not live (a restart is the cure)."""
    from kserve.errors import ServerNotLive
    from kserve.model_repository import ModelRepository

    from tympan.serving import Clip, ServedModel, TympanDataPlane

    model = ServedModel(NAME, predictor)
    model.load()
    registry = ModelRepository()
    registry.update(model)
    plane = TympanDataPlane(model_registry=registry)
    rate = predictor.sample_rate

    async def states():
        yield await plane.ready(), await plane.model_ready(NAME), await plane.live()
        await model.batcher.submit([Clip("silence", np.zeros(rate, np.float32), rate)])  # starts the stages
        yield await plane.ready(), await plane.model_ready(NAME), await plane.live()
        model.batcher.stages[1].cancel()  # the model stage dies
        await asyncio.sleep(0.01)
        with pytest.raises(ServerNotLive, match="batcher"):
            await plane.live()
        yield await plane.ready(), await plane.model_ready(NAME), None
        registry.unload(NAME)
        yield await plane.ready(), None, None

    async def collect():
        return [state async for state in states()]

    alive = (True, True, {"status": "alive"})
    assert asyncio.run(collect()) == [alive, alive, (False, False, None), (False, None, None)]


# ---------------------------------------------------------------- V1


def test_v1_b64_and_samples_match_in_process(server, clips):
    instances = [{"b64": b64(wav)} for wav, *_ in clips[:4]]
    instances += [{"samples": s.tolist(), "sample_rate": r, "embeddings": True} for _, s, r, _ in clips[4:]]
    response = httpx.post(f"{server}/v1/models/{NAME}:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(clips)
    for i, (prediction, (*_, expected)) in enumerate(zip(predictions, clips, strict=True)):
        probabilities = [prediction["probabilities"][label] for label in sorted(prediction["probabilities"], key=int)]
        assert_matches(prediction["label"], probabilities, expected)
        assert ("embedding" in prediction) == (i >= 4)
        if i >= 4:
            np.testing.assert_allclose(prediction["embedding"], expected.embedding, atol=1e-5)


def test_v1_request_level_embeddings(server, clips):
    body = {"instances": [{"b64": b64(clips[0][0])}], "parameters": {"embeddings": True}}
    prediction = httpx.post(f"{server}/v1/models/{NAME}:predict", json=body).json()["predictions"][0]
    np.testing.assert_allclose(prediction["embedding"], clips[0][3].embedding, atol=1e-5)


# ---------------------------------------------------------------- V2


def test_v2_tritonclient_binary_bytes(server, clips):
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    tensor = triton.InferInput("audio", [len(clips)], "BYTES")
    tensor.set_data_from_numpy(np.array([wav for wav, *_ in clips], dtype=object), binary_data=True)
    result = client.infer(NAME, [tensor])
    labels, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    assert result.as_numpy("embedding") is None
    for label, row, (*_, expected) in zip(labels, probabilities, clips, strict=True):
        assert_matches(label.decode(), row, expected)


@pytest.mark.parametrize("binary", [True, False])
def test_v2_tritonclient_fp32_samples_with_rate_and_embeddings(server, clips, predictor, binary):
    length = min(len(s) for _, s, _, _ in clips[:3])
    batch = np.stack([s[:length] for _, s, _, _ in clips[:3]])
    rate = clips[0][2]
    tensor = triton.InferInput("samples", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    result = client.infer(NAME, [tensor], parameters={"sample_rate": rate, "embeddings": True})
    embeddings = result.as_numpy("embedding")
    for i, row in enumerate(batch):
        expected = predictor.predict(row, rate, embeddings=True)
        assert_matches(result.as_numpy("label")[i].decode(), result.as_numpy("probabilities")[i], expected)
        np.testing.assert_allclose(embeddings[i], expected.embedding, atol=1e-5)


def test_v2_kserve_rest_client_json(server, clips):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    wav, samples, rate, expected = clips[0]
    encoded = InferRequest(NAME, [InferInput("audio", [1], "BYTES", [b64(wav)])])
    raw = InferRequest(
        NAME, [InferInput("samples", [1, len(samples)], "FP32", samples.tolist(), {"sample_rate": rate})]
    )

    async def ask():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            return [await client.infer(server, request, model_name=NAME) for request in (encoded, raw)]
        finally:
            await client.close()

    for response in asyncio.run(ask()):
        outputs = {o.name: o for o in response.outputs}
        assert set(outputs) == {"label", "probabilities"}
        assert_matches(outputs["label"].data[0], outputs["probabilities"].as_numpy()[0], expected)


def test_v2_requested_output_only(server, clips):
    body = {
        "inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": [b64(clips[1][0])]}],
        "outputs": [{"name": "embedding"}],
    }
    response = httpx.post(f"{server}/v2/models/{NAME}/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "embedding" and output["shape"] == [1, 16]
    np.testing.assert_allclose(output["data"], clips[1][3].embedding, atol=1e-5)


# ---------------------------------------------------------------- bad input

V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"


def samples_input(data, shape=None, datatype="FP32", **parameters):
    tensor = {"name": "samples", "shape": shape or [1, len(data)], "datatype": datatype, "data": data}
    return {"inputs": [{**tensor, "parameters": parameters}] if parameters else [tensor]}


def binary_body(header: dict, payload: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + payload, {"inference-header-content-length": str(len(head))}


def fp32_binary(samples: np.ndarray, shape: list, extra: bytes = b"", size: int | None = None, **header):
    """A binary-data V2 body of FP32 samples (as tritonclient frames it), with `extra` bytes after them."""
    raw = samples.astype("<f4").tobytes()
    tensor = {"name": "samples", "shape": shape, "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(raw) if size is None else size}
    return binary_body({"inputs": [tensor], "parameters": {"sample_rate": 8000}, **header}, raw + extra)


FLAT = [0.1] * 800
NOT_AUDIO = b64(b"RIFF but not really a wave file at all")
# The V2 contract, held strictly (issue 17 item 14): each of these was answered 200 before.
STRICT = {
    "v2 fp64 samples": (V2, samples_input(FLAT, datatype="FP64", sample_rate=8000), "datatype FP64; it must be FP32"),
    "v2 booleans as samples": (V2, samples_input([True] * 800, sample_rate=8000), "must be numbers: JSON numbers"),
    "v2 a boolean among samples": (V2, samples_input([*FLAT[:-1], False], sample_rate=8000), "JSON numbers"),
    "v2 unknown input name": (
        V2,
        {"inputs": [{**samples_input(FLAT, sample_rate=8000)["inputs"][0], "name": "wave"}]},
        "unknown input 'wave'",
    ),
    "v2 1-d samples": (V2, samples_input(FLAT, shape=[800], sample_rate=8000), "shape must be [batch, time]"),
    "v2 2-d audio": (
        V2,
        {"inputs": [{"name": "audio", "shape": [1, 1], "datatype": "BYTES", "data": [NOT_AUDIO]}]},
        "shape must be [batch]",
    ),
    "v2 nested data against its shape": (
        V2,
        samples_input([FLAT[:400], FLAT[400:]], shape=[1, 800], sample_rate=8000),
        "nested as [2, 400]",
    ),
    "v2 lower-case datatype": (V2, samples_input(FLAT, datatype="fp32", sample_rate=8000), "not a datatype"),
    "v2 bytes as samples": (
        V2,
        {"inputs": [{"name": "samples", "shape": [1], "datatype": "BYTES", "data": [NOT_AUDIO]}]},
        "it must be FP32",
    ),
    "v2 numbers as audio": (
        V2,
        {"inputs": [{"name": "audio", "shape": [2], "datatype": "BYTES", "data": [1, 2]}]},
        "flat list of strings",
    ),
    "v2 trailing binary bytes": (V2, fp32_binary(np.full(800, 0.1), [1, 800], b"\x00" * 4), "4 bytes after"),
    "v2 binary size beyond the shape": (
        V2,
        fp32_binary(np.full(801, 0.1), [1, 800]),
        "binary_data_size is 3204 bytes; FP32 of shape [1, 800] takes 3200",
    ),
    "v2 binary fp64": (
        V2,
        binary_body(
            {
                "inputs": [
                    {"name": "samples", "shape": [1, 800], "datatype": "FP64", "parameters": {"binary_data_size": 6400}}
                ]
            },
            np.full(800, 0.1).tobytes(),
        ),
        "datatype FP64",
    ),
    "v2 binary id not a string": (V2, fp32_binary(np.full(800, 0.1), [1, 800], id=7), "'id' must be a string"),
}

HUGE_RATE = 16000 * 2**20  # passes the resampling-kernel check against 16 kHz, and took 0.6 s to refuse
TRUNCATED = binary_body(
    {"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 400}}]},
    b"\x90\x01\x00\x00RIFF",
)
BAD = {
    "v1 malformed json": (V1, "{not json", "Unrecognized request format"),
    "v1 no instances": (V1, {"inputs": []}, "instances"),
    "v1 empty instances": (V1, {"instances": []}, "instances"),
    "v1 neither b64 nor samples": (V1, {"instances": [{"audio": "x"}]}, "'b64' or 'samples'"),
    "v1 bad base64": (V1, {"instances": [{"b64": "%%%"}]}, "instances[0]: not valid base64"),
    "v1 not audio": (V1, {"instances": [{"b64": NOT_AUDIO}]}, "instances[0]: cannot decode audio"),
    "v1 empty file": (V1, {"instances": [{"b64": ""}]}, "empty input"),
    "v1 missing rate": (V1, {"instances": [{"samples": [0.1] * 800}]}, "sample_rate"),
    "v1 zero rate": (V1, {"instances": [{"samples": [0.1] * 800, "sample_rate": 0}]}, "positive integer"),
    "v1 negative rate": (V1, {"instances": [{"samples": [0.1] * 800, "sample_rate": -8000}]}, "positive integer"),
    "v1 odd rate": (V1, {"instances": [{"samples": [0.1] * 800, "sample_rate": 44101}]}, "cannot resample"),
    "v1 empty samples": (V1, {"instances": [{"samples": [], "sample_rate": 8000}]}, "empty audio"),
    "v1 text samples": (V1, {"instances": [{"samples": ["a"], "sample_rate": 8000}]}, "must be numbers"),
    "v1 nan": (V1, '{"instances": [{"samples": [0.1, NaN], "sample_rate": 8000}]}', "Unrecognized request format"),
    "v1 too short": (V1, {"instances": [{"samples": [0.1] * 5, "sample_rate": 8000}]}, "too short"),
    "v1 too long": (V1, {"instances": [{"samples": [0.0] * 8000 * 6, "sample_rate": 8000}]}, "at most 5 s"),
    "v1 bad flag": (V1, {"instances": [{"b64": NOT_AUDIO, "embeddings": "yes"}]}, "embeddings must be true or false"),
    "v2 malformed json": (V2, "{not json", "JSON decode error"),
    "v2 no inputs": (V2, {"parameters": {}}, "inputs"),
    "v2 two inputs": (V2, {"inputs": samples_input([0.1] * 800)["inputs"] * 2}, "exactly one input"),
    "v2 wrong dtype": (V2, samples_input([1] * 800, datatype="INT32", sample_rate=8000), "datatype INT32"),
    "v2 missing rate": (V2, samples_input([0.1] * 800), "sample_rate"),
    "v2 zero rate": (V2, samples_input([0.1] * 800, sample_rate=0), "positive integer"),
    "v2 shape mismatch": (V2, samples_input([0.1] * 800, shape=[3, 7], sample_rate=8000), "shape"),
    "v2 nan": (V2, json.dumps(samples_input([0.1] * 800, sample_rate=8000)).replace("0.1", "NaN", 1), "NaN"),
    "v2 inf": (V2, json.dumps(samples_input([0.1] * 800, sample_rate=8000)).replace("0.1", "Infinity", 1), "NaN"),
    "v2 empty": (V2, samples_input([], shape=[1, 0], sample_rate=8000), "empty audio"),
    "v2 too long": (V2, samples_input([0.0] * 8000 * 6, sample_rate=8000), "at most 5 s"),
    "v2 not audio": (
        V2,
        {"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": [NOT_AUDIO]}]},
        "decode",
    ),
    "v2 unknown output": (V2, {**samples_input([0.1] * 800, sample_rate=8000), "outputs": [{"name": "x"}]}, "unknown"),
    "v2 truncated binary": (V2, TRUNCATED, "binary_data_size"),
    "v2 binary not json": (V2, (b"\x00\x01garbage", {"inference-header-content-length": "9"}), "not JSON"),
    # bounded work: clip counts, absurd rates; values that would give NaN answers
    "v1 too many clips": (V1, {"instances": [{"samples": [0.1] * 800, "sample_rate": 8000}] * 65}, "at most 64"),
    "v2 too many clips": (V2, samples_input([0.1] * 800 * 65, shape=[65, 800], sample_rate=8000), "at most 64"),
    "v2 too many files": (
        V2,
        {"inputs": [{"name": "audio", "shape": [65], "datatype": "BYTES", "data": [NOT_AUDIO] * 65}]},
        "at most 64",
    ),
    "v2 no clips": (V2, samples_input([], shape=[0, 800], sample_rate=8000), "input 'samples': no clips"),
    "v1 huge rate": (V1, {"instances": [{"samples": [0.1] * 800, "sample_rate": HUGE_RATE}]}, "768000 Hz"),
    "v2 huge rate": (V2, samples_input([0.1] * 800, sample_rate=HUGE_RATE), "768000 Hz"),
    "v1 huge samples": (
        V1,
        {"instances": [{"samples": [1e18] * 8000, "sample_rate": 8000}]},
        "instances[0]: the audio gives non-finite features",
    ),
    "v2 huge samples": (
        V2,
        samples_input([1e18] * 8000, sample_rate=8000),
        "input 'samples'[0]: the audio gives non-finite features",
    ),
    **STRICT,
}


def post(server, path, body, client=httpx):
    if isinstance(body, tuple):  # raw bytes with their headers
        return client.post(f"{server}{path}", content=body[0], headers=body[1])
    if isinstance(body, str):
        return client.post(f"{server}{path}", content=body, headers={"content-type": "application/json"})
    return client.post(f"{server}{path}", json=body)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_4xx_with_a_message(server, case):
    path, body, needle = BAD[case]
    response = post(server, path, body)
    assert 400 <= response.status_code < 500, response.text
    assert needle in (response.json().get("error") or response.text)
    assert httpx.get(f"{server}/v2/health/live").status_code == 200


def test_each_refused_request_is_one_log_line_without_a_traceback(served):
    """Every 4xx is the client's error: one warning line, never KServe's traceback (issue 17 item 10), so
    no client can fill the log; the line says why, without line breaks the client put in."""
    url, _, log = served
    refusals = [(path, body) for path, body, _ in BAD.values()]
    refusals += [
        (V2, {"inputs": [{**samples_input(FLAT, sample_rate=8000)["inputs"][0], "name": "evil\nTraceback (forged)"}]}),
        ("/v2/models/nope/infer", samples_input(FLAT, sample_rate=8000)),
        ("/v2/repository/models/tiny/unload", {}),
        (V1, padded({"instances": []}, MAX_BODY + 1).decode()),
    ]
    time.sleep(0.5)  # earlier requests' lines are written
    start = log.stat().st_size
    statuses = [post(url, path, body).status_code for path, body in refusals]
    assert all(400 <= status < 500 for status in statuses), statuses
    time.sleep(0.5)
    written = log.read_bytes()[start:].decode()
    lines = [line for line in written.splitlines() if "refused with" in line]
    assert "Traceback" not in written.replace("Traceback (forged)", ""), written[:3000]
    assert len(lines) == len(refusals), "\n".join(lines)
    assert [int(line.split("refused with ")[1].split(":")[0]) for line in lines] == statuses
    assert any("unknown input 'evil Traceback (forged)'" in line for line in lines)


def test_non_audio_bytes_over_the_binary_extension(server):
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    tensor = triton.InferInput("audio", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"\x00\xffnot audio"], dtype=object), binary_data=True)
    with pytest.raises(triton.InferenceServerException, match="cannot decode audio"):
        client.infer(NAME, [tensor])


# ---------------------------------------------------------------- bounded work


def padded(body: dict, size: int) -> bytes:
    """`body` as JSON padded with trailing spaces (still valid JSON) to exactly `size` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


JSON = {"content-type": "application/json"}


def test_a_body_over_the_limit_gets_413_and_one_at_the_limit_is_served(server, clips):
    body = {"instances": [{"b64": b64(clips[0][0])}]}
    over = httpx.post(f"{server}{V1}", content=padded(body, MAX_BODY + 1), headers=JSON)
    assert over.status_code == 413 and f"limit of {MAX_BODY} bytes" in over.json()["error"]
    at = httpx.post(f"{server}{V1}", content=padded(body, MAX_BODY), headers=JSON)
    assert at.status_code == 200, at.text
    assert at.json()["predictions"][0]["label"] == clips[0][3].outputs["label"]


def test_a_body_sent_without_length_is_limited_too(server, clips):
    def chunks(data: bytes, size: int = 2**20):
        yield from (data[i : i + size] for i in range(0, len(data), size))

    body = {"instances": [{"b64": b64(clips[0][0])}]}
    over = httpx.post(f"{server}{V1}", content=chunks(padded(body, MAX_BODY + 1)), headers=JSON)
    assert over.status_code == 413
    at = httpx.post(f"{server}{V1}", content=chunks(padded(body, MAX_BODY)), headers=JSON)
    assert at.status_code == 200, at.text


def rss_mib(pid: int) -> float:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("VmRSS:")).split()[1]) / 1024


def test_oversized_bodies_are_never_read(served):
    """Eight 32 MB V1 bodies of 8,000 clips each: refused from their length, the server's memory stays put
    (parsing one such body took the server from 1.26 GB to 2.67 GB, and it stayed there)."""
    url, process, _ = served
    instance = b'{"samples": [' + b"0.1," * 999 + b'0.1], "sample_rate": 8000}'
    body = b'{"instances": [' + b",".join([instance] * 8000) + b"]}"
    before = rss_mib(process.pid)
    with httpx.Client(timeout=60) as client:
        statuses = [client.post(f"{url}{V1}", content=body, headers=JSON).status_code for _ in range(8)]
    grown = rss_mib(process.pid) - before
    assert statuses == [413] * 8
    assert grown < 16, f"the server grew by {grown:.0f} MiB"


@pytest.mark.parametrize("case", ["v1 huge rate", "v2 huge rate"])
def test_an_absurd_sample_rate_is_refused_before_any_work(server, case):
    path, body, _ = BAD[case]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        assert post(server, path, body).status_code == 400
        times.append(time.perf_counter() - start)
    assert min(times) < 0.2, times  # resampling from it first took 0.6 s


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_a_small_request_is_not_starved_by_a_big_one(server, clips):
    """A one-clip request sent while a 64-clip request is being worked on is answered first: batches take one
    clip of each waiting request in turn, and the event loop is not busy computing the big one's features."""
    rate = clips[0][2]
    long = np.resize(np.concatenate([samples for _, samples, _, _ in clips]), int(4.9 * rate))
    big = {"instances": [{"b64": b64(wav_bytes(long, rate))}] * 64}
    small = {"instances": [{"b64": b64(clips[0][0])}]}
    finished = {}

    def send(key, body):
        response = httpx.post(f"{server}{V1}", json=body, timeout=60)
        finished[key] = time.perf_counter()
        return response

    with ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        big_response = pool.submit(send, "big", big)
        time.sleep(0.1)
        small_response = send("small", small)
        assert big_response.result().status_code == 200 and small_response.status_code == 200
    assert small_response.json()["predictions"][0]["label"] == clips[0][3].outputs["label"]
    took = {key: round(t - started, 3) for key, t in finished.items()}
    assert took["small"] < took["big"], took


def flac_bytes(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC")
    return out.getvalue()


def v2_files(files: list[bytes]) -> tuple[bytes, dict]:
    """Audio files in one binary BYTES tensor, framed as tritonclient frames them."""
    tensor = triton.InferInput("audio", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object), binary_data=True)
    body, size = triton.InferenceServerClient.generate_request_body([tensor])
    return body, {"inference-header-content-length": str(size)}


def test_the_decoded_size_is_bounded_from_the_headers(server, clips):
    """Issue 17 item 4: a request within every other limit whose files decode to more than --max-samples
    (here 16 FLAC files of 4.9 s of 96 kHz stereo silence: 16.3 M samples, 0.2 MB) gets a 413 that names the
    budget; one within it is served."""
    over = [flac_bytes(np.zeros((int(4.9 * 96000), 2), np.float32), 96000)] * 16
    response = post(server, V2, v2_files(over))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert "decodes to 16,307,200 samples" in error and f"at most {MAX_SAMPLES:,} per request" in error
    under = [flac_bytes(np.zeros(int(4.9 * 96000), np.float32), 96000)] * 16  # mono: 8.8 M
    response = post(server, V2, v2_files(under))
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def long_server(bundle_dir, tmp_path_factory):
    """A second server that takes clips of up to 30 s (and the default --max-samples)."""
    log = tmp_path_factory.mktemp("serve-long") / "server.log"
    url, process = start_server(bundle_dir, log, "--max-duration", "30")
    try:
        yield url, process
    finally:
        stop(process, log)


def peak_rss_mib(pid: int) -> float:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("VmHWM:")).split()[1]) / 1024


def test_a_small_request_waits_for_no_large_request_decoding(long_server, clips, predictor):
    """Issue 17 item 4: 64 FLAC files of 29.5 s of silence (0.09 MB) cost the server many seconds, and a
    one-clip request sent meanwhile waited for most of them (about 2 s on an idle machine with the tiny
    model). Clips are decoded one at a time, requests in turn, and a batch holds at most 30 s of audio, so
    it is answered within 1 s (or 10 idle latencies, on a machine loaded that much). The same request at
    384 kHz (2.5 MB) is refused from its headers, before any decoding."""
    url, process = long_server
    rate = predictor.sample_rate
    big = v2_files([flac_bytes(np.zeros(int(29.5 * rate), np.float32), rate)] * 64)
    small = {"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": [b64(clips[0][0])]}]}
    with httpx.Client(timeout=120) as client:
        idle = []
        for _ in range(6):
            start = time.perf_counter()
            assert post(url, V2, small, client).status_code == 200
            idle.append(time.perf_counter() - start)
        idle = sorted(idle)[len(idle) // 2]

    finished = {}

    def send(key, body):
        start = time.perf_counter()
        with httpx.Client(timeout=120) as client:
            response = post(url, V2, body, client)
        finished[key] = time.perf_counter() - start
        return response

    with ThreadPoolExecutor(1) as pool:
        big_response = pool.submit(send, "big", big)
        time.sleep(0.5)  # its clips are being decoded and run
        small_response = send("small", small)
        assert big_response.result().status_code == 200 and small_response.status_code == 200
    assert small_response.json()["outputs"][0]["data"] == [clips[0][3].outputs["label"]]
    assert finished["small"] < max(1.0, 10 * idle), (finished, idle)

    before = peak_rss_mib(process.pid)
    high = v2_files([flac_bytes(np.zeros(int(29.5 * 384_000), np.float32), 384_000)] * 64)
    response = post(url, V2, high)
    assert response.status_code == 413, response.text
    assert "decodes to 755,200,000 samples" in response.json()["error"]
    assert peak_rss_mib(process.pid) - before < 32


def test_serve_refuses_limits_that_would_refuse_everything(capsys):
    from tympan import cli

    for option, value in [
        ("--max-clips", "0"),
        ("--max-body-mb", "-1"),
        ("--max-batch", "1.5"),
        ("--max-duration", "1e999"),
        ("--max-samples", "0"),
    ]:
        assert cli.main(["serve", "no/such/bundle", option, value]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"tympan: error: serve: {option} must be a positive"), line


def test_serve_refuses_a_port_or_name_that_cannot_work(capsys, bundle_dir):
    """Issue 17 item 9: --port 99999 ended in an OverflowError traceback, and --name a/b was accepted (no URL
    can reach a model of that name)."""
    from tympan import cli

    for port in ["99999", "0", "-1", "http"]:
        assert cli.main(["serve", str(bundle_dir), "--port", port]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("tympan: error: serve: --port must be an integer from 1 to 65535"), line
    for name in ["a/b", "..", "", "digits?v=2", "x" * 129]:
        assert cli.main(["serve", "no/such/bundle", "--name", name]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("tympan: error: serve: --name") and "/v2/models/NAME/infer" in line, line


def test_a_registered_model_is_served_under_its_registered_name(tiny_run, clips, tmp_path):
    """Issue 17 item 19: `tympan serve models:/digits@champion` served the model as its experiment's name, so
    /v2/models/digits/infer was a 404."""
    from tympan import registry
    from tympan.serving.server import registered_name

    assert [registered_name(u) for u in ("models:/digits@champion", "models:/digits/3", "runs/x")] == [
        "digits",
        "digits",
        None,
    ]
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TYMPAN_CACHE": str(tmp_path / "cache")}
    cwd = Path.cwd()
    os.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts under ./mlruns
    try:
        registry.register(tiny_run[0], "digits", uri)
        registry.promote("digits", uri=uri)
    finally:
        os.chdir(cwd)
    log = tmp_path / "server.log"
    url, process = start_server("models:/digits@champion", log, env=env, cwd=tmp_path, name="digits")
    try:
        body = {"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": [b64(clips[0][0])]}]}
        response = httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["model_name"] == "digits"
        assert response.json()["outputs"][0]["data"] == [clips[0][3].outputs["label"]]
        assert httpx.post(f"{url}/v2/models/{NAME}/infer", json=body).status_code == 404
    finally:
        stop(process, log)


# ---------------------------------------------------------------- batching and load


def test_turns_put_a_request_that_has_had_none_first():
    """A request that has not had a turn goes before those that have, in the order they came; after its
    turn it joins the back of the rotation. Closed requests drop out."""
    from collections import deque

    from tympan.serving.batcher import Request, Turns

    turns = Turns()
    a, b, c = (Request(deque([name] * 3)) for name in "abc")
    turns.add(a)
    order = [turns.take(lambda r: True)]
    turns.add(b)
    turns.add(c)
    order += [turns.take(lambda r: True) for _ in range(4)]
    assert [r.todo[0] for r in order] == ["a", "b", "c", "a", "b"]
    c.close()
    assert [turns.take(lambda r: True).todo[0] for _ in range(3)] == ["a", "b", "a"]
    assert turns.take(lambda r: r is c) is None


def test_batcher_featurises_clip_by_clip_in_turn_and_isolates_failures():
    """Clips are featurised one at a time in the feature thread and predicted in the model thread; batches
    hold at most `max_batch` clips and `max_cost` (the first clip always goes); a one-clip request that
    comes while another has many long clips rides in one of the next two batches; a clip that cannot be
    featurised fails only its request, and a failing batch is retried clip by clip."""
    from kserve.errors import InvalidInput

    from tympan.serving import Clip, MicroBatcher

    threads, batches = {"features": set(), "model": set()}, []

    def featurize(clip):
        threads["features"].add(threading.current_thread().name)
        time.sleep(0.002)
        if clip.where == "unreadable":
            raise InvalidInput("unreadable: cannot decode audio")
        return clip.where

    def predict(features, embeddings):
        threads["model"].add(threading.current_thread().name)
        batches.append(features)
        time.sleep(0.01)
        if "bad" in features:
            raise RuntimeError("boom")
        return [bundle.Prediction(np.ones(1), {"label": feature}) for feature in features]

    def cost(feature):
        return 10.0 if feature.startswith("long") else 1.0

    async def together():
        batcher = MicroBatcher(featurize, predict, max_batch=4, max_cost=10.0, cost=cost)
        long = asyncio.ensure_future(batcher.submit([Clip(f"long{i}") for i in range(8)]))
        await asyncio.sleep(0.03)  # a few long clips are through
        names = [["short"], ["bad"], ["c1", "unreadable", "c3"], ["a1", "a2", "a3", "a4", "a5", "a6"]]
        others = [batcher.submit([Clip(name) for name in request]) for request in names]
        return await asyncio.gather(long, *others, return_exceptions=True)

    long, short, bad, unreadable, many = asyncio.run(together())
    assert [p.outputs["label"] for p in long] == [f"long{i}" for i in range(8)]
    assert [p.outputs["label"] for p in short] == ["short"]
    assert [p.outputs["label"] for p in many] == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert isinstance(bad, RuntimeError) and isinstance(unreadable, InvalidInput)
    assert all(len(batch) == 1 or sum(map(cost, batch)) <= 10 for batch in batches), batches
    assert max(map(len, batches)) <= 4 and ["bad"] in batches
    came = next(i for i, batch in enumerate(batches) if any(not f.startswith("long") for f in batch))
    assert any("short" in batch for batch in batches[came : came + 2]), batches
    assert "c3" not in [f for batch in batches for f in batch]  # dropped once its request failed
    assert [len(names) for names in threads.values()] == [1, 1]
    assert threads["features"].pop().startswith("tympan-features")
    assert threads["model"].pop().startswith("tympan-model")


def test_load_with_malformed_requests_mixed_in(server, clips):
    """2,000 requests from 8 threads, every tenth malformed: each good one gets the in-process label."""
    good = []
    for wav, _, _, expected in clips:
        good.append((V1, {"instances": [{"b64": b64(wav)}]}, expected.outputs["label"]))
        tensor = {"name": "audio", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(wav) + 4}}
        good.append(
            (V2, binary_body({"inputs": [tensor]}, len(wav).to_bytes(4, "little") + wav), expected.outputs["label"])
        )
    bad = [(path, body, None) for path, body, _ in BAD.values()]
    goods, bads = cycle(good), cycle(bad)
    plan = [next(bads) if i % 10 == 9 else next(goods) for i in range(2000)]

    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=8)) as client:

        def run(item):
            path, body, label = item
            response = post(server, path, body, client)
            if label is None:
                return 400 <= response.status_code < 500
            if response.status_code != 200:
                return False
            if path == V1:
                return response.json()["predictions"][0]["label"] == label
            return response.json()["outputs"][0]["data"] == [label]

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(run, plan))
    assert sum(outcomes) == len(plan), [i for i, ok in enumerate(outcomes) if not ok][:20]
    assert httpx.get(f"{server}/").json() == {"status": "alive"}
