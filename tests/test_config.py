"""Config validation: presets, overrides, user classes by import path, and errors that name the key."""

import textwrap

import pytest

from tympan import config as configuration
from tympan.errors import ConfigError

BASE = {
    "dataset": "FSDD",
    "features": "PannLogMel16k",
    "model": "SmallCNN",
    "optimizer": "Adam",
}


def test_presets_expand_and_inline_overrides_merge():
    cfg = configuration.parse({**BASE, "optimizer": {"preset": "AdamW", "args": {"lr": 0.01}}})
    assert cfg.model.target == "tympan.models.cnn:SmallCNN"
    assert cfg.optimizer.target == "torch.optim:AdamW"
    assert cfg.optimizer.args == {"lr": 0.01, "weight_decay": 0.01}  # preset key kept, lr overridden
    assert cfg.features.offline[0].args["hop_length"] == 160


def test_params_yaml_of_the_repo_is_valid():
    cfg = configuration.load("params.yaml")
    assert cfg.experiment == "default"
    assert [a.target for a in cfg.augmentation] == ["tympan.augmentations:SpeedPerturb"]


def test_typo_names_the_key_path_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        configuration.parse({**BASE, "training": {"epocs": 3}})
    message = str(err.value)
    assert "training.epocs: unknown key" in message
    assert "epochs" in message and "batch_size" in message


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match=r"training\.batch_size: .*integer.*'many'"):
        configuration.parse({**BASE, "training": {"batch_size": "many"}})


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model preset 'Cnn11'; known: .*Cnn10"):
        configuration.parse({**BASE, "model": "Cnn11"})


def test_unknown_class_argument_is_caught_before_training():
    with pytest.raises(ConfigError, match=r"model\.args: .*SmallCNN takes no argument 'dropot'.*dropout"):
        configuration.parse({**BASE, "model": {"preset": "SmallCNN", "args": {"dropot": 0.1}}})


def test_arguments_filled_in_from_data_cannot_be_set():
    with pytest.raises(ConfigError, match="'n_outputs' is filled in by tympan"):
        configuration.parse({**BASE, "model": {"preset": "SmallCNN", "args": {"n_outputs": 3}}})


def test_unimportable_target_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.target.*cannot import tympan\.nope"):
        configuration.parse({**BASE, "model": {"target": "tympan.nope:Model"}})


def test_user_model_from_a_file_path(tmp_path):
    source = tmp_path / "my_model.py"
    source.write_text(
        textwrap.dedent("""
        import torch
        from tympan.models import AudioModel

        class Tiny(AudioModel):
            def __init__(self, n_mels, n_outputs, width=4):
                super().__init__()
                self.proj = torch.nn.Linear(n_mels, width)
                self.out = torch.nn.Linear(width, n_outputs)

            def embed(self, x, lengths=None):
                return self.proj(x).mean(dim=1)

            def head(self, e):
                return self.out(e)
    """)
    )
    cfg = configuration.parse({**BASE, "model": {"target": f"{source}:Tiny", "args": {"width": 6}}})
    model = cfg.model.build(n_mels=64, n_outputs=10)
    assert model.proj.out_features == 6


def test_overrides_by_dotted_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("dataset: FSDD\nfeatures: PannLogMel16k\nmodel: Cnn10\noptimizer: Adam\n")
    cfg = configuration.load(path, {"training.epochs": 3, "optimizer.args.lr": 0.5, "seed": 7})
    assert (cfg.training.epochs, cfg.optimizer.args["lr"], cfg.seed) == (3, 0.5, 7)
    assert cfg.model.target.endswith(":Cnn10")


def test_experiment_preset_by_name():
    cfg = configuration.load("autrainer-cnn10-fsdd")
    assert cfg.training.max_duration == 1.0 and cfg.model.target.endswith(":Cnn10")


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        configuration.load(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        configuration.load(tmp_path / "missing.yaml")


def test_run_id_follows_the_resolved_config_only():
    a = configuration.parse(BASE)
    b = configuration.parse({**BASE, "experiment": "renamed", "training": {"progress": False}})
    c = configuration.parse({**BASE, "seed": 2})
    assert a.run_id() == b.run_id() != c.run_id()


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"epochs": True}, r"training\.epochs: Input should be a valid integer \(got True\)"),
        ({"batch_size": "32"}, r"training\.batch_size: Input should be a valid integer"),
        ({"amp": 1}, r"training\.amp: must be false, true \(fp16\), fp16 or bf16, got 1"),
        ({"grad_clip": True}, r"training\.grad_clip: Input should be a valid number"),
        ({"max_duration": "1e-3"}, r"training\.max_duration: .*\(got '1e-3'\); write numbers unquoted"),
    ],
)
def test_yaml_cannot_smuggle_a_value_of_another_type(training, message):
    with pytest.raises(ConfigError, match=message):
        configuration.parse({**BASE, "training": training})


def test_floats_still_take_integers():
    assert configuration.parse({**BASE, "training": {"max_duration": 2, "grad_clip": 1}}).training.max_duration == 2.0


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("import tympan_no_such_module\n", "ModuleNotFoundError: No module named 'tympan_no_such_module'"),
        ("class Net(:\n    pass\n", "SyntaxError: invalid syntax"),
        ("raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
    ],
)
def test_a_target_file_that_fails_to_import_names_the_file_and_the_error(tmp_path, source, error):
    path = tmp_path / "my_model.py"
    path.write_text(source)
    with pytest.raises(ConfigError) as err:
        configuration.parse({**BASE, "model": {"target": f"{path}:Net"}})
    assert f"model.target: target '{path}:Net': importing {path} failed ({error}" in str(err.value)


LOGMEL = "tympan.transforms.logmel:PannLogMel"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"optimizer": {"preset": "AdamW", "args": {"lr": -1}}},
            r"optimizer\.args: .*AdamW.*Invalid learning rate: -1",
        ),
        ({"optimizer": {"preset": "SGD", "args": {"momentum": -0.5}}}, r"optimizer\.args: .*Invalid momentum"),
        ({"scheduler": {"preset": "OneCycle", "args": {"pct_start": 2}}}, r"scheduler\.args: .*OneCycleLR.*pct_start"),
    ],
)
def test_optimizer_and_scheduler_refuse_their_arguments_at_load(block, message):
    with pytest.raises(ConfigError, match=message):
        configuration.parse({**BASE, **block})
    # the stages before training (fetch, preprocess) leave the constructors to `tympan train`,
    # but not the argument names
    assert configuration.parse({**BASE, **block}, training=False)
    ((key, value),) = block.items()
    misspelt = {key: {**value, "args": {"lrate": 0.1}}}
    with pytest.raises(ConfigError, match=rf"{key}\.args: .*lrate"):
        configuration.parse({**BASE, **misspelt}, training=False)


def test_the_default_scheduler_builds_at_load_for_steps_and_epochs():
    for training in ({"epochs": 1}, {"steps": 3}):
        assert configuration.parse({**BASE, "scheduler": "OneCycle", "training": training}).scheduler


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"model": {"preset": "SmallCNN", "args": {"channels": "abc"}}}, r"model\.args: channels .* got 'abc'"),
        ({"model": {"preset": "SmallCNN", "args": {"channels": []}}}, r"model\.args: channels .*non-empty"),
        ({"model": {"preset": "SmallCNN", "args": {"channels": [8, True]}}}, r"model\.args: channels .*\[8, True\]"),
        ({"model": {"preset": "Cnn10", "args": {"dropout": 1.5}}}, r"model\.args: dropout must be .*1\.5"),
        ({"features": {"preset": "PannLogMel16k", "sample_rate": -16000}}, r"features\.sample_rate"),
        (
            {"features": {"offline": [{"target": LOGMEL, "args": {"fmin": 9000}}]}},
            r"features\.offline\.0: .*fmin and fmax",
        ),
        ({"features": {"preset": "PannLogMel16k", "sample_rate": 8000}}, r"features\.offline\.0: .*fmax=8000"),
        (
            {"features": {"offline": [{"target": LOGMEL, "args": {"sample_rate": 8000}}]}},
            r"features\.offline\.0\.args: .*sample_rate",
        ),
    ],
)
def test_model_and_feature_arguments_are_checked_at_load(block, message):
    with pytest.raises(ConfigError, match=message):
        configuration.parse({**BASE, **block})


def test_build_checked_names_the_block_when_a_constructor_refuses(tmp_path):
    """For classes without `validate_args` (a user's), the build site names the block."""
    source = tmp_path / "strict_model.py"
    source.write_text(
        textwrap.dedent("""
        from tympan.models import AudioModel

        class Strict(AudioModel):
            def __init__(self, n_mels, n_outputs, depth=2):
                super().__init__()
                if depth < 1:
                    raise ValueError(f"depth must be at least 1, got {depth}")
    """)
    )
    cfg = configuration.parse({**BASE, "model": {"target": f"{source}:Strict", "args": {"depth": 0}}})
    with pytest.raises(ConfigError, match=r"^model\.args: .*Strict refused them: ValueError: depth must be at least 1"):
        cfg.model.build_checked("model", n_mels=64, n_outputs=10)


@pytest.mark.parametrize(("name", "runs"), [("grid", 5), ("ablation", 6)])
def test_the_readme_examples_are_the_default_experiment_plus_a_grid(name, runs):
    from tympan.config import expand_grid as expand

    raw, source = configuration.load_raw(f"examples/{name}.yaml")
    configs = expand(raw, source)
    assert len(configs) == runs and len({c.run_id() for c in configs}) == runs
    # where params.yaml keeps its store is its own: an example's store is named by its digest, beside it
    exclude = {"experiment": True, "features": {"store"}}
    default = configuration.load("params.yaml").model_dump(exclude=exclude)
    assert configuration.parse({k: v for k, v in raw.items() if k != "grid"}).model_dump(exclude=exclude) == default


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """PyYAML reads `1e-3` as the text "1e-3" (YAML 1.1); configs and overrides read it as YAML 1.2
    does, a float, so `lr: 1e-3` reaches the optimizer as a number."""
    path = tmp_path / "exp.yaml"
    path.write_text(
        "dataset: FSDD\nfeatures: PannLogMel16k\nmodel: SmallCNN\n"
        "optimizer: {preset: Adam, args: {lr: 1e-3}}\ntask: {preset: classification, args: {label_smoothing: 5E-2}}\n"
    )
    cfg = configuration.load(path)
    assert cfg.optimizer.args["lr"] == 0.001 and cfg.task.args["label_smoothing"] == 0.05
    assert configuration.load(path, {"optimizer.args.lr": configuration.load_yaml("3e-4")}).optimizer.args["lr"] == 3e-4
    with pytest.raises(ConfigError, match="training.grad_clip.*write numbers unquoted"):
        configuration.parse({**BASE, "training": {"grad_clip": "1e-1"}})


def test_a_saved_config_gives_its_run_id_without_parsing():
    """postprocess reads the ids of unfinished runs from config.yaml as data, importing nothing."""
    cfg = configuration.parse({**BASE, "training": {"epochs": 3, "threads": 1}})
    saved = configuration.load_yaml(cfg.to_yaml())
    assert configuration.run_id_of(saved) == cfg.run_id()
    assert configuration.run_id_of({**saved, "seed": 2}) != cfg.run_id()
    assert (
        configuration.run_id_of({**saved, "experiment": "other", "training": {**saved["training"], "threads": 2}})
        == cfg.run_id()
    )


def test_a_dataset_block_alone_is_a_config():
    """features, model and optimizer default to the default experiment's (16 kHz PANN log-Mels
    normalised per clip, SmallCNN, AdamW); the task to the dataset's; each can still be set."""
    alone = configuration.parse({"dataset": "ToyRegression"})
    default = configuration.load("params.yaml")
    features = default.features.model_copy(update={"store": None})  # params.yaml's store path is its own
    assert alone.features == features and alone.model == default.model
    assert alone.optimizer.target == "torch.optim:AdamW" and alone.task.target.endswith(":Regression")
    mine = configuration.parse({"dataset": "ToyRegression", "model": {"preset": "SmallCNN", "args": {"dropout": 0}}})
    assert mine.model.args["dropout"] == 0 and mine.features == features
