"""How long a one-clip request waits while the server works on a large compressed request.

Needs a trained bundle: run `make run` first (it writes runs/default/bundle), then

    .venv/bin/python bench/serve_fairness.py [BUNDLE] [--clips 64] [--seconds 29.5]

It starts `tympan serve BUNDLE --max-duration 30` and prints:

- the latency of a one-clip request (a 1 s WAV, V2 binary BYTES, as `tritonclient.http` sends
  it) on the idle server (median of 20);
- the same request, sent again and again while one request of `--clips` FLAC files of
  `--seconds` of silence at the bundle's rate is served (issue 17 item 4: about 0.1 MB that
  decodes to half an hour of audio): each latency's median and maximum (the target is at most
  1 s), and how long the large request took;
- what the same large request at 384 kHz gets: a 413 from its headers, before any decoding,
  and how much the server's peak memory grew.

Client and server share this machine's CPUs, as they do in the tests.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tritonclient.http as triton  # noqa: E402
from serve_latency import free_port, one_second_wav, send, wait_ready  # noqa: E402

from tympan import bundle  # noqa: E402


def v2_body(files: list[bytes]) -> tuple[bytes, dict]:
    """A V2 request of audio files in one binary BYTES tensor, as `tritonclient.http` sends it."""
    tensor = triton.InferInput("audio", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object), binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor])
    return body, {"Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"}


def flac_silence(seconds: float, rate: int) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(int(seconds * rate), np.float32), rate, format="FLAC")
    return out.getvalue()


def peak_rss_mib(pid: int) -> float:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("VmHWM:")).split()[1]) / 1024


def post(port: int, path: str, body: tuple[bytes, dict]) -> tuple[int, float]:
    """One request on a fresh connection: its HTTP status and latency in seconds."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", path, *body)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - start


def during(port: int, path: str, big: tuple[bytes, dict], small: tuple[bytes, dict]) -> tuple[float, list[float]]:
    """The large request's time, and the latencies of one-clip requests sent one after another
    (0.1 s apart) while it runs."""
    outcome = {}

    def large():
        outcome["status"], outcome["took"] = post(port, path, big)

    thread = threading.Thread(target=large)
    thread.start()
    time.sleep(0.3)  # the large request has been parsed and its clips are being worked on
    latencies = []
    while thread.is_alive():
        status, took = post(port, path, small)
        if status != 200:
            raise SystemExit(f"the one-clip request failed with HTTP {status}")
        if thread.is_alive():
            latencies.append(took)
        time.sleep(0.1)
    thread.join()
    if outcome["status"] != 200:
        raise SystemExit(f"the large request failed with HTTP {outcome['status']}")
    return outcome["took"], latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default="runs/default/bundle", type=Path)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=29.5)
    args = parser.parse_args()
    if not (args.bundle / bundle.MANIFEST).is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run `make run` first, or pass a bundle directory")
    predictor = bundle.load(args.bundle)
    rate, name = predictor.sample_rate, predictor.name

    port = free_port()
    command = [sys.executable, "-m", "tympan.cli", "serve", str(args.bundle), "--port", str(port)]
    server = subprocess.Popen([*command, "--max-duration", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, name, server)
        path = f"/v2/models/{name}/infer"
        small = v2_body([one_second_wav(rate)])
        idle = send(port, path, *small, 25)[5:]
        big = v2_body([flac_silence(args.seconds, rate)] * args.clips)
        took, busy = during(port, path, big, small)
        before = peak_rss_mib(server.pid)
        high = v2_body([flac_silence(args.seconds, 384_000)] * args.clips)
        status, refused_in = post(port, path, high)
        grown = peak_rss_mib(server.pid) - before
    finally:
        server.terminate()
        server.wait(30)

    print(f"bundle {args.bundle} ({predictor.manifest['model']['target']}), model rate {rate} Hz")
    print(f"one-clip request (1 s WAV), idle server: median {1000 * statistics.median(idle):7.1f} ms")
    print(
        f"large request: {args.clips} FLAC clips of {args.seconds:g} s silence at {rate} Hz"
        f" ({len(big[0]) / 1e6:.2f} MB), served in {took:.1f} s"
    )
    print(
        f"one-clip requests during it: {len(busy)}, median {1000 * statistics.median(busy):7.1f} ms,"
        f" max {1000 * max(busy):7.1f} ms  (target: max <= 1000 ms)"
    )
    print(
        f"the same at 384 kHz ({len(high[0]) / 1e6:.2f} MB): HTTP {status} in {1000 * refused_in:.0f} ms,"
        f" server peak memory +{grown:.0f} MiB"
    )


if __name__ == "__main__":
    main()
