"""Optimisation options (tympan.optim) on real FSDD features: parameter groups by model part, frozen
then unfrozen parts, no decay on biases and norms, SAM around a torch optimiser, linear warm-up,
ReduceLROnPlateau in the task's direction, gradient accumulation and bf16 autocast; every bad
config is one line at load, and a run using them all resumes exactly after a SIGKILL."""

import copy
import csv
import inspect
import itertools
import logging
import shutil
import sys

import pytest
import torch
import yaml
from tqdm import tqdm

from tests.conftest import TINY, kill_once_last_exists
from tympan import config as configuration
from tympan import cpu, optim, stages
from tympan.config.schema import SchedulerConfig
from tympan.data import loader
from tympan.errors import ConfigError
from tympan.store import store_dir
from tympan.training import Trainer

SMALL = {"preset": "SmallCNN", "args": {"channels": [4, 8, 8]}}
HEADLESS = """
import torch
from tympan.models.base import AudioModel


class Headless(AudioModel):
    def __init__(self, n_mels: int = 64, n_outputs: int = 10):
        super().__init__()
        self.out = torch.nn.Linear(n_mels, n_outputs)

    def embed(self, x, lengths=None):
        return x.mean(dim=1)

    def head(self, embedding):
        return self.out(embedding)
"""
SAM = {"target": "tympan.optim:SAM", "args": {"base": "torch.optim:SGD", "lr": 0.01}}
PLATEAU = "torch.optim.lr_scheduler:ReduceLROnPlateau"


class Enough(Exception):
    """Stops a training loop where a test has seen enough."""


@pytest.fixture(scope="module")
def workspace(fsdd_mirror, tmp_path_factory):
    """Four FSDD speakers: ten takes a digit of george and jackson (train, 200 clips), three of
    yweweler (dev) and lucas (test), fetched and preprocessed: `(root, raw config)` of a small CNN
    without augmentation."""
    root = tmp_path_factory.mktemp("optim")
    (root / "takes/recordings").mkdir(parents=True)
    for speakers, takes in ((("george", "jackson"), 10), (("yweweler", "lucas"), 3)):
        for speaker, digit, take in itertools.product(speakers, range(10), range(takes)):
            name = f"{digit}_{speaker}_{take}.wav"
            shutil.copyfile(fsdd_mirror / "fsdd/recordings" / name, root / "takes/recordings" / name)
    dataset = {**TINY["dataset"], "root": str(root / "data/raw")}
    dataset["args"] = {**dataset["args"], "source": str(root / "takes")}
    raw = {**TINY, "dataset": dataset, "features": {**TINY["features"], "root": str(root / "data/features")}}
    # one thread: these tiny models gain nothing from two, and lose much to a busy machine
    raw.update(model=SMALL, augmentation=[], training={**TINY["training"], "batch_size": 16, "threads": 1})
    config = configuration.parse(raw)
    stages.fetch(config)
    stages.preprocess(config)
    return root, raw


@pytest.fixture(autouse=True)
def _threads():
    """A test's training sizes torch's threads (`training.threads`); later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _trainer(raw, run_dir, **blocks) -> Trainer:
    config = configuration.parse({**raw, **blocks})
    cpu.configure(config.training.threads)  # as stages.train does
    return Trainer(config, store_dir(config, "fsdd"), run_dir)


def _batches(trainer, n):
    """The first `n` training batches of epoch 1, as the training loop draws them."""
    trainer.train_data.epoch = trainer.sampler.epoch = 1
    return list(itertools.islice(loader(trainer.train_data, list(trainer.sampler), trainer.model.min_frames), n))


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"optimizer": {"preset": "AdamW", "parts": {"neck": {"lr": 0.1}}}},
         r"optimizer\.parts: model SmallCNN has no part 'neck'; its parts: backbone, head$"),
        ({"model": "HEADLESS", "optimizer": {"preset": "AdamW", "parts": {"head": {"lr": 0.1}}}},
         r"optimizer\.parts\.head: model Headless declares no head part"),
        ({"model": "HEADLESS", "optimizer": {"preset": "AdamW", "parts": {"backbone": {"freeze": True}}}},
         r"optimizer\.parts: every part of Headless is frozen at the start; nothing would train"),
        ({"optimizer": {"preset": "AdamW", "parts": {"backbone": {"freeze": 0}}}},
         r"optimizer\.parts\.backbone\.freeze: must be true, false or a number of epochs \(or steps\) >= 1, got 0"),
        ({"optimizer": {"preset": "AdamW", "parts": {"head": {"lr": -1.0}}}},
         r"optimizer\.parts\.head\.lr: Input should be greater than 0"),
        ({"optimizer": {"target": "torch.optim:Rprop", "no_decay": True}},
         r"optimizer\.no_decay: Rprop has no weight decay"),
        ({"optimizer": {"target": "torch.optim:LBFGS"}}, r"optimizer: torch\.optim:LBFGS is not supported: its step"),
        ({"optimizer": {**SAM, "args": {"base": "torch.optim:SparseAdam"}}},
         r"optimizer: torch\.optim:SparseAdam is not supported: it takes sparse gradients"),
        ({"optimizer": {**SAM, "args": {"base": "torch.nn:Linear"}}},
         r"optimizer\.args: tympan\.optim:SAM refused them: ValueError: base must name a torch\.optim optimizer class"),
        ({"optimizer": {**SAM, "args": {"rho": -0.1}}}, r"optimizer\.args: rho must be a positive number, got -0\.1"),
        ({"optimizer": {**SAM, "args": {"lr": -1.0}}}, r"optimizer\.args: tympan\.optim:SAM refused them: .*-1"),
        ({"optimizer": SAM, "training": {"amp": "fp16"}}, r"optimizer: SAM with training\.amp: fp16 is not supported"),
        ({"scheduler": {"interval": "step", "warmup": 5}, "training": {"steps": 5}},
         r"scheduler\.warmup: 5 steps are the whole run \(5\); make it shorter"),
        ({"scheduler": {"target": PLATEAU, "args": {"mode": "min"}}},
         r"scheduler\.args\.mode is filled in from the task"),
        ({"scheduler": {"target": "torch.optim.lr_scheduler:LambdaLR"}},
         r"scheduler: torch\.optim\.lr_scheduler:LambdaLR is not supported: its lr_lambda is a function"),
        ({"scheduler": {"interval": "step"}}, r"scheduler: give a target \(a torch\.optim\.lr_scheduler class\)"),
        ({"training": {"amp": "fp32"}}, r"training\.amp: must be false, true \(fp16\), fp16 or bf16, got 'fp32'"),
        ({"training": {"accumulate": 0}}, r"training\.accumulate: Input should be greater than or equal to 1"),
        ({"training": {"accumulate": True}}, r"training\.accumulate: Input should be a valid integer"),
    ],
)  # fmt: skip
def test_a_bad_optimisation_config_is_one_line_at_load(tmp_path, blocks, message):
    (tmp_path / "headless.py").write_text(HEADLESS)
    raw = {**TINY, **blocks}
    if raw["model"] == "HEADLESS":
        raw["model"] = {"target": f"{tmp_path}/headless.py:Headless"}
    raw["training"] = {**TINY["training"], **blocks.get("training", {})}
    with pytest.raises(ConfigError, match=message) as error:
        configuration.parse(raw)
    assert "\n" not in str(error.value) and str(error.value).startswith("config: ")


SCHEDULER_ARGS = {  # what a config must give each scheduler (the run's length is filled in)
    "StepLR": {"step_size": 2},
    "MultiStepLR": {"milestones": [2, 3]},
    "ExponentialLR": {"gamma": 0.9},
    "CosineAnnealingWarmRestarts": {"T_0": 2},
    "CyclicLR": {"base_lr": 0.001},
}


def test_every_torch_optimizer_and_scheduler_by_name_trains_or_is_refused_at_load():
    """Each torch.optim class through config load, then a few steps as training takes them: an
    optimizer's on a real model, a scheduler's after a 2-step warm-up to the run's last step."""
    optimizers = [
        n for n, c in vars(torch.optim).items() if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer)
    ]
    schedulers = [
        n
        for n, c in vars(torch.optim.lr_scheduler).items()
        if inspect.isclass(c)
        and issubclass(c, torch.optim.lr_scheduler.LRScheduler)
        and n != "LRScheduler"
        and not n.startswith("_")
    ]
    assert len(optimizers) >= 14 and len(schedulers) >= 14
    trained, refused = [], []
    for name in [n for n in optimizers if n != "Optimizer"]:
        block = {"target": f"torch.optim:{name}", "no_decay": True}
        try:
            try:
                config = configuration.parse({**TINY, "optimizer": block})
            except ConfigError as exc:
                if "has no weight decay" not in str(exc):
                    raise
                config = configuration.parse({**TINY, "optimizer": {**block, "no_decay": False}})
        except ConfigError as exc:
            assert f"optimizer: torch.optim:{name} is not supported" in str(exc), str(exc)
            refused.append(name)
            continue
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
        model.parts = lambda m=model: {"backbone": list(m.named_parameters()), "head": []}
        optimizer = optim.build_optimizer(config.optimizer, model)
        before = [p.detach().clone() for p in model.parameters()]
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.linspace(-1, 1, 12).reshape(3, 4)).square().mean().backward()
            optimizer.step()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)), name
        trained.append(name)
    assert sorted(refused) == ["LBFGS", "Muon", "SparseAdam"] and len(trained) >= 11
    refused = []
    for name in schedulers:
        block = {"target": f"torch.optim.lr_scheduler:{name}", "args": SCHEDULER_ARGS.get(name, {}), "warmup": 2}
        try:
            config = configuration.parse({**TINY, "scheduler": {**block, "interval": "step"}})
        except ConfigError as exc:
            assert f"scheduler: torch.optim.lr_scheduler:{name} is not supported" in str(exc), str(exc)
            refused.append(name)
            continue
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
        schedule = optim.build_schedule(config.scheduler, optimizer, 8, 4, "max")
        for step in range(8):  # to the run's end: OneCycleLR, for one, refuses a step past it
            optimizer.step()
            schedule.step()
            schedule.evaluated(float(step))
    assert sorted(refused) == ["ChainedScheduler", "LambdaLR", "MultiplicativeLR", "SequentialLR"]


def test_warmup_ramps_linearly_then_hands_over_and_plateau_follows_the_direction():
    def lrs(scheduler: dict, steps: int, groups=(0.1, 1.0)) -> list[list[float]]:
        optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in groups])
        schedule = optim.build_schedule(SchedulerConfig(**scheduler), optimizer, 100, 10, "max")
        seen = []
        for _ in range(steps):
            seen.append([g["lr"] for g in optimizer.param_groups])
            optimizer.step()
            schedule.step()
        return seen

    step_lr = {"target": "torch.optim.lr_scheduler:StepLR", "args": {"step_size": 2, "gamma": 0.5}, "interval": "step"}
    warmed = lrs({**step_lr, "warmup": 4}, 10)
    assert sum(warmed[:4], []) == pytest.approx([lr * k / 4 for k in (1, 2, 3, 4) for lr in (0.1, 1.0)])  # per group
    assert warmed[4:] == lrs(step_lr, 6)  # then StepLR from its beginning, as if it had started there
    alone = sum(lrs({"warmup": 3, "interval": "step"}, 5), [])
    assert alone == pytest.approx([lr * k / 3 for k in (1, 2, 3, 3, 3) for lr in (0.1, 1.0)])

    def plateau(direction: str) -> float:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        block = SchedulerConfig(target=PLATEAU, args={"factor": 0.5, "patience": 0}, warmup=2)
        schedule = optim.build_schedule(block, optimizer, 40, 10, direction)
        for value in (0.1, 0.2, 0.3, 0.4):  # an epoch, then its dev evaluation
            schedule.step()
            schedule.evaluated(value)
        return optimizer.param_groups[0]["lr"]

    # rising: better for accuracy (max), worse for an error (min), where the 0.3 and 0.4 after the
    # best 0.2 each halve the lr; 0.1 came in the warm-up and does not count
    assert (plateau("max"), plateau("min")) == (1.0, 0.25)


def test_parts_get_their_lr_and_decay_and_a_frozen_part_trains_from_its_epoch_on(workspace, tmp_path):
    _, raw = workspace
    parts = {"backbone": {"lr": 0.0005, "freeze": 2}, "head": {"lr": 0.01, "weight_decay": 0.1}}
    optimizer = {"preset": "AdamW", "args": {"lr": 0.003, "weight_decay": 0.05}, "no_decay": True, "parts": parts}
    training = {**raw["training"], "steps": 50, "eval_every": 50}
    trainer = _trainer(raw, tmp_path / "run", optimizer=optimizer, training=training)
    groups = trainer.optimizer.param_groups
    assert [g["part"] for g in groups] == ["backbone", "backbone, no decay", "head", "head, no decay"]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.0005, 0.05), (0.0005, 0.0), (0.01, 0.1), (0.01, 0.0)]
    for group, (_, named) in zip(groups[::2], trainer.model.parts().items(), strict=True):
        assert {id(p) for p in group["params"]} == {id(p) for _, p in named if p.ndim > 1}
    assert all(p.ndim == 1 for g in groups[1::2] for p in g["params"])  # biases, batch-norm weights

    backbone, head = trainer.model.features[0].weight, trainer.model.out.weight
    seen, step_group = [], trainer._train_group

    def watched(group):
        if len(seen) == 3:
            raise Enough
        seen.append((backbone.requires_grad, backbone.detach().clone(), head.detach().clone()))
        return step_group(group)

    trainer._train_group = watched
    with pytest.raises(Enough):  # the training loop, stopped before its 4th step
        trainer._train_epoch(1, 0, [], [0.0, 0], tqdm(disable=True))
    assert [trains for trains, _, _ in seen] == [False, False, True]  # freeze: 2 (steps, as training counts them)
    assert torch.equal(seen[0][1], seen[2][1]) and not torch.equal(seen[2][1], backbone)
    assert not torch.equal(seen[0][2], seen[1][2])


def test_sam_steps_from_the_gradient_at_the_moved_weights_and_keeps_batch_norm_statistics(workspace, tmp_path):
    _, raw = workspace
    optimizer = {"target": "tympan.optim:SAM", "args": {"base": "torch.optim:SGD", "lr": 0.05, "rho": 0.05}}
    trainer = _trainer(raw, tmp_path / "run", optimizer=optimizer)
    ((x, lengths, targets),) = _batches(trainer, 1)
    model = copy.deepcopy(trainer.model)  # the reference, by hand: w' = w - lr * grad(w + rho g / |g|)
    once = copy.deepcopy(trainer.model)
    torch.manual_seed(5)
    trainer._train_group([(x, lengths, targets)])

    torch.manual_seed(5)
    params = list(model.parameters())
    grads = torch.autograd.grad(trainer.task.loss(model(x, lengths), targets), params)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    with torch.no_grad():
        start = [p.clone() for p in params]
        for p, g in zip(params, grads, strict=True):
            p.add_(g * 0.05 / norm)
    moved = torch.autograd.grad(trainer.task.loss(model(x, lengths), targets), params)
    for p, w, g in zip(trainer.model.parameters(), start, moved, strict=True):
        torch.testing.assert_close(p, w - 0.05 * g, rtol=0, atol=1e-6)
    once(x, lengths)  # the statistics of one pass: the second, at the moved weights, does not count
    for name, buffer in trainer.model.named_buffers():
        assert torch.equal(buffer, dict(once.named_buffers())[name]), name


def test_accumulated_gradients_equal_one_batch_of_all_and_bf16_trains_on_the_cpu(workspace, tmp_path):
    _, raw = workspace
    # no batch norm (its statistics depend on the batch), no dropout (its draws on the call)
    seq = {"preset": "SeqFFNN", "args": {"hidden_size": 16, "layers": 1, "hidden": [16], "dropout": 0.0,
                                         "head_dropout": 0.0}}  # fmt: skip
    trainer = _trainer(raw, tmp_path / "seq", model=seq, training={**raw["training"], "batch_size": 32})
    ((x, lengths, targets),) = _batches(trainer, 1)

    def gradients(group):
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer._backward(group)
        return torch.cat([p.grad.flatten() for p in trainer.model.parameters()])

    halves = [(x[:16], lengths[:16], targets[:16]), (x[16:], lengths[16:], targets[16:])]  # 2 x 16 = one batch of 32
    whole = gradients([(x, lengths, targets)])
    assert whole.norm() > 1e-2 and (gradients(halves) - whole).abs().max() < 1e-6

    trainer = _trainer(raw, tmp_path / "bf16", training={**raw["training"], "amp": "bf16"})
    assert not trainer.scaler.is_enabled()
    dtypes = []
    trainer.model.out.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    batch = _batches(trainer, 1)
    losses = [trainer._train_group(batch)[0] for _ in range(8)]
    assert set(dtypes) == {torch.bfloat16} and losses[-1] < 0.8 * losses[0]


def test_sam_warmup_plateau_accumulation_and_freezing_resume_after_sigkill_to_the_same_numbers(
    workspace, tmp_path, caplog
):
    root, raw = workspace
    raw = {
        **raw,
        "model": SMALL,
        "optimizer": {
            "target": "tympan.optim:SAM",
            "args": {"base": "torch.optim:AdamW", "rho": 0.05, "lr": 0.003, "weight_decay": 0.01},
            "no_decay": True,
            "parts": {"backbone": {"lr": 0.001, "freeze": 5}},
        },
        # every evaluation after the first counts as no better: the lr halves at each
        "scheduler": {"target": PLATEAU, "args": {"factor": 0.5, "patience": 0, "threshold": 10.0,
                      "threshold_mode": "abs"}, "interval": "step", "warmup": 3},
        # 25 batches of 8 an epoch: 9 steps of 3 batches, the 9th of 1
        "training": {**raw["training"], "steps": 12, "eval_every": 4, "save_every": 3, "accumulate": 3,
                     "batch_size": 8, "grad_clip": 1.0},
    }  # fmt: skip
    config_file, run_dir = tmp_path / "exp.yaml", tmp_path / "killed"
    config_file.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "tympan.cli", "train", str(config_file), "--run-dir", str(run_dir)]
    kill_once_last_exists(command, root, run_dir)
    assert not (run_dir / "summary.json").exists()
    saved = torch.load(run_dir / "last/training_state.pt", weights_only=True)
    assert saved["step"] < 12 and any("exp_avg" in s for s in saved["optimizer"]["state"].values())
    assert saved["scheduler"]["warmup_done"] == min(saved["step"], 3)

    with caplog.at_level(logging.INFO, logger="tympan"):
        stages.train(configuration.parse(raw), run_dir)  # resumed (here: the imports are warm)
    assert f"after step {saved['step']}" in caplog.text
    reference, _ = stages.train(configuration.parse(raw), tmp_path / "uninterrupted")
    for name in ("metrics.csv", "summary.json"):
        assert (run_dir / name).read_text() == (reference / name).read_text(), name
    with open(reference / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "4"), ("1", "8"), ("2", "12")]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.001, 0.0005, 0.00025])  # the backbone's
