"""Every preset builds: a preset that names a missing class or a refused argument fails here, not
in a user's first run. (Transform presets: tests/test_transforms.py feeds each a kind it takes.)"""

import pytest

from tympan import config as configuration
from tympan.config.presets import available_presets, expand_presets, load_preset
from tympan.config.schema import FeaturesConfig
from tympan.models.base import check_accepts, sizes
from tympan.models.huggingface import is_local

BASE = {"dataset": "FSDD", "optimizer": "Adam"}
FEATURES_FOR = {"frames": "PannLogMel16k", "vector": "EGeMAPS", "waveform": "Waveform16k", "image": "SpectrogramImage"}


@pytest.mark.parametrize("name", available_presets("experiments"))
def test_every_experiment_preset_loads_with_its_whole_chain_checked(name):
    config = configuration.load(name)
    assert config.experiment == name


@pytest.mark.parametrize("name", available_presets("features"))
def test_every_feature_preset_builds_its_pipeline(name):
    features = FeaturesConfig.model_validate(expand_presets({"features": name})["features"])
    assert features.pipeline().output.kind in ("waveform", "frames", "vector", "image")


@pytest.mark.parametrize("name", available_presets("models"))
def test_every_model_preset_builds_for_a_kind_it_accepts(name):
    preset = load_preset("models", name)
    cls = configuration.resolve_target(preset["target"])
    kind = cls.accepts[0]
    pipeline = configuration.parse({**BASE, "features": FEATURES_FOR[kind], "model": name}).features.pipeline()
    check_accepts(cls, pipeline.output)
    pretrained = preset.get("args", {}).get("pretrained")
    if isinstance(pretrained, str) and not is_local(pretrained):
        return  # a hub id (the hub is out of reach here): the preset loads as a config without fetching it
    model = cls(**preset.get("args", {}), **sizes(pipeline.output, 10, cls))
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("kind", ["datasets", "tasks", "optimizers", "schedulers"])
def test_every_other_preset_loads(kind):
    for name in available_presets(kind):
        preset = load_preset(kind, name)
        configuration.resolve_target(preset["target"])
