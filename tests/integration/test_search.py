"""Searches driven end to end: submitted over HTTP, trained by real workers, each run with its own hyperparameters.

On Redis + PostgreSQL and on the embedded defaults, as test_end_to_end.py.
"""

from __future__ import annotations

import csv
import io

from gradsweep.engine.tasks.linear_regression import train
from tests.support.curves import assert_each_epoch_stored_once, expected_curves

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
    rows = list(csv.DictReader(io.StringIO(stack.http.get(f"/sweeps/{sweep['id']}/losses?format=csv").text)))
    by_id = {run["id"]: run for run in sweep["runs"]}
    assert len(rows) == 12 * 80
    for row in rows[::80]:  # each run's hyperparameters on its rows, its constants read back as stored
        run = by_id[int(row["run_id"])]
        assert (int(row["point"]), row["optimizer"], row["status"]) == (run["point"], run["optimizer"], "succeeded")
        assert [float(row[name]) if row[name] else None for name in ("beta", "beta1", "beta2", "eps")] == [
            run["beta"], run["beta1"], run["beta2"], run["eps"]]

    again = stack.http.post("/sweeps", json=SEARCH | {"name": "again"}).json()
    rerun = stack.wait_for_sweep(again["id"])
    key = ("learning_rate", "seed", "optimizer", "beta", "beta1", "beta2", "eps", "final_loss")
    assert [tuple(run[k] for k in key) for run in rerun["runs"]] == [tuple(run[k] for k in key)
                                                                     for run in sweep["runs"]]


BAYES = {"name": "bayes", "method": "bayes", "run_cap": 10, "wave_size": 3, "search_seed": 2, "parameters": {
    "learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1.0},
    "optimizer": {"values": ["sgd", "momentum", "adam"]},
    "epochs": {"value": 100},
    "seed": {"values": [0, 1], "repeat": True},
}}


def test_a_bayesian_search_trains_its_waves_one_after_the_other_and_the_same_request_the_same_runs(stack):
    created = stack.http.post("/sweeps", json=BAYES)
    assert created.status_code == 201, created.text
    assert created.json()["n_runs"] == 6  # its first wave: 3 points × 2 seeds; the others come as waves end
    sweep = stack.wait_for_sweep(created.json()["id"])

    runs = sweep["runs"]
    assert sweep["n_runs"] == 20 and sweep["counts"]["running"] == sweep["counts"]["queued"] == 0
    assert sorted(run["point"] for run in runs) == [point for point in range(10) for _ in range(2)]
    for wave, later in ((range(0, 3), range(3, 6)), (range(3, 6), range(6, 9)), (range(6, 9), range(9, 10))):
        ended = max(run["finished_at"] for run in runs if run["point"] in wave)
        assert all(run["created_at"] >= ended for run in runs if run["point"] in later), "a wave came too early"
    assert_each_epoch_stored_once(stack.env["GRADSWEEP_DATABASE_URL"], sweep["id"], runs)
    expected = expected_curves(runs)
    assert all(stack.http.get(f"/runs/{run['id']}").json()["losses"] == expected[run["id"]] for run in runs)

    again = stack.wait_for_sweep(stack.http.post("/sweeps", json=BAYES | {"name": "again"}).json()["id"])
    key = ("point", "learning_rate", "seed", "optimizer", "final_loss")
    assert sorted(tuple(run[k] for k in key) for run in again["runs"]) == sorted(tuple(run[k] for k in key)
                                                                              for run in runs)
