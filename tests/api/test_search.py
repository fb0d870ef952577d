"""`POST /sweeps` with `parameters`: a grid or a random search over any hyperparameter, checked field by field.

In process (tests/api/conftest.py);
tests/integration/test_search.py trains searches on the real stack.
"""

from __future__ import annotations

import math

import pytest

from gradsweep.service.settings import get_settings
from tests.support.sweeps import names_field, with_runs

LOG_LR = {"distribution": "log_uniform", "min": 1e-3, "max": 1.0}
RANDOM = {"name": "search", "method": "random", "run_cap": 12, "search_seed": 7, "parameters": {
    "learning_rate": LOG_LR, "epochs": {"value": 50}, "optimizer": {"values": ["sgd", "momentum", "adam"]},
    "seed": {"values": [0, 1, 2], "repeat": True}, "beta": {"distribution": "uniform", "min": 0.5, "max": 0.99}}}
CONFIG = ["learning_rate", "seed", "optimizer", "epochs", "n_samples", "n_features", "data_seed", "mode",
          "beta", "beta1", "beta2", "eps"]


def configs(sweep: dict) -> list[tuple]:
    return [tuple(run[name] for name in CONFIG) for run in sweep["runs"]]


def create(api, body: dict) -> dict:
    response = api.post("/sweeps", json=body)
    assert response.status_code == 201, response.text
    return with_runs(api, response.json())


def test_a_random_search_draws_run_cap_points_each_trained_over_the_repeated_seeds(api, queued):
    sweep = create(api, RANDOM)
    assert sweep["n_runs"] == 12 * 3
    assert sweep["search"] == {key: RANDOM[key] for key in ("method", "run_cap", "search_seed", "parameters")}
    points: dict[tuple, list[int]] = {}
    for run in sweep["runs"]:
        assert 1e-3 <= run["learning_rate"] <= 1.0 and run["epochs"] == 50
        points.setdefault((run["learning_rate"], run["optimizer"], run["beta"]), []).append(run["seed"])
    assert len(points) == 12 and all(sorted(seeds) == [0, 1, 2] for seeds in points.values())
    # A log-uniform draw spreads over the decades; 12 points from three optimizers reach at least two.
    decades = {math.floor(math.log10(lr)) for lr, _, _ in points}
    assert len(decades) >= 2 and len({optimizer for _, optimizer, _ in points}) >= 2
    # Each optimizer keeps its own constants; the others are null.
    for run in sweep["runs"]:
        if run["optimizer"] == "momentum":
            assert 0.5 <= run["beta"] <= 0.99 and run["beta1"] is None
        elif run["optimizer"] == "adam":
            assert (run["beta"], run["beta1"], run["beta2"], run["eps"]) == (None, 0.9, 0.999, 1e-8)
        else:
            assert (run["beta"], run["beta1"], run["beta2"], run["eps"]) == (None, None, None, None)
    # Runs of one optimizer train together: a job is never a mix.
    optimizer = {run["id"]: run["optimizer"] for run in sweep["runs"]}
    assert all(len({optimizer[i] for i in job.run_ids}) == 1 for job in queued)


def test_the_same_search_seed_gives_the_same_runs_and_another_seed_others(api):
    first, again = create(api, RANDOM), create(api, RANDOM)
    other = create(api, RANDOM | {"search_seed": 8})
    assert configs(first) == configs(again)
    assert {c[0] for c in configs(first)}.isdisjoint({c[0] for c in configs(other)})


def test_a_grid_in_the_new_form_makes_the_runs_of_the_first_form_in_the_same_order(api):
    old = create(api, {"name": "old", "learning_rates": [0.01, 0.03], "seeds": [0, 1], "epochs": 20,
                       "optimizers": ["sgd", "adam"]})
    new = create(api, {"name": "new", "parameters": {
        "optimizer": {"values": ["sgd", "adam"]}, "learning_rate": {"values": [0.01, 0.03]},
        "seed": {"values": [0, 1]}, "epochs": {"value": 20}}})
    assert configs(new) == configs(old)
    assert old["search"] is None and new["search"]["method"] == "grid"


def test_a_grid_over_momentums_beta_and_the_data_makes_every_combination(api):
    sweep = create(api, {"name": "g", "parameters": {
        "learning_rate": {"value": 0.01}, "epochs": {"value": 10}, "optimizer": {"value": "momentum"},
        "beta": {"values": [0.5, 0.9]}, "n_samples": {"values": [20, 40, 80]}, "data_seed": {"values": [0, 1]}}})
    assert sorted((r["beta"], r["n_samples"], r["data_seed"]) for r in sweep["runs"]) == sorted(
        (b, n, d) for b in (0.5, 0.9) for n in (20, 40, 80) for d in (0, 1))
    # Their data differ, so no one least-squares line or stability limit is every run's.
    assert sweep["least_squares_loss"] is None and sweep["stability_limit"] is None


BAD = [
    ("lr", {"parameters": {"lr": LOG_LR}}),
    ("learning_rate", {"parameters": {"learning_rate": {"distribution": "log_uniform", "min": 0.5, "max": 0.1}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"distribution": "log_uniform", "min": 0.1, "max": 0.1}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"distribution": "log_uniform", "min": 0, "max": 1}}}),
    ("beta", {"parameters": {"beta": {"distribution": "log_uniform", "min": 0.0, "max": 0.9}}}),
    ("beta", {"parameters": {"beta": {"values": [1.0]}}}),
    ("eps", {"parameters": {"eps": {"value": 0.0}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"distribution": "int_uniform", "min": 1, "max": 2}}}),
    ("epochs", {"parameters": {"epochs": {"distribution": "uniform", "min": 10, "max": 20}}}),
    ("epochs", {"parameters": {"epochs": {"value": 100_001}}}),
    ("epochs", {"parameters": {"epochs": {"distribution": "int_uniform", "min": 10, "max": 100_001}}}),
    ("seed", {"parameters": {"seed": {"values": [1.5]}}}),
    ("seed", {"parameters": {"seed": {"distribution": "int_uniform", "min": 0, "max": 3, "repeat": True}}}),
    ("optimizer", {"parameters": {"optimizer": {"values": ["lbfgs"]}}}),
    ("optimizer", {"parameters": {"optimizer": {"distribution": "uniform", "min": 0, "max": 1}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"distribution": "normal", "min": 0.1, "max": 1}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"value": 0.1, "values": [0.1]}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"distribution": "uniform", "min": 0.1}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"distribution": "choice"}}}),
    ("learning_rate", {"parameters": {"learning_rate": {"values": []}}}),
    ("learning_rate", {"parameters": {"learning_rate": None}}),
    ("run_cap", {"run_cap": 10_001}),
    ("run_cap", {"run_cap": 0}),
    ("run_cap", {"run_cap": "30"}),
    ("method", {"method": "hyperband"}),
    ("wave_size", {"method": "bayes", "wave_size": 0}),
    ("wave_size", {"method": "bayes", "wave_size": 2.5}),
    ("wave_size", {"method": "bayes", "wave_size": 101}),
    ("search_seed", {"search_seed": -1}),
    ("n_samples", {"parameters": {"n_samples": {"distribution": "int_uniform", "min": 1, "max": 100_001}}}),
    ("early_stopping", {"early_stopping": {"type": "median", "min_epochs": 5}}),
    ("early_stopping", {"early_stopping": {"type": "hyperband", "min_epochs": 0}}),
    ("early_stopping", {"early_stopping": {"type": "hyperband", "min_epochs": 50}}),  # no rung before the end
    ("early_stopping", {"early_stopping": {"type": "hyperband", "min_epochs": 5, "eta": 1}}),
    ("early_stopping", {"early_stopping": {"type": "hyperband", "min_epochs": 5, "patience": 3}}),
    ("early_stopping", {"early_stopping": {"type": "hyperband", "min_epochs": "5"}}),
]


@pytest.mark.parametrize("field, change", BAD, ids=[f"{f}:{str(c)[:60]}" for f, c in BAD])
def test_a_bad_search_is_refused_naming_the_field_and_nothing_is_stored(api, queued, field, change):
    body = RANDOM | change
    if "parameters" in change:
        body["parameters"] = RANDOM["parameters"] | change["parameters"]
    response = api.post("/sweeps", json=body)
    assert response.status_code == 422, response.text
    assert names_field(response, field), response.json()
    assert api.get("/sweeps").json() == [] and queued == []


def test_early_stopping_is_kept_with_the_search_and_spreads_hyperbands_points_over_its_brackets(api):
    stopping = {"type": "hyperband", "min_epochs": 2, "eta": 3}  # rungs 2, 6, 18 of 50 epochs: 3 brackets
    sweep = create(api, RANDOM | {"early_stopping": stopping})
    assert sweep["search"]["early_stopping"] == stopping
    assert sorted({run["point"] for run in sweep["runs"]}) == list(range(12))
    assert all(sum(run["point"] == point for run in sweep["runs"]) == 3 for point in range(12))  # one per seed
    assert create(api, RANDOM | {"name": "plain"})["search"].get("early_stopping") is None


@pytest.mark.parametrize("change, message", [
    ({"method": "random", "run_cap": None}, "needs run_cap"),
    ({"method": "bayes", "run_cap": None}, "needs run_cap"),
    ({"wave_size": 3}, "wave_size is for method bayes"),
    ({"method": "grid"}, "run_cap is for methods random and bayes"),
    ({"method": "grid", "run_cap": None}, "a grid needs a value or values for each parameter"),
    ({"run_cap": 5_000}, "the search makes 15000 runs; at most 10000"),
])
def test_a_search_that_does_not_add_up_is_refused_whole(api, queued, change, message):
    body = {key: value for key, value in (RANDOM | change).items() if value is not None}
    response = api.post("/sweeps", json=body)
    assert response.status_code == 422 and message in response.text, response.text
    assert queued == []


def test_the_grid_size_limit_counts_every_parameter(api, queued):
    limit = get_settings().max_runs_per_sweep
    body = {"name": "big", "parameters": {"learning_rate": {"values": [0.01] * 101}, "epochs": {"value": 5},
                                          "seed": {"values": list(range(100))}}}
    response = api.post("/sweeps", json=body)
    assert response.status_code == 422 and f"at most {limit}" in response.text and queued == []


def test_missing_learning_rate_or_epochs_are_named(api):
    for missing in ("learning_rate", "epochs"):
        parameters = {k: v for k, v in RANDOM["parameters"].items() if k != missing}
        response = api.post("/sweeps", json=RANDOM | {"parameters": parameters})
        assert response.status_code == 422 and names_field(response, missing)
