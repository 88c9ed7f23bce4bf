"""tympan's Cnn10 beside autrainer 0.10.0's, layer by layer, on one batch of real FSDD log-Mels.

autrainer's Cnn10 is built (seeded) in autrainer's own venv; its weights are mapped onto tympan's
Cnn10 and both run the same batch in eval mode: every block's output, the embedding and the logits
are compared. Then what differs when training: each layer's initial weight scale (tympan's
Cnn10 against autrainer's, both seeded) and where each applies dropout.

    python bench/peer_layers.py [--batch 16] [--seed 1]

Needs the preset's features (`tympan preprocess autrainer-cnn10-fsdd`, which bench/peer_speed.py
runs) and autrainer's venv (installed on first use, see bench/autrainer_peer.py).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import autrainer_peer
import torch

from tympan import config as configuration
from tympan import stages
from tympan.models import Cnn10
from tympan.store import open_split, store_dir

PRESET = "autrainer-cnn10-fsdd"
FRAMES = 101  # 1 s at hop 160, as both tools train

AUTRAINER_SIDE = """
import sys
import torch
from autrainer.models import Cnn10

batch, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(seed)
model = Cnn10(output_dim=10).eval()
outputs = {}
for name in ("conv_block1", "conv_block2", "conv_block3", "conv_block4", "fc1", "out"):
    getattr(model, name).register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach().clone()))
with torch.no_grad():
    model(torch.load(batch, weights_only=True))
torch.save({"state": model.state_dict(), "outputs": outputs}, out)
"""


def tympan_key(key: str) -> str:
    """autrainer's Cnn10 parameter name as tympan's (conv_block1. -> blocks.0., out. -> fc_out.)."""
    if key.startswith("conv_block"):
        number, rest = key[len("conv_block") :].split(".", 1)
        return f"blocks.{int(number) - 1}.{rest}"
    return "fc_out." + key[len("out.") :] if key.startswith("out.") else key


def batch_of(size: int) -> torch.Tensor:
    """The first `size` train clips of the preset's store, standardised with the train split's
    global statistics and cut or zero-padded to 1 s: (batch, 1, frames, mels)."""
    config = configuration.load(PRESET)
    split = open_split(store_dir(config, stages.dataset_of(config).name), "train")
    clips = [torch.from_numpy(split.clip(i).copy()) for i in range(size)]
    everything = torch.cat([torch.from_numpy(split.clip(i)) for i in range(len(split))])
    mean, std = everything.mean(), everything.std()
    batch = torch.zeros(size, 1, FRAMES, clips[0].shape[-1])
    for i, clip in enumerate(clips):
        clip = (clip[:FRAMES] - mean) / std
        batch[i, 0, : len(clip)] = clip
    return batch


def weight_scale(state: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.float().std()) for k, v in state.items() if k.endswith("weight") and v.dim() > 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/tympan-bench", help="autrainer's venv")
    args = parser.parse_args()
    python = autrainer_peer.venv(args.cache).parent / "python"

    with tempfile.TemporaryDirectory() as tmp:
        batch = batch_of(args.batch)
        torch.save(batch, f"{tmp}/batch.pt")
        (Path(tmp) / "side.py").write_text(AUTRAINER_SIDE)
        command = [str(python), f"{tmp}/side.py", f"{tmp}/batch.pt", str(args.seed), f"{tmp}/out.pt"]
        subprocess.run(command, check=True, capture_output=True)
        theirs = torch.load(f"{tmp}/out.pt", weights_only=True)  # tensors only: nothing it holds runs

    model = Cnn10(n_mels=batch.shape[-1], n_outputs=10, head_dropout=0.0).eval()
    missing = model.load_state_dict({tympan_key(k): v for k, v in theirs["state"].items()}, strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    ours = {}
    names = {**{f"blocks.{i}": f"conv_block{i + 1}" for i in range(4)}, "fc1": "fc1", "fc_out": "out"}
    for name, module in model.named_modules():
        if name in names:
            module.register_forward_hook(lambda m, i, o, name=name: ours.__setitem__(names[name], o.detach()))
    with torch.no_grad():
        model.head(model.embed(batch[:, 0]))

    print(f"\nautrainer's Cnn10 weights in tympan's Cnn10, eval mode, {args.batch} FSDD clips of 1 s:")
    print(f"{'layer':14}{'shape':>22}{'largest |difference|':>24}{'relative':>12}")
    for name, theirs_out in theirs["outputs"].items():
        difference = float((ours[name] - theirs_out).abs().max())
        scale = float(theirs_out.abs().max()) or 1.0
        print(f"{name:14}{str(tuple(theirs_out.shape)):>22}{difference:24.3g}{difference / scale:12.2g}")

    torch.manual_seed(args.seed)
    fresh = weight_scale(Cnn10(n_mels=batch.shape[-1], n_outputs=10).state_dict())
    print("\ninitial weight scale (standard deviation), each seeded with", args.seed)
    print(f"{'tympan layer':22}{'tympan':>10}{'autrainer':>11}")
    for key, value in weight_scale({tympan_key(k): v for k, v in theirs["state"].items()}).items():
        print(f"{key:22}{fresh[key]:10.4f}{value:11.4f}")
    print(
        "\ndropout while training: autrainer 0.2 after each block and none in the head; tympan 0.2 after each "
        "block and head_dropout (default 0.5, PANN's) before fc1 and before the output layer"
    )


if __name__ == "__main__":
    main()
