"""autrainer 0.10.0 as a peer to time tympan against: its own venv, and an autrainer project over
the same FSDD files in the same splits. Shared by bench/preprocess_speed.py and bench/peer_speed.py.

autrainer is installed from the registry into `<cache>/autrainer-0.10.0/` on first use, with this
machine's torch wheels pinned so that both tools run the same PyTorch.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tympan.datasets import SPLITS, Index

AUTRAINER = "0.10.0"
# autrainer's own requirements come from the registry; these come from this machine's wheels
PINS = ["torch==2.14.1", "torchvision==0.29.1", "torchaudio==2.11.0"]

CONFIG = {  # one training run; `sweep` sets the hydra sweeper's parameters
    "defaults": ["_autrainer_", "_self_"],
    "results_dir": "results",
    "experiment_id": "fsdd",
    "iterations": 1,
    "device": "cpu",
    "progress_bar": False,
    "hydra": {
        "sweeper": {
            "params": {
                "+seed": 1,
                "+batch_size": 32,
                "+learning_rate": 0.001,
                "dataset": "FSDD-16k",
                "model": "Cnn10",
                "optimizer": "Adam",
            }
        }
    },
}
DATASET = {  # a generic CSV-indexed dataset: data/FSDD/{train,dev,test}.csv, audio in default/
    "id": "FSDD-16k",
    "_target_": "autrainer.datasets.BaseClassificationDataset",
    "path": "data/FSDD",
    "features_subdir": "log_mel_16k",  # autrainer's preprocessing preset of that name
    "index_column": "path",
    "target_column": "label",
    "file_type": "npy",
    "file_handler": "autrainer.datasets.utils.NumpyFileHandler",
    "criterion": "autrainer.criterions.CrossEntropyLoss",
    "metrics": ["autrainer.metrics.Accuracy"],
    "tracking_metric": "autrainer.metrics.Accuracy",
    "transform": {"type": "grayscale"},
}
# What tympan's preset autrainer-cnn10-fsdd does, in autrainer's transforms: standardise with the
# train split's mean and std over all values (Standardizer runs first, order -99), then make every
# clip 101 frames (1 s at hop 160): longer ones cut at a random place, shorter ones zero-padded.
TRAINING_TRANSFORM = {
    "type": "grayscale",
    "base": [
        {"autrainer.transforms.Standardizer": {}},
        {"autrainer.transforms.RandomCrop": {"size": 101, "axis": -2}},
    ],
}


def venv(cache: Path) -> Path:
    """autrainer's own venv (created and installed on first use): its `autrainer` command."""
    root = cache / f"autrainer-{AUTRAINER}"
    command = root / "bin" / "autrainer"
    if command.is_file():
        return command
    print(f"installing autrainer {AUTRAINER} into {root} (first use; a few minutes)", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", f"autrainer=={AUTRAINER}", *PINS]
    result = subprocess.run(pip, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        sys.exit(f"installing autrainer failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return command


def project(root: Path, index: Index, config: dict = CONFIG, dataset: dict = DATASET) -> Path:
    """An autrainer project over the fetched FSDD: the same files (linked) in the same splits."""
    audio = root / "data/FSDD/default"
    audio.mkdir(parents=True)
    rows, raw = index.rows, index.root
    splits = {split: [(Path(r["path"]).name, r["label"]) for r in rows if r["split"] == split] for split in SPLITS}
    if not splits["test"]:  # a mirror without FSDD's test speaker: autrainer cannot evaluate an empty split
        print("no test clips: autrainer's test split is the dev split (its test figures are not used)", flush=True)
        splits["test"] = splits["dev"]
    for split, listed in splits.items():
        with open(root / f"data/FSDD/{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(listed)
    for row in rows:
        (audio / Path(row["path"]).name).symlink_to((raw / row["path"]).resolve())
    (root / "conf/dataset").mkdir(parents=True)
    (root / "conf/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "conf/dataset/FSDD-16k.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    return root
