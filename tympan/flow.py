"""The resolved data flow of a run: every transform and augmentation with all its arguments
(defaults and what tympan fills in), where it acts, what it takes and gives, and how its
randomness is seeded.

A config names presets and leaves defaults out; this is what they came to. It is saved with the
run (`pipeline.yaml`), in the bundle (`bundle.json`, key `pipeline`) and printed by
`tympan config`, so what a run did to its audio is on record beside its numbers.
"""

from __future__ import annotations

import json

from tympan import augmentations
from tympan.config import Config
from tympan.transforms.pipeline import Pipeline

SEEDING = {
    "model": "initial weights and dropout: torch's global generator, seeded with `seed` just before the model is built",
    "clip": (
        "a training clip's crop (training.max_duration), random transforms and augmentations draw, in that order, "
        "from a torch.Generator seeded with sample_seed(seed, epoch, clip index)"
    ),
    "batch": "batch augmentations draw from a torch.Generator seeded with sample_seed(seed, epoch, clips + batch)",
    "augmentation": "each augmentation draws its probability p first, then its own numbers only if it applies",
    "order": (
        "waveform augmentations on the stored clip, then the online transforms, with feature augmentations "
        "just before the first normalising transform (or last); batch augmentations after padding"
    ),
}


def resolve(config: Config, pipeline: Pipeline | None = None) -> dict:
    """The run's data flow as plain data (JSON/YAML-ready)."""
    pipeline = pipeline or config.features.pipeline()
    shared = config.features.shared_args(pipeline)
    steps = []
    for component in config.augmentation:
        step = augmentations.resolved(component, shared)
        steps.append({**step, "acts_on": pipeline.spec_for(step["place"]).describe()})
    record = {
        "sample_rate": pipeline.sample_rate,
        "transforms": pipeline.resolved,
        "stored": pipeline.stored.describe(),
        "augmentations": steps,
        "model_input": pipeline.output.describe(),
        "seed": config.seed,
        "seeding": SEEDING,
    }
    return json.loads(json.dumps(record, default=str))  # plain data: tuples become lists
