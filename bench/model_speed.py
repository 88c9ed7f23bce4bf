"""How fast does each model family train, and how much memory does it take, on 1 s of 16 kHz audio?

For each model, at its real published size with random weights, fed the features its preset pairs
with: a warm-up step, then `--steps` timed training steps (train mode, forward, cross-entropy on
the FSDD digits, backward, AdamW step) on one batch of `--batch` one-second clips. It prints the
parameter count, the input batch, the median seconds per step, samples per second, and peak memory:
on the CPU the process's peak resident set (VmHWM: the whole process, model and batch included)
and its growth during the steps; on CUDA, torch.cuda.max_memory_allocated and its growth.

The clips are FSDD recordings (8 kHz, resampled to 16 kHz, cut or padded with silence to exactly
1 s), or noise where ../shared/data/fsdd is missing; their features are computed once, before
timing, by the preset's feature pipeline. Each model runs in a fresh subprocess, so its peak
memory is its own and a failure (one that runs out of `--max-gb`, say) costs only its row.

Sizes: the tympan presets' (pretrained sources dropped), with the transformers networks built
from their config classes: wav2vec2 base (Wav2Vec2Config's defaults), AST (ASTConfig's defaults,
on the AudioSet preset's input: 1 s of filter banks padded to 1024 frames; AST-1s takes 100
frames, with position embeddings to match) and Whisper base's encoder (d_model 512, 6 layers, 8
heads, FFN 2048, 80 Mel bins, on the clip's own 100 frames). wav2vec2 and Whisper train with
their presets' `freeze: cnn`. AST on 1024 frames at batch 32 ran out of a 13.7 GB --max-gb on a
24 GB machine; AST-ckpt is the same with gradient checkpointing. AST-1s, AST-ckpt, PCEN and
Resemblyzer run only when named in --models. On CPUs that other work shares, torch's threads wait
on each other: compare --threads 1.

    python bench/model_speed.py [--models SmallCNN Cnn14 ...] [--batch 32] [--steps 3] [--threads N]
        [--device cpu|cuda] [--amp bf16|fp16] [--max-gb G] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"
LOGMEL = {"preset": "PannLogMel16k", "online": ["Normalize"]}
WHISPER_BASE = {"d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8, "encoder_ffn_dim": 2048}


def hf(preset: str, config: dict, **args) -> dict:
    """A transformers preset with no pretrained source: `config` is the whole architecture."""
    return {"preset": preset, "args": {"pretrained": None, "config": config, **args}}


# name -> the config's features and model blocks
MODELS: dict[str, dict] = {
    "SmallCNN": {"features": LOGMEL, "model": "SmallCNN"},
    "Cnn10": {"features": "PannLogMel16k", "model": "Cnn10"},
    "Cnn14": {"features": "PannLogMel16k", "model": "Cnn14"},
    "timm-MobileNetV3": {"features": "SpectrogramImage", "model": "TimmMobileNetV3Small"},
    "wav2vec2-base": {"features": "Wav2Vec2Input16k", "model": hf("Wav2Vec2Base", {"model_type": "wav2vec2"})},
    "AST": {"features": "ASTAudioSet", "model": hf("ASTAudioSet", {})},
    "Whisper-base-enc": {"features": "WhisperLogMel80", "model": hf("WhisperBase", WHISPER_BASE)},
    "ECAPA-TDNN": {"features": "Fbank16k", "model": "ECAPA"},
    "SeqFFNN": {"features": LOGMEL, "model": "SeqFFNN"},
    "CRNN-emo18": {"features": {"preset": "Waveform16k", "online": ["Normalize"]}, "model": "CRNNEmo18"},
    "CRNN-zhao19": {"features": {"preset": "Waveform16k", "online": ["Normalize"]}, "model": "CRNNZhao19"},
    "LEAF": {"features": "Waveform16k", "model": "LEAF"},
    # not in the issue's list; ask for them with --models
    "AST-ckpt": {"features": "ASTAudioSet", "model": hf("ASTAudioSet", {}, gradient_checkpointing=True)},
    "AST-1s": {"features": "ASTAudioSet 100 frames", "model": hf("ASTAudioSet", {"max_length": 100})},
    "PCEN": {"features": "Waveform16k", "model": "PCEN"},
    "Resemblyzer": {"features": "Waveform16k", "model": "Resemblyzer"},
}
DEFAULT = list(MODELS)[:12]


def clips(count: int) -> tuple[list[np.ndarray], list[int]]:
    """`count` clips of exactly 1 s at 16 kHz and their digits: FSDD recordings spread over the
    dataset (random noise and labels where it is missing)."""
    from tympan import audio

    if not FSDD.is_dir():
        rng = np.random.default_rng(0)
        return [0.1 * rng.standard_normal(16000, dtype=np.float32) for _ in range(count)], [
            i % 10 for i in range(count)
        ]
    files = sorted(FSDD.glob("*.wav"))
    files = [files[i * len(files) // count] for i in range(count)]
    samples = [audio.load(f, 16000)[0][:16000] for f in files]
    return [np.pad(s, (0, 16000 - len(s))) for s in samples], [int(f.name[0]) for f in files]


def features_of(block):
    """The features block; "ASTAudioSet <n> frames": that preset padded or cut to n frames, not 1024."""
    if not (isinstance(block, str) and block.endswith(" frames")):
        return block
    from tympan.config.presets import load_preset, merge

    preset = load_preset("features", "ASTAudioSet")
    frames = {"args": {"extractor": {"max_length": int(block.split()[1])}}}
    return {**preset, "offline": [merge(preset["offline"][0], frames)]}


def proc_status(key: str) -> int:
    """A size from /proc/self/status (VmHWM, VmRSS, VmSize) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(name: str, args: argparse.Namespace) -> dict:
    """Build `name`, its batch and optimizer, then time the training steps (in this process)."""
    import torch
    import torch.nn.functional as F

    from tympan import config as configuration
    from tympan import cpu, optim
    from tympan.models.base import sizes
    from tympan.targets import resolve_target

    cpu.configure(args.threads)
    device = torch.device(args.device)
    block = MODELS[name]
    raw = {"dataset": "FSDD", "features": features_of(block["features"]), "model": block["model"]}
    config = configuration.parse(raw, source=name)
    pipeline = config.features.pipeline()
    samples, labels = clips(args.batch)
    stored = [torch.from_numpy(pipeline.extract(s)) for s in samples]
    if pipeline.fits:
        pipeline.fit(lambda: iter(stored))
    torch.manual_seed(0)
    model_class = resolve_target(config.model.target)
    model = config.model.build_checked("model", **sizes(pipeline.output, 10, model_class)).to(device).train()
    x, lengths = pipeline.pad([pipeline.apply(s) for s in stored], model.min_frames)
    x, lengths, targets = x.to(device), lengths.to(device), torch.tensor(labels, device=device)
    optimizer = optim.build_optimizer(config.optimizer, model)
    dtype = optim.amp_dtype(args.amp or False, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x, lengths), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS, so the peak is the steps' own
        before = proc_status("VmRSS")
    warm_up = step()
    times = [step() for _ in range(args.steps)]
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else proc_status("VmHWM")
    seconds = statistics.median(times)
    return {
        "model": name,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trains_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "input": "x".join(map(str, x.shape)),
        "warm_up_s": warm_up,
        "s_per_step": seconds,
        "samples_per_s": args.batch / seconds,
        "peak_gb": peak / 2**30,
        "growth_gb": (peak - before) / 2**30,
    }


def child(args: argparse.Namespace) -> None:
    """One model in this (fresh) process; its result as the last line of stdout."""
    if args.device == "cpu" and args.max_gb:  # fail with an error, not the kernel's OOM killer
        limit = proc_status("VmSize") + int(args.max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(json.dumps(measure(args.child, args)), flush=True)


HEADER = (
    f"{'model':18s} {'params M':>9s} {'trained':>8s} {'input':>16s} {'warm-up s':>9s} {'s/step':>8s}"
    f" {'samples/s':>9s} {'peak GB':>8s} {'growth GB':>9s}"
)


def row(result: dict) -> str:
    if "error" in result:
        return f"{result['model']:18s} failed: {result['error']}"
    r = result
    return (
        f"{r['model']:18s} {r['params_m']:9.2f} {r['trains_m']:8.2f} {r['input']:>16s} {r['warm_up_s']:9.2f}"
        f" {r['s_per_step']:8.2f} {r['samples_per_s']:9.1f} {r['peak_gb']:8.2f} {r['growth_gb']:9.2f}"
    )


def run(name: str, args: argparse.Namespace) -> dict:
    """`name` measured in a subprocess: its result, or why it has none."""
    command = [sys.executable, __file__, "--child", name, "--batch", str(args.batch), "--steps", str(args.steps)]
    command += ["--device", args.device, "--max-gb", str(args.max_gb)]
    command += [f"--{key}={getattr(args, key)}" for key in ("threads", "amp") if getattr(args, key)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"over --timeout {args.timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
    why = errors[-1] if errors else f"exit status {done.returncode}"
    if "can't allocate memory" in why:
        why = f"out of memory: more than --max-gb {args.max_gb} ({why[:160]})"
    return {"model": name, "error": f"{why[:300]} (exit status {done.returncode})"}


def describe_machine(args: argparse.Namespace) -> str:
    import torch

    if args.device == "cuda":
        device = torch.cuda.get_device_name()
    else:
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        device = names[0].split(":", 1)[1].strip() if names else platform.machine()
    cpus, load = len(os.sched_getaffinity(0)), os.getloadavg()
    busy = " (busy: other processes share these CPUs, so the times are slower than on a quiet machine)"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    source = "FSDD recordings" if FSDD.is_dir() else "random noise"
    return (
        f"torch {torch.__version__} on {args.device} ({device}); {cpus} CPUs, {memory:.0f} GB memory\n"
        f"load average at the start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}{busy if load[0] > cpus - 0.5 else ''}\n"
        f"batch {args.batch} x 1 s at 16 kHz ({source}), warm-up + {args.steps} timed steps (median), "
        f"amp {args.amp or 'off'}, threads {args.threads or 'tympan default'}, limit {args.max_gb or 'none'} GB a model"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT, choices=list(MODELS), metavar="MODEL")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up step")
    parser.add_argument("--threads", type=int, help="torch threads (default: tympan's, from the CPUs given)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", choices=["bf16", "fp16"], help="autocast dtype (fp16: CUDA only)")
    parser.add_argument(
        "--max-gb", type=float, default=None, help="address space a CPU model may add (default: 80%% of free)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds a model may take")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device here")
    if args.max_gb is None and args.device == "cpu":
        args.max_gb = round(0.8 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    print(describe_machine(args), flush=True)
    print(HEADER, flush=True)
    results = []
    for name in args.models:
        results.append(run(name, args))
        print(row(results[-1]), flush=True)
    print("\n" + HEADER)
    print("\n".join(row(r) for r in results))


if __name__ == "__main__":
    main()
