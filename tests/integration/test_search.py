"""Searches driven end to end: submitted over HTTP, trained by real workers, each run with its own hyperparameters.

On Redis + PostgreSQL and on the embedded defaults, as test_end_to_end.py.
"""

from __future__ import annotations

from engine.tasks.linear_regression import train
from tests.curves import assert_each_epoch_stored_once, expected_curves

SEARCH = {"name": "random", "method": "random", "run_cap": 6, "search_seed": 3, "parameters": {
    "learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 0.1},
    "optimizer": {"values": ["momentum", "adam"]},
    "beta": {"distribution": "uniform", "min": 0.5, "max": 0.95},
    "beta1": {"values": [0.8, 0.9]},
    "epochs": {"value": 80},
    "seed": {"values": [0, 1], "repeat": True},
}}


def test_a_random_search_trains_each_run_with_its_own_drawn_hyperparameters(stack):
    created = stack.http.post("/sweeps", json=SEARCH)
    assert created.status_code == 201, created.text
    sweep = stack.wait_for_sweep(created.json()["id"])

    assert sweep["n_runs"] == 12 and sweep["counts"]["succeeded"] == 12
    assert sweep["search"]["method"] == "random" and sweep["search"]["run_cap"] == 6
    assert_each_epoch_stored_once(stack.env["GRADSWEEP_DATABASE_URL"], sweep["id"], sweep["runs"])
    expected = expected_curves(sweep["runs"])
    finals = set()
    for run in sweep["runs"]:
        stored = stack.http.get(f"/runs/{run['id']}").json()["losses"]
        assert stored == expected[run["id"]]  # bit for bit, from the stored hyperparameters
        constants = {"momentum": {"beta": run["beta"]},
                     "adam": {"beta1": run["beta1"], "beta2": run["beta2"], "eps": run["eps"]}}[run["optimizer"]]
        alone = train(run["learning_rate"], run["seed"], 80, optimizer=run["optimizer"], constants=constants).losses
        assert all(abs(a - b) <= 1e-12 * abs(b) for a, b in zip(stored, alone, strict=True))
        finals.add(run["final_loss"])
    assert len(finals) == 12  # twelve different runs, not one run twelve times

    again = stack.http.post("/sweeps", json=SEARCH | {"name": "again"}).json()
    rerun = stack.wait_for_sweep(again["id"])
    key = ("learning_rate", "seed", "optimizer", "beta", "beta1", "beta2", "eps", "final_loss")
    assert [tuple(run[k] for k in key) for run in rerun["runs"]] == [tuple(run[k] for k in key)
                                                                     for run in sweep["runs"]]
