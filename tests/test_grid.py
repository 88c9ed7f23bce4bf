"""Grid expansion and `tympan train --grid`."""

import pytest

from tests.conftest import TINY
from tympan import config as configuration
from tympan.config import expand_grid as expand
from tympan.errors import ConfigError
from tympan.grid import combinations


def test_combinations_in_order_minus_exclusions():
    grid = {"lr": [1, 2], "seed": [1, 2, 3], "exclude": [{"lr": 2, "seed": 3}, {"seed": 1}]}
    assert combinations(grid) == [{"lr": 1, "seed": 2}, {"lr": 1, "seed": 3}, {"lr": 2, "seed": 2}]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"seed": 3}, "grid.seed: expected a non-empty list"),
        ({"seed": []}, "grid.seed: expected a non-empty list"),
        ({"seed": [1], "exclude": [{"sed": 1}]}, "grid.exclude.0"),
    ],
)
def test_malformed_grids(grid, message):
    with pytest.raises(ConfigError, match=message):
        combinations(grid)


def test_an_exclude_that_removes_every_combination_is_an_error():
    grid = {"optimizer.args.lr": [0.1, 0.01], "seed": [1, 2], "exclude": [{"seed": 1}, {"seed": 2}]}
    with pytest.raises(ConfigError, match=r"^grid\.exclude removes all 4 combinations"):
        combinations(grid)
    with pytest.raises(ConfigError, match=r"^exp\.yaml: grid\.exclude removes all 4"):
        expand({**TINY, "grid": grid}, "exp.yaml")


def test_expand_sets_dotted_keys_through_presets():
    raw = {**TINY, "grid": {"optimizer.args.lr": [0.1, 0.01], "model": ["SmallCNN", "Cnn10"]}}
    configs = expand(raw)
    assert [(c.optimizer.args["lr"], c.model.target.rsplit(":")[1]) for c in configs] == [
        (0.1, "SmallCNN"),
        (0.1, "Cnn10"),
        (0.01, "SmallCNN"),
        (0.01, "Cnn10"),
    ]
    assert all(c.optimizer.target == "torch.optim:AdamW" for c in configs)  # the preset stays
    assert len({c.run_id() for c in configs}) == 4
    assert expand(TINY)[0].run_id() == configuration.parse(TINY).run_id()


def test_a_typo_in_one_combination_names_it():
    with pytest.raises(ConfigError, match=r"\[training.epocs=1\].*unknown key"):
        expand({**TINY, "grid": {"training.epocs": [1]}})
