"""The resolved data flow (tympan.flow): recorded with the run, in the bundle, and by `tympan config`."""

import json

import yaml

from tympan import config as configuration
from tympan import flow
from tympan.cli import main

NOISE = {"target": "tympan.datasets.noise:ColouredNoise", "args": {"files": 4, "seconds": 5.0}}


def raw_config(tmp_path) -> dict:
    return {
        "dataset": "FSDD",
        "seed": 7,
        "features": {"preset": "Waveform16k", "online": [{"preset": "RandomCrop", "args": {"seconds": 0.5}}]},
        "model": "WaveformCNN",
        "optimizer": "Adam",
        "augmentation": [
            {
                "target": "tympan.augmentations:Choice",
                "args": {
                    "choices": [
                        {"target": "tympan.augmentations:GaussianNoise"},
                        {
                            "target": "tympan.augmentations:BackgroundNoise",
                            "args": {"source": "ColouredNoise", "root": str(tmp_path / "raw")},
                        },
                    ],
                    "weights": [1, 3],
                },
            },
        ],
    }


def test_every_argument_is_resolved_defaults_rates_and_children_included(tmp_path):
    record = flow.resolve(configuration.parse(raw_config(tmp_path)))
    crop = record["transforms"][1]
    assert crop["place"] == "online" and crop["target"] == "tympan.transforms.crop:RandomCrop"
    assert crop["args"]["seconds"] == 0.5 and crop["args"]["frame_rate"] == 16000.0  # filled in from its input
    assert crop["takes"] == "waveform at 16000 Hz"
    choice = record["augmentations"][0]
    assert choice["place"] == "waveform" and choice["acts_on"] == "waveform at 16000 Hz"
    assert choice["args"]["p"] == 1.0 and choice["args"]["weights"] == [1, 3]
    gaussian, background = choice["args"]["choices"]
    assert gaussian["args"] == {"min_snr_db": 10.0, "max_snr_db": 30.0, "p": 1.0}  # defaults on record
    assert background["args"]["sample_rate"] == 16000  # shared from the features
    assert background["args"]["source"] == NOISE  # the preset named, expanded
    assert record["seed"] == 7 and "sample_seed(seed, epoch, clip index)" in record["seeding"]["clip"]
    assert record["model_input"] == "waveform at 16000 Hz"
    assert not (tmp_path / "raw").exists()  # resolving builds nothing on disk
    json.dumps(record)  # plain data


def test_the_run_and_its_bundle_record_the_flow(tiny_run):
    run_dir, _ = tiny_run
    config = configuration.parse(yaml.safe_load((run_dir / "config.yaml").read_text()))
    expected = flow.resolve(config)
    assert yaml.safe_load((run_dir / "pipeline.yaml").read_text()) == expected
    assert json.loads((run_dir / "bundle" / "bundle.json").read_text())["pipeline"] == expected
    names = [a["target"] for a in expected["augmentations"]]
    assert names == ["tympan.augmentations:SpeedPerturb", "tympan.augmentations:SpecAugment"]
    assert expected["augmentations"][0]["args"]["n_mels"] == 64  # the Mel scale shared from the features


def test_tympan_config_prints_the_flow_as_comments_so_its_output_stays_a_config(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path)))
    assert main(["config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# pipeline (saved with each run as pipeline.yaml):" in out
    assert "#     target: tympan.transforms.crop:RandomCrop" in out
    again = configuration.parse(yaml.safe_load(out))
    assert again.run_id() == configuration.parse(raw_config(tmp_path)).run_id()


def test_waveform_augmentations_get_the_stored_rate_after_an_offline_resample(tmp_path):
    raw = raw_config(tmp_path)
    raw["features"] = {"sample_rate": 16000, "offline": [{"preset": "Resample", "args": {"rate": 8000}}], "online": []}
    record = flow.resolve(configuration.parse(raw))
    background = record["augmentations"][0]["args"]["choices"][1]
    assert background["args"]["sample_rate"] == 8000


def test_sharing_arguments_and_resolving_draw_nothing_from_the_seeded_generator(tmp_path):
    """Training seeds torch's generator before the model and then builds its augmentations and
    record: building a log-Mel there drew initial weights and moved the default experiment's numbers."""
    import torch

    config = configuration.load("params.yaml")
    pipeline = config.features.pipeline()
    state = torch.random.get_rng_state()
    config.features.shared_args()
    flow.resolve(config, pipeline)
    assert torch.equal(torch.random.get_rng_state(), state)
