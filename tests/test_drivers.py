"""Grids of runs (train --seeds/--sweep): one config per (sweep value, seed), sweep-major."""

from __future__ import annotations

import pytest

from core.config import TrainConfig
from core.training.drivers import DRIVERS, grid, parse_sweep


def test_a_sweep_over_seeds_gives_one_config_per_pair_and_types_the_values():
    configs = grid(lambda seed: TrainConfig(method="pearson", seed=seed), [0, 1], "lambda-prune=0,0.5,5")
    assert [(c.method_options["lambda_prune"], c.seed) for c in configs] == [(0, 0), (0, 1), (0.5, 0), (0.5, 1), (5, 0), (5, 1)]
    epochs = grid(lambda seed: TrainConfig(seed=seed), [3], "epochs=2,4")
    assert [(c.epochs, c.method_options) for c in epochs] == [(2, {}), (4, {})], "a TrainConfig field, not an option"
    assert [c.seed for c in grid(lambda seed: TrainConfig(seed=seed), [7, 8])] == [7, 8]


@pytest.mark.parametrize("text", ["lambda_prune=", "=1,2", "noequals"])
def test_a_malformed_sweep_is_refused(text):
    with pytest.raises(ValueError, match="--sweep takes KEY=V1,V2"):
        parse_sweep(text)


def test_every_declared_driver_exists():
    from core.methods import METHODS

    assert {m.driver for m in METHODS.values() if m.driver} <= set(DRIVERS) == {"imp", "taylor-steps"}


def test_a_grid_chain_gets_a_name_of_its_own_that_a_rerun_finds_again():
    """``train --executor``: IMP rounds otherwise get a random chain name, and a rerun would not find their runs."""
    from core.training.drivers import named_chain

    config = TrainConfig(method="lth", arch="mesonet", seed=0)
    named = named_chain(config)
    assert named.method_options["chain"].startswith("mesonet-") and config.method_options == {}, "a copy"
    assert named_chain(TrainConfig(method="lth", arch="mesonet", seed=0)) == named, "the same config, the same name"
    assert named_chain(TrainConfig(method="lth", arch="mesonet", seed=1)).method_options["chain"] != named.method_options["chain"]
    given = TrainConfig(method="lth", method_options={"chain": "mine"})
    assert named_chain(given) is given
