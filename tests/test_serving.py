"""The KServe server: a real subprocess on 127.0.0.1 serving the tiny bundle over V1 and V2.

Every answer is checked against in-process `Predictor.predict` on the same audio; bad input
must get a 4xx that says what was wrong, and the server must keep answering.
"""

import asyncio
import base64
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import numpy as np
import pytest

from tests.conftest import free_port
from tympan import audio, bundle

pytest.importorskip("kserve")
httpx = pytest.importorskip("httpx")
triton = pytest.importorskip("tritonclient.http")

NAME = "tiny"  # the tiny experiment's name: the served model's default name


@pytest.fixture(scope="module")
def bundle_dir(tiny_run):
    return tiny_run[0] / "bundle"


@pytest.fixture(scope="module")
def server(bundle_dir, tmp_path_factory):
    """The base URL of a running `tympan serve BUNDLE`; the process is stopped even when tests fail."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    command = [sys.executable, "-m", "tympan.cli", "serve", str(bundle_dir), "--port", str(port), "--max-duration", "5"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0 or process.returncode < 0, log.read_text()[-3000:]


def wait_ready(url, process, log, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/v2/models/{NAME}/ready", timeout=2).status_code == 200:
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
        top = np.sort(expected.probabilities)
        if top[-1] - top[-2] > 1e-3:
            out.append((path.read_bytes(), samples, rate, expected))
    assert len(out) >= 8
    return out[:8]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_matches(label, probabilities, expected):
    assert label == expected.label
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-5)


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
    assert json.loads(outputs["probabilities"]["parameters"]["labels"]) == predictor.labels
    assert json.loads(meta["parameters"]["labels"]) == predictor.labels
    assert meta["parameters"]["sample_rate"] == predictor.sample_rate


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


def test_v2_tritonclient_fp32_samples_with_rate_and_embeddings(server, clips, predictor):
    length = min(len(s) for _, s, _, _ in clips[:3])
    batch = np.stack([s[:length] for _, s, _, _ in clips[:3]])
    rate = clips[0][2]
    tensor = triton.InferInput("samples", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
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


NOT_AUDIO = b64(b"RIFF but not really a wave file at all")
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
    "v2 not audio": (V2, {"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": [NOT_AUDIO]}]}, "decode"),
    "v2 unknown output": (V2, {**samples_input([0.1] * 800, sample_rate=8000), "outputs": [{"name": "x"}]}, "unknown"),
    "v2 truncated binary": (V2, TRUNCATED, "binary_data_size"),
    "v2 binary not json": (V2, (b"\x00\x01garbage", {"inference-header-content-length": "9"}), "not JSON"),
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


def test_non_audio_bytes_over_the_binary_extension(server):
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    tensor = triton.InferInput("audio", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"\x00\xffnot audio"], dtype=object), binary_data=True)
    with pytest.raises(triton.InferenceServerException, match="cannot decode audio"):
        client.infer(NAME, [tensor])


# ---------------------------------------------------------------- batching and load


def test_batcher_batches_together_and_isolates_a_failing_clip():
    from tympan.serving import MicroBatcher

    class Model:
        calls = []

        def predict_features(self, clips, embeddings):
            self.calls.append(len(clips))
            if "bad" in clips:
                raise RuntimeError("boom")
            return [bundle.Prediction(np.ones(1), clip) for clip in clips]

    async def together():
        batcher = MicroBatcher(Model(), max_batch=8, wait_ms=0)
        requests = [batcher.submit(["a", "b"], [False, False]), batcher.submit(["bad"], [False])]
        return await asyncio.gather(*requests, return_exceptions=True)

    good, bad = asyncio.run(together())
    assert [p.label for p in good] == ["a", "b"] and isinstance(bad, RuntimeError)
    assert Model.calls == [3, 1, 1, 1]  # one batch of all three, then each clip alone


def test_load_with_malformed_requests_mixed_in(server, clips):
    """2,000 requests from 8 threads, every tenth malformed: each good one gets the in-process label."""
    good = []
    for wav, _, _, expected in clips:
        good.append((V1, {"instances": [{"b64": b64(wav)}]}, expected.label))
        tensor = {"name": "audio", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(wav) + 4}}
        good.append((V2, binary_body({"inputs": [tensor]}, len(wav).to_bytes(4, "little") + wav), expected.label))
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
