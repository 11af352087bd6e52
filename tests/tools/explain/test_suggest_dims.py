"""suggest-dims: widths follow per-dimension importance and never exceed the budget."""

from __future__ import annotations

from dataclasses import replace

import pytest

from torchrec_app.config import build_recipe
from torchrec_app.tools.explain.cost import dense_tower_cost, table_params
from torchrec_app.tools.explain.suggest_dims import suggest_dims

IMPORTANCE = {"C1": 0.9, "C2": 0.5, "C3": 0.1, "C4": 0.05, "C5": 0.3}
CURRENT = {f: 16 for f in IMPORTANCE}
ROWS = {"C1": 1000, "C2": 50, "C3": 20000, "C4": 300, "C5": 7}


@pytest.fixture(scope="module")
def full_cross_config():
    tiny = build_recipe("tiny")
    return replace(tiny, model=replace(tiny.model, cross=replace(tiny.model.cross, kind="full", num_layers=2)))


@pytest.mark.parametrize("fraction", [0.3, 0.6, 1.0])
def test_parameter_budget_is_respected(fraction):
    budget = fraction * table_params(ROWS, CURRENT)
    dims = suggest_dims(IMPORTANCE, CURRENT, lambda d: table_params(ROWS, d), budget, multiple=4)
    assert table_params(ROWS, dims) <= budget
    assert all(d % 4 == 0 and d >= 4 for d in dims.values())
    assert dims["C1"] >= dims["C2"] >= dims["C5"] >= dims["C3"] >= dims["C4"]  # importance order


@pytest.mark.parametrize("fraction", [0.4, 0.7])
def test_flop_budget_is_respected_and_grows_important_features(full_cross_config, fraction):
    flops = lambda d: dense_tower_cost(full_cross_config, 4, d).flops  # noqa: E731
    budget = fraction * flops(CURRENT)
    dims = suggest_dims(IMPORTANCE, CURRENT, flops, budget, multiple=8, min_dim=8)
    assert flops(dims) <= budget
    assert all(d % 8 == 0 for d in dims.values())
    assert dims["C1"] == max(dims.values()) and dims["C4"] == min(dims.values()) < CURRENT["C4"]
    if fraction >= 0.7:  # room left to grow the most important feature past its width now
        assert dims["C1"] > CURRENT["C1"]


def test_an_infeasible_budget_says_what_the_minimum_costs():
    with pytest.raises(ValueError, match="budget 10 is below the cost 20 of min_dim=4"):
        suggest_dims(IMPORTANCE, CURRENT, lambda d: sum(d.values()), 10)


def test_tower_cost_counts_the_model_the_trainer_builds(full_cross_config):
    narrow, wide = (dense_tower_cost(full_cross_config, 4, {"a": 8, "b": w}) for w in (8, 24))
    n_narrow, n_wide = 8 + 16, 8 + 32  # dense arch output 8 + widths
    cross = lambda n: 2 * (n * n + n)  # noqa: E731  two full layers: kernel + bias
    over = lambda n: n * 16  # noqa: E731  over-arch first layer weights
    assert wide.params - narrow.params == cross(n_wide) - cross(n_narrow) + over(n_wide) - over(n_narrow)
    assert wide.flops - narrow.flops == 2 * (2 * (n_wide**2 - n_narrow**2) + 16 * (n_wide - n_narrow))


def test_near_flat_importance_is_reported_as_not_discriminating():
    from torchrec_app.tools.explain.suggest_dims import DISCRIMINATING_RATIO, importance_spread

    flat = {"C1": 0.042, "C2": 0.047, "C3": 0.045, "C4": 0.044}  # the example
    assert importance_spread(flat) < DISCRIMINATING_RATIO <= importance_spread(IMPORTANCE)
