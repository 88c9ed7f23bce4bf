"""From a finished run to a served model, as a user would do it, with the figures that matter.

Registers the run in a throw-away MLflow store, promotes it to @champion, serves
models:/NAME@champion with `tympan serve`, sends every dev-split WAV as a V2 BYTES request
(tritonclient), runs `tympan inference` on the same files, and prints the served accuracy
and whether CLI and server agree on every file.

    python bench/end_to_end.py [--run runs/default]      # after `make run`
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.http as triton
import yaml

from tympan import config as configuration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tympan(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "tympan.cli", *args], env=env, text=True, capture_output=True, **kwargs
    )
    if result.returncode != 0:
        sys.exit(f"tympan {' '.join(args)} failed:\n{result.stderr}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/default")
    parser.add_argument("--name", default="digits")
    args = parser.parse_args()

    run = Path(args.run).resolve()
    config = configuration.parse(yaml.safe_load((run / "config.yaml").read_text()))
    dataset = config.dataset.build()
    index = dataset.index(config.dataset.root)
    dev = index.split("dev")
    files = [index.path_of(row).resolve() for row in dev]
    truth = [row[dataset.target_column] for row in dev]

    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlruns.db"}
        print(tympan("register", str(run), "--name", args.name, env=env, cwd=store).stdout.strip())
        print(tympan("promote", "--name", args.name, env=env, cwd=store).stdout.strip())
        table = Path(store) / "cli.csv"
        tympan(
            "inference", f"models:/{args.name}@champion", *map(str, files), "--output", str(table), env=env, cwd=store
        )
        with open(table, newline="") as f:
            cli = [row["label"] for row in csv.DictReader(f)]

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "tympan.cli", "serve", f"models:/{args.name}@champion", "--port", str(port)],
            env=env, cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = triton.InferenceServerClient(f"127.0.0.1:{port}")
            for _ in range(240):
                try:
                    if client.is_model_ready(config.experiment):
                        break
                except Exception:  # noqa: BLE001 (not listening yet)
                    pass
                time.sleep(0.5)
            served = []
            started = time.perf_counter()
            for file in files:
                tensor = triton.InferInput("audio", [1], "BYTES")
                tensor.set_data_from_numpy(np.array([file.read_bytes()], dtype=object), binary_data=True)
                result = client.infer(config.experiment, [tensor])
                served.append(result.as_numpy("label")[0].decode())
            seconds = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(30)

    accuracy = np.mean([s == t for s, t in zip(served, truth, strict=True)])
    agree = sum(s == c for s, c in zip(served, cli, strict=True))
    print(f"dev files: {len(files)}  served V2 accuracy: {accuracy:.4f}  ({seconds:.1f} s, sequential)")
    print(f"CLI inference and server agree on {agree}/{len(files)} files")


if __name__ == "__main__":
    main()
