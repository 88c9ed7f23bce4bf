"""Latency and throughput of a bundle served by KServe (V2 endpoint), against in-process prediction.

Needs a trained bundle: run `make run` first (it writes runs/default/bundle), then

    .venv/bin/python bench/serve_latency.py [BUNDLE] [--requests 300] [--max-batch 16]

It prints the in-process time of one prediction for a 1-second clip, the p50/p95 latency and
requests/s of `POST /v2/models/NAME/infer` (the clip as a WAV file in a binary BYTES tensor,
as `tritonclient.http` sends it) at concurrency 1 and 8, and two ratios with their targets:
p50 at c=1 over in-process (at most 1.5) and throughput at c=8 over c=1 (at least 2).
Client and server share this machine's CPUs, as they do in the tests.
"""

from __future__ import annotations

import argparse
import http.client
import io
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import tritonclient.http as triton

from tympan import audio, bundle
from tympan.serving import torch_threads

CONCURRENCY = (1, 8)


def one_second_wav(rate: int) -> bytes:
    """A deterministic 1-second clip (a chirp in noise) as 16-bit WAV at the bundle's rate."""
    t = np.arange(rate) / rate
    rng = np.random.default_rng(0)
    samples = 0.3 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.02 * rng.standard_normal(rate)
    out = io.BytesIO()
    sf.write(out, samples.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def in_process_ms(predictor: bundle.Predictor, wav: bytes, repeats: int) -> float:
    """Median time of decode + predict, the work the server does for one request minus HTTP."""
    times = []
    for i in range(repeats + 5):
        start = time.perf_counter()
        predictor.predict(*audio.decode_bytes(wav))
        if i >= 5:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(location: Path, port: int, max_batch: int) -> subprocess.Popen:
    code = f"from tympan.serving import serve; serve({str(location)!r}, port={port}, max_batch={max_batch})"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(port: int, name: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", f"/v2/models/{name}/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not get ready in {timeout:.0f} s")


def request_body(wav: bytes) -> tuple[bytes, dict]:
    tensor = triton.InferInput("audio", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([wav], dtype=object), binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor])
    return body, {"Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"}


def send(port: int, path: str, body: bytes, headers: dict, count: int) -> list[float]:
    """`count` requests over one keep-alive connection; their latencies in seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - start)
        if response.status != 200:
            raise SystemExit(f"request failed with HTTP {response.status}")
    conn.close()
    return latencies


def load(port: int, path: str, body: bytes, headers: dict, total: int, concurrency: int) -> dict:
    """p50/p95 latency (ms) and requests/s of `total` requests from `concurrency` threads."""
    send(port, path, body, headers, 10 * concurrency)  # warm-up
    shares = [total // concurrency + (i < total % concurrency) for i in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [t for part in pool.map(lambda n: send(port, path, body, headers, n), shares) for t in part]
    elapsed = time.perf_counter() - start
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    return {"p50": p50, "p95": p95, "rps": total / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default="runs/default/bundle", type=Path)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args()
    if not (args.bundle / bundle.MANIFEST).is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run `make run` first, or pass a bundle directory")

    torch.set_num_threads(torch_threads())
    predictor = bundle.load(args.bundle)
    wav = one_second_wav(predictor.sample_rate)
    local = in_process_ms(predictor, wav, repeats=100)

    port = free_port()
    server = start_server(args.bundle, port, args.max_batch)
    try:
        wait_ready(port, predictor.name, server)
        body, headers = request_body(wav)
        path = f"/v2/models/{predictor.name}/infer"
        results = {c: load(port, path, body, headers, args.requests, c) for c in CONCURRENCY}
    finally:
        server.terminate()
        server.wait(30)

    print(f"bundle {args.bundle} ({predictor.manifest['model']['target']}), torch threads {torch.get_num_threads()}")
    print(f"server: max_batch={args.max_batch}, {args.requests} requests per row")
    print(f"in-process predict, 1 s clip (median): {local:8.2f} ms")
    for c, r in results.items():
        print(f"V2 c={c}: p50 {r['p50']:7.2f} ms   p95 {r['p95']:7.2f} ms   {r['rps']:7.1f} req/s")
    latency_ratio = results[1]["p50"] / local
    throughput_ratio = results[8]["rps"] / results[1]["rps"]
    print(f"p50 c=1 / in-process: {latency_ratio:5.2f}  (target <= 1.5)")
    print(f"req/s c=8 / c=1:      {throughput_ratio:5.2f}  (target >= 2)")


if __name__ == "__main__":
    main()
